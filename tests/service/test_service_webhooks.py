"""Webhook ingestion: idempotent like polling, answers that cannot be labels, deletions,
events of other projects, and bursts coalescing into few iterations."""

from __future__ import annotations

import time

from tests.service.conftest import Env, FakeLabelStudio, wait_until


def _ls_labels(env: Env, item: str | None = None) -> list:  # type: ignore[type-arg]
    labels = env.store.labels([item]) if item else env.store.labels()
    return [lab for lab in labels if lab.source == "label-studio"]


def test_the_same_event_twice_stores_one_label(make_env) -> None:  # type: ignore[no-untyped-def]
    env: Env = make_env()
    payload = env.tool.annotate("pos-001", "pos")
    first = env.hook(payload).json()
    second = env.hook(payload).json()
    assert (first["inserted"], first["unchanged"]) == (1, 0)
    assert (second["inserted"], second["unchanged"]) == (0, 1)
    (lab,) = _ls_labels(env, "pos-001")
    assert (lab.value, lab.annotation_id, lab.annotator) == ("pos", "1000", "1")
    rev = env.store.label_revision()
    env.hook(payload)
    assert env.store.label_revision() == rev  # a repeat is not a label change


def test_webhook_and_poll_agree_on_the_same_annotation(make_env) -> None:  # type: ignore[no-untyped-def]
    env: Env = make_env()
    env.hook(env.tool.annotate("neg-002", "neg"))
    res = env.service.poll_once()  # the poll sees the same annotation: nothing new
    assert res is not None and (res.inserted, res.updated, res.unchanged) == (0, 0, 1)
    assert len(_ls_labels(env, "neg-002")) == 1


def test_update_skip_and_unusable_answers(make_env) -> None:  # type: ignore[no-untyped-def]
    env: Env = make_env()
    p = env.tool.annotate("pos-003", "pos")
    env.hook(p)
    r = env.hook(env.tool.update(p["annotation"]["id"], "neg")).json()
    assert r["action"] == "ANNOTATION_UPDATED" and r["updated"] == 1
    assert [lab.value for lab in _ls_labels(env, "pos-003")] == ["neg"]
    r = env.hook(env.tool.annotate("pos-004", None)).json()  # Skip
    assert r["inserted"] == 1
    (skip,) = _ls_labels(env, "pos-004")
    assert skip.skipped and skip.value is None
    r = env.hook(env.tool.annotate("pos-005", "maybe")).json()  # not a class
    assert r["rejected"] == 1 and r["inserted"] == 0
    (rej,) = env.store.rejections()
    assert rej.item_id == "pos-005" and "maybe" in rej.reason and rej.source == "label-studio"
    assert env.hook(env.tool.annotate("pos-005", "maybe")).json()["rejected"] == 1
    assert len(env.store.rejections()) == 2  # another annotation id: recorded too


def test_events_of_other_projects_and_actions_are_acknowledged_and_ignored(make_env) -> None:  # type: ignore[no-untyped-def]
    env: Env = make_env()
    other = FakeLabelStudio(env.tool.classes, project_id=99)
    r = env.hook(other.annotate("pos-001", "pos"))
    assert r.status_code == 200 and r.json()["ignored"] == "event of project 99"
    r = env.hook({"action": "PROJECT_UPDATED", "project": {"id": env.tool.project_id}})
    assert r.status_code == 200 and "nothing to store" in r.json()["ignored"]
    assert _ls_labels(env) == []
    assert env.service.webhook_stats.as_dict()["ignored"] == 2


def test_a_deletion_asks_for_an_immediate_reconciliation_that_withdraws_the_label(make_env) -> None:  # type: ignore[no-untyped-def]
    env: Env = make_env(start=True)  # polls every hour: only the deletion makes it poll now
    env.idle()
    wait_until(lambda: env.service.status()["poll"]["last"], 5, "the start-up poll")
    p = env.tool.annotate("neg-007", "neg")
    env.hook(p)
    assert len(_ls_labels(env, "neg-007")) == 1
    fetches = env.tool.fetches
    r = env.hook(env.tool.delete(p["annotation"]["id"])).json()
    assert r["action"] == "ANNOTATIONS_DELETED" and r["reconcile"] is True
    wait_until(lambda: not _ls_labels(env, "neg-007"), 5, "the label to be withdrawn")
    assert env.tool.fetches > fetches


def test_a_burst_during_an_iteration_coalesces_into_one_more(make_env) -> None:  # type: ignore[no-untyped-def]
    env: Env = make_env(start=True, refill_below=0)
    env.idle()
    assert len(env.store.iterations()) == 1
    env.trainer.hold()
    train = [i for i in env.gold if env.store.get_items([i])[0].split == "train"]
    events = [env.tool.annotate(i, env.gold[i]) for i in train]  # 60 answers
    flip = {"pos": "neg", "neg": "pos"}
    events += [  # and 40 edits of them
        env.tool.update(e["annotation"]["id"], flip[env.gold[e["task"]["data"]["alloop_id"]]])
        for e in events[:40]
    ]
    assert len(events) == 100
    t0 = time.monotonic()
    slowest = 0.0
    for payload in events:
        t = time.monotonic()
        r = env.hook(payload)
        slowest = max(slowest, time.monotonic() - t)
        assert r.status_code == 200
    burst_s = time.monotonic() - t0
    assert env.trainer.entered.is_set()  # the first labels started a training, still held
    env.trainer.release()
    env.idle()
    its = env.store.iterations()
    assert 2 <= len(its) <= 3, [(i.number, i.info) for i in its]  # the cold start + at most 2
    assert env.trainer.train_calls <= 2
    assert len(_ls_labels(env)) == 60
    assert sum(lab.value != env.gold[lab.item_id] for lab in _ls_labels(env)) == 40
    assert slowest < 1.0, (
        f"a webhook took {slowest:.3f} s while training ran (burst {burst_s:.2f} s)"
    )
