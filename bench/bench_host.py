"""Host API overhead: each dispatch against the raw operation it wraps, in the same run."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import tempfile
import time
from pathlib import Path

from bench.harness import Report, time_async, time_sync


def run(report: Report) -> None:
    from skillyard.runtime import Runtime
    from skillyard.transports.base import DEFAULT_CALLER, CallContext

    n = report.scale(20_000)
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        (ws / "data").mkdir()
        target = ws / "data" / "a.txt"
        target.write_text("hello world\n" * 8)
        os.environ.setdefault("BENCH_HOST_VAR", "x")
        rt = Runtime.memory(config={"host": {"workspace": str(ws)}})
        perms = {"fs": {"ro": ["data"]}, "env": ["BENCH_HOST_VAR"]}
        rt.tool("bench-host", permissions=perms)(lambda args: None)
        card = rt.card("bench-host")
        loop = asyncio.new_event_loop()

        def new_ctx() -> CallContext:
            return CallContext(
                runtime=rt,
                card=card,
                args={},
                caller=DEFAULT_CALLER,
                call_id="bench",
                deadline=time.monotonic() + 3600,
            )

        async def bind() -> object:
            return new_ctx().host

        ctx = new_ctx()
        host = loop.run_until_complete(asyncio.sleep(0, ctx.host))
        path = str(target)

        def raw_read() -> str:
            with open(path, encoding="utf-8") as f:
                return f.read()

        report.add(
            "host", "raw open+read of a small file (floor)", time_sync(raw_read, n=n, batch=20)
        )
        report.add(
            "host",
            "fs.read_text via dispatch (realpath, grant check, O_NOFOLLOW walk)",
            time_async(
                loop, lambda: host.dispatch("fs.read_text", {"path": "data/a.txt"}), n=n, batch=20
            ),
            floor="raw open+read of a small file (floor)",
            max_ratio=10,
        )
        report.add(
            "host",
            "raw os.environ.get (floor)",
            time_sync(lambda: os.environ.get("BENCH_HOST_VAR"), n=n, batch=100),
        )
        report.add(
            "host",
            "env.get via dispatch (dispatch overhead)",
            time_async(
                loop, lambda: host.dispatch("env.get", {"name": "BENCH_HOST_VAR"}), n=n, batch=100
            ),
            floor="raw os.environ.get (floor)",
            max_us=5,
            note="target: dispatch + permission check under 5 us",
        )
        loop.run_until_complete(host.dispatch("kv.put", {"key": "k", "value": {"a": 1}}))
        conn = sqlite3.connect(":memory:")
        conn.execute("CREATE TABLE t (s TEXT, k TEXT, v BLOB, e REAL, PRIMARY KEY (s, k))")
        conn.execute("INSERT INTO t VALUES ('s', 'k', '{\"a\":1}', NULL)")
        report.add(
            "host",
            "raw sqlite select by primary key (floor)",
            time_sync(
                lambda: conn.execute("SELECT v, e FROM t WHERE s=? AND k=?", ("s", "k")).fetchall(),
                n=n,
                batch=20,
            ),
        )
        report.add(
            "host",
            "kv.get via dispatch",
            time_async(loop, lambda: host.dispatch("kv.get", {"key": "k"}), n=n, batch=20),
            floor="raw sqlite select by primary key (floor)",
            max_ratio=3,
        )

        async def ctx_only() -> object:
            return new_ctx()

        report.add(
            "host",
            "new CallContext, no host (floor)",
            time_async(loop, ctx_only, n=n, batch=20),
        )
        report.add(
            "host",
            "new CallContext + ctx.host bound to it",
            time_async(loop, bind, n=n, batch=20),
            floor="new CallContext, no host (floor)",
            max_ratio=3,
        )
        loop.run_until_complete(rt.aclose())
        loop.close()
