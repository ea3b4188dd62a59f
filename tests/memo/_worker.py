"""A separate process sharing a runtime home: reads JSON commands on stdin, answers on stdout."""

from __future__ import annotations

import sys

import orjson

from skillyard import SyncRuntime
from skillyard.memo import memo_of


def main() -> None:
    home, skills = sys.argv[1], sys.argv[2]
    config = {"memo": orjson.loads(sys.argv[3])} if len(sys.argv) > 3 else {}
    with SyncRuntime.open(home, roots={"project": [skills]}, config=config) as rt:
        memo = memo_of(rt.runtime)
        assert memo is not None
        print(orjson.dumps({"ready": True}).decode(), flush=True)
        for line in sys.stdin:
            cmd = orjson.loads(line)
            op = cmd["op"]
            if op == "call":
                r = rt.call(cmd["tool"], cmd["args"])
                out = {"source": r.source, "output": r.output}
            elif op == "fill":
                sources = [
                    rt.call(cmd["tool"], {"i": i, "who": cmd["who"]}).source
                    for i in range(cmd["n"])
                ]
                out = {"live": sources.count("live")}
            elif op == "clear":
                out = {"removed": memo.cache.clear(cmd.get("tool"))}
            else:
                out = {"error": f"unknown op {op}"}
            print(orjson.dumps(out).decode(), flush=True)


if __name__ == "__main__":
    main()
