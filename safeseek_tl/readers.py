"""Read data files (.json, .jsonl, .csv) as ``(line, item)`` pairs, naming the file and line of any problem.

Shared by the record loaders (:mod:`safeseek_tl.data`) and the standard-format loaders
(:mod:`safeseek_tl.datasets`). A JSON file is an array of objects, or an object whose top-level
``results`` key holds one; a JSONL file has one object a line; a CSV file has a header row.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from safeseek_tl.errors import DataError


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read the file ({err.strerror})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (bad byte at offset {err.start})") from None


_JSON_SPACE = " \t\r\n"


def _skip(text: str, pos: int, chars: str) -> int:
    while text[pos] in chars:
        pos += 1
    return pos


def _results_start(text: str) -> int:
    """Offset of the top-level ``results`` value of a valid JSON object (the last one, as ``json.loads`` keeps).

    Walks the object's top-level keys, so a ``results`` key nested deeper, or inside a string, is not taken.
    """
    decoder, pos, found = json.JSONDecoder(), text.index("{") + 1, -1
    while True:
        pos = _skip(text, pos, _JSON_SPACE + ",")
        if text[pos] == "}":
            return found
        key, pos = decoder.raw_decode(text, pos)
        pos = _skip(text, pos, _JSON_SPACE + ":")
        if key == "results":
            found = pos
        _, pos = decoder.raw_decode(text, pos)


def _json_items(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    """(line, item) for each element of a JSON array, or of the ``results`` list of an object."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: invalid JSON ({err.msg}, column {err.colno})") from None
    if isinstance(data, dict) and "results" in data:
        data, start = data["results"], _results_start(text)
    else:
        start = _skip(text, 0, _JSON_SPACE)
    if not isinstance(data, list):
        raise DataError(f"{path}:1: expected a JSON list of records (or an object with a 'results' list)")
    # Walk the array again with raw_decode to learn the line on which each item starts.
    decoder, pos = json.JSONDecoder(), start + 1
    for item in data:
        pos = _skip(text, pos, _JSON_SPACE + ",")
        line = text.count("\n", 0, pos) + 1
        _, pos = decoder.raw_decode(text, pos)
        yield line, item


def _jsonl_items(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    # Split on "\n" only: str.splitlines also breaks at U+2028 and other characters that JSON strings may hold.
    for line_no, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            yield line_no, json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{line_no}: invalid JSON ({err.msg}, column {err.colno})") from None


def _csv_items(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    reader = csv.DictReader(io.StringIO(text))
    try:
        if not reader.fieldnames:
            raise DataError(f"{path}:1: the CSV file has no header row")
        for row in reader:
            if None in row:  # more cells than header columns
                raise DataError(f"{path}:{reader.line_num}: the row has more cells than the header has columns")
            yield reader.line_num, {key: value for key, value in row.items() if value is not None}
    except csv.Error as err:  # e.g. a field over csv's size limit; line_num counts the lines read before the bad record
        raise DataError(f"{path}:{reader.line_num + 1}: malformed CSV ({err})") from None


_READERS = {".json": _json_items, ".jsonl": _jsonl_items, ".csv": _csv_items}
SUFFIXES: tuple[str, ...] = tuple(_READERS)


def read_items(path: str | Path) -> Iterator[tuple[int, Any]]:
    """``(line, item)`` for each record of a .json, .jsonl or .csv file (a CSV row is a dict of its cells).

    Raises :class:`DataError` at once for another suffix, and while iterating for a file that
    cannot be read, is not UTF-8 or is malformed, naming the file and line.
    """
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use .json, .jsonl or .csv")
    return reader(path, _read_text(path))
