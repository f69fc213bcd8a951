"""Pure parts of the connector: webhook payloads (captured from a real Label Studio 1.23.2 by
``test_tool_live.py::test_webhook_payloads_parse_like_the_poll`` with
ALLOOP_LS_WRITE_FIXTURES=1), annotations, labeling configs, queue scores, server env."""

from __future__ import annotations

import copy
import json
import math
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.labelstudio import server as lss
from connectors.labelstudio.tool import (
    SOURCE,
    LabelStudioTool,
    Rejection,
    annotation_to_label,
    label_config,
    parse_label_config,
    parse_webhook,
    queue_scores,
)
from loop.errors import ConfigError, DataError, LabelingToolError
from loop.records import Label

PAYLOADS: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "data" / "webhook_payloads_1.23.2.json").read_text()
)
CLASSES = ("pos", "neg")


def payload(i: int) -> dict[str, Any]:
    return copy.deepcopy(PAYLOADS[i])


# -- webhooks ------------------------------------------------------------------------------


def test_captured_fixture_holds_the_four_shapes() -> None:
    assert [p["action"] for p in PAYLOADS] == [
        "ANNOTATION_CREATED",
        "ANNOTATION_UPDATED",
        "ANNOTATION_CREATED",
        "ANNOTATION_CREATED",
        "ANNOTATIONS_DELETED",
    ]


def test_created_annotation_is_one_label() -> None:
    p = payload(0)
    event = parse_webhook(p, CLASSES)
    assert event.action == "ANNOTATION_CREATED"
    assert event.project_id == p["project"]["id"]
    assert event.item_ids == ("w1",)
    assert event.rejections == () and event.deleted_annotation_ids == ()
    assert event.labels == (
        Label(
            item_id="w1",
            value="pos",
            source=SOURCE,
            annotation_id=str(p["annotation"]["id"]),
            annotator=str(p["annotation"]["completed_by"]),
            created_at=datetime.fromisoformat(p["annotation"]["created_at"]),
            skipped=False,
        ),
    )
    assert event.labels[0].created_at is not None and event.labels[0].created_at.tzinfo is not None


def test_updated_annotation_keeps_its_id_with_the_new_value() -> None:
    created, updated = parse_webhook(payload(0), CLASSES), parse_webhook(payload(1), CLASSES)
    assert updated.labels[0].annotation_id == created.labels[0].annotation_id
    assert (created.labels[0].value, updated.labels[0].value) == ("pos", "neg")


def test_cancelled_annotation_is_a_skip() -> None:
    (label,) = parse_webhook(payload(2), CLASSES).labels
    assert (label.item_id, label.value, label.skipped) == ("w2", None, True)


def test_unknown_choice_is_rejected_not_labeled() -> None:
    event = parse_webhook(payload(3), CLASSES)
    assert event.labels == ()
    (rej,) = event.rejections
    assert rej.item_id == "w2" and rej.annotation_id == str(payload(3)["annotation"]["id"])
    assert "'maybe'" in rej.reason
    # the same payload with 'maybe' among the classes is a label
    assert parse_webhook(payload(3), ("pos", "neg", "maybe")).labels[0].value == "maybe"


def test_deletion_names_only_annotation_ids() -> None:
    event = parse_webhook(payload(4), CLASSES)
    assert event.deleted_annotation_ids == (str(PAYLOADS[0]["annotation"]["id"]),)
    assert event.labels == () and event.item_ids == ()


def test_other_actions_are_acknowledged_and_ignored() -> None:
    p = payload(0)
    p["action"] = "PROJECT_UPDATED"
    event = parse_webhook(p, CLASSES)
    assert (event.action, event.labels, event.rejections) == ("PROJECT_UPDATED", (), ())


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: p.pop("action"), "no 'action'"),
        (lambda p: p.pop("task"), "'annotation' and 'task'"),
        (lambda p: p.__setitem__("annotation", "x"), "'annotation' and 'task'"),
    ],
)
def test_malformed_payloads_raise_data_error(mutate: Any, message: str) -> None:
    p = payload(0)
    mutate(p)
    with pytest.raises(DataError, match=message):
        parse_webhook(p, CLASSES)


