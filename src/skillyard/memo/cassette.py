"""Cassettes: record calls to a human-readable file and replay them, as VCR.py does for HTTP.

Record modes, with VCR.py's names:

``once``
    record when the file does not exist; otherwise replay, and a call with no
    recording is an error.
``new_episodes``
    replay what is recorded, record what is not.
``none``
    replay only; a call with no recording raises :class:`CassetteMiss` naming
    the call and the file.
``all``
    never replay; record every call (appended to what the file holds).
``rewrite``
    like ``all``, but the file is replaced by this run's calls
    (pytest-recording's name for it).

A card's own ``policy.cassette`` maps onto them: ``record-replay`` ->
``new_episodes``, ``replay-only`` -> ``none``, ``record-only`` -> ``all``.

Matching compares the request (tool, skill digest, principal, arguments after
filtering) with recordings using the ``match_on`` matchers, by name from
:data:`MATCHERS` or any ``fn(request, recording) -> bool``. Identical calls
replay in recorded order. Secrets never reach the file: argument keys that look
like secrets (and schema properties marked ``writeOnly`` or ``format:
password``) are redacted, ``filter_args`` redacts more, ``before_record`` may
rewrite or drop an interaction, and cards whose privacy is ``metadata-only`` or
``no-raw`` are not recorded unless ``record_private`` opts in (and then their
arguments are kept as a hash only).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from skillyard.card import Card
from skillyard.errors import CassetteMiss, ManifestError, SkillyardError
from skillyard.memo import cassette_file as files
from skillyard.memo.cache import canonical
from skillyard.memo.config import PRIVATE_MODES, RECORD_MODES, RecordMode
from skillyard.memo.results import result_fields, served

if TYPE_CHECKING:
    from skillyard.runtime import Runtime
    from skillyard.transports.base import CallContext, CallResult

Matcher = Callable[[dict[str, Any], dict[str, Any]], bool]
ArgsFilter = Callable[[str, dict[str, Any]], dict[str, Any]]
BeforeRecord = Callable[[dict[str, Any]], dict[str, Any] | None]
CallNext = Callable[["CallContext"], Awaitable["CallResult"]]

REDACTED = "[REDACTED]"
SECRET_KEY = re.compile(
    r"(?i)^(.*[_-])?(password|passwd|passphrase|secret|token|api[_-]?key|apikey|authorization|"
    r"credentials?|private[_-]?key|access[_-]?key|cookie)([_-].*)?$"
)

MATCHERS: dict[str, Matcher] = {
    "tool": lambda a, b: a["tool"] == b["tool"],
    "digest": lambda a, b: a.get("digest", "") == b.get("digest", ""),
    "args": lambda a, b: a["args_sha256"] == b["args_sha256"],
    "principal": lambda a, b: a.get("principal") == b.get("principal"),
}


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


_secret_keys: dict[str, bool] = {}


def _looks_secret(key: str) -> bool:
    hit = _secret_keys.get(key)
    if hit is None:
        hit = bool(SECRET_KEY.match(key))
        if len(_secret_keys) < 10_000:
            _secret_keys[key] = hit
    return hit


def redact(value: Any, names: frozenset[str], pointers: frozenset[str], secrets: bool) -> Any:
    """A copy of ``value`` with matching keys (by name, JSON pointer or secret look) redacted."""

    def walk(v: Any, path: str) -> Any:
        if isinstance(v, dict):
            out = {}
            for k, item in v.items():
                key = str(k)
                p = f"{path}/{_escape(key)}" if pointers else ""
                if key in names or (pointers and p in pointers) or (secrets and _looks_secret(key)):
                    out[k] = REDACTED
                elif isinstance(item, dict | list):
                    out[k] = walk(item, p)
                else:
                    out[k] = item
            return out
        if isinstance(v, list):
            return [
                walk(item, f"{path}/{i}" if pointers else "")
                if isinstance(item, dict | list)
                else item
                for i, item in enumerate(v)
            ]
        return v

    return walk(value, "")


@functools.lru_cache(maxsize=1024)
def _schema_secrets(card: Card) -> frozenset[str]:
    props = card.input_schema.get("properties")
    if not isinstance(props, dict):
        return frozenset()
    return frozenset(
        k
        for k, s in props.items()
        if isinstance(s, dict) and (s.get("writeOnly") is True or s.get("format") == "password")
    )


class Cassette:
    """One cassette file and the state of one run over it (what was replayed, recorded)."""

    def __init__(
        self,
        path: str | Path,
        *,
        mode: RecordMode = "once",
        match_on: Iterable[str | Matcher] = ("tool", "digest", "args"),
        filter_args: Sequence[str] | ArgsFilter = (),
        before_record: BeforeRecord | None = None,
        record_private: Iterable[str] = (),
        redact_secrets: bool = True,
        allow_playback_repeats: bool = False,
        max_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        if mode not in RECORD_MODES:
            raise ValueError(f"cassette mode {mode!r} is not one of {', '.join(RECORD_MODES)}")
        self.path = Path(path)
        self.mode: RecordMode = mode
        self._matchers: list[Matcher] = []
        for m in match_on:
            if callable(m):
                self._matchers.append(m)
            elif m in MATCHERS:
                self._matchers.append(MATCHERS[m])
            else:
                raise ValueError(
                    f"unknown matcher {m!r}; use {', '.join(sorted(MATCHERS))} or a function"
                )
        self.match_on = tuple(match_on)
        if callable(filter_args):
            self._filter_fn: ArgsFilter | None = filter_args
            names: list[str] = []
        else:
            self._filter_fn = None
            names = list(filter_args)
        self._names = frozenset(n for n in names if not n.startswith("/"))
        self._pointers = frozenset(n for n in names if n.startswith("/"))
        self.before_record = before_record
        self.record_private = frozenset(record_private)
        self.redact_secrets = redact_secrets
        self.allow_playback_repeats = allow_playback_repeats
        self.max_bytes = max_bytes
        self.name = self.path.stem
        self.existed = False
        self.play_count = 0
        self.recorded = 0
        self._cards: dict[str, dict[str, Any]] = {}
        self._interactions: list[dict[str, Any]] = []
        self._played: list[bool] = []
        self._by_tool: dict[str, list[int]] = {}
        self._loaded = 0
        self._dirty = False
        self._disk: list[dict[str, Any]] = []  # the file's interactions as last read or written
        self._unsaved: list[dict[str, Any]] = []
        self._sig: tuple[int, int, int] | None = None
        self._opened = False
        self._registered: list[tuple[Runtime, Card]] = []

    # -- lifecycle ------------------------------------------------------------------------

    def open(self) -> Cassette:
        """Load the file (when the mode reads it); a broken file raises and is left alone."""
        if self._opened:
            return self
        # The signature must describe the version read: taken apart (stat, then read),
        # another process writing in between makes save() believe the file unchanged and
        # overwrite that process's recordings. A file created after the stat is merged by save().
        self._sig = files.signature(self.path)
        self.existed = self._sig is not None
        if self.existed and self.mode != "rewrite":
            data, self._sig = files.read_versioned(self.path, max_bytes=self.max_bytes)
            self.name = data["name"]
            self._cards = dict(data["cards"])
            self._interactions = list(data["interactions"])
        self._loaded = len(self._interactions)
        self._disk = list(self._interactions)
        self._played = [False] * self._loaded
        for i, rec in enumerate(self._interactions):
            self._by_tool.setdefault(rec["tool"], []).append(i)
        self._dirty = self.mode == "rewrite"
        self._opened = True
        return self

    @property
    def replays(self) -> bool:
        """True when recordings in the file answer calls."""
        return self.mode in ("new_episodes", "none") or (self.mode == "once" and self.existed)

    @property
    def records(self) -> bool:
        """True when calls with no recording run live and are recorded."""
        return self.mode in ("new_episodes", "all", "rewrite") or (
            self.mode == "once" and not self.existed
        )

    @property
    def interactions(self) -> list[dict[str, Any]]:
        """The recordings (loaded and new), as they are or will be written."""
        return self._interactions

    @property
    def all_played(self) -> bool:
        """True when every recording loaded from the file was replayed."""
        return all(self._played)

    def register_cards(self, runtime: Runtime) -> list[str]:
        """Add the recorded cards of tools ``runtime`` does not have, so they replay offline."""
        added = []
        known = runtime._cards  # the registry itself: hidden and capability-gated cards count too
        for name, data in self._cards.items():
            if name in known:
                continue
            card = dataclasses.replace(Card.from_dict(data, where=str(self.path)), root="memory")
            runtime.add_card(card)
            self._registered.append((runtime, card))
            added.append(name)
        return added

    def save(self) -> None:
        """Write the file now if anything changed (atomically).

        Another process may have written the same file since: its recordings are
        kept and this run's new ones appended, under a lock on the directory.
        """
        if not self._dirty:
            return
        with files.locked(self.path.parent):
            if files.signature(self.path) != self._sig:
                data, self._sig = files.read_versioned(self.path, max_bytes=self.max_bytes)
                self._disk = list(data["interactions"])
                self._cards = {**data["cards"], **self._cards}
            self._disk.extend(self._unsaved)
            files.write(
                self.path,
                {
                    "skillyard_cassette": files.FORMAT_VERSION,
                    "name": self.name,
                    "cards": self._cards,
                    "interactions": self._disk,
                },
            )
            self._sig = files.signature(self.path)
        self._unsaved.clear()
        self._dirty = False

    def close(self) -> None:
        """Save, and remove the cards :meth:`register_cards` added."""
        try:
            self.save()
        finally:
            for runtime, card in self._registered:
                if runtime._cards.get(card.name) is card:  # a real skill loaded since stays
                    runtime.remove_card(card.name)
            self._registered.clear()

    # -- the call -------------------------------------------------------------------------

    def request(self, ctx: CallContext) -> dict[str, Any]:
        """What a call looks like to matchers: tool, digest, principal, filtered args, hash."""
        card = ctx.card
        # a plain-JSON copy: what the file can hold, and safe from the filter's edits
        args: dict[str, Any] = orjson.loads(orjson.dumps(ctx.args, default=str))
        if self._filter_fn is not None:
            args = self._filter_fn(card.name, args)
        names = self._names
        schema_names = _schema_secrets(card)
        if schema_names:
            names = names | schema_names
        args = redact(args, names, self._pointers, self.redact_secrets)
        return {
            "tool": card.name,
            "digest": card.digest,
            "principal": ctx.caller.principal,
            "privacy": card.policy.privacy,
            "args": args,
            "args_sha256": files.args_digest(canonical(args)),
        }

    def _find(self, req: dict[str, Any], matchers: list[Matcher]) -> int | None:
        candidates = self._by_tool.get(req["tool"], ())
        for i in candidates:
            if (
                i < self._loaded
                and not self._played[i]
                and all(m(req, self._interactions[i]) for m in matchers)
            ):
                return i
        if self.allow_playback_repeats:
            for i in candidates:
                if i < self._loaded and all(m(req, self._interactions[i]) for m in matchers):
                    return i
        return None

    async def handle(self, ctx: CallContext, call_next: CallNext) -> CallResult:
        """Replay a recording of this call, or run it and record it, as the mode says."""
        t0 = time.perf_counter_ns()
        self.open()
        req = self.request(ctx)
        privacy = ctx.card.policy.privacy
        private = privacy in PRIVATE_MODES and privacy not in self.record_private
        if self.replays:
            i = self._find(req, self._matchers)
            if i is not None:
                self._played[i] = True
                self.play_count += 1
                ctx.notes["memo.source"] = "cassette"
                return self._replay(ctx, self._interactions[i], t0)
            if not self.records:
                raise self._miss(ctx, req, private)
        try:
            result = await call_next(ctx)
        except CassetteMiss:
            raise
        except SkillyardError as exc:
            if not private:
                self._record(ctx, req, error=exc)
            raise
        if not private and result.decision.phase == "completed":
            self._record(ctx, req, result=result)
        return result

    def _replay(self, ctx: CallContext, rec: dict[str, Any], t0: int) -> CallResult:
        if "error" in rec:
            raise self._rebuild_error(ctx, rec["error"])
        fields = orjson.loads(orjson.dumps(rec["result"]))  # callers may mutate what they get
        return served(ctx, fields, "cassette", t0)

    def _rebuild_error(self, ctx: CallContext, err: dict[str, Any]) -> SkillyardError:
        cls = files.error_class(err["type"]) or SkillyardError
        exc = cls.__new__(cls)
        details = dict(err.get("details") or {})
        SkillyardError.__init__(
            exc,
            err["message"],
            tool=ctx.card.name,
            call_id=ctx.call_id,
            code=err.get("code") or cls.code,
            details=details,
        )
        for attr in ("pointer", "file", "field"):  # the extra attributes some errors carry
            if attr in details:
                setattr(exc, attr, details[attr])
        if isinstance(exc, ManifestError):
            exc.reason = err["message"]
        exc.details["replayed_from"] = str(self.path)
        ctx.notes["memo.source"] = "cassette"
        return exc

    def _miss(self, ctx: CallContext, req: dict[str, Any], private: bool) -> CassetteMiss:
        tool = ctx.card.name
        if private:
            shown = f"args sha256 {req['args_sha256'][:16]}..."
        else:
            text = canonical(req["args"]).decode()
            shown = text if len(text) <= 200 else text[:197] + "..."
        if not self.path.exists():
            why = f"cassette {self.path} does not exist, and mode {self.mode!r} only replays"
        elif self.mode == "once":
            why = (
                f"cassette {self.path} was recorded already (mode 'once') and has no recording "
                "for this call"
            )
        else:
            why = f"no recording in cassette {self.path} matches this call (mode 'none')"
        hints = []
        same = [i for i in self._by_tool.get(tool, ()) if i < self._loaded]
        no_digest = [m for m in self._matchers if m is not MATCHERS["digest"]]
        if same and len(no_digest) < len(self._matchers) and self._find(req, no_digest) is not None:
            hints.append(
                "it was recorded against another version of the skill (another digest); "
                "leave 'digest' out of match_on to replay it anyway"
            )
        elif any(self._played[i] for i in same) and self.allow_playback_repeats is False:
            hints.append("its recordings may all have been replayed already")
        if private:
            hints.append(
                f"the card's privacy is {ctx.card.policy.privacy!r}: its calls are recorded only "
                "when record_private opts in"
            )
        hints.append(
            "record it with mode 'new_episodes', or re-record the file with mode 'rewrite'"
        )
        return CassetteMiss(
            f"{tool}({shown}): {why}; " + "; ".join(hints),
            tool=tool,
            call_id=ctx.call_id,
            details={
                "cassette": str(self.path),
                "mode": self.mode,
                "args_sha256": req["args_sha256"],
            },
        )

    def _record(
        self,
        ctx: CallContext,
        req: dict[str, Any],
        *,
        result: CallResult | None = None,
        error: SkillyardError | None = None,
    ) -> None:
        card = ctx.card
        rec: dict[str, Any] = {
            "tool": card.name,
            "digest": card.digest,
            "principal": ctx.caller.principal,
            "privacy": card.policy.privacy,
        }
        if card.policy.privacy in PRIVATE_MODES:
            rec["args_sha256"] = req["args_sha256"]  # opted in: the result, never the arguments
        else:
            rec["args"] = req["args"]
            rec["args_sha256"] = req["args_sha256"]
        if result is not None:
            fields = orjson.loads(orjson.dumps(result_fields(result), default=str))
            rec["result"] = redact(fields, frozenset(), frozenset(), self.redact_secrets)
        elif error is not None:
            rec["error"] = {
                "type": type(error).__name__,
                "code": error.code,
                "message": error.message,
                "details": redact(
                    orjson.loads(orjson.dumps(error.details, default=str)),
                    frozenset(),
                    frozenset(),
                    self.redact_secrets,
                ),
            }
        rec["decision"] = _decision(ctx)
        rec["recorded_at"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if self.before_record is not None:
            hooked = self.before_record(copy.deepcopy(rec))
            if hooked is None:
                return
            rec = hooked
        # check now, so a hook's mistake fails here and not when the file is next read
        rec = files._interaction(len(self._interactions), rec, self.path)
        self._interactions.append(rec)
        self._unsaved.append(rec)
        self._played.append(True)
        self._by_tool.setdefault(rec["tool"], []).append(len(self._interactions) - 1)
        card_data = card.to_dict()
        card_data.pop("source", None)
        self._cards[card.name] = card_data
        self.recorded += 1
        self._dirty = True
        self.save()


def _decision(ctx: CallContext) -> dict[str, Any] | None:
    """The gate's decision for this call, if the gate left one in ``ctx.notes``."""
    for key in ("gate.decision", "decision"):
        value = ctx.notes.get(key)
        if value is None:
            continue
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        if isinstance(value, dict):
            loaded: dict[str, Any] = orjson.loads(orjson.dumps(value, default=str))
            return loaded
    return None
