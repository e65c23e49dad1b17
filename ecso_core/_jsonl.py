"""Append-only JSONL files that survive crashes: torn last lines are closed and ignored on reading."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["append_lines", "read_lines", "recorded_ids"]


def read_lines(path: Path) -> Iterator[dict[str, Any]]:
    """Every complete JSON object of ``path`` (a line torn by a crash is skipped)."""
    if not path.is_file():
        return
    for line in path.read_text(encoding="utf-8").splitlines():
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
    with open(path, "a", encoding="utf-8") as sink:
        if torn:
            sink.write("\n")
        for item in items:
            sink.write(json.dumps(item, ensure_ascii=False) + "\n")
        sink.flush()
