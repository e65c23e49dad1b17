"""Append-only JSONL files that survive crashes: torn last lines are closed and ignored on reading.

Lines end with a line feed only. Text from models or third parties may hold other line boundaries
(U+2028, U+2029, U+0085: ``str.splitlines`` splits on them), so they are written as JSON escapes and
never split on when reading: a record never breaks apart, whoever reads the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["append_lines", "dumps_line", "read_lines", "recorded_ids", "rewrite_lines"]

_SEPARATORS = {"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"}
"""Line boundaries of ``str.splitlines`` that ``json.dumps(ensure_ascii=False)`` leaves raw (it escapes the rest)."""


def dumps_line(item: dict[str, Any]) -> str:
    """``item`` as one JSON line (with its line feed); no character in it is a line boundary to any reader."""
    text = json.dumps(item, ensure_ascii=False)
    if any(separator in text for separator in _SEPARATORS):  # only inside strings: escaping keeps the value
        for raw, escaped in _SEPARATORS.items():
            text = text.replace(raw, escaped)
    return text + "\n"


def read_lines(path: Path) -> Iterator[dict[str, Any]]:
    """Every complete JSON object of ``path`` (a line torn by a crash is skipped); lines end at a line feed only."""
    if not path.is_file():
        return
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            yield item


def recorded_ids(*paths: Path) -> set[str]:
    """The ``id`` of every complete record in ``paths``."""
    return {str(item["id"]) for path in paths for item in read_lines(path) if "id" in item}


def append_lines(path: Path, items: Iterable[dict[str, Any]]) -> None:
    """Append ``items`` as JSON lines and flush; a torn last line is closed first."""
    if path.is_file() and path.stat().st_size:
        with open(path, "rb") as handle:
            handle.seek(-1, 2)
            torn = handle.read(1) != b"\n"
    else:
        torn = False
    with open(path, "a", encoding="utf-8", newline="\n") as sink:
        if torn:
            sink.write("\n")
        for item in items:
            sink.write(dumps_line(item))
        sink.flush()


def rewrite_lines(path: Path, items: Iterable[dict[str, Any]]) -> None:
    """Replace ``path`` with ``items`` as JSON lines, atomically (a crash leaves the old file or the new one)."""
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", encoding="utf-8", newline="\n") as sink:
        for item in items:
            sink.write(dumps_line(item))
        sink.flush()
        os.fsync(sink.fileno())
    os.replace(partial, path)