def test_malformed_deletion_and_non_object_payloads_raise() -> None:
    p = payload(4)
    p["annotations"] = [{"no_id": 1}]
    with pytest.raises(DataError, match="ANNOTATIONS_DELETED"):
        parse_webhook(p, CLASSES)
    with pytest.raises(DataError, match="JSON object"):
        parse_webhook([1, 2], CLASSES)  # type: ignore[arg-type]


def test_task_without_alloop_id_is_a_rejection() -> None:
    p = payload(0)
    del p["task"]["data"]["alloop_id"]
    event = parse_webhook(p, CLASSES)
    assert event.labels == () and event.rejections[0].item_id is None
    assert "alloop_id" in event.rejections[0].reason


# -- annotations ---------------------------------------------------------------------------


def annotation(result: Any, **kw: Any) -> dict[str, Any]:
    a = copy.deepcopy(PAYLOADS[0]["annotation"])
    a["result"] = result
    a.update(kw)
    return a


@pytest.mark.parametrize(
    ("result", "reason"),
    [
        ([], "empty"),
        ("oops", "not a list"),
        (
            [{"from_name": "other", "type": "choices", "value": {"choices": ["pos"]}}],
            "no 'label' choice",
        ),
        (
            [{"from_name": "label", "type": "choices", "value": {"choices": []}}],
            "exactly one choice",
        ),
        (
            [{"from_name": "label", "type": "choices", "value": {"choices": ["pos", "neg"]}}],
            "exactly one",
        ),
        (
            [{"from_name": "label", "type": "choices", "value": {"choices": ["pos"]}}] * 2,
            "2 'label' regions",
        ),
        ([{"from_name": "label", "type": "choices", "value": {"choices": ["POS"]}}], "not one of"),
    ],
)
def test_malformed_results_are_rejections(result: Any, reason: str) -> None:
    out = annotation_to_label(annotation(result), "i1", CLASSES)
    assert isinstance(out, Rejection)
    assert out.item_id == "i1" and reason in out.reason


def test_completed_by_as_user_object_gives_the_same_annotator() -> None:
    a = annotation(PAYLOADS[0]["annotation"]["result"])
    plain = annotation_to_label(a, "i1", CLASSES)
    a["completed_by"] = {"id": a["completed_by"], "email": "someone@example.com"}
    nested = annotation_to_label(a, "i1", CLASSES)
    assert isinstance(plain, Label) and isinstance(nested, Label)
    assert plain.annotator == nested.annotator == str(PAYLOADS[0]["annotation"]["completed_by"])


# -- labeling config -----------------------------------------------------------------------


@given(
    st.lists(
        st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12).filter(
            lambda s: s.strip() == s and s != ""
        ),
        min_size=2,
        max_size=6,
        unique=True,
    )
)
def test_label_config_round_trips_any_class_names(classes: list[str]) -> None:
    cfg = parse_label_config(label_config(classes, "body"))
    assert cfg.classes == tuple(classes)
    assert (cfg.choices_name, cfg.to_name, cfg.text_value, cfg.single) == (
        "label",
        "text",
        "$body",
        True,
    )


def test_label_config_refuses_bad_class_lists() -> None:
    with pytest.raises(DataError, match="at least 2"):
        label_config(["only"])
    with pytest.raises(DataError, match="unique"):
        label_config(["a", "a"])
    with pytest.raises(DataError, match="Text field"):
        label_config(["a", "b"], "text field")


def test_parse_label_config_errors() -> None:
    with pytest.raises(LabelingToolError, match="not valid XML"):
        parse_label_config("<View>")
    with pytest.raises(LabelingToolError, match="0 <Choices>"):
        parse_label_config('<View><Text name="t" value="$t"/></View>')


def test_tool_needs_a_token_or_client_and_does_no_io_when_built() -> None:
    with pytest.raises(DataError, match="token"):
        LabelStudioTool("http://127.0.0.1:1", None, project_title="p", classes=CLASSES)
    tool = LabelStudioTool("http://127.0.0.1:1", "t" * 40, project_title="p", classes=CLASSES)
    assert "t" * 40 not in repr(tool)
    assert tool._client is None and tool.project_id is None  # the client is built on first use


# -- queue scores --------------------------------------------------------------------------


