"""read_items: CSV and JSONL parsing, validation, whole-file rejection, ids and duplicates."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.data.files import InvalidRowsError, derived_id, read_items
from loop.errors import ConfigError, DataError
from loop.text import char_problem


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_bytes(content.encode("utf-8"))
    else:
        path.write_bytes(content)
    return path


def jsonl(*objs: object) -> str:
    return "".join(json.dumps(o) + "\n" for o in objs)


# -- CSV happy paths ------------------------------------------------------------------------


def test_csv_reads_items_labels_splits_and_meta(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "data.csv",
        "id,text,label,split,source\n"
        "a1,Great film,pos,train,web\n"
        "a2,Dull plot,,test,mail\n"
        "a3,Fine,neg,,web\n",
    )
    result = read_items(path)
    assert [(i.id, i.text, i.split) for i in result.items] == [
        ("a1", "Great film", "train"),
        ("a2", "Dull plot", "test"),
        ("a3", "Fine", "train"),
    ]
    assert result.labels == {"a1": "pos", "a3": "neg"}
    assert [dict(i.meta) for i in result.items] == [
        {"source": "web"},
        {"source": "mail"},
        {"source": "web"},
    ]
    assert result.skipped == [] and result.duplicates == []
    assert result.format == "csv" and result.rows == 3
    assert result.columns == ("id", "text", "label", "split", "source")


def test_csv_bom_crlf_and_quoted_newlines(tmp_path: Path) -> None:
    content = 'id,text\r\n1,"first line\r\nsecond, with comma"\r\n\r\n2,"say ""hi"""\r\n'
    path = write(tmp_path, "w.csv", b"\xef\xbb\xbf" + content.encode("utf-8"))
    result = read_items(path)
    assert result.columns == ("id", "text")  # the BOM is not part of the first column name
    assert [i.text for i in result.items] == ["first line\r\nsecond, with comma", 'say "hi"']
    assert [i.id for i in result.items] == ["1", "2"]


def test_csv_line_numbers_count_physical_lines_after_a_multiline_field(tmp_path: Path) -> None:
    path = write(tmp_path, "m.csv", 'id,text\n1,"a\nb\nc"\n2,ok\n3,"  "\n')
    with pytest.raises(InvalidRowsError) as err:
        read_items(path)
    assert [(p.line, p.reason) for p in err.value.problems] == [(6, "'text' is blank")]
    assert "line 6: 'text' is blank" in str(err.value)


def test_column_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "m.csv", "uid,review,sentiment,part\nx,Nice,pos,test\n")
    result = read_items(
        path, id_col="uid", text_col="review", label_col="sentiment", split_col="part"
    )
    assert [(i.id, i.text, i.split, dict(i.meta)) for i in result.items] == [
        ("x", "Nice", "test", {})
    ]
    assert result.labels == {"x": "pos"}


def test_missing_text_column_names_columns_and_the_option(tmp_path: Path) -> None:
    path = write(tmp_path, "m.csv", "id,review\n1,Nice\n")
    with pytest.raises(DataError) as err:
        read_items(path)
    message = str(err.value)
    assert "'review'" in message and "'id'" in message and "--text-col" in message


def test_mapped_optional_column_must_exist(tmp_path: Path) -> None:
    path = write(tmp_path, "m.csv", "id,text\n1,Nice\n")
    with pytest.raises(DataError, match="--label-col names 'sentiment'"):
        read_items(path, label_col="sentiment")
    # the default-named optional columns may be absent
    assert read_items(path).labels == {}


def test_options_must_name_different_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "m.csv", "id,text\n1,Nice\n")
    with pytest.raises(ConfigError):
        read_items(path, label_col="text")


def test_default_split(tmp_path: Path) -> None:
    path = write(tmp_path, "m.csv", "text,split\nA,\nB,test\n")
    assert [i.split for i in read_items(path, default_split="eval").items] == ["eval", "test"]
    with pytest.raises(ConfigError, match="default_split"):
        read_items(path, default_split="dev")


# -- ids and duplicates ---------------------------------------------------------------------


