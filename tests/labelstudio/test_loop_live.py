"""The real loop end to end: SqlStore (SQLite file) + Controller + LabelStudioTool + the embed-lr
trainer (offline MiniLM embeddings) on Rotten Tomatoes snippets, with AnnotatorBot answering
through a real Label Studio 1.23.2.

The texts are embedded once per module into the session's embedding cache, so every training
and scoring in these tests (subprocess included) reads cached vectors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from itertools import combinations
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.labelstudio import server as lss
from connectors.labelstudio.bot import AnnotatorBot, BotAnswer
from connectors.labelstudio.tool import SOURCE, LabelStudioTool
from connectors.store import SqlStore
from loop.contracts import Trainer
from loop.controller import Controller
from loop.errors import LabelingToolError
from loop.records import Item, Label
from tests.labelstudio.fixtures import REPO
from tests.labelstudio.ls_helpers import choice, tasks_of

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]

N_TRAIN, N_TEST = 160, 40
FIRST, BATCH = 20, 10  # cold-start batch, later batches


# --------------------------------------------------------------------------------------------
# set-up
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Data:
    items: list[Item]
    gold: dict[str, str]
    classes: tuple[str, ...]


@pytest.fixture(scope="module")
def data(cache_dir: Path) -> Data:
    """160 train and 40 test items of the built-in Rotten Tomatoes set (first of each split)."""
    from connectors.data.datasets import load

    ds = load("rotten-tomatoes", cache_dir)
    items = ds.split("train")[:N_TRAIN] + ds.split("test")[:N_TEST]
    return Data(items, {it.id: ds.gold[it.id] for it in items}, ds.classes)


@pytest.fixture(scope="module")
def trainer(cache_dir: Path, data: Data) -> Trainer:
    from connectors.models import make_trainer

    trainer = make_trainer("embed-lr", cache_dir=cache_dir / "embeddings")
    trainer.embedder.embed([it.text for it in data.items])  # type: ignore[attr-defined]
    return trainer


@dataclass
class Loop:
    store: SqlStore
    tool: LabelStudioTool
    controller: Controller
    cfg: dict[str, Any]


def loop_config(tmp: Path, url: str, token: str, classes: Iterable[str], cache: Path) -> dict:
    return {
        "db": f"sqlite:///{tmp / 'state.db'}",
        "url": url,
        "token": token,
        "title": f"loop-{tmp.name}",
        "classes": list(classes),
        "models": str(tmp / "models"),
        "embeddings": str(cache / "embeddings"),
    }


def build_loop(cfg: dict[str, Any], trainer: Trainer | None = None, **tool_kw: Any) -> Loop:
    """Store, tool and controller of one loop (also run by the crash test's subprocess)."""
    if trainer is None:
        from connectors.models import make_trainer

        trainer = make_trainer("embed-lr", cache_dir=cfg["embeddings"])
    store = SqlStore.open(cfg["db"])
    tool = LabelStudioTool(
        cfg["url"],
        cfg["token"],
        project_title=cfg["title"],
        classes=cfg["classes"],
        max_retries=0,
        **tool_kw,
    )
    controller = Controller(
        store,
        trainer,
        tool,
        classes=cfg["classes"],
        models_dir=Path(cfg["models"]),
        strategy="margin",
        batch_size=BATCH,
        initial_batch_size=FIRST,
        min_new_labels=1,
        seed=0,
    )
    return Loop(store, tool, controller, cfg)


@pytest.fixture
def make_loop(
    ls_server: lss.LocalLabelStudio,
    data: Data,
    trainer: Trainer,
    cache_dir: Path,
    tmp_path: Path,
) -> Iterator[Any]:
    loops: list[Loop] = []

    def make(server: lss.LocalLabelStudio | None = None, **tool_kw: Any) -> Loop:
        srv = server or ls_server
        cfg = loop_config(tmp_path, srv.url, srv.token, data.classes, cache_dir)
        loop = build_loop(cfg, trainer, **tool_kw)
        loop.store.add_items(data.items)
        loop.store.add_labels(  # held-out ground truth: every model version is evaluated on it
            Label(it.id, data.gold[it.id], source="import", annotation_id=f"import:{it.id}")
            for it in data.items
            if it.split == "test"
        )
        loops.append(loop)
        return loop

    yield make
    for loop in loops:
        loop.store.close()


def bot_for(loop: Loop, data: Data, **kwargs: Any) -> AnnotatorBot:
    return AnnotatorBot(
        loop.tool.url,
        loop.cfg["token"],
        project_id=loop.tool.ensure_project(),
        gold=data.gold,
        classes=data.classes,
        **kwargs,
    )


# --------------------------------------------------------------------------------------------
# expectations computed from the bot's own answers
# --------------------------------------------------------------------------------------------


def expected_training_set(
    answers: Iterable[BotAnswer],
) -> tuple[dict[str, str], set[str], float | None]:
    """Majority label per item (ties apart) and mean pairwise agreement, from the answers."""
    votes: dict[str, list[str]] = {}
    for a in answers:
        if not a.skipped:
            assert a.value is not None
            votes.setdefault(a.item_id, []).append(a.value)
    majority: dict[str, str] = {}
    ties: set[str] = set()
    agreements: list[float] = []
    for item, vs in votes.items():
        ranked = Counter(vs).most_common()
        if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
            ties.add(item)
        else:
            majority[item] = ranked[0][0]
        pairs = list(combinations(vs, 2))
        if pairs:
            agreements.append(sum(x == y for x, y in pairs) / len(pairs))
    agreement = sum(agreements) / len(agreements) if agreements else None
    return majority, ties, agreement


def check_store_holds_exactly(loop: Loop, answers: Iterable[BotAnswer]) -> None:
    """Every bot annotation is one active label in the store (value, skip, annotator), there is
    no other label, and the training set is their majority vote."""
    answers = list(answers)
    labels = [lab for lab in loop.store.labels() if lab.source == SOURCE]
    assert Counter(lab.annotation_id for lab in labels) == Counter(
        str(a.annotation_id) for a in answers
    ), "every annotation exactly once"
    got = {
        lab.annotation_id: (lab.item_id, lab.value, lab.skipped, lab.annotator) for lab in labels
    }
    want = {str(a.annotation_id): (a.item_id, a.value, a.skipped, str(a.user_id)) for a in answers}
    assert got == want
    majority, ties, agreement = expected_training_set(answers)
    ts = loop.store.training_set()
    assert dict(zip(ts.item_ids, ts.labels, strict=True)) == majority
    assert set(ts.ties) == ties
    if agreement is None:
        assert ts.agreement is None
    else:
        assert ts.agreement == pytest.approx(agreement)
    only_skipped = {a.item_id for a in answers} - set(majority) - ties
    pool = {it.id for it in loop.store.pool()}
    assert not only_skipped & pool and not only_skipped & set(ts.item_ids)


def tasks_per_item(tool: LabelStudioTool) -> Counter[str]:
    return Counter(t["data"]["alloop_id"] for t in tasks_of(tool))


def next_task_item(loop: Loop) -> str:
    """The item Label Studio's labeling stream (``GET /api/projects/<id>/next``) shows next."""
    pid = loop.tool.ensure_project()
    resp = httpx.get(
        f"{loop.tool.url}/api/projects/{pid}/next",
        headers={"Authorization": f"Token {loop.cfg['token']}"},
        timeout=30,
    )
    resp.raise_for_status()
    return str(resp.json()["data"]["alloop_id"])


def check_pushed_with_predictions(loop: Loop, iteration: int, trainer: Trainer) -> None:
    """The iteration's queries are tasks whose prediction is the model's top class, of the
    model version the project shows, with queue scores in the loop's order."""
    store, tool = loop.store, loop.tool
    queries = sorted(store.queries(iteration=iteration), key=lambda q: q.rank)
    assert len(queries) == BATCH and all(q.sent for q in queries)
    (version,) = {q.model_version for q in queries}
    assert version is not None and store.iterations()[iteration - 1].model_version == version
    project = tool.client.projects.get(id=tool.ensure_project())
    assert project.model_version == version
    clf = trainer.load(Path(store.get_model_version(version).path))
    items = store.get_items([q.item_id for q in queries])
    proba = clf.predict_proba([it.text for it in items])
    top = {it.id: clf.classes[int(p.argmax())] for it, p in zip(items, proba, strict=True)}
    flt = {
        "filters": {
            "conjunction": "and",
            "items": [
                {
                    "filter": "filter:tasks:data.alloop_id",
                    "operator": "in_list",
                    "type": "String",
                    "value": [q.item_id for q in queries],
                }
            ],
        },
        "ordering": ["tasks:predictions_score"],
    }
    ordered = tasks_of(tool, **flt)
    assert len(ordered) == BATCH
    for task in ordered:
        (pred,) = task["predictions"]
        assert pred["model_version"] == version
        assert pred["result"][0]["value"]["choices"] == [top[task["data"]["alloop_id"]]]
    # Label Studio's order (prediction score ascending) is the strategy's (score descending)
    score = {q.item_id: q.score for q in queries}
    in_ls_order = [score[t["data"]["alloop_id"]] for t in ordered]
    assert in_ls_order == sorted(in_ls_order, reverse=True)
    # and the labeling stream shows the item the loop wants most first
    assert next_task_item(loop) == queries[0].item_id


# --------------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------------


def test_full_loop_three_iterations_one_annotator(
    make_loop: Any, data: Data, trainer: Trainer
) -> None:
    loop = make_loop()
    store, tool, ctl = loop.store, loop.tool, loop.controller
    answers: list[BotAnswer] = []

    first = ctl.run_iteration()
    assert (first.number, first.trained, first.sent) == (1, False, FIRST)
    assert {q.strategy for q in store.queries(iteration=1)} == {"cold-start-random"}
    assert tasks_per_item(tool) == Counter({q.item_id: 1 for q in store.queries(iteration=1)})
    bot = bot_for(loop, data, error_rate=0.15, skip_rate=0.1, seed=11)

    for it in (2, 3):
        report = bot.answer_pending()
        assert report.annotations == (FIRST if it == 2 else BATCH)
        answers.extend(report.answers)
        result = ctl.run_iteration()
        assert (result.number, result.trained, result.sent) == (it, True, BATCH)
        mv = store.get_model_version(result.model_version)
        # the model was trained on exactly the bot's answers so far
        majority, _, _ = expected_training_set(answers)
        assert mv.n_labels == len(majority)
        assert mv.metrics["test_n"] == N_TEST and 0.0 <= mv.metrics["test_accuracy"] <= 1.0
        check_store_holds_exactly(loop, answers)
        check_pushed_with_predictions(loop, it, trainer)

    answers.extend(bot.answer_pending().answers)
    ctl.sync()
    assert len(answers) == FIRST + 2 * BATCH
    check_store_holds_exactly(loop, answers)
    assert sum(a.skipped for a in answers) > 0 and sum(a.wrong for a in answers) > 0
    # no item asked twice, one task per item, the pool is what was never asked
    asked = [q.item_id for q in store.queries()]
    assert len(asked) == len(set(asked)) == FIRST + 2 * BATCH
    assert tasks_per_item(tool) == Counter(dict.fromkeys(asked, 1))
    assert {it.id for it in store.pool()} == {
        it.id for it in data.items if it.split == "train"
    } - set(asked)


def test_several_annotators_majority_and_agreement(
    make_loop: Any, data: Data, trainer: Trainer
) -> None:
    loop = make_loop()
    store, ctl = loop.store, loop.controller
    bot = bot_for(loop, data, annotators=3, error_rate=0.25, skip_rate=0.15, seed=5)
    ctl.run_iteration()
    first = bot.answer_pending()
    assert (first.tasks, first.annotations) == (FIRST, 3 * FIRST)
    result = ctl.run_iteration()
    mv = store.get_model_version(result.model_version)
    majority, ties, agreement = expected_training_set(first.answers)
    assert agreement is not None and 0.0 < agreement < 1.0
    assert mv.n_labels == len(majority)
    assert mv.metrics["agreement"] == pytest.approx(agreement)
    assert mv.metrics.get("ties_left_out", 0) == len(ties)
    check_store_holds_exactly(loop, first.answers)
    # each item: one label per bot user
    for item in {a.item_id for a in first.answers}:
        assert sorted(lab.annotator for lab in store.labels([item])) == sorted(
            str(u) for u in bot.user_ids
        )
    second = bot.answer_pending()
    assert second.annotations == 3 * BATCH
    ctl.sync()
    check_store_holds_exactly(loop, first.answers + second.answers)


CHILD = """
import json, os, sys
from tests.labelstudio.test_loop_live import build_loop

loop = build_loop(json.loads(sys.argv[1]))


def die(item_ids):
    os._exit(137)  # a hard death: no cleanup, no exception handler runs


loop.store.mark_sent = die
loop.controller.run_iteration()
sys.exit(3)  # not reached
"""


def test_killed_between_import_and_mark_sent(make_loop: Any, data: Data) -> None:
    loop = make_loop()
    store, tool, ctl = loop.store, loop.tool, loop.controller
    ctl.run_iteration()
    bot = bot_for(loop, data, error_rate=0.1, seed=2)
    answers = list(bot.answer_pending().answers)

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(loop.cfg)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == 137, child.stderr[-2000:]
    # it died after Label Studio imported the batch and before the store recorded it
    unfinished = store.unfinished_iteration()
    assert unfinished is not None and (unfinished.number, unfinished.step) == (2, "selected")
    pending = store.queries(iteration=2, sent=False)
    assert len(pending) == BATCH
    assert set(tasks_per_item(tool)) == {q.item_id for q in store.queries()}

    resumed = ctl.run_iteration()
    assert (resumed.number, resumed.resumed_from, resumed.trained) == (2, "selected", False)
    assert tool.last_send is not None
    assert (tool.last_send.imported, tool.last_send.already_present) == (0, BATCH)
    assert store.queries(sent=False) == [] and store.unfinished_iteration() is None
    per_item = tasks_per_item(tool)
    assert set(per_item.values()) == {1} and len(per_item) == FIRST + BATCH

    answers.extend(bot.answer_pending().answers)
    third = ctl.run_iteration()
    assert third.number == 3 and third.sent == BATCH
    asked = [q.item_id for q in store.queries()]
    assert len(asked) == len(set(asked)) == FIRST + 2 * BATCH  # nothing selected twice
    assert set(tasks_per_item(tool).values()) == {1}
    check_store_holds_exactly(loop, answers)


def test_edit_delete_skip_and_unknown_choice_reach_the_training_set(
    make_loop: Any, data: Data
) -> None:
    loop = make_loop()
    store, tool, ctl = loop.store, loop.tool, loop.controller
    ctl.run_iteration()
    items = [q.item_id for q in sorted(store.queries(iteration=1), key=lambda q: q.rank)]
    edited, deleted, skipped, doubled, unanswered = items[:5]
    bot = bot_for(loop, data, seed=4)
    report = bot.answer_pending(item_ids=items[:4] + items[5:])
    assert report.annotations == FIRST - 1
    ctl.sync()
    ts = store.training_set()
    before = dict(zip(ts.item_ids, ts.labels, strict=True))
    assert before == {i: data.gold[i] for i in items if i != unanswered}

    other = next(c for c in data.classes if c != data.gold[edited])
    edit_id = bot.edit(edited, other)
    bot.delete(deleted)
    skip_id = bot.skip(skipped)
    odd = {}
    for item in (doubled, unanswered):
        (task,) = [t for t in tasks_of(tool) if t["data"]["alloop_id"] == item]
        ann = tool.client.annotations.create(id=task["id"], result=choice("so-so"))
        odd[item] = str(ann.id)

    ctl.sync()
    rejected = {r.annotation_id: r for r in tool.last_rejections}
    assert set(rejected) == set(odd.values())
    assert all("'so-so'" in r.reason for r in rejected.values())
    ts = store.training_set()
    after = dict(zip(ts.item_ids, ts.labels, strict=True))
    assert after[edited] == other  # the new value replaced the old one
    assert [(lab.annotation_id, lab.value) for lab in store.labels([edited])] == [
        (str(edit_id), other)
    ]
    assert deleted not in after and store.labels([deleted]) == []  # withdrawn
    assert skipped not in after and [
        (lab.annotation_id, lab.skipped) for lab in store.labels([skipped])
    ] == [(str(skip_id), True)]
    assert after[doubled] == data.gold[doubled]  # the bot's answer, not the unknown choice
    assert unanswered not in after and store.labels([unanswered]) == []
    rest = set(items) - {edited, deleted, skipped, unanswered}
    assert after == {**{i: data.gold[i] for i in rest}, edited: other}
    pool = {it.id for it in store.pool()}
    assert not pool & set(items)
    # a training run uses exactly that set
    result = ctl.run_iteration(force_train=True, k=0)
    assert store.get_model_version(result.model_version).n_labels == len(after)


class StopServerDuringFetch(httpx.HTTPTransport):
    """Lets ``pages`` task-list requests through, then stops the server before the next one."""

    def __init__(self, server: lss.LocalLabelStudio) -> None:
        super().__init__()
        self.server = server
        self.pages: int | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.pages is not None and request.url.path.startswith("/api/tasks"):
            if self.pages == 0:
                self.pages = None
                self.server.stop()
            else:
                self.pages -= 1
        return super().handle_request(request)


def test_label_studio_stopped_mid_sync_loses_and_doubles_nothing(
    private_ls_server: lss.LocalLabelStudio, make_loop: Any, data: Data
) -> None:
    from label_studio_sdk import LabelStudio

    server = private_ls_server
    transport = StopServerDuringFetch(server)
    client = LabelStudio(
        base_url=server.url,
        api_key=server.token,
        httpx_client=httpx.Client(transport=transport, timeout=60),
    )
    loop = make_loop(server, client=client, page_size=5)
    store, tool, ctl = loop.store, loop.tool, loop.controller
    ctl.run_iteration()
    items = [q.item_id for q in store.queries(iteration=1)]
    bot = bot_for(loop, data, annotators=2, error_rate=0.2, skip_rate=0.1, seed=9)
    answers = list(bot.answer_pending(item_ids=items[:8]).answers)
    ctl.sync()
    check_store_holds_exactly(loop, answers)

    # more work in Label Studio that the store has not seen yet
    answers.extend(bot.answer_pending(item_ids=items[8:14]).answers)
    answered = next(a for a in answers[:4] if not a.skipped)
    new_value = next(c for c in data.classes if c != answered.value)
    bot.edit(answered.item_id, new_value, annotator=answered.annotator)
    answers = [
        replace(a, value=new_value) if a.annotation_id == answered.annotation_id else a
        for a in answers
    ]
    revision, cursor = store.label_revision(), store.get_meta("sync_cursor")
    labels_before = store.labels()

    # the server dies after the first page of the next poll
    transport.pages = 1
    with pytest.raises(LabelingToolError) as err:
        ctl.sync()
    assert transport.pages is None and server.pid is None  # stopped after the first page
    msg = str(err.value)
    assert server.url in msg and "check Label Studio is running" in msg
    # and stays down for an iteration, which stops at its first step
    with pytest.raises(LabelingToolError):
        ctl.run_iteration()
    assert (store.label_revision(), store.get_meta("sync_cursor")) == (revision, cursor)
    assert store.labels() == labels_before
    stuck = store.unfinished_iteration()
    assert stuck is not None and (stuck.number, stuck.step) == (2, "begin")
    assert store.queries(iteration=2) == []

    server.start()  # same data dir, same port
    answers.extend(bot.answer_pending(item_ids=items[14:]).answers)
    resumed = ctl.run_iteration()
    assert (resumed.number, resumed.resumed_from, resumed.sent) == (2, "begin", BATCH)
    check_store_holds_exactly(loop, answers)
    assert sum(lab.source == SOURCE for lab in store.labels()) == 2 * FIRST
    assert set(tasks_per_item(tool).values()) == {1}
    assert len(tasks_per_item(tool)) == FIRST + BATCH
