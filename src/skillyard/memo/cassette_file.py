"""Reading and writing cassette files (JSON or YAML), checked completely before use.

A cassette on disk::

    {
      "skillyard_cassette": 1,
      "name": "weather",
      "cards": {"weather-forecast": {...card...}},
      "interactions": [
        {"tool": "weather-forecast", "digest": "sha256:...", "principal": "local",
         "privacy": "allow-raw", "args": {"city": "Oslo"}, "args_sha256": "...",
         "result": {"output": {...}, "content": null, "llm_context": null,
                    "events": [], "usage": {}, "duration_us": 812.5},
         "decision": null, "recorded_at": "2026-11-21T23:40:00Z"}
      ]
    }

An interaction holds either ``result`` or ``error`` (``type``, ``code``,
``message``, ``details``). A file that does not parse or has a wrong field is
refused with an error naming the file and the field, and is never rewritten.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from skillyard import errors
from skillyard.card import PRIVACY_MODES, Card
from skillyard.errors import ConfigError, ManifestError, SkillyardError

FORMAT_VERSION = 1
MAX_DEPTH = 200
_TOP_KEYS = {"skillyard_cassette", "name", "cards", "interactions"}
_INTERACTION_KEYS = {
    "tool",
    "digest",
    "principal",
    "privacy",
    "args",
    "args_sha256",
    "result",
    "error",
    "decision",
    "recorded_at",
}
_RESULT_KEYS = {"output", "content", "llm_context", "events", "usage", "duration_us"}
_ERROR_KEYS = {"type", "code", "message", "details"}


def broken(path: Path | str, field: str, message: str) -> ConfigError:
    """The error for a bad cassette file: what, where, and what to do."""
    where = f"{field}: " if field else ""
    return ConfigError(
        f"cassette {path}: {where}{message}. Fix the file or delete it to record again "
        "(it was not changed)",
        details={"file": str(path), "field": field},
    )


def is_yaml(path: Path) -> bool:
    return path.suffix.lower() in (".yaml", ".yml")


def args_digest(canonical_args: bytes) -> str:
    return hashlib.sha256(canonical_args).hexdigest()


def _yaml_loader() -> type:
    import yaml

    class Loader(yaml.SafeLoader):
        """Safe YAML without aliases (no expansion bombs) and without implicit timestamps."""

        yaml_implicit_resolvers = {
            ch: [r for r in rs if r[0] != "tag:yaml.org,2002:timestamp"]
            for ch, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()
        }

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise yaml.composer.ComposerError(
                    None, None, "aliases (*name) are not allowed in a cassette", event.start_mark
                )
            return super().compose_node(parent, index)

    return Loader


def _json_pure(value: Any, path: str, where: Path, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise broken(where, path, f"nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, str | bool | int | float):
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _json_pure(item, f"{path}[{i}]", where, depth + 1)
        return
    if isinstance(value, dict):
        for k, item in value.items():
            if not isinstance(k, str):
                raise broken(where, path, f"object key {k!r} is not a string")
            _json_pure(item, f"{path}.{k}", where, depth + 1)
        return
    raise broken(where, path, f"{type(value).__name__} is not a JSON value")


Signature = tuple[int, int, int]


def read(path: Path, *, max_bytes: int) -> dict[str, Any]:
    """Load and check a cassette file; raises ConfigError naming the file and field."""
    return read_versioned(path, max_bytes=max_bytes)[0]


def read_versioned(path: Path, *, max_bytes: int) -> tuple[dict[str, Any], Signature]:
    """Load and check a cassette file, with the :func:`signature` of the very version read.

    The bytes and the signature come from one open file: another process replacing
    the file meanwhile cannot pair its signature with this version's contents.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise broken(path, "", f"cannot read: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as fh:
        try:
            st = os.fstat(fd)
        except OSError as exc:
            raise broken(path, "", f"cannot read: {exc.strerror}") from exc
        if st.st_size > max_bytes:
            raise broken(
                path,
                "",
                f"file is {st.st_size} bytes; the limit is {max_bytes} ([memo] max_cassette_bytes)",
            )
        try:
            raw = fh.read(max_bytes + 1)
        except OSError as exc:
            raise broken(path, "", f"cannot read: {exc.strerror}") from exc
    if len(raw) != st.st_size:  # written in place by something that is not skillyard
        raise broken(path, "", "the file changed while it was read; try again")
    return _parse(path, raw), _signature(st)


