"""Read a user's CSV or JSONL file into :class:`loop.records.Item` records.

Pure parsing and validation: no store, no network. A file with invalid rows is rejected whole
(:class:`InvalidRowsError`) unless ``skip_invalid=True``; exact duplicate texts are reported,
never merged.

Formats
-------
- ``.csv``: UTF-8 (a BOM is tolerated), comma-separated, a header row naming the columns,
  RFC 4180 quoting (quoted fields may hold commas and newlines; ``""`` escapes a quote).
- ``.jsonl`` / ``.ndjson``: one JSON object per line (UTF-8, BOM tolerated); blank lines are
  ignored.

Columns (names mappable with ``id_col``/``text_col``/``label_col``/``split_col``)
-------------------------------------------------------------------------------
- ``text`` (required): a non-blank string, stored exactly as given; at most ``max_chars``
  characters and without control characters (:mod:`loop.text`: NUL and the other C0/C1
  controls except tab, newline and carriage return). ``control_chars="strip"`` removes those
  characters instead of rejecting the row (listed in ``ReadResult.stripped``).
- ``id`` (optional): a string (or a JSON integer); when the column is absent or the value empty,
  the id is derived from the text (:func:`derived_id`), so re-reading a file gives the same ids.
- ``label`` (optional): the class name; an empty value means "no label". JSON integers are
  accepted and turned into strings.
- ``split`` (optional): one of ``train``/``test``/``eval``; empty or absent means
  ``default_split``.
- every other column goes to ``Item.meta`` (its strings are held to the same character rule).

Ids, labels and splits with control characters are always invalid (never altered).

A column mapped to a name other than its default must exist in the file; a default-named
optional column may be absent.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from loop.errors import ConfigError, DataError
from loop.records import SPLITS, Item
from loop.text import (
    DEFAULT_MAX_CHARS,
    char_problem,
    escape_forbidden,
    json_problem,
    strip_forbidden,
    text_problem,
)

CSV_SUFFIXES: tuple[str, ...] = (".csv",)
JSONL_SUFFIXES: tuple[str, ...] = (".jsonl", ".ndjson")
MAX_LISTED_PROBLEMS = 10
_EXCERPT_CHARS = 120
# Line breaks as Python's csv module counts them (newline=""): \r\n, \r or \n. Not
# str.splitlines(), which also breaks on \u2028 and friends that JSON strings may hold.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class RowProblem:
    """One invalid row: its 1-based line number (where the record starts), why, and the start
    of the raw line."""

    line: int
    reason: str
    excerpt: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Duplicate:
    """Rows that share a text (``kind="text"``, ``key`` = the start of the text) or an id
    (``kind="id"``, ``key`` = the id; only the first of those rows was kept)."""

    kind: Literal["text", "id"]
    key: str
    item_ids: tuple[str, ...]
    lines: tuple[int, ...]


@dataclass(slots=True)
class ReadResult:
    """What :func:`read_items` found. ``labels`` maps item id -> label for rows with a label."""

    path: Path
    format: Literal["csv", "jsonl"]
    columns: tuple[str, ...]  # header (CSV) or every key seen (JSONL), in order of appearance
    items: list[Item] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    skipped: list[RowProblem] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    stripped: list[int] = field(default_factory=list)  # lines whose control characters went

    @property
    def rows(self) -> int:
        """Data rows read (valid and skipped)."""
        return len(self.items) + len(self.skipped)


class InvalidRowsError(DataError):
    """A file had invalid rows and ``skip_invalid`` was off. ``problems`` lists all of them."""

    def __init__(self, path: Path, problems: list[RowProblem], n_valid: int) -> None:
        self.path = path
        self.problems = problems
        shown = "; ".join(str(p) for p in problems[:MAX_LISTED_PROBLEMS])
        more = (
            f" (and {len(problems) - MAX_LISTED_PROBLEMS} more)"
            if len(problems) > MAX_LISTED_PROBLEMS
            else ""
        )
        super().__init__(
            f"{path.name}: expected every row to be valid, found {len(problems)} invalid "
            f"row(s), nothing was read: {shown}{more}.",
            f"correct those rows, or pass --skip-invalid (skip_invalid=True) to read the "
            f"{n_valid} valid row(s) and list the skipped ones.",
        )


def derived_id(text: str, occurrence: int = 1) -> str:
    """A stable id for a row without one: ``sha1(text)[:16]``; the n-th (n >= 2) exact repeat of
    a text in the same file gets ``sha1(text + "\\x00" + n)[:16]`` so repeats stay distinct."""
    key = text if occurrence == 1 else f"{text}\x00{occurrence}"
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]


def read_items(
    path: str | Path,
    *,
    id_col: str = "id",
    text_col: str = "text",
    label_col: str = "label",
    split_col: str = "split",
    skip_invalid: bool = False,
    default_split: str = "train",
    max_chars: int = DEFAULT_MAX_CHARS,
    control_chars: Literal["reject", "strip"] = "reject",
    text_sep: str = " | ",
) -> ReadResult:
    """Parse and validate a ``.csv`` / ``.jsonl`` / ``.ndjson`` file of items.

    ``text_col`` may name several columns, comma-separated (``"title,body"``): the item's text
    is their non-empty values joined with ``text_sep``, in that order (those columns are then
    not kept in ``meta``).

    ``max_chars`` caps one text's length; ``control_chars`` says what a text holding control
    characters gets: ``reject`` (an invalid row) or ``strip`` (those characters removed).

    Raises DataError for a file that cannot be read as a whole (missing, unknown extension,
    not UTF-8, empty, no data rows, missing text column) and :class:`InvalidRowsError` when
    some rows are invalid and ``skip_invalid`` is False.
    """
    path = Path(path)
    if control_chars not in ("reject", "strip"):
        raise ConfigError(
            f"control_chars must be 'reject' or 'strip', found {control_chars!r}.",
            "pass one of those.",
        )
    if default_split not in SPLITS:
        raise ConfigError(
            f"default_split must be one of {', '.join(SPLITS)}, found {default_split!r}.",
            "pass one of those.",
        )
    names = {"id_col": id_col, "text_col": text_col, "label_col": label_col, "split_col": split_col}
    if len(set(names.values())) != len(names):
        raise ConfigError(
            f"the column options must name different columns, found {names}.",
            "give each of --id-col, --text-col, --label-col and --split-col its own column.",
        )
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        fmt: Literal["csv", "jsonl"] = "csv"
    elif suffix in JSONL_SUFFIXES:
        fmt = "jsonl"
    else:
        raise DataError(
            f"{path.name}: expected a file ending in .csv, .jsonl or .ndjson, found "
            f"{path.suffix or 'no extension'!r}.",
            "save the data as CSV with a header row (text,label,...) or as JSON Lines (one "
            "object per line) and give the file that extension.",
        )
    text = _read_text(path)
    if fmt == "csv":
        columns, rows = _csv_rows(path, text)
    else:
        columns, rows = _jsonl_rows(path, text)

    for col in _text_cols(text_col):
        _check_columns(path, fmt, columns, col, id_col, label_col, split_col)
    builder = _Builder(path, fmt, columns, id_col, text_col, label_col, split_col, default_split)
    builder.max_chars, builder.strip = max_chars, control_chars == "strip"
    builder.text_sep = text_sep
    for line, record in rows:
        builder.add(line, record)
    if builder.n_rows == 0:
        raise DataError(
            f"{path.name}: expected at least one data row, found "
            + ("a header only." if fmt == "csv" else "no JSON lines."),
            "add rows to the file, or check you passed the right file.",
        )
    result = builder.result(text)
    if result.skipped and not skip_invalid:
        raise InvalidRowsError(path, result.skipped, len(result.items))
    return result


# -- reading --------------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    if not path.exists():
        raise DataError(f"expected a data file at {path}, found nothing there.", "check the path.")
    if not path.is_file():
        raise DataError(f"expected a data file at {path}, found a directory.", "give a file.")
    data = path.read_bytes()
    if not data.strip(b" \t\r\n\xef\xbb\xbf"):
        raise DataError(
            f"{path.name}: expected a header row and data rows, found an empty file.",
            "check you passed the right file.",
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"{path.name}: expected UTF-8 text, found byte 0x{data[err.start]:02x} on line "
            f"{line} that is not valid UTF-8.",
            "re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8 in.csv > out.csv`).",
        ) from None


def _csv_rows(path: Path, text: str) -> tuple[tuple[str, ...], Iterator[tuple[int, Any]]]:
    """Header and an iterator of ``(start line, fields | RowProblem reason)``."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    # A CSV field may be as long as the file; the module's default cap is 128 KiB. The cap is
    # process-wide, so it is raised for this read only.
    old_limit = csv.field_size_limit()
    csv.field_size_limit(max(old_limit, len(text) + 1))
    try:
        header: list[str] | None = None
        start = 1
        while header is None:
            try:
                row = next(reader)
            except StopIteration:  # pragma: no cover - blank file is caught earlier
                raise DataError(f"{path.name}: no header row found.", "add one.") from None
            except csv.Error as err:
                raise DataError(
                    f"{path.name}: expected a CSV header row on line {start}, found "
                    f"malformed CSV ({err}).",
                    "fix the quoting of the header row.",
                ) from None
            if row:
                header = row
            start = reader.line_num + 1
        columns = _header(path, header)
        records: list[tuple[int, Any]] = []
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as err:
                reason = (
                    'unterminated quoted field (a " opened here is never closed)'
                    if "unexpected end of data" in str(err)
                    else f"malformed CSV: {err}"
                )
                records.append((start, _Problem(reason)))
                start = reader.line_num + 1
                continue
            line, start = start, reader.line_num + 1
            if not row:  # blank line
                continue
            if len(row) != len(columns):
                records.append(
                    (
                        line,
                        _Problem(
                            f"expected {len(columns)} fields like the header, found {len(row)}"
                        ),
                    )
                )
                continue
            records.append((line, dict(zip(columns, row, strict=True))))
    finally:
        csv.field_size_limit(old_limit)
    return columns, iter(records)


