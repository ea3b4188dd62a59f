"""Cards rebuilt from the warm index behave exactly like the loader's cards."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import shutil
from pathlib import Path

import orjson
import pytest

from skillyard.card import Card
from skillyard.index import PackageIndex
from skillyard.manifests import load_package
from skillyard.roots import discover
from skillyard.store import Store
from tests.cli_helpers import run

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "skills"


@pytest.fixture
def pair(tmp_path):
    """(cards from the loader, the same cards from a warm index)."""
    root = tmp_path / "user"
    shutil.copytree(EXAMPLES / "text-tools", root / "text-tools")
    store = Store(tmp_path / "state.db")
    discover({"user": [root]}, index=PackageIndex(store))
    warm = discover({"user": [root]}, index=PackageIndex(store)).packages["text-tools"]
    cold = load_package(root / "text-tools", root="user")
    yield cold.cards, warm.cards
    store.close()


def test_stored_cards_equal_loaded_cards_both_ways(pair):
    cold, warm = pair
    assert isinstance(warm[0], Card)
    assert warm == cold and cold == warm
    assert [c.to_dict() for c in warm] == [c.to_dict() for c in cold]
    assert warm[0] != cold[1] and cold[1] != warm[0]
    assert warm[0] != "text-tools-stats"


def test_schemas_are_decoded_on_first_use_and_then_plain_attributes(pair):
    cold, warm = pair
    card = warm[0]
    assert "input_schema" not in card.__dict__  # not decoded by discovery
    assert card.input_schema == cold[0].input_schema
    assert card.__dict__["output_schema"] == cold[0].output_schema
    assert card.input_schema is card.input_schema
    assert "_schemas" not in card.__dict__


def test_stored_cards_are_frozen_hashable_by_identity_and_readable(pair):
    cold, warm = pair
    card = warm[1]
    with pytest.raises(dataclasses.FrozenInstanceError):
        card.name = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        card.input_schema = {}  # type: ignore[misc]
    assert {card: 1}[card] == 1 and hash(card) != hash(cold[1])
    assert repr(card) == repr(cold[1]) and repr(card).startswith("Card(")


def test_replace_copy_and_pickle_keep_the_values(pair):
    cold, warm = pair
    changed = dataclasses.replace(warm[0], hidden=True)
    assert changed.hidden and changed.input_schema == cold[0].input_schema
    assert dataclasses.replace(cold[0], hidden=True) == changed
    for card in (warm[2], copy.deepcopy(warm[2]), pickle.loads(pickle.dumps(warm[2]))):
        assert card == cold[2] and card.output_schema == cold[2].output_schema


def test_cli_answers_the_same_cold_and_warm(tmp_path):
    home = tmp_path / "home"
    shutil.copytree(EXAMPLES / "text-tools", home / "skills" / "user" / "text-tools")
    answers = []
    for _ in range(2):
        listed = run(home, "--json", "list")
        described = run(home, "--json", "describe", "text-tools-stats")
        assert listed.returncode == 0 and described.returncode == 0, listed.stderr
        answers.append((orjson.loads(listed.stdout), orjson.loads(described.stdout)))
    assert answers[0] == answers[1]
    assert answers[1][1]["card"]["input_schema"]["required"] == ["text"]
