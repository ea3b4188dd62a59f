"""Ed25519 keys for approvers and policy signers (``cryptography`` is imported here only).

A key file is JSON, written with mode 0600::

    {"kind": "skillyard-ed25519-key", "id": "alice",
     "private_key": "<base64 raw 32 bytes>", "public_key": "<base64 raw 32 bytes>"}

Pinned public keys in the runtime config are the base64 of the raw 32-byte key,
optionally prefixed ``ed25519:``.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from pathlib import Path
from typing import Any

import orjson

from skillyard.errors import ConfigError

KEY_KIND = "skillyard-ed25519-key"
KEY_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: Any, *, what: str, size: int | None = None) -> bytes:
    """Decode strict base64, raising ValueError that names ``what``."""
    if not isinstance(text, str):
        raise ValueError(f"{what} must be a base64 string")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError(f"{what} is not valid base64") from exc
    if size is not None and len(raw) != size:
        raise ValueError(f"{what} must be {size} bytes, got {len(raw)}")
    return raw


def parse_public_key(text: Any, *, where: str) -> bytes:
    """A pinned public key (``ed25519:BASE64`` or ``BASE64``) as 32 raw bytes."""
    if isinstance(text, str) and text.startswith("ed25519:"):
        text = text[len("ed25519:") :]
    try:
        return unb64(text, what=where, size=32)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}; expected 'ed25519:<base64 of 32 bytes>'") from exc


def generate(key_id: str) -> dict[str, str]:
    """A new key pair as the JSON key-file object."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    if not KEY_ID_RE.match(key_id):
        raise ConfigError(
            f"key id {key_id!r} is not valid: use letters, digits, '_', '.', '@', '-' (64 at most)"
        )
    priv = Ed25519PrivateKey.generate()
    raw = priv.private_bytes_raw()
    pub = priv.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"kind": KEY_KIND, "id": key_id, "private_key": b64(raw), "public_key": b64(pub)}


def write_key_file(path: Path, key: dict[str, str]) -> None:
    """Write a private key file readable by its owner only (refuses to overwrite)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(orjson.dumps(key, option=orjson.OPT_INDENT_2) + b"\n")


def load_key_file(path: str | Path) -> tuple[str, bytes]:
    """``(key id, raw private key)`` from a key file; errors never echo the key."""
    p = Path(path)
    try:
        data = orjson.loads(p.read_bytes())
    except FileNotFoundError as exc:
        raise ConfigError(
            f"key file {p} does not exist; create one with `skillyard approve keygen`"
        ) from exc
    except orjson.JSONDecodeError as exc:
        raise ConfigError(
            f"key file {p} is not JSON ({exc.msg}); expected a skillyard key file"
        ) from None
    if not isinstance(data, dict) or data.get("kind") != KEY_KIND:
        raise ConfigError(f"key file {p} is not a skillyard key file (kind {KEY_KIND!r})")
    key_id = data.get("id")
    if not isinstance(key_id, str) or not KEY_ID_RE.match(key_id):
        raise ConfigError(f"key file {p}: field 'id' is missing or invalid")
    try:
        raw = unb64(data.get("private_key"), what="private_key", size=32)
    except ValueError as exc:
        raise ConfigError(f"key file {p}: {exc}") from None
    return key_id, raw


def public_of(private_raw: bytes) -> bytes:
    """The raw public key of a raw private key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    priv = Ed25519PrivateKey.from_private_bytes(private_raw)
    return priv.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def sign(private_raw: bytes, message: bytes) -> str:
    """Base64 Ed25519 signature of ``message``."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return b64(Ed25519PrivateKey.from_private_bytes(private_raw).sign(message))


def verify(public_raw: bytes, signature_b64: Any, message: bytes) -> bool:
    """True when ``signature_b64`` is a valid Ed25519 signature of ``message`` by the key."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        sig = unb64(signature_b64, what="signature", size=64)
        Ed25519PublicKey.from_public_bytes(public_raw).verify(sig, message)
    except (ValueError, InvalidSignature):
        return False
    return True
