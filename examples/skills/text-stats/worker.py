"""text-stats: a persistent worker answering JSON-RPC calls on stdin/stdout."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from skillyard.worker import Context, Result, serve

WORD = re.compile(r"[^\W_]+(?:['\u2019-][^\W_]+)*")


def stats(text: str, top: int = 5, min_length: int = 1) -> dict[str, Any]:
    words = [w.lower() for w in WORD.findall(text)]
    counted = Counter(w for w in words if len(w) >= min_length)
    ranked = sorted(counted.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return {
        "lines": len(text.splitlines()),
        "words": len(words),
        "chars": len(text),
        "unique_words": len(set(words)),
        "top_words": [{"word": w, "count": n} for w, n in ranked],
    }


def analyze(args: dict[str, Any], ctx: Context) -> Result:
    out = stats(args["text"], args.get("top", 5), args.get("min_length", 1))
    summary = f"{out['words']} words, {out['lines']} lines, {out['chars']} characters"
    return Result(out, content=summary)


def file(args: dict[str, Any], ctx: Context) -> Result:
    text = ctx.host("fs.read_text", path=args["path"])
    ctx.emit("progress", message=f"read {len(text)} characters")
    out = stats(text, args.get("top", 5))
    return Result(out, content=f"{args['path']}: {out['words']} words, {out['lines']} lines")


if __name__ == "__main__":
    serve({"analyze": analyze, "file": file})