def test_queue_scores_by_hand() -> None:
    assert queue_scores([0.1, 0.9, 0.5]) == [1.0, 0.0, 0.5]
    assert queue_scores([0.3, 0.3, 0.1]) == [0.0, 0.0, 1.0]  # ties share a rank
    assert queue_scores([2.0, float("nan"), 1.0]) == [0.0, 1.0, 0.5]  # NaN last
    assert queue_scores([5.0]) == [0.0]
    assert queue_scores([]) == []


@given(st.lists(st.floats(allow_nan=False, allow_infinity=True, width=32), min_size=1, max_size=50))
def test_queue_scores_reverse_the_strategy_order(scores: list[float]) -> None:
    q = queue_scores(scores)
    assert len(q) == len(scores)
    assert all(0.0 <= x <= 1.0 and math.isfinite(x) for x in q)
    for i in range(len(scores)):
        for j in range(len(scores)):
            if scores[i] > scores[j]:
                assert q[i] < q[j]
            elif scores[i] == scores[j]:
                assert q[i] == q[j]
    assert min(q) == 0.0


# -- server environment and credentials ----------------------------------------------------


def test_server_env_is_clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for leaky in ("PORT", "HOST", "USERNAME", "PASSWORD", "LABEL_STUDIO_PORT", "DJANGO_DB"):
        monkeypatch.setenv(leaky, "leak")
    creds = lss.Credentials("u@example.com", "pw", "a" * 40)
    env = lss.server_env(tmp_path / "venv", tmp_path / "data", creds, {"DJANGO_DB": "default"})
    assert not {"PORT", "HOST", "USERNAME", "PASSWORD", "LABEL_STUDIO_PORT"} & set(env)
    assert env["DJANGO_DB"] == "default"  # only what is asked for
    assert env["HOME"].startswith(str(tmp_path / "data"))
    assert env["XDG_CONFIG_HOME"].startswith(str(tmp_path / "data"))
    assert env["LABEL_STUDIO_BASE_DATA_DIR"] == str(tmp_path / "data")
    assert env["LABEL_STUDIO_USER_TOKEN"] == "a" * 40
    assert env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    assert env["SSRF_PROTECTION_ENABLED"] == "false" and env["ML_BLOCK_LOCAL_IP"] == "false"
    assert env["PATH"].split(os.pathsep)[0] == str(tmp_path / "venv" / "bin")
    assert "pw" not in repr(creds) and "a" * 40 not in repr(creds)


def test_credentials_are_generated_once_with_mode_600(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    first = lss.load_or_create_credentials(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(first.token) == 40 and int(first.token, 16) >= 0
    assert lss.load_or_create_credentials(path) == first
    given_token = lss.load_or_create_credentials(path, token="b" * 40)
    assert given_token.token == "b" * 40 and given_token.password == first.password
    path.write_text("[]")
    with pytest.raises(ConfigError, match="expected an object"):
        lss.load_or_create_credentials(path)
    with pytest.raises(ConfigError, match="at least 6"):
        lss.load_or_create_credentials(tmp_path / "other.json", token="x")


def test_port_checks(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert not lss.port_is_free("127.0.0.1", port)
        server = lss.LocalLabelStudio(tmp_path / "venv", tmp_path / "data", port)
        with pytest.raises(LabelingToolError, match="already in use"):
            server.start()
    assert lss.port_is_free("127.0.0.1", lss.free_port())
    with pytest.raises(ConfigError, match="1..65535"):
        lss.LocalLabelStudio(tmp_path / "venv", tmp_path / "data", 70000)


def test_missing_install_is_a_clear_error(tmp_path: Path) -> None:
    assert lss.installed_version(tmp_path / "nothing") is None
    server = lss.LocalLabelStudio(tmp_path / "nothing", tmp_path / "data", lss.free_port())
    with pytest.raises(LabelingToolError, match="No Label Studio in"):
        server.start()
    with pytest.raises(LabelingToolError, match="not a Label Studio"):
        lss.LocalLabelStudio.from_template(tmp_path / "no-template", tmp_path / "d", tmp_path / "v")
    with pytest.raises(LabelingToolError, match="install"):
        lss.init_template(tmp_path / "nothing", tmp_path / "template")


def test_created_at_is_aware_utc() -> None:
    label = annotation_to_label(PAYLOADS[0]["annotation"], "w1", CLASSES)
    assert isinstance(label, Label) and label.created_at is not None
    assert label.created_at.utcoffset() == UTC.utcoffset(None)