def _parse(path: Path, raw: bytes) -> dict[str, Any]:
    if is_yaml(path):
        import yaml

        try:
            text = raw.decode("utf-8")
            data = yaml.load(text, Loader=_yaml_loader())
        except UnicodeDecodeError as exc:
            raise broken(path, "", "not UTF-8 text") from exc
        except yaml.YAMLError as exc:
            raise broken(path, "(syntax)", f"not valid YAML: {exc}") from exc
        except RecursionError as exc:
            raise broken(path, "(syntax)", "nested too deeply") from exc
    else:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise broken(path, "(syntax)", f"not valid JSON: {exc}") from exc
    return check(data, path)


def check(data: Any, where: Path) -> dict[str, Any]:
    """Validate a parsed cassette and return it normalised (hashes filled in)."""
    if not isinstance(data, dict):
        raise broken(where, "", f"expected an object at the top, got {type(data).__name__}")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise broken(
            where, unknown[0], f"unknown key; allowed keys are {', '.join(sorted(_TOP_KEYS))}"
        )
    version = data.get("skillyard_cassette")
    if version != FORMAT_VERSION:
        raise broken(
            where,
            "skillyard_cassette",
            f"format version {version!r} is not {FORMAT_VERSION} "
            "(written by another skillyard version, or not a cassette)",
        )
    cards = data.get("cards", {})
    if not isinstance(cards, dict):
        raise broken(where, "cards", f"expected an object, got {type(cards).__name__}")
    for name, card in cards.items():
        try:
            parsed = Card.from_dict(card, where=str(where))
        except ManifestError as exc:
            raise broken(where, f"cards.{name}", exc.reason) from exc
        except (TypeError, ValueError) as exc:
            raise broken(where, f"cards.{name}", str(exc)) from exc
        if parsed.name != name:
            raise broken(where, f"cards.{name}.name", f"{parsed.name!r} does not match the key")
        _card_types(parsed, where, f"cards.{name}")
    interactions = data.get("interactions", [])
    if not isinstance(interactions, list):
        raise broken(where, "interactions", f"expected a list, got {type(interactions).__name__}")
    out = [_interaction(i, item, where) for i, item in enumerate(interactions)]
    name = data.get("name", where.stem)
    if not isinstance(name, str):
        raise broken(where, "name", "expected a string")
    return {"skillyard_cassette": FORMAT_VERSION, "name": name, "cards": cards, "interactions": out}


def _card_types(card: Card, where: Path, p: str) -> None:
    if not isinstance(card.input_schema, dict):
        raise broken(where, f"{p}.input_schema", "expected an object")
    if card.output_schema is not None and not isinstance(card.output_schema, dict):
        raise broken(where, f"{p}.output_schema", "expected an object or null")
    for name in ("transport", "digest", "operation", "description", "title", "version"):
        _expect(getattr(card, name), str, where, f"{p}.{name}", "a string")
    _expect(card.hidden, bool, where, f"{p}.hidden", "true or false")
    _expect(card.options, dict, where, f"{p}.options", "an object")
    _expect(card.permissions, dict, where, f"{p}.permissions", "an object")
    for i, cap in enumerate(card.capabilities):
        _expect(cap, str, where, f"{p}.capabilities[{i}]", "a string")


def _expect(value: Any, kind: type | tuple[type, ...], where: Path, field: str, what: str) -> Any:
    if isinstance(value, bool) and kind is not bool:
        raise broken(where, field, f"expected {what}, got a boolean")
    if not isinstance(value, kind):
        raise broken(where, field, f"expected {what}, got {type(value).__name__}")
    return value