def _header(path: Path, header: list[str]) -> tuple[str, ...]:
    columns = tuple(name.strip() or f"column_{i}" for i, name in enumerate(header, 1))
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise DataError(
            f"{path.name}: expected distinct column names in the header, found "
            f"{', '.join(map(repr, repeated))} more than once.",
            "rename the repeated columns.",
        )
    return columns


def _jsonl_rows(path: Path, text: str) -> tuple[tuple[str, ...], Iterator[tuple[int, Any]]]:
    records: list[tuple[int, Any]] = []
    keys: dict[str, None] = {}
    for line, raw in enumerate(_LINE_BREAK.split(text), 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as err:
            records.append((line, _Problem(f"invalid JSON: {err.msg} (column {err.colno})")))
            continue
        if not isinstance(obj, dict):
            records.append((line, _Problem(f"expected a JSON object, found {_json_type(obj)}")))
            continue
        keys.update(dict.fromkeys(obj))
        records.append((line, obj))
    return tuple(keys), iter(records)


def _text_cols(text_col: str) -> list[str]:
    """The column(s) ``text_col`` names (comma-separated for several)."""
    cols = [c.strip() for c in text_col.split(",")] if "," in text_col else [text_col]
    if not all(cols) or len(set(cols)) != len(cols):
        raise ConfigError(
            f"--text-col: expected a column name or distinct names separated by commas, found "
            f"{text_col!r}.",
            "e.g. --text-col title,body",
        )
    return cols


def _check_columns(
    path: Path,
    fmt: str,
    columns: tuple[str, ...],
    text_col: str,
    id_col: str,
    label_col: str,
    split_col: str,
) -> None:
    if not columns:  # JSONL where no line was an object: the row errors say why
        return
    word = "columns" if fmt == "csv" else "keys"
    found = ", ".join(repr(c) for c in columns[:30]) + (" ..." if len(columns) > 30 else "")
    if text_col not in columns:
        raise DataError(
            f"{path.name}: expected a text column named {text_col!r}, found {word} {found}.",
            "rename that column to 'text', or name it with --text-col (text_col=...).",
        )
    for option, name, default in (
        ("--id-col", id_col, "id"),
        ("--label-col", label_col, "label"),
        ("--split-col", split_col, "split"),
    ):
        if name != default and name not in columns:
            raise DataError(
                f"{path.name}: {option} names {name!r}, but the file has no such column; "
                f"found {word} {found}.",
                f"pass one of those names to {option}, or leave it out.",
            )


# -- validation -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Problem:
    reason: str


class _Builder:
    def __init__(
        self,
        path: Path,
        fmt: Literal["csv", "jsonl"],
        columns: tuple[str, ...],
        id_col: str,
        text_col: str,
        label_col: str,
        split_col: str,
        default_split: str,
    ) -> None:
        self.path, self.fmt, self.columns = path, fmt, columns
        self.id_col, self.text_col = id_col, text_col
        self.label_col, self.split_col = label_col, split_col
        self.default_split = default_split
        self.items: list[Item] = []
        self.item_lines: list[int] = []
        self.labels: dict[str, str] = {}
        self.problems: list[tuple[int, str]] = []
        self.first_line_of_id: dict[str, int] = {}
        self.repeated_ids: dict[str, list[int]] = {}
        self.text_count: dict[str, int] = {}
        self.n_rows = 0
        self.max_chars: int | None = DEFAULT_MAX_CHARS
        self.strip = False
        self.stripped: list[int] = []
        self.text_sep = " | "
        self.joined = _text_cols(text_col) if "," in text_col else []

    def _join(self, record: dict[str, Any], reasons: list[str]) -> dict[str, Any]:
        """``record`` with the joined text under ``text_col`` (several text columns)."""
        parts = []
        for col in self.joined:
            value = record.get(col)
            if col not in record:
                reasons.append(f"missing {col!r}")
            elif value is None or value == "":
                continue
            elif not isinstance(value, str):
                reasons.append(f"{col!r} must be a string, found {_json_type(value)}")
            else:
                parts.append(value)
        rest = {k: v for k, v in record.items() if k not in self.joined}
        return {**rest, self.text_col: self.text_sep.join(parts)}

    def add(self, line: int, record: dict[str, Any] | _Problem) -> None:
        self.n_rows += 1
        if isinstance(record, _Problem):
            self.problems.append((line, record.reason))
            return
        reasons: list[str] = []
        if self.joined:
            record = self._join(record, reasons)
        raw_text = record.get(self.text_col)
        text = raw_text if isinstance(raw_text, str) else ""
        if self.text_col not in record:
            reasons.append(f"missing {self.text_col!r}")
        elif not isinstance(raw_text, str):
            reasons.append(f"{self.text_col!r} must be a string, found {_json_type(raw_text)}")
        elif not text.strip():
            reasons.append(f"{self.text_col!r} is blank")
        else:
            text, why = self._checked_text(line, text)
            if why:
                reasons.append(f"{self.text_col!r} {why}")
        item_id = self._scalar(record, self.id_col, "id", reasons, allow_int=True)
        label = self._scalar(record, self.label_col, "label", reasons, allow_int=True)
        split = self._scalar(record, self.split_col, "split", reasons, allow_int=False)
        if split is not None and split not in SPLITS:
            reasons.append(
                f"{self.split_col!r} must be one of {', '.join(SPLITS)}, found {split!r}"
            )
        if reasons:
            self.problems.append((line, "; ".join(reasons)))
            return
        occurrence = self.text_count.get(text, 0) + 1
        if item_id is None:
            item_id = derived_id(text, occurrence)
        if item_id in self.first_line_of_id:
            first = self.first_line_of_id[item_id]
            self.problems.append((line, f"duplicate id {item_id!r} (first on line {first})"))
            self.repeated_ids.setdefault(item_id, [first]).append(line)
            return
        self.first_line_of_id[item_id] = line
        self.text_count[text] = occurrence
        reserved = {self.id_col, self.text_col, self.label_col, self.split_col}
        meta = {k: v for k, v in record.items() if k not in reserved}
        if self.strip:
            meta = _strip_json(meta)
        why = json_problem(meta)
        if why:
            self.problems.append((line, f"column {why}"))
            return
        self.items.append(Item(item_id, text, split or self.default_split, meta))
        self.item_lines.append(line)
        if label is not None:
            self.labels[item_id] = label

    def _scalar(
        self,
        record: dict[str, Any],
        column: str,
        what: str,
        reasons: list[str],
        *,
        allow_int: bool,
    ) -> str | None:
        """The stripped string value of an optional column; None when absent or empty."""
        value = record.get(column)
        if value is None:
            return None
        if allow_int and isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            kinds = "a string or an integer" if allow_int else "a string"
            reasons.append(f"{column!r} ({what}) must be {kinds}, found {_json_type(value)}")
            return None
        why = char_problem(value)
        if why:
            reasons.append(f"{column!r} ({what}) {why}")
            return None
        return value.strip() or None

    def _checked_text(self, line: int, text: str) -> tuple[str, str | None]:
        """The text as stored (control characters removed in strip mode) and why it is
        invalid, if it is."""
        if self.strip and char_problem(text):
            text = strip_forbidden(text)
            self.stripped.append(line)
            if not text.strip():
                return text, "is blank once its control characters are removed"
        return text, text_problem(text, self.max_chars)

    def result(self, text: str) -> ReadResult:
        lines = _LINE_BREAK.split(text) if self.problems else []
        skipped = [
            RowProblem(line, reason, _excerpt(lines[line - 1] if line <= len(lines) else ""))
            for line, reason in sorted(self.problems)
        ]
        by_text: dict[str, list[int]] = {}
        for index, item in enumerate(self.items):
            by_text.setdefault(item.text, []).append(index)
        duplicates = [
            Duplicate(
                "text",
                _excerpt(t),
                tuple(self.items[i].id for i in idx),
                tuple(self.item_lines[i] for i in idx),
            )
            for t, idx in by_text.items()
            if len(idx) > 1
        ]
        duplicates += [
            Duplicate("id", item_id, (item_id,) * len(lines_), tuple(lines_))
            for item_id, lines_ in self.repeated_ids.items()
        ]
        return ReadResult(
            path=self.path,
            format=self.fmt,
            columns=self.columns,
            items=self.items,
            labels=self.labels,
            skipped=skipped,
            duplicates=duplicates,
            stripped=self.stripped,
        )


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({json.dumps(value)})"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _strip_json(value: Any) -> Any:
    if isinstance(value, str):
        return strip_forbidden(value)
    if isinstance(value, dict):
        return {k: _strip_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip_json(v) for v in value]
    return value


def _excerpt(raw: str) -> str:
    long = len(raw) > _EXCERPT_CHARS
    raw = escape_forbidden(raw[:_EXCERPT_CHARS].replace("\t", " "))
    return raw[: _EXCERPT_CHARS - 1] + "…" if long or len(raw) > _EXCERPT_CHARS else raw
