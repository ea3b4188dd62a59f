"""A pretend weather API client: deterministic, so the example needs no network."""

from __future__ import annotations

import hashlib


def forecast(args: dict) -> dict:
    seed = hashlib.sha256(args["city"].lower().encode()).digest()
    days = [{"day": i + 1, "high_c": seed[i] % 30, "rain": seed[i + 3] % 2 == 1} for i in range(3)]
    return {"city": args["city"], "days": days}
