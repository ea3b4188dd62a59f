"""Run every bench module (``bench/bench_*.py``), print a table, write bench/results.json."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import platform
import sys
import time
from pathlib import Path

import orjson

from bench.harness import Report


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument(
        "--quick", action="store_true", help="a tenth of the iterations (smoke test)"
    )
    parser.add_argument("--only", default="", help="comma-separated substrings of module names")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results.json"))
    ns = parser.parse_args()
    report = Report(quick=ns.quick)
    wanted = [w for w in ns.only.split(",") if w]
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]))
    failures = []
    for name in names:
        if not name.startswith("bench_") or (wanted and not any(w in name for w in wanted)):
            continue
        module = importlib.import_module(f"bench.{name}")
        print(f"# {name}", file=sys.stderr, flush=True)
        try:
            module.run(report)
        except Exception as exc:  # one broken bench must not hide the others' numbers
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
    print(f"{'case':58} {'median us':>11} {'p95 us':>10} {'ratio':>8}  target     met")
    for r in report.rows:
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else ""
        met = "" if r.met is None else ("yes" if r.met else "MISSED")
        print(
            f"{r.name[:58]:58} {r.median_us:11.2f} {r.p95_us:10.2f} {ratio:>8}  {r.target or '':10} {met}"
        )
    missed = [r.name for r in report.rows if r.met is False]
    if missed:
        print(f"\n{len(missed)} target(s) missed: " + "; ".join(missed))
    for f in failures:
        print(f"bench failed: {f}")
    data = report.to_dict()
    data["machine"] = {"python": platform.python_version(), "platform": platform.platform()}
    data["generated_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    Path(ns.out).write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    print(f"\nwrote {ns.out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
