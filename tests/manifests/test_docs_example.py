"""The full example in docs/skill-format.md must stay true."""

from __future__ import annotations

import re
from pathlib import Path

from skillyard import SyncRuntime
from skillyard.manifests import load_package

DOC = Path(__file__).resolve().parents[2] / "docs" / "skill-format.md"


def blocks() -> dict[str, str]:
    out = {}
    for lang, body in re.findall(r"```(\w+)\n(.*?)```", DOC.read_text(), re.S):
        first, _, rest = body.partition("\n")
        m = re.match(r"^(?:#|//) (invoice-tools/\S+)$", first)
        if m:
            out[m.group(1)] = rest if lang == "json" else body
    return out


def test_the_documented_package_validates_and_runs(tmp_path):
    files = blocks()
    assert set(files) == {
        "invoice-tools/skill.toml",
        "invoice-tools/invoices.py",
        "invoice-tools/schemas/total.input.json",
    }
    for rel, text in files.items():
        target = tmp_path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    (tmp_path / "invoice-tools" / "help").mkdir()
    (tmp_path / "invoice-tools" / "help" / "main.md").write_text("# invoice tools\n")
    pkg = load_package(tmp_path / "invoice-tools")
    assert [c.name for c in pkg.cards] == ["invoice-tools-total", "invoice-tools-audit-trail"]
    assert pkg.cards[1].hidden and pkg.cards[0].limits.timeout_sec == 2
    assert pkg.cards[0].limits.max_output_bytes == 65536
    rt = SyncRuntime.memory()
    rt.runtime.add_package(tmp_path / "invoice-tools")
    result = rt.call("invoice-tools-total", {"items": [{"price": 2.5, "qty": 2}]})
    assert result.output == {"total": 5.0}
    rt.close()
