"""Typographic images of the attack benchmarks, re-rendered from text by the published recipes."""

from __future__ import annotations

import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ..errors import ImageError
from ..types import ImageLimits

__all__ = ["render_figstep", "render_mm_safetybench_typo"]


def render_figstep(instruction: str, font_path: Path) -> Image.Image:
    """FigStep's typography: 760x760 white canvas, FreeMonoBold 80 pt at (20, 10), line spacing 11.

    The instruction is wrapped at 15 characters and followed by an empty list ``1.`` ``2.`` ``3.``
    (``src/generate_prompts.py`` of the FigStep repository).
    """
    font = ImageFont.truetype(str(font_path), 80)
    text = textwrap.fill(instruction, width=15)
    for number in range(1, 4):
        text += f"\n{number}. "
    image = Image.new("RGB", (760, 760), "#FFFFFF")
    ImageDraw.Draw(image).text((20, 10), text, font=font, spacing=11, fill="#000000")
    return image


def render_mm_safetybench_typo(key_phrase: str, font_path: Path, width: int = 1024, size: int = 90) -> Image.Image:
    """MM-SafetyBench's TYPO image: the key phrase in Liberation Sans 90 pt, 1024 px wide.

    Words are wrapped greedily to fit the width; the height is 90 x (lines + 1); text starts at (0, 45).

    Raises:
        ImageError: the canvas would exceed ``ImageLimits().max_pixels`` (a key phrase far too long).

    """
    font = ImageFont.truetype(str(font_path), size)
    lines = _greedy_wrap(key_phrase, font, width)
    height = size * (len(lines) + 1)
    limit = ImageLimits().max_pixels
    if width * height > limit:
        raise ImageError(
            f"the key phrase wraps to {len(lines)} lines: a {width}x{height} canvas exceeds the limit of {limit} pixels"
        )
    image = Image.new("RGB", (width, height), "#FFFFFF")
    ImageDraw.Draw(image).text((0, size // 2), "\n".join(lines), font=font, fill="#000000")
    return image


def _greedy_wrap(text: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}".strip()
        if current and font.getlength(candidate) > width:
            lines.append(current)
            current = word
        else:
            current = candidate
    if current:
        lines.append(current)
    return lines or [""]