def test_derived_ids_are_stable_and_distinct_for_repeated_texts(tmp_path: Path) -> None:
    path = write(tmp_path, "n.csv", "text,label\nSame,a\nOther,b\nSame,c\n\n")
    first, second = read_items(path), read_items(path)
    ids = [i.id for i in first.items]
    assert ids == [i.id for i in second.items]
    assert ids[0] == hashlib.sha1(b"Same").hexdigest()[:16]
    assert ids[1] == derived_id("Other")
    assert len(set(ids)) == 3
    assert first.labels == {ids[0]: "a", ids[1]: "b", ids[2]: "c"}
    (dup,) = first.duplicates
    assert (dup.kind, dup.key, dup.item_ids, dup.lines) == (
        "text",
        "Same",
        (ids[0], ids[2]),
        (2, 4),
    )


def test_empty_id_value_falls_back_to_derived_id(tmp_path: Path) -> None:
    path = write(tmp_path, "n.csv", "id,text\n,Hello\n7,World\n")
    assert [i.id for i in read_items(path).items] == [derived_id("Hello"), "7"]


def test_duplicate_texts_with_ids_are_reported_not_merged(tmp_path: Path) -> None:
    path = write(tmp_path, "d.jsonl", jsonl(*({"id": f"i{k}", "text": "x"} for k in range(3))))
    result = read_items(path)
    assert len(result.items) == 3
    assert [(d.kind, d.item_ids, d.lines) for d in result.duplicates] == [
        ("text", ("i0", "i1", "i2"), (1, 2, 3))
    ]


def test_duplicate_ids_are_row_errors_from_the_second_occurrence(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", "id,text\n1,a\n2,b\n1,c\n1,d\n")
    with pytest.raises(InvalidRowsError) as err:
        read_items(path)
    assert [(p.line, p.reason) for p in err.value.problems] == [
        (4, "duplicate id '1' (first on line 2)"),
        (5, "duplicate id '1' (first on line 2)"),
    ]
    result = read_items(path, skip_invalid=True)
    assert [i.text for i in result.items] == ["a", "b"]
    assert [(d.kind, d.key, d.lines) for d in result.duplicates] == [("id", "1", (2, 4, 5))]


# -- validation -----------------------------------------------------------------------------


def test_every_csv_row_rule_with_line_numbers(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "bad.csv",
        "id,text,split\n"
        "1,ok,train\n"  # 2
        "2,,train\n"  # 3 blank text
        "3,   ,test\n"  # 4 whitespace-only text
        "4,fine,dev\n"  # 5 bad split
        "5,too,many,fields\n"  # 6
        "6,short\n"  # 7
        '7,"bad"quote,train\n'  # 8
        "8,last,eval\n",  # 9
    )
    with pytest.raises(InvalidRowsError) as err:
        read_items(path)
    problems = {p.line: p.reason for p in err.value.problems}
    assert sorted(problems) == [3, 4, 5, 6, 7, 8]
    assert problems[3] == problems[4] == "'text' is blank"
    assert "must be one of train, test, eval, found 'dev'" in problems[5]
    assert problems[6] == "expected 3 fields like the header, found 4"
    assert problems[7] == "expected 3 fields like the header, found 2"
    assert "malformed CSV" in problems[8]
    # nothing is read unless asked
    assert "--skip-invalid" in str(err.value) and "6 invalid" in str(err.value)

    result = read_items(path, skip_invalid=True)
    assert [i.id for i in result.items] == ["1", "8"]
    assert [p.line for p in result.skipped] == [3, 4, 5, 6, 7, 8]
    assert result.skipped[2].excerpt == "4,fine,dev"
    assert result.rows == 8


def test_unterminated_quote_is_reported_at_its_start_line(tmp_path: Path) -> None:
    path = write(tmp_path, "q.csv", 'id,text\n1,ok\n2,"never closed\n3,x\n')
    result = read_items(path, skip_invalid=True)
    assert [i.id for i in result.items] == ["1"]
    assert [(p.line, p.reason.split(" (")[0]) for p in result.skipped] == [
        (3, "unterminated quoted field")
    ]


def test_rejection_message_lists_first_ten_and_the_total(tmp_path: Path) -> None:
    rows = "".join(f"{k},\n" for k in range(25))
    path = write(tmp_path, "many.csv", "id,text\nok,fine\n" + rows)
    with pytest.raises(InvalidRowsError) as err:
        read_items(path)
    message = str(err.value)
    assert "found 25 invalid row(s)" in message
    assert "line 12:" in message and "line 13:" not in message
    assert "(and 15 more)" in message
    assert "read the 1 valid row(s)" in message
    assert len(err.value.problems) == 25


def test_all_rows_invalid_with_skip_invalid_gives_empty_items(tmp_path: Path) -> None:
    path = write(tmp_path, "x.csv", "id,text\n1,\n")
    result = read_items(path, skip_invalid=True)
    assert result.items == [] and len(result.skipped) == 1


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("empty.csv", "", "empty file"),
        ("blank.jsonl", "\n  \n", "empty file"),
        ("header.csv", "id,text,label\n", "header only"),
        ("header_crlf.csv", "\ufeffid,text\r\n\r\n", "header only"),
        ("dups.csv", "id,text,id\n1,a,2\n", "'id' more than once"),
        ("data.json", '[{"text": "a"}]', "expected a file ending in .csv, .jsonl or .ndjson"),
        ("data.txt", "text\nhello\n", "'.txt'"),
    ],
)
def test_whole_file_errors(tmp_path: Path, name: str, content: str, match: str) -> None:
    with pytest.raises(DataError, match=match):
        read_items(write(tmp_path, name, content))


