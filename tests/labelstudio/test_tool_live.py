"""LabelStudioTool against a real Label Studio 1.23.2 (session server from a template)."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from connectors.labelstudio.tool import (
    SOURCE,
    LabelStudioTool,
    parse_label_config,
    parse_webhook,
)
from loop.contracts import LabelingTool
from loop.errors import LabelingToolError
from loop.records import Label
from tests.labelstudio.ls_helpers import annotate, choice, requests_for, task_id, tasks_of

pytestmark = pytest.mark.labelstudio

MakeTool = Callable[..., LabelStudioTool]
FIXTURE = Path(__file__).parent / "data" / "webhook_payloads_1.23.2.json"


def test_tool_is_a_labeling_tool(make_tool: MakeTool) -> None:
    assert isinstance(make_tool(), LabelingTool)


# -- project -------------------------------------------------------------------------------


def test_ensure_project_creates_then_finds_the_same_project(make_tool: MakeTool) -> None:
    tool = make_tool(("pos", "neg", 'R&D <"x">'))
    pid = tool.ensure_project()
    again = make_tool(("neg", 'R&D <"x">', "pos"), project_title=tool.project_title)
    assert again.ensure_project() == pid  # class order does not matter
    project = tool.client.projects.get(id=pid)
    assert project.title == tool.project_title
    assert project.sampling == "Uncertainty sampling"
    # the XML-escaped class reads back as the exact string
    assert parse_label_config(project.label_config).classes == ("pos", "neg", 'R&D <"x">')
    tool.send(requests_for(["odd"], prediction='R&D <"x">'))
    annotate(tool, "odd", 'R&D <"x">')
    assert [x.value for x in tool.fetch_labels(None).labels] == ['R&D <"x">']


def test_ensure_project_refuses_a_project_with_other_classes(make_tool: MakeTool) -> None:
    tool = make_tool(("pos", "neg"))
    pid = tool.ensure_project()
    other = make_tool(("pos", "neutral"), project_title=tool.project_title)
    with pytest.raises(LabelingToolError) as err:
        other.ensure_project()
    msg = str(err.value)
    assert "['neutral']" in msg and "['neg']" in msg
    assert tool.project_title in msg and "Fix:" in msg
    # asked to, it updates the config (no annotation uses the removed class yet)
    assert other.ensure_project(update_config=True) == pid
    assert make_tool(("neutral", "pos"), project_title=tool.project_title).ensure_project() == pid


# -- send ----------------------------------------------------------------------------------


def test_send_twice_creates_no_duplicate_task(make_tool: MakeTool) -> None:
    tool = make_tool(batch_size=4)  # several import batches and lookups
    ids = [f"item-{i}" for i in range(10)] + ["42", "007", "a b,c", 'quote"d']
    first = tool.push(requests_for(ids))
    assert (first.imported, first.already_present, first.duplicates_removed) == (len(ids), 0, 0)
    second = tool.push(requests_for(ids))
    assert (second.imported, second.already_present) == (0, len(ids))
    third = tool.push(requests_for(ids[:5] + ["new-1", "new-2"]))
    assert (third.imported, third.already_present) == (2, 5)
    per_item = Counter(t["data"]["alloop_id"] for t in tasks_of(tool))
    assert set(per_item) == set(ids) | {"new-1", "new-2"}
    assert set(per_item.values()) == {1}


def test_send_data_fields_and_kind(make_tool: MakeTool) -> None:
    tool = make_tool()
    tool.send(requests_for(["q1"]) + requests_for(["e1"], kind="eval", prediction=None))
    by_id = {t["data"]["alloop_id"]: t for t in tasks_of(tool)}
    assert by_id["q1"]["data"] == {"text": "text of q1", "alloop_id": "q1", "alloop_kind": "query"}
    assert by_id["e1"]["data"]["alloop_kind"] == "eval"
    assert by_id["q1"]["predictions"][0]["result"][0]["value"] == {"choices": ["pos"]}
    assert by_id["e1"]["predictions"][0]["result"] == []  # no class, only the queue score


def test_predictions_carry_model_version_and_queue_order(make_tool: MakeTool) -> None:
    tool = make_tool()
    strategy = {"a": 0.1, "b": 0.9, "c": 0.5, "d": 0.3, "e": 0.7}
    tool.send(requests_for(list(strategy), list(strategy.values()), model_version="m-1"))
    project = tool.client.projects.get(id=tool.ensure_project())
    assert project.model_version == "m-1"
    # Label Studio's own ordering by prediction score (ascending) = the loop's order
    ordered = tasks_of(tool, ordering=["tasks:predictions_score"])
    assert [t["data"]["alloop_id"] for t in ordered] == sorted(strategy, key=lambda k: -strategy[k])
    for t in ordered:
        (pred,) = t["predictions"]
        assert pred["model_version"] == "m-1"
        assert 0.0 <= pred["score"] <= 1.0
    # a later push with a newer model moves the project to it
    tool.send(requests_for(["f"], model_version="m-2"))
    assert tool.client.projects.get(id=tool.ensure_project()).model_version == "m-2"


def test_lost_import_response_is_retried_without_duplicates(ls_server, make_tool: MakeTool) -> None:
    """The server imports the batch but the client sees a 503 (a lost response): the SDK
    would retry the POST and duplicate every task; the tool looks up and imports only the
    missing ones."""
    from label_studio_sdk import LabelStudio

    class LoseFirstImportResponse(httpx.HTTPTransport):
        lost = 0

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            response = super().handle_request(request)
            if request.method == "POST" and request.url.path.endswith("/import") and not self.lost:
                self.lost += 1
                response.read()
                return httpx.Response(503, json={"detail": "lost on the way"}, request=request)
            return response

    transport = LoseFirstImportResponse()
    client = LabelStudio(
        base_url=ls_server.url,
        api_key=ls_server.token,
        httpx_client=httpx.Client(transport=transport, timeout=60),
    )
    tool = make_tool(client=client)
    ids = [f"r{i}" for i in range(12)]
    result = tool.push(requests_for(ids))
    assert transport.lost == 1
    assert (result.imported, result.duplicates_removed) == (len(ids), 0)
    assert sorted(result.task_ids) == sorted(t["id"] for t in tasks_of(tool))
    assert Counter(t["data"]["alloop_id"] for t in tasks_of(tool)) == Counter(ids)


def test_remove_duplicates_keeps_the_annotated_task(make_tool: MakeTool) -> None:
    tool = make_tool()
    tool.send(requests_for(["x", "y"]))
    pid = tool.ensure_project()
    # two more tasks for x, as a retried POST or a second pusher would leave them
    tool.client.projects.import_tasks(
        id=pid, request=[{"data": {"text": "dup", "alloop_id": "x"}}] * 2, return_task_ids=True
    )
    xs = sorted(t["id"] for t in tasks_of(tool) if t["data"]["alloop_id"] == "x")
    assert len(xs) == 3
    tool.client.annotations.create(id=xs[2], result=choice("neg"))
    assert tool.remove_duplicates(["x", "y"]) == 2
    left = [t for t in tasks_of(tool) if t["data"]["alloop_id"] == "x"]
    assert [t["id"] for t in left] == [xs[2]]  # the annotated one stays
    assert tool.fetch_labels(None).labels[0].value == "neg"


class Recording(httpx.HTTPTransport):
    """Records (method, path) of every request; ``before_import`` runs before each import POST
    is sent (another process acting between the tool's look-up and its import)."""

    def __init__(self, before_import: Callable[[httpx.Request], None] | None = None) -> None:
        super().__init__()
        self.calls: list[tuple[str, str]] = []
        self.before_import = before_import

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.calls.append((request.method, request.url.path))
        if self.before_import and request.method == "POST" and request.url.path.endswith("/import"):
            self.before_import(request)
        return super().handle_request(request)

    def take(self) -> list[tuple[str, str]]:
        out, self.calls = self.calls, []
        return out


def recorded_tool(
    ls_server, make_tool: MakeTool, transport: Recording, **kwargs
) -> LabelStudioTool:
    from label_studio_sdk import LabelStudio

    client = LabelStudio(
        base_url=ls_server.url,
        api_key=ls_server.token,
        httpx_client=httpx.Client(transport=transport, timeout=60),
    )
    return make_tool(client=client, **kwargs)


def test_push_requests_one_count_and_one_import_per_batch(ls_server, make_tool: MakeTool) -> None:
    transport = Recording()
    tool = recorded_tool(ls_server, make_tool, transport, batch_size=25)
    pid = tool.ensure_project()
    transport.take()
    tasks_path, import_path = "/api/tasks/", f"/api/projects/{pid}/import"
    # new items into a project without a model version: it takes the predictions' own
    first = tool.push(requests_for([f"n{i}" for i in range(60)], model_version="m-1"))
    assert first.imported == 60
    assert transport.take() == [("GET", tasks_path)] + [("POST", import_path)] * 3
    assert tool.client.projects.get(id=pid).model_version == "m-1"
    transport.take()
    # a newer model: one update of the project after the import
    second = tool.push(requests_for(["n60"], model_version="m-2"))
    assert second.imported == 1
    assert transport.take() == [
        ("GET", tasks_path),
        ("POST", import_path),
        ("PATCH", f"/api/projects/{pid}/"),
    ]
    assert tool.client.projects.get(id=pid).model_version == "m-2"
    transport.take()
    # all present: counted, listed, nothing imported
    third = tool.push(requests_for([f"n{i}" for i in range(61)], model_version="m-2"))
    assert (third.imported, third.already_present) == (0, 61)
    assert {m for m, _ in transport.take()} == {"GET"}


def test_cold_start_push_then_a_model_version_is_shown(make_tool: MakeTool) -> None:
    """Predictions without a model version make Label Studio set the project's to "undefined";
    the first push with a real version must still move the project to it."""
    tool = make_tool()
    tool.push(requests_for(["c1", "c2"], prediction=None, model_version=None))
    pid = tool.ensure_project()
    assert tool.client.projects.get(id=pid).model_version == "undefined"
    tool.push(requests_for(["c3"], model_version="v1"))
    assert tool.client.projects.get(id=pid).model_version == "v1"


def _import_the_same_tasks_first(ls_server) -> Callable[[httpx.Request], None]:
    """Before the tool's first import, another client imports the same tasks."""
    done: list[bool] = []

    def run(request: httpx.Request) -> None:
        if done:
            return
        done.append(True)
        other = httpx.post(
            str(request.url),
            content=request.read(),
            headers={
                "Authorization": f"Token {ls_server.token}",
                "Content-Type": "application/json",
            },
            timeout=60,
        )
        other.raise_for_status()

    return run


@pytest.mark.parametrize("check_after_import", [True, False])
def test_two_pushers_at_once(ls_server, make_tool: MakeTool, check_after_import: bool) -> None:
    """Another process imports the same items between the tool's look-up and its import.
    ``check_after_import`` removes the duplicates at once; without it they stay until those
    items are pushed again or ``remove_duplicates`` runs."""
    transport = Recording(before_import=_import_the_same_tasks_first(ls_server))
    tool = recorded_tool(ls_server, make_tool, transport, check_after_import=check_after_import)
    ids = [f"d{i}" for i in range(8)]
    result = tool.push(requests_for(ids))
    assert result.imported == len(ids)
    per_item = Counter(t["data"]["alloop_id"] for t in tasks_of(tool))
    if check_after_import:
        assert result.duplicates_removed == len(ids) and set(per_item.values()) == {1}
        return
    assert result.duplicates_removed == 0 and set(per_item.values()) == {2}
    again = tool.push(requests_for(ids[:3]))
    assert (again.imported, again.already_present, again.duplicates_removed) == (0, 3, 3)
    assert tool.remove_duplicates(ids) == len(ids) - 3
    assert Counter(t["data"]["alloop_id"] for t in tasks_of(tool)) == Counter(ids)


def test_lookups_shrink_after_a_server_refuses_a_long_url(ls_server, make_tool: MakeTool) -> None:
    """A proxy or WSGI server with a short request-line limit (gunicorn: 4,094) refuses the
    long look-up URL: the tool goes on with short ones (several chunks) and stays idempotent."""

    class ShortRequestLine(Recording):
        refused = 0

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            if len(str(request.url)) > 4094:
                self.refused += 1
                return httpx.Response(414, text="Request-URI Too Large", request=request)
            return super().handle_request(request)

    transport = ShortRequestLine()
    tool = recorded_tool(ls_server, make_tool, transport)
    ids = [f"long-{i:04d}" for i in range(400)]
    first = tool.push(requests_for(ids))
    assert transport.refused == 1 and first.imported == len(ids)
    transport.take()
    second = tool.push(requests_for(ids + ["one-more"]))
    assert (second.imported, second.already_present) == (1, len(ids))
    counts = [c for c in transport.take() if c[0] == "GET"]
    assert len(counts) >= 3  # the ids no longer fit one URL
    assert transport.refused == 1
    assert Counter(t["data"]["alloop_id"] for t in tasks_of(tool)) == Counter([*ids, "one-more"])


# -- fetch ---------------------------------------------------------------------------------


def _labels_by_item(labels: tuple[Label, ...]) -> dict[str, list[Label]]:
    out: dict[str, list[Label]] = {}
    for label in labels:
        out.setdefault(label.item_id, []).append(label)
    return out


def test_fetch_created_skipped_rejected_edited_and_deleted(make_tool: MakeTool) -> None:
    tool = make_tool()
    tool.send(requests_for(["a", "b", "c", "d", "e"]))
    start = datetime.now(UTC)
    ann_a = annotate(tool, "a", "pos")
    ann_b = annotate(tool, "b", None, cancelled=True)
    ann_c = annotate(tool, "c", "maybe")  # not a class
    tool.client.annotations.create(
        id=task_id(tool, "d"),
        result=[
            {
                "from_name": "label",
                "to_name": "text",
                "type": "choices",
                "value": {"choices": ["pos", "neg"]},
            }
        ],
    )

    first = tool.fetch(None)
    snap = first.snapshot
    assert snap.source == SOURCE
    assert set(snap.item_ids) == {"a", "b", "c", "d", "e"}  # every task: complete state
    got = _labels_by_item(snap.labels)
    assert set(got) == {"a", "b"}
    (la,) = got["a"]
    assert (la.value, la.annotation_id, la.skipped, la.source) == ("pos", str(ann_a), False, SOURCE)
    assert la.annotator == str(tool.client.users.whoami().id)
    assert la.created_at is not None and la.created_at >= start - timedelta(seconds=5)
    (lb,) = got["b"]
    assert (lb.value, lb.skipped, lb.annotation_id) == (None, True, str(ann_b))
    rejected = {r.item_id: r for r in first.rejections}
    assert set(rejected) == {"c", "d"}
    assert rejected["c"].annotation_id == str(ann_c) and "'maybe'" in rejected["c"].reason
    assert "exactly one choice" in rejected["d"].reason
    assert tool.last_rejections == first.rejections
    assert first.cursor is not None and first.cursor.tzinfo is not None
    assert tool.last_cursor == first.cursor

    # edit: the same annotation id comes back with the new value
    tool.client.annotations.update(id=ann_a, result=choice("neg"))
    edited = tool.fetch(first.cursor)
    assert "a" in edited.snapshot.item_ids
    (la2,) = _labels_by_item(edited.snapshot.labels)["a"]
    assert (la2.annotation_id, la2.value) == (str(ann_a), "neg")
    assert edited.cursor is not None and edited.cursor > first.cursor

    # delete: the task is returned (its updated_at moved) without that annotation
    tool.client.annotations.delete(id=ann_a)
    deleted = tool.fetch(edited.cursor)
    assert "a" in deleted.snapshot.item_ids
    assert "a" not in _labels_by_item(deleted.snapshot.labels)
    assert deleted.cursor is not None and deleted.cursor > edited.cursor


def test_fetch_window_returns_only_tasks_changed_since(make_tool: MakeTool) -> None:
    tool = make_tool(overlap=timedelta(0))
    tool.send(requests_for(["p", "q", "r"]))
    annotate(tool, "p", "pos")
    cursor = tool.fetch(None).cursor
    assert cursor is not None
    assert tool.fetch(cursor).snapshot.item_ids == ()
    time.sleep(0.05)
    annotate(tool, "q", "neg")
    later = tool.fetch(cursor)
    assert later.snapshot.item_ids == ("q",)
    assert [label.value for label in later.snapshot.labels] == ["neg"]
    # with the default overlap, a poll re-reads the last seconds (idempotent ingestion)
    overlapping = make_tool(project_title=tool.project_title)
    assert set(overlapping.fetch(later.cursor).snapshot.item_ids) >= {"q"}


def test_fetch_rejects_a_naive_since(make_tool: MakeTool) -> None:
    from loop.errors import DataError

    with pytest.raises(DataError, match="timezone-aware"):
        make_tool().fetch_labels(datetime(2024, 1, 1))


def test_fetch_pages_through_more_than_one_page(make_tool: MakeTool) -> None:
    tool = make_tool(page_size=7, batch_size=9)
    ids = [f"p{i:02d}" for i in range(30)]
    tool.send(requests_for(ids))
    labeled = ids[::2] + ids[1:6:2]  # 18 items over several pages
    for i in labeled:
        annotate(tool, i, "pos" if i.endswith(("0", "2", "4")) else "neg")
    result = tool.fetch(None)
    assert result.tasks_seen == 30
    assert sorted(result.snapshot.item_ids) == ids
    assert len(result.snapshot.item_ids) == len(set(result.snapshot.item_ids))
    assert sorted(label.item_id for label in result.snapshot.labels) == sorted(labeled)
    ann_ids = [label.annotation_id for label in result.snapshot.labels]
    assert len(ann_ids) == len(set(ann_ids))


# -- errors --------------------------------------------------------------------------------


def test_bad_token_is_a_clear_error_without_the_token(ls_server) -> None:
    bad = "0" * 40
    tool = LabelStudioTool(ls_server.url, bad, project_title="x", classes=("a", "b"))
    with pytest.raises(LabelingToolError) as err:
        tool.ensure_project()
    msg = str(err.value)
    assert "401" in msg and ls_server.url in msg and "token" in msg
    assert bad not in msg and ls_server.token not in msg


# -- webhooks ------------------------------------------------------------------------------


def test_webhook_payloads_parse_like_the_poll(make_tool: MakeTool, webhook_receiver) -> None:
    tool = make_tool()
    tool.send(requests_for(["w1", "w2"]))
    pid = tool.ensure_project()
    hook = tool.register_webhook(webhook_receiver.url, {"X-Alloop-Secret": "s3cret"})
    assert tool.register_webhook(webhook_receiver.url, {"X-Alloop-Secret": "s3cret"}) == hook
    assert len(tool.client.webhooks.list(project=str(pid))) == 1
    # a changed secret is pushed to Label Studio (same webhook, new header)
    assert tool.register_webhook(webhook_receiver.url, {"X-Alloop-Secret": "rotated"}) == hook
    (listed,) = tool.client.webhooks.list(project=str(pid))
    assert listed.headers == {"X-Alloop-Secret": "rotated"}
    assert tool.register_webhook(webhook_receiver.url, {"X-Alloop-Secret": "s3cret"}) == hook
    ann = annotate(tool, "w1", "pos")
    tool.client.annotations.update(id=ann, result=choice("neg"))
    skip = annotate(tool, "w2", None, cancelled=True)
    odd = annotate(tool, "w2", "maybe")
    polled = tool.fetch(None)  # before the delete: both annotations are there
    tool.client.annotations.delete(id=ann)
    got = webhook_receiver.wait_for(5)
    assert [r.payload["action"] for r in got] == [
        "ANNOTATION_CREATED",
        "ANNOTATION_UPDATED",
        "ANNOTATION_CREATED",
        "ANNOTATION_CREATED",
        "ANNOTATIONS_DELETED",
    ]
    assert all(r.headers.get("X-Alloop-Secret") == "s3cret" for r in got)
    events = [tool.parse_webhook(r.payload) for r in got]
    assert events == [parse_webhook(r.payload, tool.classes) for r in got]
    assert all(e.project_id == pid for e in events)
    other = make_tool(project_title=tool.project_title + "-other")
    other.ensure_project()
    assert other.parse_webhook(got[0].payload).labels == ()  # not its project
    created, updated, skipped, rejected, deleted = events
    assert [(x.item_id, x.annotation_id, x.value) for x in created.labels] == [
        ("w1", str(ann), "pos")
    ]
    assert [(x.item_id, x.annotation_id, x.value) for x in updated.labels] == [
        ("w1", str(ann), "neg")
    ]
    assert [(x.item_id, x.skipped, x.value) for x in skipped.labels] == [("w2", True, None)]
    assert rejected.labels == () and rejected.rejections[0].annotation_id == str(odd)
    assert deleted.deleted_annotation_ids == (str(ann),) and deleted.labels == ()
    # a webhook label is the same Label the poll builds
    polled_by_ann = {x.annotation_id: x for x in polled.snapshot.labels}
    assert updated.labels[0] == polled_by_ann[str(ann)]
    assert skipped.labels[0] == polled_by_ann[str(skip)]
    if os.environ.get("ALLOOP_LS_WRITE_FIXTURES"):
        FIXTURE.parent.mkdir(exist_ok=True)
        payloads = [r.payload for r in got]
        for p in payloads:  # the project's own sharing token is not needed by any test
            if isinstance(p.get("project"), dict) and "token" in p["project"]:
                p["project"]["token"] = "<redacted>"
        FIXTURE.write_text(json.dumps(payloads, indent=1, ensure_ascii=False) + "\n")
