"""http.request against a real server on loopback, and the address attack suite."""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from skillyard.host.net import classify
from tests.host.conftest import Probe

RELEASE = threading.Event()


class Handler(BaseHTTPRequestHandler):
    seen_hosts: list[str] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        Handler.seen_hosts.append(self.headers.get("Host", ""))
        port = self.server.server_address[1]
        routes = {
            "/hello": (200, b"hi there", {"X-Test": "1"}),
            "/binary": (200, b"\xff\xfe\x00", {}),
            "/big": (200, b"x" * 5000, {}),
            "/to-meta": (302, b"", {"Location": "http://169.254.169.254/latest/meta-data/"}),
            "/to-localhost": (302, b"", {"Location": f"http://localhost:{port}/hello"}),
            "/to-hello": (302, b"", {"Location": "/hello"}),
            "/loop": (302, b"", {"Location": "/loop"}),
            "/to-file": (302, b"", {"Location": "file:///etc/passwd"}),
        }
        if self.path == "/slow":
            RELEASE.wait(10)
            self._send(200, b"late")
            return
        status, body, headers = routes.get(self.path, (404, b"no", {}))
        self._send(status, body, headers)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self._send(201, b"got " + self.rfile.read(length))


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    RELEASE.set()
    srv.shutdown()
    srv.server_close()


LOOPBACK_OK = {"http": {"hosts": ["127.0.0.1"], "allow_loopback": True}}


def test_real_request_to_an_allowed_loopback_server(make_probe, server: str) -> None:
    p = make_probe(LOOPBACK_OK)
    out = p.value("http.request", method="GET", url=f"{server}/hello")
    assert out["status"] == 200 and out["body"] == "hi there" and out["headers"]["x-test"] == "1"
    posted = p.value("http.request", method="POST", url=f"{server}/post", body="data")
    assert posted["status"] == 201 and posted["body"] == "got data"
    binary = p.value("http.request", method="GET", url=f"{server}/binary")
    assert binary["body"] is None and binary["body_b64"] == "//4A"
    followed = p.value("http.request", method="GET", url=f"{server}/to-hello")
    assert followed["body"] == "hi there" and followed["url"].endswith("/hello")


def test_loopback_needs_allow_loopback(make_probe, server: str) -> None:
    p = make_probe({"http": ["127.0.0.1"]})
    assert "loopback address" in p.denied("http.request", url=f"{server}/hello")


@pytest.mark.parametrize(
    "host",
    [
        "169.254.169.254",
        "[fd00:ec2::254]",
        "100.100.100.200",
        "169.254.1.1",
        "[::ffff:169.254.169.254]",
    ],
    ids=["aws-metadata", "aws-ipv6-metadata", "alibaba-metadata", "link-local", "mapped-metadata"],
)
def test_metadata_and_link_local_are_refused_even_when_listed(make_probe, host: str) -> None:
    bare = host.strip("[]")
    p = make_probe({"http": {"hosts": [bare], "allow_private": True, "allow_loopback": True}})
    message = p.denied("http.request", url=f"http://{host}/latest/meta-data/")
    assert "never reachable" in message


@pytest.mark.parametrize(
    "host,kind",
    [
        ("10.0.0.1", "private"),
        ("192.168.1.1", "private"),
        ("172.16.0.1", "private"),
        ("[::1]", "loopback"),
        ("0.0.0.0", "loopback"),
        ("[::ffff:127.0.0.1]", "loopback"),
        ("100.64.0.1", "private"),
    ],
)
def test_private_and_loopback_addresses_are_refused(make_probe, host: str, kind: str) -> None:
    p = make_probe({"http": [host.strip("[]")]})
    assert f"a {kind} address" in p.denied("http.request", url=f"http://{host}/")


def test_names_resolving_to_loopback_are_refused(make_probe) -> None:
    p = make_probe({"http": ["localhost"]})
    assert "'localhost' resolves to" in p.denied("http.request", url="http://localhost:9/")


def test_redirects_are_checked_again(make_probe, server: str) -> None:
    p = make_probe({"http": {"hosts": ["127.0.0.1", "169.254.169.254"], "allow_loopback": True}})
    assert "metadata" in p.denied("http.request", url=f"{server}/to-meta")
    assert "not on the allow-list" in p.denied("http.request", url=f"{server}/to-localhost")
    assert p.error("http.request", url=f"{server}/loop")["code"] == "too_many_redirects"
    assert "scheme 'file'" in p.denied("http.request", url=f"{server}/to-file")