def test_missing_path_and_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="found nothing there"):
        read_items(tmp_path / "nope.csv")
    folder = tmp_path / "dir.csv"
    folder.mkdir()
    with pytest.raises(DataError, match="found a directory"):
        read_items(folder)


def test_non_utf8_file_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "l1.csv", b"id,text\n1,ok\n2," + "caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"byte 0xe9 on line 3 .*iconv"):
        read_items(path)


def test_very_long_csv_field_and_the_csv_limit_is_restored(tmp_path: Path) -> None:
    long_text = "word " * 60_000  # 300,000 chars, above the csv module's 131,072 default
    path = write(tmp_path, "long.csv", f'id,text\n1,"{long_text}"\n2,short\n')
    before = csv.field_size_limit()
    result = read_items(path, max_chars=len(long_text))
    assert csv.field_size_limit() == before
    assert [len(i.text) for i in result.items] == [len(long_text), 5]


# -- JSONL ----------------------------------------------------------------------------------


def test_jsonl_happy_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "d.jsonl",
        jsonl(
            {"id": 1, "text": "One", "label": 0, "tags": ["a", "b"]},
            {"id": "two", "text": "Two", "label": None, "split": "test"},
        )
        + "\n   \n"
        + jsonl({"text": "Three", "label": "pos", "split": None, "score": 0.5}),
    )
    result = read_items(path)
    assert [(i.id, i.text, i.split) for i in result.items] == [
        ("1", "One", "train"),
        ("two", "Two", "test"),
        (derived_id("Three"), "Three", "train"),
    ]
    assert result.labels == {"1": "0", derived_id("Three"): "pos"}
    assert dict(result.items[0].meta) == {"tags": ["a", "b"]}
    assert dict(result.items[2].meta) == {"score": 0.5}
    assert result.format == "jsonl"
    assert result.columns == ("id", "text", "label", "tags", "split", "score")


def test_ndjson_extension_and_crlf_and_bom(tmp_path: Path) -> None:
    content = '\ufeff{"text": "a"}\r\n{"text": "b"}\r\n'
    result = read_items(write(tmp_path, "d.ndjson", content))
    assert [i.text for i in result.items] == ["a", "b"]


def test_jsonl_unicode_line_separator_inside_a_string_is_not_a_line_break(tmp_path: Path) -> None:
    text = "para one\u2028para two\u2029end"
    path = write(tmp_path, "u.jsonl", json.dumps({"text": text}, ensure_ascii=False) + "\n")
    assert [i.text for i in read_items(path).items] == [text]
    # NEL (U+0085) is a C1 control character: the row is invalid, with the offset named
    path = write(tmp_path, "n.jsonl", json.dumps({"text": "one\x85two"}) + "\n")
    with pytest.raises(
        InvalidRowsError, match=r"line 1: 'text' holds the control character U\+0085 at offset 3"
    ):
        read_items(path)


