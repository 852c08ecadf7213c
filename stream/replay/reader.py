"""Readers that yield the rows of a CSV or JSON-lines file as dicts.

A CSV record with the wrong number of fields, or a line that is not a JSON
object, is yielded with a :class:`MappingError` in place of its fields. The
replay counts such rows and goes on. Problems that stop
the whole file, such as a missing file or bytes that are not UTF-8, raise
:class:`InputFileError`.
"""

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

import msgspec

from stream.errors import InputFileError, MappingError

FileFormat = Literal["csv", "jsonl"]

_SUFFIX_FORMATS: dict[str, FileFormat] = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


@dataclass(frozen=True, slots=True)
class SourceRow:
    """One record of the input file.

    ``number`` is the line on which the record starts, counting the CSV header
    as line 1. ``error`` is set, and ``fields`` empty, when the record is unreadable.
    """

    number: int
    fields: dict[str, Any] = field(default_factory=dict)
    error: MappingError | None = None


def detect_format(path: Path) -> FileFormat:
    """Return the format that the file's suffix names, or raise :class:`InputFileError`."""
    file_format = _SUFFIX_FORMATS.get(path.suffix.lower())
    if file_format is None:
        raise InputFileError(
            f"unsupported input file {path}: the suffix {path.suffix!r} is not one of "
            f".csv, .jsonl or .ndjson"
        )
    return file_format


def read_csv_header(path: Path) -> list[str]:
    """Return the column names in the first record of a CSV file."""
    with _open_text(path) as handle:
        try:
            return next(csv.reader(handle), [])
        except (csv.Error, UnicodeDecodeError) as exc:
            raise InputFileError(f"failed to read the header of {path}: {exc}") from exc


def read_rows(path: Path) -> Iterator[SourceRow]:
    """Yield each record of a CSV or JSON-lines file, chosen by the file suffix."""
    if detect_format(path) == "csv":
        return _read_csv(path)
    return _read_json_lines(path)


def _open_text(path: Path) -> TextIO:
    try:
        # utf-8-sig drops the byte order mark that spreadsheet exports put first.
        return path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise InputFileError(f"failed to open {path}: {exc.strerror}") from exc


def _read_csv(path: Path) -> Iterator[SourceRow]:
    with _open_text(path) as handle:
        reader = csv.reader(handle)
        start_line = 1
        try:
            header = next(reader, None)
            if header is None:
                return
            start_line = reader.line_num + 1
            for record in reader:
                number = start_line
                start_line = reader.line_num + 1
                if not record:
                    continue
                if len(record) != len(header):
                    error = MappingError(
                        "malformed_row",
                        f"CSV record has {len(record)} fields but the header has {len(header)}",
                    )
                    yield SourceRow(number=number, error=error)
                    continue
                yield SourceRow(number=number, fields=dict(zip(header, record, strict=True)))
        except (csv.Error, UnicodeDecodeError) as exc:
            raise InputFileError(
                f"failed to parse {path} as CSV near line {start_line}: {exc}"
            ) from exc


def _read_json_lines(path: Path) -> Iterator[SourceRow]:
    decoder = msgspec.json.Decoder()
    with _open_text(path) as handle:
        try:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                yield _decode_json_line(decoder, number, line)
        except UnicodeDecodeError as exc:
            raise InputFileError(f"failed to read {path} as UTF-8: {exc}") from exc


def _decode_json_line(decoder: msgspec.json.Decoder[Any], number: int, line: str) -> SourceRow:
    try:
        value = decoder.decode(line)
    except msgspec.DecodeError as exc:
        return SourceRow(number=number, error=MappingError("invalid_json", f"invalid JSON: {exc}"))
    if not isinstance(value, dict):
        error = MappingError(
            "not_an_object", f"JSON value is a {type(value).__name__}, not an object"
        )
        return SourceRow(number=number, error=error)
    return SourceRow(number=number, fields=value)
