from __future__ import annotations

import orjson
import pytest

from skillyard import Card, Limits, Policy
from skillyard.errors import ManifestError


def full_card() -> Card:
    return Card(
        id="demo",
        name="demo-run",
        method="run",
        title="Run",
        description="runs",
        version="1.2.3",
        roles=("tool", "judge"),
        input_schema={"type": "object", "properties": {"x": {"type": "integer"}}},
        output_schema={"type": "object"},
        capabilities=("net",),
        policy=Policy(privacy="no-raw", cache="read-through", idempotent=True, semantic_key="x"),
        limits=Limits(timeout_sec=2.5, max_output_bytes=100, memory_mb=64),
        permissions={"env": ["HOME"]},
        hidden=True,
        transport="process",
        operation='["{python}", "w.py"]',
        options={"mode": "worker"},
        root="project",
        source="/tmp/demo",
        digest="sha256:abc",
    )


def test_card_round_trips_through_json_losslessly():
    card = full_card()
    again = Card.from_dict(orjson.loads(orjson.dumps(card.to_dict())))
    assert again == card
    assert again.to_dict() == card.to_dict()


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"policy": {"privacy": "everything"}}, "policy.privacy"),
        ({"policy": {"cache": "sometimes"}}, "policy.cache"),
        ({"policy": {"bogus": 1}}, "policy.bogus"),
        ({"policy": {"idempotent": "yes"}}, "policy.idempotent"),
        ({"limits": {"timeout_sec": -1}}, "limits.timeout_sec"),
        ({"limits": {"max_output_bytes": 1.5}}, "limits.max_output_bytes"),
        ({"roles": ["wizard"]}, "roles[0]"),
        ({"root": "elsewhere"}, "root"),
        ({"surprise": True}, "surprise"),
        ({"name": ""}, "name"),
    ],
    ids=lambda v: str(v) if isinstance(v, str) else None,
)
def test_card_from_dict_rejects_bad_fields_naming_them(patch, field):
    data = full_card().to_dict()
    for key, value in patch.items():
        data[key] = value if not isinstance(value, dict) else {**data.get(key, {}), **value}
    with pytest.raises(ManifestError) as info:
        Card.from_dict(data, where="cards.json")
    assert info.value.field == field
    assert "cards.json" in str(info.value)


def test_policy_merges_method_overrides_over_package_defaults():
    base = Policy(idempotent=True, cache="read-through")
    merged = Policy.from_dict({"cache": "refresh"}, base=base)
    assert merged.idempotent is True
    assert merged.cache == "refresh"


def test_read_only_reflects_declared_write_permissions():
    assert Card(id="a", name="a-b", method="b").read_only
    assert not Card(
        id="a", name="a-b", method="b", permissions={"fs": [{"path": ".", "mode": "rw"}]}
    ).read_only
    assert not Card(
        id="a", name="a-b", method="b", permissions={"http": {"hosts": ["x.com"]}}
    ).read_only
