"""Images: classify the source, then load it within limits, then normalise it.

Every image reaches a model as an RGB ``PIL.Image`` that passed these checks, so no processor's own
loader (which would fetch URLs or open paths) ever sees user input. Sources: PIL images, bytes, file
paths, base64 strings, ``data:`` URLs, and ``http(s)`` URLs (refused unless allowed; then bounded in
size and time, and private addresses are blocked).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import ipaddress
import socket
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from PIL import Image, ImageOps, UnidentifiedImageError

from .config import ImageLimits
from .errors import ImageError
from .types import ChatRequest, ImagePart

DIGEST_KEY = "ecso_digest"
"""Key under which prepared images carry their digest in ``PIL.Image.info`` (backends cache on it)."""

__all__ = [
    "DIGEST_KEY",
    "image_digest",
    "image_to_data_url",
    "load_image",
    "prepare_image_part",
    "prepare_request",
]

# Raster formats a VLM processor can take. SVG and other vector/unknown formats are refused.
ALLOWED_FORMATS = ("PNG", "JPEG", "MPO", "GIF", "WEBP", "BMP", "TIFF")
_MAX_REDIRECTS = 3


def load_image(source: Any, limits: ImageLimits | None = None, allow_urls: bool = False) -> Image.Image:
    """Load ``source`` into a normalised RGB image, enforcing ``limits``.

    Raises:
        ImageError: refused URL, unsupported source or format, corrupt/truncated/empty data, or a
            limit exceeded.

    """
    limits = limits or ImageLimits()
    if isinstance(source, Image.Image):
        return _normalise(source, limits)
    return _decode(_read_source(source, limits, allow_urls), limits)


def prepare_image_part(part: ImagePart, limits: ImageLimits | None = None, allow_urls: bool = False) -> ImagePart:
    """Return ``part`` with its image loaded, normalised and given a digest (no-op if already done)."""
    if part.digest is not None and isinstance(part.image, Image.Image):
        return part
    image = load_image(part.image, limits, allow_urls)
    digest = image_digest(image)
    image.info[DIGEST_KEY] = digest  # lets backends cache per-image work (see backends/hf_reuse.py)
    return ImagePart(image=image, digest=digest)


def prepare_request(request: ChatRequest, limits: ImageLimits | None = None, allow_urls: bool = False) -> ChatRequest:
    """Prepare every image of ``request`` (see :func:`prepare_image_part`).

    Raises:
        ImageError: an image fails, or there are more than ``limits.max_images`` images.

    """
    limits = limits or ImageLimits()
    if len(request.images) > limits.max_images:
        raise ImageError(f"the request has {len(request.images)} images; the limit is {limits.max_images}")
    if not request.images:
        return request
    messages = tuple(
        message.model_copy(
            update={
                "content": tuple(
                    prepare_image_part(p, limits, allow_urls) if isinstance(p, ImagePart) else p
                    for p in message.content
                )
            }
        )
        if message.images
        else message
        for message in request.messages
    )
    return request.model_copy(update={"messages": messages})


def image_digest(image: Image.Image) -> str:
    """SHA-256 over mode, size and pixels: equal pictures share a digest whatever their encoding."""
    digest = hashlib.sha256(f"{image.mode}:{image.size}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def image_to_data_url(image: Image.Image, fmt: str = "PNG") -> str:
    """Encode ``image`` as a ``data:`` URL (what OpenAI-compatible servers take)."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    payload = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"data:image/{fmt.lower()};base64,{payload}"


def _read_source(source: Any, limits: ImageLimits, allow_urls: bool) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, Path):
        return _read_file(source, limits)
    if not isinstance(source, str):
        raise ImageError(f"unsupported image source type {type(source).__name__}")
    text = source.strip()
    if not text:
        raise ImageError("empty image source")
    if text.startswith("data:"):
        return _read_data_url(text, limits)
    scheme = urlsplit(text).scheme.lower() if "://" in text[:16] else ""
    if scheme in ("http", "https"):
        if not allow_urls:
            raise ImageError("image URLs are refused (set allow_image_urls=True to fetch them): " + text[:100])
        return _fetch_url(text, limits)
    if scheme:
        raise ImageError(f"unsupported image URL scheme {scheme!r}")
    if len(text) < 1024 and Path(text).expanduser().is_file():
        return _read_file(Path(text).expanduser(), limits)
    return _decode_base64(text, limits)


