"""``http.request``: outbound HTTP to allowed hosts, resolution-aware (httpx, imported lazily).

For every hop (the first request and each redirect) the URL's host, port and method
are checked against the allow-list, the name is resolved once, and every address it
resolves to is classified: cloud metadata and link-local addresses are always
refused; loopback (and ``0.0.0.0``) needs ``allow_loopback``; private, shared and
other non-global ranges need ``allow_private``. The connection then goes to the
checked address itself (``Host`` header and TLS SNI keep the name), so a second DNS
answer cannot switch it (DNS rebinding). Environment proxies are ignored.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from skillyard.errors import PermissionDenied
from skillyard.host.common import arg, fail, invalid

if TYPE_CHECKING:
    import ssl

    from skillyard.host.access import Effective, HttpLimits
    from skillyard.host.api import Host

MAX_REDIRECTS = 5
MAX_BODY = 16 * 1024 * 1024
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata services (AWS/GCP/Azure/OpenStack, AWS ECS, AWS IPv6, Alibaba, Oracle).
METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",
        "169.254.170.2",
        "fd00:ec2::254",
        "100.100.100.200",
        "192.0.0.192",
        "169.254.169.123",
    )
)
_FORBIDDEN_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "upgrade"}
_ssl_context: ssl.SSLContext | None = None


def classify(ip: IPAddress) -> str:
    """``metadata``, ``link_local``, ``loopback``, ``private``, ``reserved`` or ``public``."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None:
            return classify(embedded)
    if ip in METADATA:
        return "metadata"
    if ip.is_link_local:
        return "link_local"
    if ip.is_loopback or ip.is_unspecified:
        return "loopback"
    if ip.is_multicast or ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "private"
    return "public"


def check_address(ip: IPAddress, limits: HttpLimits, host: str) -> None:
    """Refuse an address the skill may not reach (PermissionDenied naming why)."""
    kind = classify(ip)
    if kind == "public":
        return
    if kind == "loopback" and limits.allow_loopback:
        return
    if kind == "private" and limits.allow_private:
        return
    hint = {
        "metadata": "cloud metadata addresses are never reachable from skills",
        "link_local": "link-local addresses are never reachable from skills",
        "reserved": "multicast and reserved addresses are never reachable from skills",
        "loopback": "set allow_loopback = true in [permissions].http to allow it",
        "private": "set allow_private = true in [permissions].http to allow it",
    }[kind]
    raise PermissionDenied(
        f"http.request denied: {host!r} resolves to {ip}, a {kind} address; {hint}"
    )


