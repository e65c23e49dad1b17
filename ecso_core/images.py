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
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urljoin, urlsplit, urlunsplit

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError
from .types import ChatRequest, ImageLimits, ImagePart, ImageURL

DIGEST_KEY = "ecso_digest"
"""Key under which prepared images carry their digest in ``PIL.Image.info`` (backends cache on it)."""

__all__ = [
    "DIGEST_KEY",
    "image_digest",
    "image_to_data_url",
    "is_public_address",
    "OpenedRequest",
    "decode_request",
    "load_image",
    "open_image",
    "open_request",
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
    return _normalise(open_image(source, limits, allow_urls), limits)


def open_image(source: Any, limits: ImageLimits | None = None, allow_urls: bool = False) -> Image.Image:
    """Read ``source`` and open it lazily: format and size are known, no pixel is decoded yet.

    Raises:
        ImageError: as :func:`load_image`, for everything but decoding the pixels.

    """
    limits = limits or ImageLimits()
    image = source if isinstance(source, Image.Image) else _open(_read_source(source, limits, allow_urls), limits)
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError(f"image has no pixels ({width}x{height})")
    if width * height > limits.max_pixels:
        raise ImageError(f"image is {width}x{height} = {width * height} pixels; the limit is {limits.max_pixels}")
    return image


def prepare_image_part(part: ImagePart, limits: ImageLimits | None = None, allow_urls: bool = False) -> ImagePart:
    """Return ``part`` with its image loaded, normalised and given a digest (no-op if already done)."""
    if _prepared(part):
        return part
    return _finish(load_image(part.image, limits, allow_urls))


def prepare_request(request: ChatRequest, limits: ImageLimits | None = None, allow_urls: bool = False) -> ChatRequest:
    """Prepare every image of ``request`` (see :func:`prepare_image_part`) within ``limits``.

    Every image is read and its size checked (count, pixels per image, pixels in all) before any of
    them is decoded, so an oversized request costs no decoding (:func:`open_request`, then
    :func:`decode_request`).

    Raises:
        ImageError: an image fails, or the request exceeds ``max_images`` or ``max_total_pixels``.

    """
    limits = limits or ImageLimits()
    return decode_request(open_request(request, limits, allow_urls), limits)


@dataclass(frozen=True)
class OpenedRequest:
    """A request whose images are read and measured but not decoded yet (see :func:`open_request`)."""

    request: ChatRequest
    images: dict[int, Image.Image]
    """Opened images by ``id()`` of their part; parts already prepared are not here."""
    pixels: int
    """Decoded pixels the images will take, in all."""


def open_request(request: ChatRequest, limits: ImageLimits, allow_urls: bool = False) -> OpenedRequest:
    """Read every image of ``request`` and check its limits from the headers; decode nothing.

    Raises:
        ImageError: an image fails, or the request exceeds ``max_images`` or ``max_total_pixels``.

    """
    parts = request.images
    if len(parts) > limits.max_images:
        raise ImageError(f"the request has {len(parts)} images; the limit is {limits.max_images}")
    images = {id(p): open_image(p.image, limits, allow_urls) for p in parts if not _prepared(p)}
    pixels = sum(image.size[0] * image.size[1] for image in images.values())
    if pixels > limits.max_total_pixels:
        raise ImageError(f"the request's images hold {pixels} pixels; the limit is {limits.max_total_pixels}")
    return OpenedRequest(request=request, images=images, pixels=pixels)


def decode_request(opened: OpenedRequest, limits: ImageLimits) -> ChatRequest:
    """Decode and normalise the images :func:`open_request` opened; the request with prepared parts.

    Raises:
        ImageError: corrupt or truncated image data.

    """
    if not opened.images:
        return opened.request
    done = {key: _finish(_normalise(image, limits)) for key, image in opened.images.items()}
    messages = tuple(
        message.model_copy(
            update={"content": tuple(done.get(id(p), p) if isinstance(p, ImagePart) else p for p in message.content)}
        )
        if message.images
        else message
        for message in opened.request.messages
    )
    return opened.request.model_copy(update={"messages": messages})


def _prepared(part: ImagePart) -> bool:
    return part.digest is not None and isinstance(part.image, Image.Image)


def _finish(image: Image.Image) -> ImagePart:
    digest = image_digest(image)
    image.info[DIGEST_KEY] = digest  # lets backends cache per-image work (see backends/hf_reuse.py)
    return ImagePart(image=image, digest=digest)


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


_URL_FIELD = "an image URL must be a data: URL or an http(s) URL"


def _read_source(source: Any, limits: ImageLimits, allow_urls: bool) -> bytes:
    if isinstance(source, ImageURL):
        return _read_url_field(source.url, limits, allow_urls)
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


def _read_url_field(url: str, limits: ImageLimits, allow_urls: bool) -> bytes:
    """A URL field's value: a data: URL, or http(s) when allowed; never a path (one message for all else)."""
    text = url.strip()
    if text[:5].lower() == "data:":
        return _read_data_url(text, limits)
    if urlsplit(text).scheme.lower() in ("http", "https") and "://" in text[:10]:
        if not allow_urls:
            raise ImageError("image URLs are refused (set allow_image_urls=True to fetch them): " + text[:100])
        return _fetch_url(text, limits)
    raise ImageError(_URL_FIELD)  # the same words for any path, existing or not: no oracle


def _read_file(path: Path, limits: ImageLimits) -> bytes:
    try:
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise ImageError(f"image file {path} is {size} bytes; the limit is {limits.max_bytes}")
        return path.read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read image file {path}: {exc}") from exc
    except ValueError as exc:  # an embedded NUL byte: no file can have that name
        raise ImageError(f"cannot read image file {str(path)!r}: {exc}") from exc


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
    """GET ``url`` within ``limits.url_timeout_s`` in all, connecting only to a checked public address.

    The host is resolved once and the connection goes to the address that was checked (TLS still
    verifies the host name, sent as SNI), so a resolver that answers differently the second time
    (DNS rebinding) cannot steer the fetch to a private address. Redirects are followed by hand, each
    target checked the same way. Proxies from the environment are not used.
    """
    import httpx

    deadline = time.monotonic() + limits.url_timeout_s
    for _ in range(_MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ImageError(f"unsupported image URL {url[:100]}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = _public_address(parts.hostname, port)
        pinned = urlunsplit(parts._replace(netloc=f"{_netloc_host(address)}:{port}"))
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ImageError(f"fetching {url[:100]} took longer than {limits.url_timeout_s:g} s")
        try:
            with httpx.Client(timeout=remaining, follow_redirects=False, trust_env=False) as client:
                request = client.build_request(
                    "GET", pinned, headers={"Host": parts.netloc}, extensions={"sni_hostname": parts.hostname}
                )
                response = client.send(request, stream=True)
                try:
                    if response.is_redirect:
                        url = urljoin(url, response.headers.get("location", ""))
                        continue
                    response.raise_for_status()
                    return _read_body_within(response, url, limits, deadline)
                finally:
                    response.close()
        except httpx.HTTPError as exc:
            raise ImageError(f"cannot fetch image {url[:100]}: {exc}") from exc
    raise ImageError(f"too many redirects fetching {url[:100]}")


def _read_body_within(response: Any, url: str, limits: ImageLimits, deadline: float) -> bytes:
    chunks: list[bytes] = []
    received = 0
    for chunk in response.iter_bytes():
        received += len(chunk)
        if received > limits.max_bytes:
            raise ImageError(f"image at {url[:100]} exceeds {limits.max_bytes} bytes")
        if time.monotonic() > deadline:  # a server that trickles bytes must not hold us past the deadline
            raise ImageError(f"fetching {url[:100]} took longer than {limits.url_timeout_s:g} s")
        chunks.append(chunk)
    return b"".join(chunks)


def _public_address(host: str, port: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Resolve ``host`` once; every address it has must be public. Returns the one to connect to."""
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise ImageError(f"cannot resolve image host {host}: {exc}") from exc
    # typeshed allows an int host for exotic families; a TCP lookup gives an address string
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not addresses or not all(is_public_address(a) for a in addresses):
        raise ImageError(f"image host {host} resolves to a non-public address")
    return addresses[0]


def is_public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether ``address`` is a global unicast address, IPv4 embedded in IPv6 included.

    IPv4-mapped (``::ffff:127.0.0.1``), IPv4-compatible (``::127.0.0.1``), NAT64 (``64:ff9b::7f00:1``),
    6to4 (``2002:7f00:1::``) and Teredo addresses are judged by the IPv4 address they carry.
    """
    if address.is_multicast or address.is_unspecified or not address.is_global:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return is_public_address(embedded)
    return True


_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _IPV4_COMPATIBLE or any(address in net for net in _NAT64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _netloc_host(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return f"[{address}]" if address.version == 6 else str(address)


def _open(data: bytes, limits: ImageLimits) -> Image.Image:
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
            return Image.open(io.BytesIO(data), formats=formats)
    except UnidentifiedImageError as exc:
        raise ImageError(
            "unsupported or unrecognised image format (accepted: " + ", ".join(ALLOWED_FORMATS) + ")"
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"image has too many pixels (decompression bomb?): {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"corrupt image: {exc}") from exc


def _normalise(image: Image.Image, limits: ImageLimits) -> Image.Image:
    """Decode (first frame), apply the EXIF orientation and convert to RGB; ``image`` passed :func:`open_image`."""
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
        # one band: PIL's union type also covers the per-band tuples of multi-band modes
        peak = cast("tuple[float, float]", image.getextrema())[1] or 1
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
