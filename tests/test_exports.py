from __future__ import annotations

import subprocess
import sys

import skillyard


def test_public_api_is_small_and_pinned():
    assert sorted(skillyard.__all__) == sorted(
        [
            "SYSTEM",
            "CallContext",
            "CallFailed",
            "CallResult",
            "Caller",
            "Card",
            "Decision",
            "InvalidArguments",
            "InvalidOutput",
            "Limits",
            "Middleware",
            "MockTransport",
            "PermissionDenied",
            "Policy",
            "RawResult",
            "Runtime",
            "SkillNotFound",
            "SkillyardError",
            "SyncRuntime",
            "Transport",
            "TransportError",
            "__version__",
        ]
    )
    for name in skillyard.__all__:
        assert hasattr(skillyard, name)


def test_import_is_light():
    code = (
        "import sys, skillyard; heavy = ['lupa', 'wasmtime', 'mcp', 'httpx', 'cryptography', "
        "'jsonschema', 'msgpack', 'yaml', 'click', 'pydantic']; "
        "print([m for m in heavy if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_error_derives_from_the_base_and_has_a_code():
    from skillyard import errors

    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.SkillyardError)
        assert cls.code and cls.code.islower()