def test_every_jsonl_row_rule_with_line_numbers(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "bad.jsonl",
        '{"id": "a", "text": "ok"}\n'  # 1
        '{"id": "b", "text": 42}\n'  # 2 number text
        '{"id": "c", "text": "x"\n'  # 3 invalid JSON
        "[1, 2]\n"  # 4 array
        "\n"  # 5 blank: ignored
        "7\n"  # 6 number
        '{"id": "d"}\n'  # 7 no text key
        '{"id": 1.5, "text": "y"}\n'  # 8 float id
        '{"id": "e", "text": "z", "split": 3}\n'  # 9 non-string split
        '{"id": "f", "text": "w", "label": true}\n'  # 10 boolean label
        '{"id": "g", "text": null}\n'  # 11 null text
        '{"id": "h", "text": "fine"}\n',  # 12
    )
    with pytest.raises(InvalidRowsError) as err:
        read_items(path)
    problems = {p.line: p.reason for p in err.value.problems}
    assert sorted(problems) == [2, 3, 4, 6, 7, 8, 9, 10, 11]
    assert problems[2] == "'text' must be a string, found a number (42)"
    assert problems[3].startswith("invalid JSON")
    assert problems[4] == "expected a JSON object, found an array"
    assert problems[6] == "expected a JSON object, found a number (7)"
    assert problems[7] == "missing 'text'"
    assert "'id' (id) must be a string or an integer, found a number (1.5)" == problems[8]
    assert "'split' (split) must be a string" in problems[9]
    assert "found a boolean (true)" in problems[10]
    assert problems[11] == "'text' must be a string, found null"
    result = read_items(path, skip_invalid=True)
    assert [i.id for i in result.items] == ["a", "h"]
    assert result.skipped[0].excerpt == '{"id": "b", "text": 42}'


def test_jsonl_without_any_text_key_is_a_column_error(tmp_path: Path) -> None:
    path = write(tmp_path, "k.jsonl", jsonl({"body": "a", "y": 1}, {"body": "b"}))
    with pytest.raises(DataError, match=r"found keys 'body', 'y'.*--text-col"):
        read_items(path)
    assert [i.text for i in read_items(path, text_col="body").items] == ["a", "b"]


def test_jsonl_only_non_objects_is_rejected_by_rows(tmp_path: Path) -> None:
    path = write(tmp_path, "n.jsonl", "1\n2\n")
    with pytest.raises(InvalidRowsError, match="expected a JSON object"):
        read_items(path)


def test_excerpts_are_short(tmp_path: Path) -> None:
    path = write(tmp_path, "x.jsonl", '{"text": 1, "pad": "' + "p" * 5000 + '"}\n')
    (problem,) = read_items(path, skip_invalid=True).skipped
    assert len(problem.excerpt) <= 120 and problem.excerpt.endswith("…")


# -- round trips ----------------------------------------------------------------------------

texts = st.text(
    # UTF-8 cannot encode surrogates; control characters break the text rule (tested below)
    alphabet=st.characters(exclude_categories=("Cs", "Cc"), include_characters="\t\n\r"),
    min_size=1,
    max_size=40,
).filter(lambda t: t.strip() != "" and char_problem(t) is None)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=st.lists(texts, min_size=1, max_size=8))
def test_any_text_round_trips_through_csv_and_jsonl(tmp_path: Path, rows: list[str]) -> None:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["text", "label"])
    for text in rows:
        writer.writerow([text, "x"])
    csv_path = write(tmp_path, "r.csv", buffer.getvalue())
    jsonl_path = write(
        tmp_path,
        "r.jsonl",
        "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in rows),
    )
    from_csv, from_jsonl = read_items(csv_path), read_items(jsonl_path)
    assert [i.text for i in from_csv.items] == rows
    assert [i.text for i in from_jsonl.items] == rows
    # same texts, same derived ids, whatever the format
    assert [i.id for i in from_csv.items] == [i.id for i in from_jsonl.items]
    assert len({i.id for i in from_csv.items}) == len(rows)
