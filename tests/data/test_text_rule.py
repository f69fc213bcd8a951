"""The text rule (loop/text.py) at file ingest and on the command line: NUL and other control
characters, one text's length cap, strip mode; rejected rows are named and nothing is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.data.files import InvalidRowsError, read_items
from loop.text import char_problem, escape_forbidden, json_problem, strip_forbidden, text_problem
from tests.test_cli import alloop

ALLOWED = "\t\n\r"
FORBIDDEN = (
    [chr(c) for c in range(0x20) if chr(c) not in ALLOWED]
    + [chr(c) for c in range(0x7F, 0xA0)]
    + ["\ud800", "\udfff", "\ufffe", "\uffff"]
)


@pytest.mark.parametrize("ch", FORBIDDEN, ids=lambda c: f"U+{ord(c):04X}")
def test_every_forbidden_character_is_named_with_its_offset(ch: str) -> None:
    why = char_problem(f"ab{ch}cd")
    assert why is not None and f"U+{ord(ch):04X} at offset 2" in why
    assert strip_forbidden(f"ab{ch}cd") == "abcd"
    assert "\\u" in escape_forbidden(ch) and ch not in escape_forbidden(ch)


@given(st.text(alphabet=st.characters(exclude_categories=("Cs", "Cc")) | st.sampled_from(ALLOWED)))
def test_text_without_control_characters_passes(text: str) -> None:
    if "\ufffe" in text or "\uffff" in text:
        assert char_problem(text) is not None
    else:
        assert char_problem(text) is None
        assert strip_forbidden(text) == text


def test_length_and_json() -> None:
    assert text_problem("x" * 11, max_chars=10) == (
        "is 11 characters long, more than the limit of 10"
    )
    assert text_problem("x" * 10, max_chars=10) is None
    assert json_problem({"a": [1, "ok", {"b": "x\x00"}]}).startswith("a[2].b holds")
    assert json_problem({"k\x01": 1}).startswith("key")
    assert json_problem({"a": ["fine", 2, None]}) is None


def _csv(tmp_path: Path, rows: list[str]) -> Path:
    path = tmp_path / "d.csv"
    path.write_text("id,text,label,note\n" + "".join(rows), encoding="utf-8")
    return path


def test_nul_and_controls_reject_the_row_with_its_line(tmp_path: Path) -> None:
    path = _csv(tmp_path, ["a,fine,pos,n\n", "b,bad\x00text,neg,n\n", "c,bell\x07,pos,n\n"])
    with pytest.raises(InvalidRowsError) as err:
        read_items(path)
    msg = str(err.value)
    assert "line 3: 'text' holds the control character U+0000 at offset 3" in msg
    assert "line 4: 'text' holds the control character U+0007" in msg
    assert "nothing was read" in msg and "\x00" not in msg
    res = read_items(path, skip_invalid=True)
    assert [i.id for i in res.items] == ["a"]
    assert "\\u0000" in res.skipped[0].excerpt  # the excerpt shows it escaped


def test_ids_labels_and_meta_with_controls_are_invalid_even_in_strip_mode(tmp_path: Path) -> None:
    path = _csv(tmp_path, ["a\x00,t1,pos,n\n", "b,t2,p\x1bos,n\n", "c,t3,pos,n\x00\n"])
    with pytest.raises(InvalidRowsError) as err:
        read_items(path)
    msg = str(err.value)
    assert "line 2: 'id' (id) holds the control character U+0000" in msg
    assert "line 3: 'label' (label) holds the control character U+001B" in msg
    assert "line 4: column note holds the control character U+0000" in msg
    res = read_items(path, control_chars="strip", skip_invalid=True)
    assert [i.id for i in res.items] == ["c"] and res.items[0].meta == {"note": "n"}


def test_strip_mode_removes_controls_and_lists_the_lines(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(
        json.dumps({"id": "a", "text": "to\x00day\x1f"})
        + "\n"
        + json.dumps({"id": "b", "text": "\x00\x01"})
        + "\n"
        + json.dumps({"id": "c", "text": "clean\ttext\r\n"})
        + "\n",
        encoding="utf-8",
    )
    with pytest.raises(InvalidRowsError, match="line 2: 'text' is blank once its control"):
        read_items(path, control_chars="strip")
    res = read_items(path, control_chars="strip", skip_invalid=True)
    assert [(i.id, i.text) for i in res.items] == [("a", "today"), ("c", "clean\ttext\r\n")]
    assert res.stripped == [1, 2]


def test_a_text_over_the_cap_is_an_invalid_row(tmp_path: Path) -> None:
    path = _csv(tmp_path, ["a,short,pos,n\n", f"b,{'y' * 101},neg,n\n"])
    with pytest.raises(
        InvalidRowsError, match="line 3: 'text' is 101 characters long, more than the limit of 100"
    ):
        read_items(path, max_chars=100)
    assert len(read_items(path, max_chars=101).items) == 2


def test_cli_ingest_rejects_nul_and_oversize_and_writes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    path = _csv(tmp_path, ["a,fine,pos,n\n", "b,nul\x00here,neg,n\n", f"c,{'z' * 300},neg,n\n"])
    r = alloop("ingest", str(path), home=home, env={"ALLOOP_TEXT__MAX_CHARS": "200"})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "line 3" in r.stderr and "U+0000" in r.stderr
    assert "line 4" in r.stderr and "300 characters long, more than the limit of 200" in r.stderr
    st_ = json.loads(alloop("status", "--json", home=home).stdout)
    assert st_["items"]["train"] == 0 and not st_["classes"]  # nothing half-written
    r = alloop(
        "ingest",
        str(path),
        home=home,
        env={"ALLOOP_TEXT__MAX_CHARS": "400", "ALLOOP_TEXT__CONTROL_CHARS": "strip"},
    )
    assert r.returncode == 0, r.stderr
    assert "3 new items" in r.stdout and "control characters removed from 1 text(s)" in r.stderr
