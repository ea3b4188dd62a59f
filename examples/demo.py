"""`make demo`: a tour of skillyard on a throw-away runtime home.

Copies the example skills into the home's USER root, lists them, calls each
kind, and shows what an error looks like.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import orjson

from skillyard import InvalidArguments, SyncRuntime

EXAMPLES = Path(__file__).resolve().parent / "skills"


def show(title: str, value: object) -> None:
    print(f"\n== {title}")
    print("  " + orjson.dumps(value).decode())


def main() -> int:
    home = Path(tempfile.mkdtemp(prefix="skillyard-demo-"))
    user_root = home / "skills" / "user"
    shutil.copytree(EXAMPLES, user_root)
    print(f"runtime home: {home}")
    rt = SyncRuntime.open(home)
    try:
        print("\n== skills visible to an agent")
        for card in rt.list():
            print(f"  {card.name:34} {card.transport:8} {card.description[:60]}")
        for problem in rt.runtime.problems:
            print(f"  (not loaded: {problem.path}: {problem.message})")

        text = (
            "Skillyard runs skills. Skills are small tools an agent calls! "
            "Read more at https://example.org/docs and https://example.org/docs."
        )
        show(
            "text-tools-stats (python, in process)",
            rt.call("text-tools-stats", {"text": text, "top": 3}).output,
        )
        show("text-tools-extract-links", rt.call("text-tools-extract-links", {"text": text}).output)

        try:
            rt.call("text-tools-slugify", {"text": 42})
        except InvalidArguments as exc:
            print(
                f"\n== a bad call is refused before it runs\n  {exc.code}: {exc} (pointer {exc.pointer})"
            )
    finally:
        rt.close()
        shutil.rmtree(home, ignore_errors=True)
    print("\ndemo finished")
    return 0


if __name__ == "__main__":
    sys.exit(main())