@pytest.mark.parametrize(
    "host",
    [
        "2130706433",
        "0x7f.1",
        "0177.0.0.1",
        "127.1",
        "[::ffff:7f00:1]",
        "[0:0:0:0:0:ffff:127.0.0.1]",
    ],
    ids=["decimal", "hex", "octal", "short", "mapped-hex", "mapped-long"],
)
def test_odd_spellings_of_loopback_are_refused(make_probe, host: str) -> None:
    """Classic SSRF bypasses: the allow-list says any host, the address still decides."""
    p = make_probe({"http": ["*"]})
    assert "a loopback address" in p.denied("http.request", url=f"http://{host}:9/")


def test_hosts_methods_schemes_and_urls(make_probe, server: str) -> None:
    p = make_probe(
        {"http": {"hosts": [{"host": "127.0.0.1", "methods": ["GET"]}], "allow_loopback": True}}
    )
    assert "not on the allow-list" in p.denied("http.request", url="http://example.com/")
    assert "POST" in p.denied("http.request", method="POST", url=f"{server}/post")
    p.denied("http.request", url="file:///etc/passwd")
    p.denied("http.request", url="gopher://127.0.0.1/")
    assert p.error("http.request", url="http://u:p@127.0.0.1/")["code"] == "invalid_argument"
    bad = p.error("http.request", url=f"{server}/hello", headers={"Host": "evil"})
    assert bad["code"] == "invalid_argument"
    assert p.error("http.request", url=f"{server}/hello", headers={"X": "a\r\nB: c"})["code"] == (
        "invalid_argument"
    )
    assert "no http permission" in make_probe({}).denied("http.request", url="http://a.com/")


def test_response_cap_and_timeout(make_probe, server: str) -> None:
    p = make_probe(
        {"http": {"hosts": ["127.0.0.1"], "allow_loopback": True, "max_response_bytes": 1000}}
    )
    assert p.error("http.request", url=f"{server}/big")["code"] == "too_large"
    out = p.error("http.request", url=f"{server}/slow", timeout_ms=300)
    assert out["code"] == "timeout"


def test_resolved_address_is_pinned(
    make_probe, server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name is resolved once, checked, and the connection goes to that address."""
    port = int(server.rsplit(":", 1)[1])
    answers = iter([["127.0.0.1"], ["93.184.216.34"]])
    calls: list[str] = []
    real = socket.getaddrinfo

    def fake(host: Any, *args: Any, **kw: Any) -> Any:
        if host != "rebind.test":
            return real(host, *args, **kw)
        calls.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in next(answers)]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    p = make_probe({"http": {"hosts": ["rebind.test"], "allow_loopback": True}})
    Handler.seen_hosts.clear()
    out = p.value("http.request", url=f"http://rebind.test:{port}/hello")
    assert out["body"] == "hi there"
    assert calls == ["rebind.test"]
    assert Handler.seen_hosts == [f"rebind.test:{port}"]


def test_mixed_answers_are_refused(make_probe, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(host: Any, port: Any, *args: Any, **kw: Any) -> Any:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, 80))
            for ip in ("93.184.216.34", "10.1.2.3")
        ]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    p = make_probe({"http": ["mixed.test"]})
    assert "10.1.2.3, a private address" in p.denied("http.request", url="http://mixed.test/")


@pytest.mark.parametrize(
    "ip,kind",
    [
        ("8.8.8.8", "public"),
        ("127.0.0.2", "loopback"),
        ("::", "loopback"),
        ("2002:a9fe:a9fe::1", "metadata"),
        ("224.0.0.1", "reserved"),
        ("fe80::1", "link_local"),
        ("fc00::1", "private"),
        ("2606:4700:4700::1111", "public"),
    ],
)
def test_classify(ip: str, kind: str) -> None:
    assert classify(ipaddress.ip_address(ip)) == kind


def test_probe_is_reused_across_requests(make_probe, server: str) -> None:
    p: Probe = make_probe(LOOPBACK_OK)
    for _ in range(3):
        assert p.value("http.request", url=f"{server}/hello")["status"] == 200
