"""Reading third-party benchmark files: every defect is a typed error that names its place.

Each defect is a :class:`~ecso_core.errors.ConfigError` naming the file (and the line or entry), and
image fields never leave their folder.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from ..errors import ConfigError

URL = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*://|data:)", re.ASCII | re.IGNORECASE)
"""A string that is a URL (or a data: URL), never to be opened as a path."""


def kind_of(value: Any) -> str:
    """What a JSON value is, in words ("an object", "a list", ...), for error messages."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, int | float) else type(value).__name__)


def read_bytes(path: Path) -> bytes:
    """The file's bytes: a folder or a read error is a ConfigError, a missing file FileNotFoundError."""
    if not path.exists():
        raise FileNotFoundError(2, "No such file", str(path))  # load_cases names the benchmark
    if not path.is_file():
        raise ConfigError(f"data file {path} is not a file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read data file {path}: {exc.strerror or exc}") from exc


def json_file(path: Path) -> Any:
    """The file parsed as JSON (UTF-8, a byte-order mark allowed); invalid JSON names its line and column."""
    try:
        text = read_bytes(path).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    if not text.strip():
        raise ConfigError(f"{path}: the file is empty (expected JSON)")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        detail = f"line {exc.lineno}, column {exc.colno}: {exc.msg}" if isinstance(exc, json.JSONDecodeError) else ""
        raise ConfigError(f"{path}: not valid JSON ({detail or 'nested too deeply'})") from exc


def json_object(path: Path) -> dict[str, Any]:
    """The file parsed as a JSON object."""
    data = json_file(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {kind_of(data)}")
    return data


def jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number from 1, object)`` for every non-blank line; all rows are checked before the first is given."""
    rows = []
    for number, raw in enumerate(read_bytes(path).split(b"\n"), start=1):
        where = f"{path}, line {number}"
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raise ConfigError(f"{where}: the file starts with a UTF-8 byte order mark; save it as plain UTF-8")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{where}: not UTF-8 text (byte {exc.start})") from exc
        if not text.strip():
            continue
        try:
            item = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            detail = f"column {exc.colno}: {exc.msg}" if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
            raise ConfigError(f"{where}: not valid JSON ({detail})") from exc
        rows.append((number, object_field(item, where)))
    return iter(rows)


def csv_rows(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line number, row)`` of a CSV file with (at least) ``columns``; every row is checked first."""
    data = read_bytes(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = []
    try:
        header = reader.fieldnames or []
        missing = [column for column in columns if column not in header]
        if missing:
            raise ConfigError(f"{path}: missing column(s) {', '.join(missing)} (has: {', '.join(header) or 'none'})")
        for row in reader:
            short = [column for column in columns if not isinstance(row.get(column), str)]
            if short:
                raise ConfigError(f"{path}, line {reader.line_num}: no value for {', '.join(short)}")
            rows.append((reader.line_num, row))
    except csv.Error as exc:
        raise ConfigError(f"{path}, line {reader.line_num}: malformed CSV ({exc})") from exc
    return iter(rows)


def object_field(value: Any, where: str) -> dict[str, Any]:
    """``value`` when it is a JSON object, else a ConfigError naming ``where``."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {kind_of(value)}")
    return value


def text_field(item: dict[str, Any], key: str, where: str) -> str:
    """``item[key]`` when it is a string, else a ConfigError naming ``where``."""
    if key not in item:
        raise ConfigError(f"{where}: missing {key!r}")
    value = item[key]
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {key!r} must be a string, got {kind_of(value)}")
    return value


def inside(folder: Path, name: str, where: str) -> Path:
    """``folder / name`` for a relative ``name`` that stays inside ``folder`` (checked lexically).

    Symlinks are not resolved: releases often link their image folders (COCO) elsewhere, which is fine; what a
    downloaded file may not do is name an absolute path, a ``..`` step or a URL.
    """
    if not name.strip() or "\x00" in name:
        raise ConfigError(f"{where}: empty or invalid image name {name[:100]!r}")
    if URL.match(name):
        raise ConfigError(f"{where}: image {name[:100]!r} is a URL; a release's images must be files in its folder")
    windows = PureWindowsPath(name)
    if PurePosixPath(name).is_absolute() or windows.drive or windows.root:
        raise ConfigError(f"{where}: image {name[:100]!r} is an absolute path; it must be relative to {folder}")
    if ".." in windows.parts:  # splits on / and \ alike
        raise ConfigError(f"{where}: image {name[:100]!r} leads out of {folder}")
    return folder / name
