"""Images: every accepted source, every refusal, limits and mode normalisation."""

from __future__ import annotations

import base64
import http.server
import io
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from conftest import png_bytes
from ecso_core import ChatRequest, ImageError, ImageLimits, ImagePart, Message, TextPart
from ecso_core import images as images_module
from ecso_core.images import image_digest, image_to_data_url, load_image, prepare_request


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_every_source_kind_loads_to_the_same_rgb_pixels(image_file: Path) -> None:
    data = image_file.read_bytes()
    b64 = base64.b64encode(data).decode()
    sources = [
        data,
        bytearray(data),
        image_file,
        str(image_file),
        b64,
        f"data:image/png;base64,{b64}",
        Image.open(image_file),
    ]
    loaded = [load_image(s) for s in sources]
    assert {img.mode for img in loaded} == {"RGB"}
    assert {image_digest(img) for img in loaded} == {image_digest(loaded[0])}
    assert loaded[0].size == (40, 30)


def test_digest_ignores_encoding_but_not_pixels() -> None:
    picture = Image.new("RGB", (9, 7), "green")
    assert image_digest(load_image(encode(picture, "PNG"))) == image_digest(load_image(encode(picture, "BMP")))
    assert image_digest(load_image(encode(picture, "PNG"))) != image_digest(load_image(png_bytes("red", (9, 7))))


def test_data_url_round_trip() -> None:
    picture = Image.new("RGB", (3, 2), "blue")
    assert image_digest(load_image(image_to_data_url(picture))) == image_digest(picture)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (b"", "empty"),
        (b"definitely not an image", "unsupported or unrecognised"),
        (png_bytes()[:60], "corrupt|truncated"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>', "SVG"),
        (b"<svg width='10' height='10'></svg>", "SVG"),
        ("data:image/svg+xml;base64," + base64.b64encode(b"<svg/>").decode(), "SVG"),
        ("data:text/plain;base64,aGVsbG8=", "non-image MIME"),
        ("data:image/png,rawdata", "base64-encoded"),
        ("http://example.com/cat.png", "refused"),
        ("https://example.com/cat.png", "refused"),
        ("file:///etc/passwd", "scheme"),
        ("ftp://host/x.png", "scheme"),
        ("   ", "empty"),
        ("/no/such/file.png", "neither an existing file nor valid base64"),
        (12345, "unsupported image source type"),
    ],
)
def test_bad_sources_raise_image_error(source: object, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        load_image(source)


def test_unsupported_raster_format_is_refused() -> None:
    ico = encode(Image.new("RGB", (16, 16)), "ICO")
    with pytest.raises(ImageError, match="unsupported"):
        load_image(ico)


def test_truncated_jpeg_is_refused() -> None:
    jpeg = encode(Image.effect_noise((64, 64), 50).convert("RGB"), "JPEG")
    with pytest.raises(ImageError, match="corrupt|truncated"):
        load_image(jpeg[: len(jpeg) // 2])


def test_byte_limits_apply_to_bytes_files_and_base64(tmp_path: Path) -> None:
    limits = ImageLimits(max_bytes=100)
    data = encode(Image.effect_noise((32, 32), 80).convert("RGB"), "PNG")
    assert len(data) > 100
    path = tmp_path / "big.png"
    path.write_bytes(data)
    for source in (data, path, base64.b64encode(data).decode()):
        with pytest.raises(ImageError, match="limit"):
            load_image(source, limits)


def test_decompression_bomb_is_refused_before_decoding() -> None:
    bomb = encode(Image.new("1", (9000, 9000)), "PNG")  # 81 Mpx in a few kB
    assert len(bomb) < 100_000
    with pytest.raises(ImageError, match="pixels"):
        load_image(bomb)
    with pytest.raises(ImageError, match="pixels"):
        load_image(png_bytes(size=(100, 100)), ImageLimits(max_pixels=5_000))


def test_modes_are_normalised_to_rgb() -> None:
    transparent = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert load_image(encode(transparent, "PNG")).getpixel((0, 0)) == (255, 255, 255)
    half = Image.new("LA", (4, 4), (0, 128))
    assert load_image(encode(half, "PNG")).getpixel((0, 0)) == (127, 127, 127)
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))
    assert load_image(encode(cmyk, "JPEG")).getpixel((0, 0))[0] > 200
    deep = Image.new("I;16", (4, 4), 65535)
    assert load_image(encode(deep, "PNG")).getpixel((0, 0)) == (255, 255, 255)
    mid = Image.new("I;16", (4, 4), 32896)
    assert load_image(encode(mid, "PNG")).getpixel((0, 0)) == (128, 128, 128)
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 255] + [0] * 765)
    assert load_image(encode(palette, "PNG")).getpixel((0, 0)) == (0, 0, 255)
    palette.info["transparency"] = 0
    assert load_image(encode(palette, "PNG", transparency=0)).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied() -> None:
    picture = Image.new("RGB", (20, 10), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    loaded = load_image(encode(picture, "JPEG", exif=exif.tobytes()))
    assert loaded.size == (10, 20)


def test_animation_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (6, 6), c) for c in ("red", "blue", "green")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    assert load_image(buffer.getvalue()).getpixel((0, 0)) == (255, 0, 0)


def test_prepare_request_loads_images_sets_digests_and_counts(red_png: bytes) -> None:
    request = ChatRequest(messages=(Message(role="user", content=(ImagePart(image=red_png), TextPart(text="q"))),))
    prepared = prepare_request(request)
    (part,) = prepared.images
    assert isinstance(part.image, Image.Image)
    assert part.digest == image_digest(part.image)
    assert prepare_request(prepared) == prepared
    too_many = ChatRequest(messages=(Message(role="user", content=tuple(ImagePart(image=red_png) for _ in range(3))),))
    with pytest.raises(ImageError, match="limit is 2"):
        prepare_request(too_many, ImageLimits(max_images=2))


def test_allowed_urls_still_refuse_private_addresses() -> None:
    with pytest.raises(ImageError, match="non-public"):
        load_image("http://127.0.0.1:9/x.png", allow_urls=True)


@pytest.fixture
def image_server() -> Iterator[str]:
    body = png_bytes("green", (5, 5))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "/ok.png")
                self.end_headers()
                return
            payload = body if self.path == "/ok.png" else body * 100
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_allowed_url_is_fetched_with_redirects_and_size_limit(
    image_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The loopback test server is private; lift only that check to exercise the fetch path.
    monkeypatch.setattr(images_module, "is_public_address", lambda address: True)
    assert load_image(f"{image_server}/ok.png", allow_urls=True).getpixel((0, 0)) == (0, 128, 0)
    assert load_image(f"{image_server}/redirect", allow_urls=True).size == (5, 5)
    with pytest.raises(ImageError, match="exceeds"):
        load_image(f"{image_server}/big.png", ImageLimits(max_bytes=200), allow_urls=True)
