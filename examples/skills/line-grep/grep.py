"""line-grep: read the call's JSON arguments on stdin, print matching lines as they are found."""

from __future__ import annotations

import json
import re
import sys


def main() -> int:
    args = json.load(sys.stdin)
    try:
        rx = re.compile(args["pattern"], re.IGNORECASE if args.get("ignore_case") else 0)
    except re.error as exc:
        print(f"invalid pattern {args['pattern']!r}: {exc}", file=sys.stderr)
        return 2
    invert = bool(args.get("invert"))
    for number, line in enumerate(args["text"].splitlines(), 1):
        if bool(rx.search(line)) != invert:
            print(f"{number}: {line}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