def _split(url: Any) -> tuple[str, str, int]:
    if not isinstance(url, str) or len(url) > 8192:
        raise invalid("http.request", "params.url must be a string of at most 8192 characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise invalid("http.request", f"{url!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise PermissionDenied(
            f"http.request denied: scheme {parts.scheme!r} is not allowed; use http(s)"
        )
    if parts.username or parts.password:
        raise invalid("http.request", "credentials in the URL are not allowed; send a header")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise invalid("http.request", f"{url!r} has no host")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise invalid("http.request", f"{host!r} is not a valid host name") from None
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80)


def guard(perms: Effective, params: dict[str, Any]) -> HttpLimits:
    """The permission check for the first hop (redirects are checked again in the handler)."""
    method = arg(params, "method", str, "http.request", default="GET").upper()
    _, host, port = _split(params.get("url"))
    return perms.http_check(host, port, method)


async def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise fail(
            "http.request", "dns_error", f"cannot resolve {host!r}: {exc.strerror}"
        ) from None
    out: list[IPAddress] = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if ip not in out:
            out.append(ip)
    if not out:
        raise fail("http.request", "dns_error", f"{host!r} has no addresses")
    return out


def _headers(params: dict[str, Any]) -> dict[str, str]:
    raw = arg(params, "headers", dict, "http.request", default={})
    if len(raw) > 100:
        raise invalid("http.request", "at most 100 headers")
    out = {}
    for k, v in raw.items():
        if not isinstance(v, str) or any(c in k + v for c in "\r\n\0"):
            raise invalid("http.request", f"header {k!r} must be a string without CR, LF or NUL")
        if k.lower() in _FORBIDDEN_HEADERS:
            raise invalid("http.request", f"header {k!r} is set by the runtime")
        out[k] = v
    return out


def _body(params: dict[str, Any]) -> bytes | None:
    if params.get("body") is not None and params.get("body_b64") is not None:
        raise invalid("http.request", "give body or body_b64, not both")
    if params.get("body_b64") is not None:
        try:
            data = base64.b64decode(arg(params, "body_b64", str, "http.request"), validate=True)
        except ValueError:
            raise invalid("http.request", "params.body_b64 is not valid base64") from None
    elif params.get("body") is not None:
        data = arg(params, "body", str, "http.request").encode("utf-8")
    else:
        return None
    if len(data) > MAX_BODY:
        raise invalid("http.request", f"the body is larger than {MAX_BODY} bytes")
    return data


def _tls() -> ssl.SSLContext:
    global _ssl_context
    if _ssl_context is None:
        import ssl  # on first https use: it costs tens of milliseconds to import

        _ssl_context = ssl.create_default_context()
    return _ssl_context


async def request(host: Host, params: dict[str, Any], limits: HttpLimits) -> dict[str, Any]:
    import httpx

    method = arg(params, "method", str, "http.request", default="GET").upper()
    url = params["url"]
    headers = _headers(params)
    body = _body(params)
    timeout = min(limits.timeout_sec, host.ctx.remaining)
    timeout_ms = arg(params, "timeout_ms", int, "http.request", default=None)
    if timeout_ms is not None:
        if timeout_ms <= 0:
            raise invalid("http.request", "params.timeout_ms must be positive")
        timeout = min(timeout, timeout_ms / 1000)
    try:
        async with asyncio.timeout(timeout):
            async with httpx.AsyncClient(
                trust_env=False, follow_redirects=False, verify=_tls(), timeout=timeout
            ) as client:
                for _hop in range(MAX_REDIRECTS + 1):
                    scheme, name, port = _split(url)
                    if _hop:
                        limits = host.perms.http_check(name, port, method)
                    addresses = await _resolve(name, port)
                    for ip in addresses:
                        check_address(ip, limits, name)
                    pinned = httpx.URL(url).copy_with(host=str(addresses[0]))
                    hop_headers = dict(headers)
                    default_port = 443 if scheme == "https" else 80
                    hop_headers["Host"] = name if port == default_port else f"{name}:{port}"
                    extensions = {"sni_hostname": name} if scheme == "https" else {}
                    req = client.build_request(
                        method, pinned, headers=hop_headers, content=body, extensions=extensions
                    )
                    resp = await client.send(req, stream=True)
                    try:
                        location = resp.headers.get("location")
                        if resp.is_redirect and location:
                            new_url = str(httpx.URL(url).join(location))
                            if resp.status_code == 303 or (
                                resp.status_code in (301, 302) and method == "POST"
                            ):
                                method, body = "GET", None
                            if urlsplit(new_url).hostname != name:
                                headers = {
                                    k: v
                                    for k, v in headers.items()
                                    if k.lower() not in ("authorization", "cookie")
                                }
                            url = new_url
                            continue
                        data = bytearray()
                        async for chunk in resp.aiter_bytes():
                            data += chunk
                            if len(data) > limits.max_response_bytes:
                                raise fail(
                                    "http.request",
                                    "too_large",
                                    f"the response is larger than {limits.max_response_bytes} "
                                    "bytes (max_response_bytes)",
                                )
                        return _result(resp, bytes(data), url)
                    finally:
                        await resp.aclose()
                raise fail("http.request", "too_many_redirects", f"more than {MAX_REDIRECTS}")
    except TimeoutError:
        raise fail("http.request", "timeout", f"no complete answer within {timeout:.3g}s") from None
    except httpx.HTTPError as exc:
        raise fail("http.request", "network_error", f"{type(exc).__name__}: {exc}") from None


def _result(resp: Any, data: bytes, url: str) -> dict[str, Any]:
    headers: dict[str, str] = {}
    for k, v in resp.headers.multi_items():
        key = k.lower()
        headers[key] = f"{headers[key]}, {v}" if key in headers else v
    out: dict[str, Any] = {"status": resp.status_code, "headers": headers, "url": url}
    try:
        out["body"] = data.decode("utf-8")
    except UnicodeDecodeError:
        out["body"] = None
        out["body_b64"] = base64.b64encode(data).decode("ascii")
    return out


__all__ = ["METADATA", "check_address", "classify", "guard", "request"]
