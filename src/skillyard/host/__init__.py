"""The host API: what skills may ask of the runtime, permission-checked in one place.

``install(runtime)`` (listed first in ``runtime.EXTENSIONS``) gives the runtime:

- ``runtime.host_factory``: a :class:`~skillyard.host.api.Host` bound to each call
  (``ctx.host``), whose ``dispatch(method, params)`` every binding uses;
- ``runtime.models`` (:class:`~skillyard.host.models.ModelRegistry`) and
  ``runtime.host_tools`` (:class:`~skillyard.host.tools.ToolRegistry`) for the
  embedding application's callbacks;
- an admission check that refuses packages whose required permissions the
  operator's ``[grants]`` do not cover (recorded as a ``refused`` problem).

See docs/host-api.md and docs/security.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from skillyard.host.api import Host, HostServices
    from skillyard.runtime import Runtime
    from skillyard.transports.base import CallContext


def install(runtime: Runtime) -> None:
    """Bind the host API to ``runtime`` (reads the ``[grants]`` and ``[host]`` config)."""
    from skillyard.host.api import HostServices

    services = HostServices(runtime)
    runtime.host_factory = services.host_for
    runtime.admission.append(services.admit)
    # Public handles for the embedding application (not part of the Runtime class).
    setattr(runtime, "host_services", services)  # noqa: B010
    setattr(runtime, "models", services.models)  # noqa: B010
    setattr(runtime, "host_tools", services.tools)  # noqa: B010


def services_of(runtime: Runtime) -> HostServices:
    """The host services installed in ``runtime`` (typed access to models, tools, grants)."""
    services: HostServices | None = getattr(runtime, "host_services", None)
    if services is None:
        raise RuntimeError("the host API is not installed in this runtime")
    return services


def host_of(ctx: CallContext) -> Host:
    """``ctx.host`` with its full type (typed helpers, ``sync``)."""
    from skillyard.host.api import Host

    host = ctx.host
    if not isinstance(host, Host):
        raise RuntimeError("the host API is not installed in this runtime")
    return host


__all__ = ["host_of", "install", "services_of"]
