"""Image URLs (only when allowed): one resolution, a pinned connection, public addresses only, one deadline."""

from __future__ import annotations

import http.server
import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import ecso_core.images as images_module
from conftest import png_bytes
from ecso_core import ImageError, ImageLimits
from ecso_core.images import is_public_address, load_image


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "::127.0.0.1",  # IPv4-compatible
        "::ffff:127.0.0.1",  # IPv4-mapped
        "::ffff:10.0.0.1",
        "64:ff9b::7f00:1",  # NAT64
        "64:ff9b::a00:1",
        "64:ff9b:1::7f00:1",
        "2002:7f00:1::",  # 6to4
        "2002:a00:1::",
        "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo
        "224.0.0.1",
        "ff02::1",
    ],
)
def test_every_non_global_form_is_refused(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is False


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "::ffff:8.8.8.8"])
def test_global_addresses_pass(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is True


@pytest.mark.parametrize("host", ["[::127.0.0.1]", "[::ffff:127.0.0.1]", "[64:ff9b::7f00:1]", "127.1", "0x7f000001"])
def test_literal_private_hosts_in_urls_are_refused(host: str) -> None:
    with pytest.raises(ImageError, match="non-public"):
        load_image(f"http://{host}/secret.png", allow_urls=True)


class Server:
    """A loopback image server that records what it was asked."""

    def __init__(self, trickle: bool = False) -> None:
        self.requests: list[dict[str, str]] = []
        body, owner = png_bytes("green", (5, 5)), self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests.append({"path": self.path, "host": self.headers.get("Host", "")})
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if trickle:
                    try:
                        for byte in body:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(0.05)
                    except (BrokenPipeError, ConnectionResetError):
                        return  # the client gave up at its deadline: what the test expects
                else:
                    self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def secret_server() -> Iterator[Server]:
    server = Server()
    yield server
    server.server.shutdown()


def resolver(*answers: str) -> Any:
    """A getaddrinfo that answers each call with the next address (the last one repeats)."""
    calls: list[str] = []

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        try:
            address = str(ipaddress.ip_address(host))  # a literal resolves to itself, as a real resolver does
        except ValueError:
            calls.append(host)
            address = answers[min(len(calls) - 1, len(answers) - 1)]
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (address, port))]

    getaddrinfo.calls = calls  # type: ignore[attr-defined]
    return getaddrinfo


def test_a_rebinding_resolver_cannot_steer_the_fetch_to_loopback(
    secret_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # First answer public (passes the check), every later answer loopback: the old fetch resolved twice.
    fake = resolver("93.184.216.34", "127.0.0.1")
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    with pytest.raises(ImageError):
        load_image(f"http://rebind.test:{secret_server.port}/secret.png", allow_urls=True)
    assert secret_server.requests == []  # the loopback secret was never asked for
    assert fake.calls == ["rebind.test"]  # resolved once; the connection went to the checked address


def test_the_pinned_connection_keeps_the_host_name(secret_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", resolver("127.0.0.1"))
    monkeypatch.setattr(images_module, "is_public_address", lambda address: True)  # let loopback stand in
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # proxies from the environment are not used
    image = load_image(f"http://images.test:{secret_server.port}/ok.png", allow_urls=True)
    assert image.size == (5, 5)
    assert secret_server.requests == [{"path": "/ok.png", "host": f"images.test:{secret_server.port}"}]


def test_the_deadline_covers_the_whole_fetch(monkeypatch: pytest.MonkeyPatch) -> None:
    slow = Server(trickle=True)  # ~70 bytes at 20 bytes/s: more than 3 s in all, each read fast
    monkeypatch.setattr(images_module, "is_public_address", lambda address: True)
    start = time.perf_counter()
    with pytest.raises(ImageError, match="longer than 1 s"):
        load_image(f"http://127.0.0.1:{slow.port}/slow.png", ImageLimits(url_timeout_s=1.0), allow_urls=True)
    assert time.perf_counter() - start < 2.0
    slow.server.shutdown()