def _read_file(path: Path, limits: ImageLimits) -> bytes:
    try:
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise ImageError(f"image file {path} is {size} bytes; the limit is {limits.max_bytes}")
        return path.read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read image file {path}: {exc}") from exc


def _read_data_url(url: str, limits: ImageLimits) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise ImageError("a data URL image must be base64-encoded (data:image/...;base64,...)")
    mime = header[5:].split(";")[0].lower()
    if mime and not mime.startswith("image/"):
        raise ImageError(f"data URL has non-image MIME type {mime!r}")
    if mime == "image/svg+xml":
        raise ImageError("SVG images are not supported; send a raster image (PNG, JPEG, ...)")
    return _decode_base64(payload, limits)


def _decode_base64(text: str, limits: ImageLimits) -> bytes:
    compact = "".join(text.split())
    if len(compact) * 3 // 4 > limits.max_bytes:
        raise ImageError(f"base64 image is larger than the limit of {limits.max_bytes} bytes")
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError("the image string is neither an existing file nor valid base64") from exc


def _fetch_url(url: str, limits: ImageLimits) -> bytes:
    import httpx

    try:
        with httpx.Client(timeout=limits.url_timeout_s, follow_redirects=False) as client:
            for _ in range(_MAX_REDIRECTS + 1):
                _refuse_private_host(url)
                with client.stream("GET", url) as response:
                    if response.is_redirect:
                        url = str(response.next_request.url) if response.next_request else ""
                        continue
                    response.raise_for_status()
                    chunks: list[bytes] = []
                    received = 0
                    for chunk in response.iter_bytes():
                        received += len(chunk)
                        if received > limits.max_bytes:
                            raise ImageError(f"image at {url} exceeds {limits.max_bytes} bytes")
                        chunks.append(chunk)
                    return b"".join(chunks)
            raise ImageError(f"too many redirects fetching {url}")
    except httpx.HTTPError as exc:
        raise ImageError(f"cannot fetch image {url}: {exc}") from exc


def _refuse_private_host(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ImageError(f"unsupported image URL {url[:100]}")
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise ImageError(f"cannot resolve image host {parts.hostname}: {exc}") from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise ImageError(f"image host {parts.hostname} resolves to a non-public address")


def _decode(data: bytes, limits: ImageLimits) -> Image.Image:
    if not data:
        raise ImageError("empty image data")
    if len(data) > limits.max_bytes:
        raise ImageError(f"image is {len(data)} bytes; the limit is {limits.max_bytes}")
    head = data[:256].lstrip().lower()
    if head.startswith((b"<?xml", b"<svg", b"<!doctype svg")) or b"<svg" in head:
        raise ImageError("SVG images are not supported; send a raster image (PNG, JPEG, ...)")
    Image.init()  # registers every plugin, so that `formats` below can name them (MPO, WEBP, ...)
    formats = [f for f in ALLOWED_FORMATS if f in Image.OPEN]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=formats)
    except UnidentifiedImageError as exc:
        raise ImageError(
            "unsupported or unrecognised image format (accepted: " + ", ".join(ALLOWED_FORMATS) + ")"
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"image has too many pixels (decompression bomb?): {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"corrupt image: {exc}") from exc
    return _normalise(image, limits)


def _normalise(image: Image.Image, limits: ImageLimits) -> Image.Image:
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError(f"image has no pixels ({width}x{height})")
    if width * height > limits.max_pixels:
        raise ImageError(f"image is {width}x{height} = {width * height} pixels; the limit is {limits.max_pixels}")
    try:
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)  # animations: the first frame
        image.load()
        image = ImageOps.exif_transpose(image) or image
        return _to_rgb(image)
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"corrupt or truncated image: {exc}") from exc


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image.copy()
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit greyscale: scale to 8 bits rather than letting convert() clip to white.
        peak = image.getextrema()[1] or 1
        scale = 255.0 / max(peak, 255) if mode == "I" else 1 / 257
        image = image.convert("I").point(lambda v: v * scale).convert("L")
        mode = "L"
    if mode == "F":
        image = image.convert("L")
        mode = "L"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
