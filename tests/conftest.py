"""Shared fixtures: the network is off, images are made here, tiny models build once per session."""

from __future__ import annotations

import io
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

# Set before transformers / huggingface_hub are imported anywhere: they read it at import time.
os.environ["HF_HUB_OFFLINE"] = "1"

_real_connect = socket.socket.connect


def _loopback_only(self: socket.socket, address: object) -> None:
    host = address[0] if isinstance(address, tuple) else address
    if (
        isinstance(host, str)
        and (host.startswith("127.") or host in ("::1", "localhost"))
        or self.family == socket.AF_UNIX
    ):
        return _real_connect(self, address)
    raise OSError(f"network access is disabled in tests (tried {address!r})")


@pytest.fixture(autouse=True, scope="session")
def _no_network() -> Iterator[None]:
    """Tests never reach the internet: only loopback connections are allowed."""
    socket.socket.connect = _loopback_only  # type: ignore[method-assign]
    yield
    socket.socket.connect = _real_connect  # type: ignore[method-assign]


@pytest.fixture(autouse=True, scope="session")
def _tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """tiny-random models are built into a per-session cache unless ECSO_CACHE is set."""
    os.environ.setdefault("ECSO_CACHE", str(tmp_path_factory.mktemp("ecso-cache")))


def png_bytes(color: str = "red", size: tuple[int, int] = (32, 24), mode: str = "RGB") -> bytes:
    """A small PNG, encoded."""
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def red_png() -> bytes:
    return png_bytes("red")


@pytest.fixture
def image_file(tmp_path: Path) -> Path:
    path = tmp_path / "picture.png"
    path.write_bytes(png_bytes("blue", (40, 30)))
    return path


@pytest.fixture
def images_jsonl(tmp_path: Path) -> Path:
    """A JSONL benchmark of three image cases next to their picture (the eval attack tests)."""
    folder = tmp_path / "cases"
    folder.mkdir()
    Image.new("RGB", (16, 16), "gray").save(folder / "a.png")
    rows = [{"image": "a.png", "query": f"q{i}"} for i in range(3)]
    path = folder / "cases.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path