def _interaction(i: int, raw: Any, where: Path) -> dict[str, Any]:
    p = f"interactions[{i}]"
    _expect(raw, dict, where, p, "an object")
    unknown = sorted(set(raw) - _INTERACTION_KEYS)
    if unknown:
        raise broken(
            where,
            f"{p}.{unknown[0]}",
            f"unknown key; allowed keys are {', '.join(sorted(_INTERACTION_KEYS))}",
        )
    tool = _expect(raw.get("tool"), str, where, f"{p}.tool", "a tool name")
    if not tool:
        raise broken(where, f"{p}.tool", "must not be empty")
    out: dict[str, Any] = {"tool": tool}
    out["digest"] = _expect(raw.get("digest", ""), str, where, f"{p}.digest", "a string")
    principal = raw.get("principal")
    if principal is not None:
        _expect(principal, str, where, f"{p}.principal", "a string")
    out["principal"] = principal
    privacy = raw.get("privacy", "allow-raw")
    if privacy not in PRIVACY_MODES:
        raise broken(where, f"{p}.privacy", f"{privacy!r} is not one of {', '.join(PRIVACY_MODES)}")
    out["privacy"] = privacy
    if "args" in raw:
        args = _expect(raw["args"], dict, where, f"{p}.args", "an object")
        _json_pure(args, f"{p}.args", where)
        out["args"] = args
        out["args_sha256"] = args_digest(orjson.dumps(args, option=orjson.OPT_SORT_KEYS))
    elif "args_sha256" in raw:
        h = _expect(raw["args_sha256"], str, where, f"{p}.args_sha256", "a sha256 hex digest")
        if len(h) != 64 or any(c not in "0123456789abcdef" for c in h):
            raise broken(where, f"{p}.args_sha256", "expected 64 lower-case hex digits")
        out["args_sha256"] = h
    else:
        raise broken(where, p, "needs args (an object) or args_sha256")
    has_result, has_error = "result" in raw, "error" in raw
    if has_result == has_error:
        raise broken(where, p, "needs exactly one of result and error")
    if has_result:
        out["result"] = _result(raw["result"], where, f"{p}.result")
    else:
        out["error"] = _error(raw["error"], where, f"{p}.error")
    decision = raw.get("decision")
    if decision is not None:
        _expect(decision, dict, where, f"{p}.decision", "an object or null")
        _json_pure(decision, f"{p}.decision", where)
    out["decision"] = decision
    recorded = raw.get("recorded_at")
    out["recorded_at"] = None if recorded is None else str(recorded)
    return out


def _result(raw: Any, where: Path, p: str) -> dict[str, Any]:
    _expect(raw, dict, where, p, "an object")
    unknown = sorted(set(raw) - _RESULT_KEYS)
    if unknown:
        raise broken(
            where, f"{p}.{unknown[0]}", f"unknown key; allowed: {', '.join(sorted(_RESULT_KEYS))}"
        )
    out = {"output": raw.get("output")}
    _json_pure(out["output"], f"{p}.output", where)
    for name in ("content", "llm_context"):
        v = raw.get(name)
        if v is not None:
            _expect(v, str, where, f"{p}.{name}", "a string or null")
        out[name] = v
    events = raw.get("events", [])
    _expect(events, list, where, f"{p}.events", "a list of objects")
    for j, event in enumerate(events):
        _expect(event, dict, where, f"{p}.events[{j}]", "an object")
    _json_pure(events, f"{p}.events", where)
    out["events"] = events
    usage = raw.get("usage", {})
    _expect(usage, dict, where, f"{p}.usage", "an object")
    _json_pure(usage, f"{p}.usage", where)
    out["usage"] = usage
    duration = raw.get("duration_us")
    if duration is not None:
        _expect(duration, (int, float), where, f"{p}.duration_us", "a number")
    out["duration_us"] = duration
    return out


def error_class(name: str) -> type[SkillyardError] | None:
    """The skillyard error class called ``name`` (only classes from the one error tree)."""
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, SkillyardError) and name in errors.__all__:
        return cls
    return None


def _error(raw: Any, where: Path, p: str) -> dict[str, Any]:
    _expect(raw, dict, where, p, "an object")
    unknown = sorted(set(raw) - _ERROR_KEYS)
    if unknown:
        raise broken(
            where, f"{p}.{unknown[0]}", f"unknown key; allowed: {', '.join(sorted(_ERROR_KEYS))}"
        )
    kind = _expect(raw.get("type"), str, where, f"{p}.type", "an error class name")
    cls = error_class(kind)
    if cls is None:
        raise broken(where, f"{p}.type", f"{kind!r} is not a skillyard error class")
    message = _expect(raw.get("message", ""), str, where, f"{p}.message", "a string")
    code = _expect(raw.get("code", cls.code), str, where, f"{p}.code", "a string")
    details = raw.get("details", {})
    _expect(details, dict, where, f"{p}.details", "an object")
    _json_pure(details, f"{p}.details", where)
    return {"type": kind, "code": code, "message": message, "details": details}


def signature(path: Path) -> Signature | None:
    """What identifies one version of a file (``None`` when there is none)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return _signature(st)


def _signature(st: os.stat_result) -> Signature:
    return (st.st_ino, st.st_mtime_ns, st.st_size)  # each atomic write makes a new inode


@contextmanager
def locked(directory: Path) -> Iterator[None]:
    """An exclusive lock on ``directory`` (flock) while a cassette in it is rewritten."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: one writer per cassette
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def write(path: Path, data: dict[str, Any]) -> None:
    """Write a cassette atomically (a reader never sees half a file; a crash loses nothing)."""
    if is_yaml(path):
        import yaml

        dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
        body = yaml.dump(
            data, Dumper=dumper, sort_keys=False, allow_unicode=True, width=100
        ).encode()
    else:
        body = orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
