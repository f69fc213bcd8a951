"""What a stored string may hold: one rule for every entry (files, built-in datasets, Label
Studio's webhook and polling) and every database (SQLite and PostgreSQL alike).

The rule: a string must be valid Unicode text without control characters. Rejected are

- the C0 control characters U+0000-U+001F (NUL included) except tab (U+0009), line feed
  (U+000A) and carriage return (U+000D);
- DEL (U+007F) and the C1 control characters U+0080-U+009F;
- lone surrogates U+D800-U+DFFF (a JSON ``"\\ud800"`` escape; not encodable as UTF-8);
- the noncharacters U+FFFE and U+FFFF.

PostgreSQL's ``text`` and ``jsonb`` cannot hold NUL at all, and Label Studio's pages and
exports choke on the rest, so SQLite is held to the same rule. Texts are also capped in length
(``text.max_chars``). With ``text.control_chars = "strip"`` ingestion removes those characters
instead of rejecting the row (a text left blank by that is still rejected).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

DEFAULT_MAX_CHARS = 100_000
ALLOWED_CONTROLS = "tab, newline and carriage return"
_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def forbidden_char(value: str) -> tuple[int, str] | None:
    """The first forbidden character of ``value`` as ``(offset, "U+XXXX")``, or None."""
    m = _FORBIDDEN.search(value)
    if m is None:
        return None
    return m.start(), f"U+{ord(m.group()):04X}"


def strip_forbidden(value: str) -> str:
    """``value`` without its forbidden characters."""
    return _FORBIDDEN.sub("", value)


def escape_forbidden(value: str) -> str:
    """``value`` with each forbidden character written as ``\\uXXXX`` (safe to print or log)."""
    return _FORBIDDEN.sub(lambda m: f"\\u{ord(m.group()):04x}", value)


def char_problem(value: str) -> str | None:
    """Why ``value`` breaks the character rule (one phrase), or None when it does not."""
    found = forbidden_char(value)
    if found is None:
        return None
    offset, code = found
    n = len(_FORBIDDEN.findall(value))
    more = f" ({n} such characters in all)" if n > 1 else ""
    return (
        f"holds the control character {code} at offset {offset}{more}; only "
        f"{ALLOWED_CONTROLS} are allowed"
    )


def text_problem(value: str, max_chars: int | None = DEFAULT_MAX_CHARS) -> str | None:
    """Why a text breaks the rule (characters, then length), or None."""
    if max_chars is not None and len(value) > max_chars:
        return f"is {len(value):,} characters long, more than the limit of {max_chars:,}"
    return char_problem(value)


def json_problem(value: Any, path: str = "") -> str | None:
    """The first string (key or value) inside JSON-like ``value`` that breaks the character
    rule, as ``"<path> <problem>"``, or None."""
    if isinstance(value, str):
        why = char_problem(value)
        return f"{path or 'value'} {why}" if why else None
    if isinstance(value, Mapping):
        for k, v in value.items():
            key = str(k)
            why = char_problem(key)
            if why:
                return f"key {key!r} {why}"
            found = json_problem(v, f"{path}.{key}" if path else key)
            if found:
                return found
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            found = json_problem(v, f"{path}[{i}]")
            if found:
                return found
    return None
