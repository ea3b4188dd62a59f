"""Operator grants: the runtime's ``[grants]`` config narrows what packages declare.

::

    [grants]
    default = "declared"          # or "none": skills no rule matches get nothing

    [grants."weather"]            # a skill id, or a glob such as "community-*"
    http = ["api.weather.gov"]    # same shapes as [permissions]; an absent kind is not narrowed
    fs = []                       # an empty list grants nothing of that kind

Every matching rule applies (they intersect), so a grant can only take away. A
package whose required (non-optional) declarations are not covered by its grants is
refused at load time with a message naming the requirement and the rule.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from skillyard.errors import ConfigError, ManifestError, PermissionDenied
from skillyard.host.permissions import KINDS, parse_permissions

# A grant layer that grants nothing of any kind (``default = "none"``, no matching rule).
NOTHING: dict[str, Any] = {
    "fs": [],
    "http": {
        "hosts": [],
        "max_response_bytes": 1,
        "timeout_sec": 1.0,
        "allow_private": False,
        "allow_loopback": False,
    },
    "shell": {"programs": [], "cwd": [], "timeout_sec": 1.0, "max_output_bytes": 1},
    "env": [],
    "models": [],
    "tools": [],
    "invoke": [],
    "can_be_invoked_by": [],
}


@dataclass(frozen=True)
class Layer:
    """One narrowing layer: normalised permissions and where they came from."""

    source: str
    perms: Mapping[str, Any]


@dataclass(frozen=True)
class Grants:
    """The parsed ``[grants]`` section of the runtime config."""

    default: Literal["declared", "none"] = "declared"
    rules: tuple[tuple[str, Layer], ...] = ()

    @classmethod
    def from_config(cls, raw: Any, *, file: str = "config.toml") -> Grants:
        """Parse ``runtime.config["grants"]``; raises ConfigError naming the field."""
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{file}: grants: expected a table of skill id (or glob) = table")
        default = raw.get("default", "declared")
        if default not in ("declared", "none"):
            raise ConfigError(f"{file}: grants.default: {default!r} is not 'declared' or 'none'")
        rules = []
        for key, value in raw.items():
            if key == "default":
                continue
            if not isinstance(value, Mapping):
                raise ConfigError(f"{file}: grants.{key}: expected a table of permission kinds")
            try:
                perms = parse_permissions(value, file=file, path=f'grants."{key}"')
            except ManifestError as exc:
                raise ConfigError(exc.message) from exc
            if "optional" in perms:
                raise ConfigError(f'{file}: grants."{key}".optional: only packages mark optional')
            rules.append((str(key), Layer(f'[grants."{key}"] in {file}', perms)))
        return cls(default=default, rules=tuple(rules))

    def layers_for(self, skill_id: str) -> tuple[Layer, ...]:
        """The grant layers that narrow ``skill_id`` (every matching rule)."""
        out = tuple(layer for pat, layer in self.rules if fnmatch.fnmatchcase(skill_id, pat))
        if not out and self.default == "none":
            return (Layer('[grants] default = "none"', NOTHING),)
        return out


# -- does a grant cover a declaration? ---------------------------------------------------


def _pattern_covers(grant: str, declared: str) -> bool:
    return grant == declared or fnmatch.fnmatchcase(declared, grant)


def _host_covers(grant: str, declared: str) -> bool:
    if grant in ("*", declared):
        return True
    return grant.startswith("*.") and declared.endswith(grant[1:])


def _ports_cover(grant: list[int] | None, declared: list[int] | None) -> bool:
    """``None`` is any port: a grant of any port covers all, a declared any needs one."""
    if grant is None:
        return True
    return declared is not None and set(declared) <= set(grant)


def _fs_covers(grants: list[Mapping[str, Any]], entry: Mapping[str, Any]) -> bool:
    want = entry["path"].rstrip("/") or "/"
    for g in grants:
        if g["base"] != entry["base"] or (entry["mode"] == "rw" and g["mode"] != "rw"):
            continue
        have = g["path"].rstrip("/") or "/"
        if have in (".", want) or want.startswith(have + "/") or fnmatch.fnmatchcase(want, have):
            return True
        if have.endswith("/**") and (want == have[:-3] or want.startswith(have[:-2])):
            return True
    return False


def unmet(declared: Mapping[str, Any], layer: Layer) -> list[str]:
    """Required declarations ``layer`` does not cover, each as a readable sentence."""
    g = layer.perms
    optional = set(declared.get("optional", ()))
    out: list[str] = []
    for kind in KINDS:
        if kind not in declared or kind not in g or kind == "can_be_invoked_by":
            continue
        if kind in optional:
            continue
        d = declared[kind]
        have = g[kind]
        if kind == "fs":
            for i, entry in enumerate(d):
                if not entry["optional"] and not _fs_covers(have, entry):
                    out.append(f"permissions.fs[{i}] {entry['mode']} {entry['path']!r}")
        elif kind == "http":
            for i, h in enumerate(d["hosts"]):
                ok = any(
                    _host_covers(gh["host"], h["host"])
                    and set(h["methods"]) <= set(gh["methods"])
                    and _ports_cover(gh["ports"], h["ports"])
                    for gh in have["hosts"]
                )
                if not ok:
                    out.append(
                        f"permissions.http.hosts[{i}] {h['host']!r} {'/'.join(h['methods'])}"
                    )
            for flag in ("allow_private", "allow_loopback"):
                if d[flag] and not have[flag]:
                    out.append(f"permissions.http.{flag}")
        elif kind == "shell":
            for i, prog in enumerate(d["programs"]):
                if prog not in have["programs"]:
                    out.append(f"permissions.shell.programs[{i}] {prog!r}")
        else:
            for i, item in enumerate(d):
                if not any(_pattern_covers(p, item) for p in have):
                    out.append(f"permissions.{kind}[{i}] {item!r}")
    return out


def admit(skill_id: str, declared: Mapping[str, Any], grants: Grants, *, file: str) -> None:
    """Refuse (PermissionDenied) a package whose required permissions are not granted."""
    for layer in grants.layers_for(skill_id):
        missing = unmet(declared, layer)
        if missing:
            raise PermissionDenied(
                f"{file}: skill {skill_id!r} refused: {layer.source} does not grant "
                f"{'; '.join(missing)}. Grant it there, or mark it optional in the manifest "
                "(e.g. http = {hosts = [...], optional = true})",
                details={"skill_id": skill_id, "missing": missing, "grant": layer.source},
            )


__all__ = ["NOTHING", "Grants", "Layer", "admit", "unmet"]
