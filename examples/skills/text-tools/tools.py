"""text-tools: in-process Python methods. Each takes the validated arguments dict."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from urllib.parse import urlsplit

_WORD = re.compile(r"[^\W\d_]+(?:['\u2019][^\W\d_]+)?", re.UNICODE)
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")
_URL = re.compile(r"https?://[^\s<>\"')\]]+", re.IGNORECASE)
_STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "for",
        "from",
        "has",
        "have",
        "he",
        "her",
        "his",
        "i",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "she",
        "that",
        "the",
        "their",
        "them",
        "they",
        "this",
        "to",
        "was",
        "were",
        "will",
        "with",
        "you",
        "your",
        "we",
        "our",
        "not",
        "no",
        "so",
        "if",
    ]
)


def stats(args):
    text = args["text"]
    words = _WORD.findall(text)
    counts = Counter(w.lower() for w in words if w.lower() not in _STOP)
    top = args.get("top", 10)
    sentences = len(_SENTENCE_END.findall(text)) or (1 if words else 0)
    return {
        "words": len(words),
        "sentences": sentences,
        "chars": len(text),
        "reading_time_sec": round(len(words) / 200 * 60),
        "top_words": [{"word": w, "count": c} for w, c in counts.most_common(top)],
    }


def slugify(args):
    text = unicodedata.normalize("NFKD", args["text"]).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    limit = args.get("max_length", 80)
    return {"slug": slug[:limit].rstrip("-")}


def extract_links(args):
    seen: dict[str, str] = {}
    for match in _URL.finditer(args["text"]):
        url = match.group(0).rstrip(".,;:!?")
        if url not in seen:
            seen[url] = urlsplit(url).hostname or ""
    return {"links": [{"url": u, "host": h} for u, h in seen.items()]}
