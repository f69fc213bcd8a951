"""Contract suite for ``Store`` (loop/contracts.py), run on SQLite and PostgreSQL.

Every docstring promise of the contract has a test here: idempotency, all-or-nothing batches,
label updates and withdrawals, skips and withdrawn labels leaving the pool for good, split
assignment that never moves an item once asked or labeled (and always moves pool items),
re-imports that recognise items moved to another split, recorded label rejections, majority
vote / ties / agreement on hand-computed cases, atomic and idempotent ``record_queries``, the
iteration lifecycle, leases (lifecycle, expiry, and exactly one winner among threads and
processes racing for one), meta, reopening, migrations matching the models (and upgrading a
filled database from each older revision), and two stores writing one database at once.
"""

from __future__ import annotations

import inspect
import math
import multiprocessing
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from connectors.store import SqlStore, current_revision, head_revision, upgrade
from connectors.store import models as m
from connectors.store.engine import create_store_engine, write_transaction
from connectors.store.migrate import alembic_config
from loop.contracts import Store
from loop.errors import StoreError
from loop.records import (
    AddItemsResult,
    Item,
    Label,
    LabelRejection,
    LabelSnapshot,
    LabelWriteResult,
    ModelVersion,
    Query,
)


def items_(*ids: str, split: str = "train") -> list[Item]:
    return [Item(id=i, text=f"text of {i}", split=split) for i in ids]


def lab(item_id: str, value: str | None, ann: str, *, source: str = "ls", **kw: Any) -> Label:
    return Label(item_id=item_id, value=value, source=source, annotation_id=ann, **kw)


def skip(item_id: str, ann: str, *, source: str = "ls") -> Label:
    return Label(item_id=item_id, value=None, source=source, annotation_id=ann, skipped=True)


def rej(
    item_id: str, ann: str, reason: str = "choice 'maybe' is not a class", **kw: Any
) -> LabelRejection:
    return LabelRejection(
        item_id=item_id, source=kw.pop("source", "ls"), annotation_id=ann, reason=reason, **kw
    )


def query(item_id: str, iteration: int, rank: int, *, score: float = 0.5, **kw: Any) -> Query:
    return Query(
        item_id=item_id, iteration=iteration, score=score, rank=rank, strategy="entropy", **kw
    )


def version(vid: str, iteration: int | None = None, **kw: Any) -> ModelVersion:
    base: dict[str, Any] = {
        "trainer": "embed-lr",
        "path": f"models/{vid}",
        "classes": ("neg", "pos"),
        "n_labels": 10,
        "label_revision": 3,
        "metrics": {"accuracy": 0.75, "per_class": {"neg": 0.5, "pos": 1.0}},
        "config": {"C": 1.0},
    }
    base.update(kw)
    return ModelVersion(id=vid, iteration=iteration, **base)


def ids(records: list[Any], attr: str = "id") -> list[str]:
    return [getattr(r, attr) for r in records]


# -- the contract itself -------------------------------------------------------------------
def test_sqlstore_has_every_store_method_with_the_contract_signature(store: SqlStore) -> None:
    assert isinstance(store, Store)
    checked: set[str] = set()
    for name, member in vars(Store).items():
        if name.startswith("_") or not callable(member):
            continue
        want = inspect.signature(member)
        got = inspect.signature(getattr(SqlStore, name))
        assert list(got.parameters) == list(want.parameters), name
        for p_name, p in want.parameters.items():
            assert got.parameters[p_name].kind == p.kind, (name, p_name)
            assert got.parameters[p_name].default == p.default, (name, p_name)
        checked.add(name)
    assert {"add_items", "pool", "assign_split", "record_rejections", "rejections"} <= checked
    assert {"acquire_lease", "renew_lease", "release_lease", "lease"} <= checked


# -- items ---------------------------------------------------------------------------------
def test_add_items_counts_new_and_existing_and_is_idempotent(store: SqlStore) -> None:
    assert store.add_items(items_("a", "b", "c")) == AddItemsResult(added=3, existing=0)
    assert store.add_items([]) == AddItemsResult(added=0, existing=0)
    again = store.add_items(items_("a", "b", "c"))
    assert (again.added, again.existing) == (0, 3)
    mixed = store.add_items(items_("c", "d") + items_("t1", split="test"))
    assert (mixed.added, mixed.existing) == (2, 1)
    assert store.count_items() == 5
    assert store.count_items("train") == 4
    assert store.count_items("test") == 1
    assert store.count_items("eval") == 0


def test_add_items_accepts_a_generator_and_repeated_identical_ids(store: SqlStore) -> None:
    res = store.add_items(Item(id=i, text=i) for i in ["x", "y", "x"])
    assert (res.added, res.existing) == (2, 1)
    assert ids(store.items()) == ["x", "y"]


def test_item_fields_and_meta_round_trip(store: SqlStore) -> None:
    meta = {"source": "csv", "row": 7, "tags": ["a", "é"], "nested": {"ok": True, "x": None}}
    store.add_items([Item(id="a", text="Ünïcode ✓ text", split="eval", meta=meta)])
    (got,) = store.get_items(["a"])
    assert got == Item(id="a", text="Ünïcode ✓ text", split="eval", meta=meta)
    assert store.items("eval") == [got]
    assert store.items("train") == []


def test_changed_text_of_existing_id_raises_and_writes_nothing(store: SqlStore) -> None:
    store.add_items(items_("a"))
    batch = [Item(id="new", text="fresh"), Item(id="a", text="another text")]
    with pytest.raises(StoreError, match="'a'"):
        store.add_items(batch)
    assert ids(store.items()) == ["a"]
    assert store.get_items(["a"])[0].text == "text of a"


def test_changed_split_of_existing_id_raises(store: SqlStore) -> None:
    store.add_items(items_("a"))
    with pytest.raises(StoreError, match="split"):
        store.add_items(items_("a", split="test"))
    assert store.count_items("test") == 0


def test_re_adding_items_moved_by_assign_split_counts_them_existing(store: SqlStore) -> None:
    data = items_("a", "b", "c") + items_("t", split="test")
    store.add_items(data)
    assert store.assign_split(["a", "t"], "eval") == 2
    assert store.add_items(data) == AddItemsResult(added=0, existing=4)
    # the stored items keep their current split; new ids of the same batch are added
    assert store.get_items(["a", "b", "t"]) == [
        Item(id="a", text="text of a", split="eval"),
        Item(id="b", text="text of b"),
        Item(id="t", text="text of t", split="eval"),
    ]
    assert store.add_items(data + items_("d")) == AddItemsResult(added=1, existing=4)
    assert ids(store.items("eval")) == ["a", "t"]
    assert ids(store.pool()) == ["b", "c", "d"]
    # moved back, still the same import split
    assert store.assign_split(["a"], "train") == 1
    assert store.add_items(items_("a")) == AddItemsResult(added=0, existing=1)


def test_re_adding_a_moved_item_under_another_split_or_text_raises(store: SqlStore) -> None:
    store.add_items(items_("a", "b"))
    store.assign_split(["a"], "eval")
    # the split it was imported with counts, not the one it was moved to
    for split in ("test", "eval"):
        with pytest.raises(StoreError, match=f"'a' \\(imported as 'train', given '{split}'\\)"):
            store.add_items(items_("new") + items_("a", split=split))
    with pytest.raises(StoreError, match="'a' \\(another text\\)"):
        store.add_items([Item(id="a", text="changed")])
    with pytest.raises(StoreError, match="'b' \\(another text; imported as 'train'"):
        store.add_items([Item(id="b", text="changed", split="test")])
    assert ids(store.items()) == ["a", "b"]
    assert store.get_items(["a", "b"]) == [
        Item(id="a", text="text of a", split="eval"),
        Item(id="b", text="text of b"),
    ]


def test_conflicting_duplicate_inside_a_batch_raises_and_writes_nothing(store: SqlStore) -> None:
    batch = [Item(id="z", text="ok"), Item(id="a", text="one"), Item(id="a", text="two")]
    with pytest.raises(StoreError, match="'a'"):
        store.add_items(batch)
    assert store.count_items() == 0


@pytest.mark.parametrize(
    "bad",
    [
        Item(id="b", text="t", split="training"),
        Item(id="", text="t"),
        Item(id="b", text="t", meta={"when": datetime(2024, 1, 1)}),
        Item(id="b", text="t", meta={"score": math.nan}),
    ],
    ids=["unknown-split", "empty-id", "meta-not-json", "meta-nan"],
)
def test_invalid_item_raises_and_writes_nothing(store: SqlStore, bad: Item) -> None:
    with pytest.raises(StoreError, match="Expected"):
        store.add_items([Item(id="a", text="fine"), bad])
    assert store.count_items() == 0


def test_get_items_keeps_the_requested_order_and_rejects_unknown_ids(store: SqlStore) -> None:
    store.add_items(items_("a", "b", "c"))
    assert ids(store.get_items(["c", "a", "c"])) == ["c", "a", "c"]
    assert store.get_items([]) == []
    with pytest.raises(StoreError, match="'nope'"):
        store.get_items(["a", "nope"])


def test_items_are_ordered_by_id_bytewise_on_every_backend(store: SqlStore) -> None:
    raw = ["b", "B", "a", "é", "10", "9", "a-1", "a_1", "Z"]
    store.add_items(items_(*raw))
    assert ids(store.items()) == sorted(raw)
    assert ids(store.pool()) == sorted(raw)


# -- pool ----------------------------------------------------------------------------------
def test_pool_excludes_queried_labeled_and_skipped_items(store: SqlStore) -> None:
    store.add_items(items_("a", "b", "c", "d", "e", "f"))
    store.add_items(items_("t", split="test") + items_("v", split="eval"))
    assert ids(store.pool()) == ["a", "b", "c", "d", "e", "f"]
    store.add_labels([lab("a", "pos", "1"), skip("b", "2")])
    it = store.begin_iteration({})
    store.record_queries(it.number, [query("c", it.number, 0)])
    assert ids(store.pool()) == ["d", "e", "f"]
    # a withdrawn answer or skip still holds the item out: some model may have trained on it
    store.add_labels(
        [lab("a", None, "1"), Label(item_id="b", value=None, source="ls", annotation_id="2")]
    )
    assert store.labels(["a", "b"]) == []
    assert ids(store.pool()) == ["d", "e", "f"]
    # a label answered and withdrawn within one batch leaves a row too
    store.add_labels([lab("d", "neg", "4"), lab("d", None, "4")])
    assert ids(store.pool()) == ["e", "f"]
    # withdrawing the queried item's label does not return it either
    store.add_labels([lab("c", "neg", "3"), lab("c", None, "3")])
    assert ids(store.pool()) == ["e", "f"]
    # a recorded rejection does not hold an item (nothing was trained on it)
    store.record_rejections([rej("e", "5")])
    assert ids(store.pool()) == ["e", "f"]


def test_count_and_chunks_of_the_pool_equal_the_pool(store: SqlStore) -> None:
    raw = ["b", "B", "a", "é", "10", "9", "a-1", "a_1", "Z", "zz", "y"]
    store.add_items(items_(*raw) + items_("t", split="test"))
    store.add_labels([lab("a", "pos", "1"), skip("9", "2")])
    want = ids(store.pool())
    assert store.count_pool() == len(want) == 9
    for size in (1, 2, 4, 9, 100):
        chunks = list(store.iter_pool(chunk_size=size))
        assert [i for c in chunks for i in ids(c)] == want
        assert all(len(c) <= size for c in chunks) and all(chunks)
    # an item leaving the pool while iterating is not returned later; nothing is repeated
    seen: list[str] = []
    for n, chunk in enumerate(store.iter_pool(chunk_size=3)):
        seen += ids(chunk)
        if n == 0:
            store.add_labels([lab(want[-1], "neg", "3")])
    assert seen == want[:-1]
    assert store.count_pool() == 8
    with pytest.raises(StoreError):
        next(store.iter_pool(chunk_size=0))
    empty_store_chunks = [c for c in store.iter_pool() if not c]
    assert empty_store_chunks == []
    # ids only, and items without their metadata
    want = ids(store.pool())
    assert [i for c in store.iter_pool_ids(chunk_size=2) for i in c] == want
    store.add_items([Item("m1", "with meta", "train", {"k": "v"})])
    lean = [it for c in store.iter_pool(chunk_size=4, meta=False) for it in c]
    full = store.pool()
    assert [(it.id, it.text, it.split) for it in lean] == [
        (it.id, it.text, it.split) for it in full
    ]
    assert all(it.meta == {} for it in lean) and {"k": "v"} in [it.meta for it in full]
    with pytest.raises(StoreError):
        next(store.iter_pool_ids(chunk_size=0))
    pairs = [
        (i, t)
        for ids_, texts in store.iter_pool_texts(chunk_size=3)
        for i, t in zip(ids_, texts, strict=True)
    ]
    assert pairs == [(it.id, it.text) for it in full]


def test_assign_split_of_the_pool_always_succeeds_after_withdrawals(store: SqlStore) -> None:
    """Drawing the eval sample from the pool never hits the withdrawn-label refusal."""
    names = [f"i{n:02d}" for n in range(12)]
    store.add_items(items_(*names))
    store.add_labels([lab(x, "pos", f"a{x}") for x in names[:6]] + [skip(names[6], "s6")])
    # withdrawn by add_labels and by a snapshot that no longer holds them
    store.add_labels([lab(x, None, f"a{x}") for x in names[:3]])
    snapshot = LabelSnapshot(source="ls", item_ids=(names[3], names[6]), labels=())
    assert store.sync_labels(snapshot).withdrawn == 2
    assert ids(store.labels(), "item_id") == names[4:6]
    pool = ids(store.pool())
    assert pool == names[7:]
    assert store.assign_split(pool, "eval") == len(pool)
    assert ids(store.items("eval")) == pool
    assert store.pool() == []
    # and every item held out of the pool is refused, with the reason
    with pytest.raises(StoreError, match="7 were"):
        store.assign_split(names[:7], "eval")


# -- split assignment ----------------------------------------------------------------------
def test_assign_split_moves_items_and_counts_only_those_that_moved(store: SqlStore) -> None:
    meta = {"row": 3}
    store.add_items(items_("a", "b", "c", "d") + [Item(id="e", text="t e", meta=meta)])
    store.add_items(items_("t", split="test"))
    assert store.assign_split(["e", "c", "e"], "eval") == 2
    assert ids(store.items("eval")) == ["c", "e"]
    assert store.get_items(["e"]) == [Item(id="e", text="t e", split="eval", meta=meta)]
    assert ids(store.pool()) == ["a", "b", "d"]
    # already there: left as they are and not counted
    assert store.assign_split(["c", "e"], "eval") == 0
    assert store.assign_split(["a", "c"], "eval") == 1
    assert store.assign_split([], "eval") == 0
    # back to train (never asked, never labeled), and a test item into the pool
    assert store.assign_split(("c", "t"), "train") == 2
    assert ids(store.pool()) == ["b", "c", "d", "t"]
    counts = {split: store.count_items(split) for split in ("train", "test", "eval")}
    assert counts == {"train": 4, "test": 0, "eval": 2}


def test_assign_split_never_moves_an_item_asked_or_labeled(store: SqlStore) -> None:
    store.add_items(items_("ans", "skp", "wdr", "qry", "rjd", "ok1", "ok2"))
    store.add_labels([lab("ans", "pos", "1"), skip("skp", "2"), lab("wdr", "neg", "3")])
    store.add_labels([lab("wdr", None, "3")])
    store.begin_iteration({})
    store.record_queries(1, [query("qry", 1, 0)])
    store.record_rejections([rej("rjd", "4")])
    assert ids(store.pool()) == ["ok1", "ok2", "rjd"]  # every held item is out of the pool
    with pytest.raises(StoreError, match="4 were") as err:
        store.assign_split(["ok1", "ans", "skp", "wdr", "qry", "ok2"], "eval")
    text = str(err.value)
    for held, why in [
        ("ans", "labeled"),
        ("skp", "skipped"),
        ("wdr", "withdrawn"),
        ("qry", "queried in iteration 1"),
    ]:
        assert f"'{held}' ({why}" in text
    assert "'ok1'" not in text and "Fix:" in text
    assert store.count_items("eval") == 0
    # a recorded rejection does not hold an item (nothing was trained on it)
    assert store.assign_split(["ok1", "ok2", "rjd"], "eval") == 3
    # an eval item asked later stays where it is; asking to keep it there is fine
    store.update_iteration(1, status="done")
    store.begin_iteration({})
    store.record_queries(2, [query("ok1", 2, 0, kind="eval")])
    assert store.assign_split(["ok1", "ok2"], "eval") == 0
    with pytest.raises(StoreError, match="'ok1' \\(queried in iteration 2\\)"):
        store.assign_split(["ok1", "ok2"], "train")
    assert ids(store.items("eval")) == ["ok1", "ok2", "rjd"]


@pytest.mark.parametrize(
    ("item_ids", "split", "match"),
    [
        (["a", "ghost"], "eval", "1 unknown: 'ghost'"),
        (["a"], "validation", "split"),
        ("a", "eval", "sequence of item ids"),
        (["a", ""], "eval", "item id"),
    ],
    ids=["unknown-id", "unknown-split", "string-not-list", "empty-id"],
)
def test_invalid_assign_split_raises_and_moves_nothing(
    store: SqlStore, item_ids: Any, split: str, match: str
) -> None:
    store.add_items(items_("a", "b"))
    with pytest.raises(StoreError, match=match):
        store.assign_split(item_ids, split)
    assert ids(store.items("train")) == ["a", "b"]


@pytest.mark.timeout(60)
def test_assign_split_waits_for_a_label_being_written_and_then_refuses(store: SqlStore) -> None:
    """A label committed while the move waits for its items is seen: the item does not move."""
    store.add_items(items_("a", "b"))
    engine = store._engine
    now = datetime.now(UTC)
    with write_transaction(engine) as conn:
        conn.execute(
            m.labels.insert().values(
                item_id="a",
                source="ls",
                annotation_id="1",
                value="pos",
                skipped=False,
                withdrawn=False,
                created_at=now,
                updated_at=now,
            )
        )
        out: list[Any] = []
        mover = threading.Thread(target=lambda: out.append(_outcome(store, ["a", "b"])))
        mover.start()
        _until_blocked(store, mover)
    mover.join(timeout=30)
    assert len(out) == 1 and isinstance(out[0], StoreError), out
    assert "'a' (labeled)" in str(out[0])
    assert store.count_items("eval") == 0


def _outcome(store: SqlStore, item_ids: list[str]) -> Any:
    try:
        return store.assign_split(item_ids, "eval")
    except StoreError as err:
        return err


def _until_blocked(store: SqlStore, thread: threading.Thread, limit_s: float = 5.0) -> None:
    """Return once ``thread`` waits on a lock (PostgreSQL: seen in pg_locks), or has ended."""
    if store.dialect != "postgresql":
        time.sleep(0.3)  # SQLite: BEGIN IMMEDIATE waits on the write lock held by the caller
        return
    deadline = time.monotonic() + limit_s
    probe = sa.text("SELECT count(*) FROM pg_locks WHERE NOT granted")
    with store._engine.connect() as conn:
        while thread.is_alive() and time.monotonic() < deadline:
            if conn.execute(probe).scalar():
                return
            conn.rollback()
            time.sleep(0.01)


# -- labels --------------------------------------------------------------------------------
def test_add_labels_insert_unchanged_update_and_revision(store: SqlStore) -> None:
    store.add_items(items_("a", "b"))
    assert store.label_revision() == 0
    first = store.add_labels([lab("a", "pos", "1"), lab("b", "neg", "2")])
    assert first == LabelWriteResult(inserted=2)
    rev1 = store.label_revision()
    assert rev1 > 0
    assert store.add_labels([lab("a", "pos", "1"), lab("b", "neg", "2")]) == LabelWriteResult(
        unchanged=2
    )
    assert store.label_revision() == rev1
    changed = store.add_labels([lab("a", "neg", "1"), lab("b", "neg", "2")])
    assert changed == LabelWriteResult(updated=1, unchanged=1)
    rev2 = store.label_revision()
    assert rev2 > rev1
    assert [(x.item_id, x.value) for x in store.labels()] == [("a", "neg"), ("b", "neg")]
    # the same annotation id on another item, or from another source, is another label
    store.add_labels([lab("b", "pos", "1"), lab("a", "pos", "1", source="import")])
    assert len(store.labels()) == 4
    assert store.label_revision() > rev2


def test_withdrawal_and_reactivation(store: SqlStore) -> None:
    store.add_items(items_("a"))
    store.add_labels([lab("a", "pos", "1")])
    rev = store.label_revision()
    assert store.add_labels([lab("a", None, "1")]) == LabelWriteResult(withdrawn=1)
    assert store.labels() == []
    assert store.label_revision() > rev
    rev = store.label_revision()
    # withdrawing again, or withdrawing an annotation never seen, changes nothing
    assert store.add_labels([lab("a", None, "1"), lab("a", None, "zz")]) == LabelWriteResult(
        unchanged=2
    )
    assert store.label_revision() == rev
    # the annotation given again is active again
    assert store.add_labels([lab("a", "neg", "1")]) == LabelWriteResult(updated=1)
    assert [(x.annotation_id, x.value) for x in store.labels()] == [("1", "neg")]


def test_repeated_identity_in_one_batch_applies_in_order(store: SqlStore) -> None:
    store.add_items(items_("a"))
    res = store.add_labels([lab("a", "pos", "1"), lab("a", "neg", "1"), lab("a", "neg", "1")])
    assert res == LabelWriteResult(inserted=1, updated=1, unchanged=1)
    assert [x.value for x in store.labels()] == ["neg"]


def test_skip_is_a_label_that_leaves_the_pool_and_is_not_trained_on(store: SqlStore) -> None:
    store.add_items(items_("a", "b"))
    assert store.add_labels([skip("a", "1")]) == LabelWriteResult(inserted=1)
    (got,) = store.labels()
    assert (got.item_id, got.value, got.skipped) == ("a", None, True)
    assert ids(store.pool()) == ["b"]
    assert len(store.training_set()) == 0
    # a skip turned into an answer is an update
    assert store.add_labels([lab("a", "pos", "1")]) == LabelWriteResult(updated=1)
    assert store.training_set().labels == ("pos",)


def test_unknown_item_in_a_label_batch_raises_and_writes_nothing(store: SqlStore) -> None:
    store.add_items(items_("a"))
    with pytest.raises(StoreError, match="'ghost'"):
        store.add_labels([lab("a", "pos", "1"), lab("ghost", "neg", "2")])
    assert store.labels() == []
    assert store.label_revision() == 0


@pytest.mark.parametrize(
    "bad",
    [
        Label(item_id="a", value="pos", source="ls", annotation_id="1", skipped=True),
        Label(item_id="a", value="pos", source="", annotation_id="1"),
        Label(item_id="a", value="", source="ls", annotation_id="1"),
    ],
    ids=["skip-with-value", "empty-source", "empty-value"],
)
def test_invalid_label_raises_and_writes_nothing(store: SqlStore, bad: Label) -> None:
    store.add_items(items_("a", "b"))
    with pytest.raises(StoreError, match="Expected"):
        store.add_labels([lab("b", "pos", "ok"), bad])
    assert store.labels() == []


def test_several_annotators_per_item_and_labels_filter(store: SqlStore) -> None:
    store.add_items(items_("a", "b", "c"))
    store.add_labels(
        [
            lab("b", "pos", "1", annotator="ann"),
            lab("a", "neg", "2", annotator="bob"),
            lab("a", "pos", "3", annotator="cid"),
            lab("c", "pos", "4"),
        ]
    )
    got = store.labels(["a", "b"])
    assert [(x.item_id, x.annotator, x.value) for x in got] == [
        ("a", "bob", "neg"),
        ("a", "cid", "pos"),
        ("b", "ann", "pos"),
    ]
    assert store.labels([]) == []
    assert len(store.labels()) == 4


def test_label_timestamps_are_utc_aware(store: SqlStore) -> None:
    store.add_items(items_("a", "b", "c"))
    naive = datetime(2024, 5, 1, 12, 0, 0)
    plus2 = datetime(2024, 5, 1, 14, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    before = datetime.now(UTC)
    store.add_labels(
        [lab("a", "pos", "1", created_at=naive), lab("b", "pos", "2", created_at=plus2)]
    )
    store.add_labels([lab("c", "pos", "3")])
    got = {x.item_id: x.created_at for x in store.labels()}
    assert got["a"] == datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    assert got["b"] == datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    assert all(t is not None and t.utcoffset() == timedelta(0) for t in got.values())
    assert got["c"] is not None and got["c"] >= before - timedelta(seconds=1)


def test_sync_labels_inserts_updates_withdraws_and_is_idempotent(store: SqlStore) -> None:
    store.add_items(items_("a", "b", "c"))
    store.add_labels([lab("a", "neg", "imp-a", source="import")])
    first = LabelSnapshot(
        source="ls",
        item_ids=("a", "b"),
        labels=(lab("a", "pos", "1"), lab("a", "pos", "2"), lab("b", "neg", "3")),
    )
    assert store.sync_labels(first) == LabelWriteResult(inserted=3)
    rev = store.label_revision()
    assert store.sync_labels(first) == LabelWriteResult(unchanged=3)
    assert store.label_revision() == rev
    # annotation 2 deleted in the tool, 3 changed; c was never labeled and has no labels now
    second = LabelSnapshot(
        source="ls",
        item_ids=("a", "b", "c"),
        labels=(lab("a", "pos", "1"), lab("b", "pos", "3")),
    )
    assert store.sync_labels(second) == LabelWriteResult(updated=1, unchanged=1, withdrawn=1)
    assert store.label_revision() > rev
    active = {(x.source, x.annotation_id): x.value for x in store.labels()}
    assert active == {("import", "imp-a"): "neg", ("ls", "1"): "pos", ("ls", "3"): "pos"}
    # an item listed with no labels loses every label of that source, and only of that source
    third = LabelSnapshot(source="ls", item_ids=("a",), labels=())
    assert store.sync_labels(third) == LabelWriteResult(withdrawn=1)
    active = {(x.source, x.annotation_id): x.value for x in store.labels()}
    assert active == {("import", "imp-a"): "neg", ("ls", "3"): "pos"}
    assert store.sync_labels(third) == LabelWriteResult()


def test_a_snapshot_never_undoes_labels_written_after_it_was_taken(store: SqlStore) -> None:
    """A poll's fetch starts, a webhook writes a label, the poll's snapshot (which could not see
    it) is ingested: the newer label is neither withdrawn nor overwritten."""
    store.add_items(items_("a", "b"))
    store.add_labels([lab("a", "pos", "1", source="ls")])
    as_of = datetime.now(UTC)
    time.sleep(0.01)
    store.add_labels(
        [lab("b", "neg", "2", source="ls"), lab("a", "neg", "1", source="ls")]
    )  # webhooks
    stale = LabelSnapshot(
        source="ls", item_ids=("a", "b"), labels=(lab("a", "pos", "1"),), as_of=as_of
    )
    assert store.sync_labels(stale) == LabelWriteResult(unchanged=1)
    active = {(x.annotation_id, x.item_id): x.value for x in store.labels()}
    assert active == {("1", "a"): "neg", ("2", "b"): "neg"}
    # a later snapshot (taken after those writes) is authoritative again
    fresh = LabelSnapshot(
        source="ls", item_ids=("a", "b"), labels=(lab("a", "pos", "1"),), as_of=datetime.now(UTC)
    )
    assert store.sync_labels(fresh) == LabelWriteResult(updated=1, withdrawn=1)
    assert {(x.annotation_id, x.item_id): x.value for x in store.labels()} == {("1", "a"): "pos"}


def test_sync_labels_rejects_foreign_labels_and_unknown_items(store: SqlStore) -> None:
    store.add_items(items_("a", "b"))
    store.add_labels([lab("a", "pos", "1")])
    wrong_source = LabelSnapshot(
        source="ls", item_ids=("a",), labels=(lab("a", "neg", "9", source="import"),)
    )
    outside = LabelSnapshot(source="ls", item_ids=("a",), labels=(lab("b", "neg", "9"),))
    unknown = LabelSnapshot(source="ls", item_ids=("a", "ghost"), labels=())
    for snap in (wrong_source, outside, unknown):
        with pytest.raises(StoreError, match="Expected"):
            store.sync_labels(snap)
    assert [(x.item_id, x.value) for x in store.labels()] == [("a", "pos")]


# -- training set --------------------------------------------------------------------------
def test_training_set_majority_ties_and_agreement_by_hand(store: SqlStore) -> None:
    store.add_items(items_("a", "b", "c", "d", "e", "f", "h") + items_("g", split="test"))
    store.add_labels(
        [
            lab("a", "pos", "a1"),  # 1 answer: pos, no agreement term
            lab("b", "pos", "b1"),  # pos pos neg: pos; 1 of 3 pairs agree
            lab("b", "neg", "b2"),
            lab("b", "pos", "b3"),
            lab("c", "pos", "c1"),  # pos neg: tie; 0 of 1 pair agrees
            lab("c", "neg", "c2"),
            skip("d", "d1"),  # only a skip: neither trained on nor a tie
            lab("e", "neg", "e1"),  # neg skip neg: neg; 1 of 1 pair agrees
            skip("e", "e2"),
            lab("e", "neg", "e3"),
            lab("f", "pos", "f1"),  # pos + withdrawn neg: pos, 1 answer
            lab("f", "neg", "f2"),
            lab("f", None, "f2"),
            lab("g", "neg", "g1"),  # test split
        ]
    )
    ts = store.training_set()
    assert ts.item_ids == ("a", "b", "e", "f")
    assert ts.labels == ("pos", "pos", "neg", "pos")
    assert ts.texts == tuple(f"text of {i}" for i in ts.item_ids)
    assert ts.ties == ("c",)
    assert ts.agreement == pytest.approx((1 / 3 + 0 + 1) / 3)
    assert len(ts) == 4
    test = store.training_set("test")
    assert (test.item_ids, test.labels, test.ties, test.agreement) == (("g",), ("neg",), (), None)


def test_training_set_three_way_tie_and_unanimous_agreement(store: SqlStore) -> None:
    store.add_items(items_("a", "b"))
    store.add_labels(
        [lab("a", x, f"a{i}") for i, x in enumerate(["x", "y", "z", "x", "y"])]
        + [lab("b", "z", f"b{i}") for i in range(4)]
    )
    ts = store.training_set()
    # a: x2 y2 z1 -> tie; pairs agreeing (1 + 1) of 10
    assert ts.ties == ("a",)
    assert ts.item_ids == ("b",)
    assert ts.agreement == pytest.approx((2 / 10 + 1.0) / 2)


def test_training_set_of_an_empty_store_and_bad_split(store: SqlStore) -> None:
    ts = store.training_set()
    assert (ts.item_ids, ts.labels, ts.ties, ts.agreement) == ((), (), (), None)
    with pytest.raises(StoreError, match="split"):
        store.training_set("validation")


# -- rejected answers ----------------------------------------------------------------------
def test_record_rejections_is_idempotent_and_a_new_reason_replaces_the_old(
    store: SqlStore,
) -> None:
    store.add_items(items_("a", "b", "z"))
    assert store.rejections() == []
    assert store.record_rejections([]) == 0
    first = [rej("z", "9"), rej("a", "1", "empty result"), rej("b", "2")]
    assert store.record_rejections(first) == 3
    got = store.rejections()
    # oldest first, and within a batch in the order given (not by id)
    assert [(r.item_id, r.annotation_id, r.reason) for r in got] == [
        ("z", "9", "choice 'maybe' is not a class"),
        ("a", "1", "empty result"),
        ("b", "2", "choice 'maybe' is not a class"),
    ]
    assert all(r.created_at is not None and r.created_at.utcoffset() == timedelta(0) for r in got)
    assert store.record_rejections(iter(first)) == 0
    assert store.rejections() == got
    # another reason for a known identity replaces it in place (not new)
    assert store.record_rejections([rej("a", "1", "choice 'x' is not a class")]) == 0
    after = store.rejections()
    assert [r.reason for r in after] == [
        "choice 'maybe' is not a class",
        "choice 'x' is not a class",
        "choice 'maybe' is not a class",
    ]
    assert after[1].created_at == got[1].created_at
    # another source, or another item, under the same annotation id is another rejection
    assert store.record_rejections([rej("a", "1", source="import"), rej("b", "1")]) == 2
    assert [(r.source, r.item_id) for r in store.rejections()[3:]] == [("import", "a"), ("ls", "b")]
    # rejections are never labels
    assert store.labels() == [] and store.label_revision() == 0
    assert len(store.training_set()) == 0


def test_record_rejections_repeated_identity_in_one_batch_last_wins(store: SqlStore) -> None:
    store.add_items(items_("a"))
    batch = [rej("a", "1", "first"), rej("a", "1", "second"), rej("a", "2", "other")]
    assert store.record_rejections(batch) == 2
    assert [(r.annotation_id, r.reason) for r in store.rejections()] == [
        ("1", "second"),
        ("2", "other"),
    ]


def test_rejection_created_at_is_kept_in_utc(store: SqlStore) -> None:
    store.add_items(items_("a", "b"))
    plus2 = timezone(timedelta(hours=2))
    store.record_rejections(
        [
            rej("a", "1", created_at=datetime(2024, 3, 1, 12, 0, tzinfo=plus2)),
            rej("b", "2", created_at=datetime(2024, 3, 1, 12, 0)),  # naive: taken as UTC
        ]
    )
    a, b = store.rejections()
    assert a.created_at == datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
    assert b.created_at == datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
    assert a.created_at.utcoffset() == b.created_at.utcoffset() == timedelta(0)


def test_rejection_of_an_unknown_item_raises_and_writes_nothing(store: SqlStore) -> None:
    store.add_items(items_("a", "b"))
    store.record_rejections([rej("a", "1", "old")])
    with pytest.raises(StoreError, match="1 unknown: 'ghost'"):
        store.record_rejections([rej("a", "1", "new"), rej("b", "2"), rej("ghost", "3")])
    assert [(r.item_id, r.reason) for r in store.rejections()] == [("a", "old")]


@pytest.mark.parametrize(
    "bad",
    [
        rej("a", "1", ""),
        rej("a", "1", source=""),
        rej("a", ""),
        lab("a", "pos", "1"),
    ],
    ids=["empty-reason", "empty-source", "empty-annotation-id", "not-a-rejection"],
)
def test_invalid_rejection_raises_and_writes_nothing(store: SqlStore, bad: Any) -> None:
    store.add_items(items_("a", "b"))
    with pytest.raises(StoreError, match="Expected"):
        store.record_rejections([rej("b", "ok"), bad])
    assert store.rejections() == []


# -- queries -------------------------------------------------------------------------------
def test_record_queries_is_atomic_with_the_step_and_idempotent(store: SqlStore) -> None:
    store.add_items(items_("a", "b", "c", "d"))
    it = store.begin_iteration({"strategy": "entropy"})
    batch = [query("c", 1, 0, score=0.9, model_version="mv1"), query("a", 1, 1, score=0.4)]
    assert store.record_queries(it.number, batch) == 2
    assert store.iterations()[0].step == "selected"
    assert store.queries(1) == [
        Query("c", 1, 0.9, 0, "entropy", model_version="mv1"),
        Query("a", 1, 0.4, 1, "entropy"),
    ]
    assert ids(store.pool()) == ["b", "d"]
    # recording again for this iteration is a no-op, whatever is given
    assert store.record_queries(it.number, batch) == 0
    assert store.record_queries(it.number, [query("b", 1, 0)]) == 0
    assert [q.item_id for q in store.queries()] == ["c", "a"]
    assert ids(store.pool()) == ["b", "d"]


def test_record_queries_of_an_item_asked_before_raises_and_writes_nothing(
    store: SqlStore,
) -> None:
    store.add_items(items_("a", "b", "c"))
    store.begin_iteration({})
    store.record_queries(1, [query("a", 1, 0)])
    store.update_iteration(1, step="done", status="done")
    store.begin_iteration({})
    with pytest.raises(StoreError, match="'a'.*iteration 1"):
        store.record_queries(2, [query("b", 2, 0), query("a", 2, 1)])
    assert store.queries(2) == []
    assert store.iterations()[1].step == "begin"
    assert store.record_queries(2, [query("b", 2, 0)]) == 1


@pytest.mark.parametrize(
    ("batch", "match"),
    [
        ([query("a", 1, 0), query("ghost", 1, 1)], "'ghost'"),
        ([query("a", 1, 0), query("a", 1, 1)], "'a' repeats"),
        ([query("a", 2, 0)], "iteration 1"),
        ([query("a", 1, 0, score=math.nan)], "finite"),
    ],
    ids=["unknown-item", "repeated-item", "other-iteration", "nan-score"],
)
def test_invalid_query_batch_raises_and_writes_nothing(
    store: SqlStore, batch: list[Query], match: str
) -> None:
    store.add_items(items_("a", "b"))
    store.begin_iteration({})
    with pytest.raises(StoreError, match=match):
        store.record_queries(1, batch)
    assert store.queries() == []
    assert store.iterations()[0].step == "begin"


def test_record_queries_for_an_unknown_iteration_raises(store: SqlStore) -> None:
    store.add_items(items_("a"))
    with pytest.raises(StoreError, match="begin_iteration"):
        store.record_queries(7, [query("a", 7, 0)])
    assert store.queries() == []


def test_mark_sent_and_filters(store: SqlStore) -> None:
    store.add_items(items_("a", "b", "c"))
    store.begin_iteration({})
    store.record_queries(1, [query("a", 1, 0), query("b", 1, 1), query("c", 1, 2, kind="eval")])
    store.mark_sent(["a", "c"])
    store.mark_sent(["a"])
    assert [q.item_id for q in store.queries(sent=True)] == ["a", "c"]
    assert [q.item_id for q in store.queries(1, sent=False)] == ["b"]
    assert store.queries(2) == []
    assert [q.kind for q in store.queries()] == ["query", "query", "eval"]
    with pytest.raises(StoreError, match="'zz'"):
        store.mark_sent(["b", "zz"])
    assert [q.item_id for q in store.queries(sent=False)] == ["b"]


# -- model versions ------------------------------------------------------------------------
def test_add_model_version_moves_its_iteration_to_trained(store: SqlStore) -> None:
    it = store.begin_iteration({})
    mv = version("mv1", iteration=it.number)
    store.add_model_version(mv)
    (row,) = store.iterations()
    assert (row.step, row.model_version) == ("trained", "mv1")
    got = store.get_model_version("mv1")
    assert got.created_at is not None and got.created_at.utcoffset() == timedelta(0)
    assert got == ModelVersion(
        id="mv1",
        trainer=mv.trainer,
        path=mv.path,
        classes=("neg", "pos"),
        n_labels=10,
        label_revision=3,
        metrics=mv.metrics,
        config=mv.config,
        iteration=1,
        status="candidate",
        created_at=got.created_at,
    )
    # the same version again is a no-op; another version under that id is refused
    store.add_model_version(mv)
    with pytest.raises(StoreError, match="'mv1'"):
        store.add_model_version(version("mv1", iteration=it.number, path="elsewhere"))
    assert len(store.model_versions()) == 1


def test_model_versions_oldest_first_and_status(store: SqlStore) -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    store.add_model_version(version("late", created_at=t0 + timedelta(days=2)))
    store.add_model_version(version("early", created_at=t0))
    store.add_model_version(version("same-time-1", created_at=t0 + timedelta(days=1)))
    store.add_model_version(version("same-time-2", created_at=t0 + timedelta(days=1)))
    assert ids(store.model_versions()) == ["early", "same-time-1", "same-time-2", "late"]
    store.set_model_status("early", "promoted")
    assert store.get_model_version("early").status == "promoted"
    with pytest.raises(StoreError, match="status"):
        store.set_model_status("early", "best")
    with pytest.raises(StoreError, match="'ghost'"):
        store.set_model_status("ghost", "rejected")
    with pytest.raises(StoreError, match="'ghost'"):
        store.get_model_version("ghost")


@pytest.mark.parametrize(
    ("mv", "match"),
    [
        (version("bad", iteration=5), "iteration 5"),
        (version("bad", metrics={"f1": math.nan}), "JSON"),
        (version("bad", status="shipped"), "status"),
    ],
    ids=["unknown-iteration", "nan-metric", "unknown-status"],
)
def test_invalid_model_version_raises_and_writes_nothing(
    store: SqlStore, mv: ModelVersion, match: str
) -> None:
    with pytest.raises(StoreError, match=match):
        store.add_model_version(mv)
    assert store.model_versions() == []


# -- iterations ----------------------------------------------------------------------------
def test_iteration_lifecycle(store: SqlStore) -> None:
    assert store.unfinished_iteration() is None
    assert store.iterations() == []
    first = store.begin_iteration({"strategy": "margin"})
    assert (first.number, first.status, first.step) == (1, "running", "begin")
    assert first.started_at is not None and first.started_at.utcoffset() == timedelta(0)
    assert store.unfinished_iteration() == first
    with pytest.raises(StoreError, match="iteration 1 is still running"):
        store.begin_iteration({})
    up = store.update_iteration(1, step="trained", timings={"train": 1.5}, info={"n": 3})
    up = store.update_iteration(1, timings={"select": 0.25}, info={"why": "forced", "n": 4})
    assert dict(up.timings) == {"train": 1.5, "select": 0.25}
    assert dict(up.info) == {"strategy": "margin", "n": 4, "why": "forced"}
    assert (up.step, up.status, up.finished_at) == ("trained", "running", None)
    done = store.update_iteration(1, step="done", status="done")
    assert done.finished_at is not None and done.finished_at >= first.started_at
    assert store.iterations() == [done]
    assert store.unfinished_iteration() is None
    second = store.begin_iteration({})
    assert second.number == 2
    failed = store.update_iteration(2, status="failed")
    assert failed.finished_at is not None
    assert store.begin_iteration({}).number == 3
    assert [i.number for i in store.iterations()] == [1, 2, 3]


def test_update_iteration_rejects_unknown_number_step_and_status(store: SqlStore) -> None:
    store.begin_iteration({})
    with pytest.raises(StoreError, match="iteration 9"):
        store.update_iteration(9, step="done")
    with pytest.raises(StoreError, match="step"):
        store.update_iteration(1, step="finished")
    with pytest.raises(StoreError, match="status"):
        store.update_iteration(1, status="ok")
    with pytest.raises(StoreError, match="JSON"):
        store.update_iteration(1, timings={"train": math.inf})
    (it,) = store.iterations()
    assert (it.step, it.status, dict(it.timings)) == ("begin", "running", {})


# -- leases --------------------------------------------------------------------------------
class FakeClock:
    """A settable clock: ``clock()`` is the time ``at``; ``advance`` moves it forward."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> datetime:
        self.at += timedelta(seconds=seconds)
        return self.at


T0 = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def clocked(store_url: str, clock: FakeClock) -> Iterator[SqlStore]:
    """A migrated, empty store whose leases run on ``clock``."""
    s = SqlStore.open(store_url, clock=clock)
    try:
        yield s
    finally:
        s.close()


def _lease_row(store: SqlStore, name: str) -> dict[str, Any] | None:
    with store._engine.connect() as conn:
        row = conn.execute(sa.select(m.leases).where(m.leases.c.name == name)).first()
    return None if row is None else dict(row._mapping)


def test_lease_lifecycle_acquire_reacquire_renew_release(
    clocked: SqlStore, clock: FakeClock
) -> None:
    assert clocked.lease("loop") is None
    assert clocked.acquire_lease("loop", "host-a:1", 60) is True
    assert clocked.lease("loop") == ("host-a:1", T0 + timedelta(seconds=60))
    # taking it again as its holder renews it (also to a shorter time) and keeps acquired_at
    now = clock.advance(10)
    assert clocked.acquire_lease("loop", "host-a:1", 30) is True
    assert clocked.lease("loop") == ("host-a:1", now + timedelta(seconds=30))
    row = _lease_row(clocked, "loop")
    assert row is not None
    assert (row["acquired_at"], row["renewed_at"]) == (T0, now)
    now = clock.advance(5.5)
    assert clocked.renew_lease("loop", "host-a:1", 0.25) is True
    assert clocked.lease("loop") == ("host-a:1", now + timedelta(seconds=0.25))
    row = _lease_row(clocked, "loop")
    assert row is not None
    assert (row["acquired_at"], row["renewed_at"], row["holder"]) == (T0, now, "host-a:1")
    # times are timezone-aware UTC on every backend
    lease = clocked.lease("loop")
    assert (
        lease is not None and lease[1].tzinfo is not None and lease[1].utcoffset() == timedelta(0)
    )
    # leases with other names are independent
    assert clocked.acquire_lease("export", "host-b:2", 60) is True
    assert clocked.lease("export") == ("host-b:2", now + timedelta(seconds=60))
    clocked.release_lease("loop", "host-a:1")
    assert clocked.lease("loop") is None
    assert _lease_row(clocked, "loop") is None
    assert clocked.renew_lease("loop", "host-a:1", 60) is False
    assert clocked.lease("export") == ("host-b:2", now + timedelta(seconds=60))
    assert clocked.acquire_lease("loop", "host-b:2", 60) is True
    assert clocked.lease("loop") == ("host-b:2", now + timedelta(seconds=60))


def test_a_live_lease_refuses_others_until_it_expires(clocked: SqlStore, clock: FakeClock) -> None:
    assert clocked.acquire_lease("loop", "a", 10) is True
    clock.advance(9.999)
    assert clocked.acquire_lease("loop", "b", 60) is False
    assert clocked.lease("loop") == ("a", T0 + timedelta(seconds=10))
    # expired at exactly expires_at: unheld for lease(), free for anybody
    now = clock.advance(0.001)
    assert now == T0 + timedelta(seconds=10)
    assert clocked.lease("loop") is None
    assert clocked.acquire_lease("loop", "b", 60) is True
    assert clocked.lease("loop") == ("b", now + timedelta(seconds=60))
    row = _lease_row(clocked, "loop")
    assert row is not None and (row["holder"], row["acquired_at"]) == ("b", now)
    # the old holder lost it: it can neither renew nor take it back while b's is live
    assert clocked.renew_lease("loop", "a", 60) is False
    assert clocked.acquire_lease("loop", "a", 60) is False
    clocked.release_lease("loop", "a")
    assert clocked.lease("loop") == ("b", now + timedelta(seconds=60))


def test_renewing_an_expired_lease_nobody_took_succeeds(
    clocked: SqlStore, clock: FakeClock
) -> None:
    assert clocked.acquire_lease("loop", "a", 1) is True
    now = clock.advance(5)
    assert clocked.lease("loop") is None
    assert clocked.renew_lease("loop", "a", 2) is True
    assert clocked.lease("loop") == ("a", now + timedelta(seconds=2))
    # re-acquiring an expired lease of one's own starts a new holding: acquired_at moves
    now = clock.advance(3)
    assert clocked.acquire_lease("loop", "a", 2) is True
    row = _lease_row(clocked, "loop")
    assert row is not None and row["acquired_at"] == now


def test_release_by_a_non_holder_is_a_no_op(clocked: SqlStore, clock: FakeClock) -> None:
    clocked.release_lease("never-taken", "a")
    assert clocked.lease("never-taken") is None
    assert clocked.acquire_lease("loop", "a", 60) is True
    clocked.release_lease("loop", "b")
    clocked.release_lease("other", "a")
    assert clocked.lease("loop") == ("a", T0 + timedelta(seconds=60))
    assert clocked.renew_lease("loop", "b", 60) is False
    # the holder may release an expired lease of its own
    clock.advance(120)
    clocked.release_lease("loop", "a")
    assert _lease_row(clocked, "loop") is None


def test_lease_times_from_a_clock_in_another_zone_are_kept_in_utc(store_url: str) -> None:
    east = timezone(timedelta(hours=5, minutes=30))
    local = datetime(2026, 3, 1, 12, 0, tzinfo=east)
    with SqlStore.open(store_url, clock=lambda: local) as s:
        assert s.acquire_lease("loop", "a", 90) is True
        holder, expires = s.lease("loop") or ("", T0)
    assert holder == "a"
    assert expires == local + timedelta(seconds=90)
    assert expires.utcoffset() == timedelta(0)
    # a naive clock is taken as UTC
    naive = datetime(2026, 3, 1, 12, 0)
    with SqlStore.open(store_url, clock=lambda: naive) as s:
        assert s.lease("loop") is None  # 12:00 UTC is after 06:30 UTC + 90 s
        assert s.acquire_lease("loop", "b", 1) is True
        assert s.lease("loop") == ("b", naive.replace(tzinfo=UTC) + timedelta(seconds=1))


def test_lease_expiry_with_the_real_clock(store: SqlStore) -> None:
    assert store.acquire_lease("loop", "a", 60) is True
    assert store.acquire_lease("loop", "b", 60) is False
    assert store.renew_lease("loop", "a", 0.2) is True
    lease = store.lease("loop")
    assert lease is not None and lease[0] == "a"
    assert timedelta(0) < lease[1] - datetime.now(UTC) <= timedelta(seconds=0.2)
    time.sleep(0.3)
    assert store.lease("loop") is None
    assert store.acquire_lease("loop", "b", 60) is True
    assert store.renew_lease("loop", "a", 60) is False
    lease = store.lease("loop")
    assert lease is not None and lease[0] == "b"


@pytest.mark.parametrize(
    "ttl",
    [0, -1.5, math.nan, math.inf, True, "60", None, 1e300],
    ids=["zero", "negative", "nan", "inf", "bool", "str", "none", "overflow"],
)
def test_invalid_lease_ttl_raises_and_writes_nothing(store: SqlStore, ttl: Any) -> None:
    with pytest.raises(StoreError, match="ttl"):
        store.acquire_lease("loop", "a", ttl)
    assert _lease_row(store, "loop") is None
    assert store.acquire_lease("loop", "a", 60) is True
    before = _lease_row(store, "loop")
    with pytest.raises(StoreError, match="ttl"):
        store.renew_lease("loop", "a", ttl)
    assert _lease_row(store, "loop") == before


def test_a_ttl_running_past_the_calendar_is_a_store_error(store_url: str) -> None:
    late = datetime(9999, 12, 31, 23, 0, tzinfo=UTC)
    with SqlStore.open(store_url, clock=lambda: late) as s:
        with pytest.raises(StoreError, match="year 10000"):
            s.acquire_lease("loop", "a", 7200)
        assert _lease_row(s, "loop") is None


@pytest.mark.parametrize(("name", "holder"), [("", "a"), ("loop", ""), (None, "a"), ("loop", 7)])
def test_invalid_lease_name_or_holder_raises(store: SqlStore, name: Any, holder: Any) -> None:
    for call in (
        lambda: store.acquire_lease(name, holder, 60),
        lambda: store.renew_lease(name, holder, 60),
        lambda: store.release_lease(name, holder),
    ):
        with pytest.raises(StoreError, match="non-empty string"):
            call()
    with store._engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(m.leases)) == 0


def test_a_clock_that_is_no_clock_is_a_store_error(store_url: str) -> None:
    with SqlStore.open(store_url, clock=lambda: 12.5) as s:  # type: ignore[arg-type,return-value]
        with pytest.raises(StoreError, match="clock"):
            s.acquire_lease("loop", "a", 60)
        with pytest.raises(StoreError, match="clock"):
            s.lease("loop")


# -- meta ----------------------------------------------------------------------------------
def test_meta_round_trip(store: SqlStore) -> None:
    assert store.get_meta("classes") is None
    assert store.get_meta("classes", ["x"]) == ["x"]
    values: dict[str, Any] = {
        "classes": ["neg", "pos"],
        "cursor": "2024-05-01T12:00:00Z",
        "count": 3,
        "ratio": 0.5,
        "flag": False,
        "nested": {"a": [1, {"b": None}], "é": "ü"},
        "nothing": None,
    }
    for k, v in values.items():
        store.set_meta(k, v)
    for k, v in values.items():
        assert store.get_meta(k, "default") == v
    store.set_meta("classes", ["a", "b", "c"])
    assert store.get_meta("classes") == ["a", "b", "c"]
    with pytest.raises(StoreError, match="JSON"):
        store.set_meta("bad", {"x": math.nan})
    with pytest.raises(StoreError, match="JSON"):
        store.set_meta("bad", object())
    assert store.get_meta("bad") is None


# -- lifecycle, migrations -----------------------------------------------------------------
def test_reopen_finds_the_data(store_url: str) -> None:
    with SqlStore.open(store_url) as s:
        s.add_items(items_("a", "b"))
        s.add_labels([lab("a", "pos", "1")])
        s.begin_iteration({"k": "v"})
        s.set_meta("classes", ["neg", "pos"])
        s.record_rejections([rej("b", "2")])
        s.assign_split(["b"], "eval")
        rev = s.label_revision()
    with SqlStore.open(store_url, migrate=False) as s:
        assert ids(s.items()) == ["a", "b"]
        assert ids(s.items("eval")) == ["b"]
        assert [(r.item_id, r.annotation_id) for r in s.rejections()] == [("b", "2")]
        assert [x.value for x in s.labels()] == ["pos"]
        assert s.label_revision() == rev
        assert s.unfinished_iteration() is not None
        assert s.get_meta("classes") == ["neg", "pos"]


def test_closed_store_raises(store_url: str) -> None:
    s = SqlStore.open(store_url)
    s.close()
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.items()
    with pytest.raises(StoreError, match="closed"):
        s.add_items(items_("a"))


def test_migrated_schema_equals_the_models(store: SqlStore) -> None:
    engine = store._engine
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(ctx, m.metadata) == []
        # the comparison does see differences: a model with one more column is reported
        other = sa.MetaData()
        for table in m.metadata.tables.values():
            table.to_metadata(other)
        other.tables["items"].append_column(sa.Column("extra", sa.Integer()))
        diff = compare_metadata(MigrationContext.configure(conn), other)
        assert [d[0] for d in diff] == ["add_column"]


def test_the_database_itself_refuses_a_second_running_iteration(store: SqlStore) -> None:
    store.begin_iteration({})
    row = {"status": "running", "step": "begin", "started_at": datetime.now(UTC)}
    with pytest.raises(sa.exc.IntegrityError), store._engine.begin() as conn:
        conn.execute(m.iterations.insert().values(number=2, timings={}, info={}, **row))
    store.update_iteration(1, status="done")
    with store._engine.begin() as conn:
        conn.execute(m.iterations.insert().values(number=2, timings={}, info={}, **row))
    assert store.unfinished_iteration() is not None


def test_upgrade_and_current_revision_without_opening(store_url: str) -> None:
    assert current_revision(store_url) is None
    with pytest.raises(StoreError, match="alloop db upgrade"):
        SqlStore.open(store_url, migrate=False)
    assert upgrade(store_url) == head_revision()
    assert current_revision(store_url) == head_revision()
    assert upgrade(store_url) == head_revision()  # idempotent
    with SqlStore.open(store_url, migrate=False) as s:
        assert s.count_items() == 0


def test_upgrading_a_filled_database_from_revision_0001_keeps_its_data(store_url: str) -> None:
    cfg = alembic_config(store_url)
    command.upgrade(cfg, "0001")
    assert current_revision(store_url) == "0001"
    t0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    engine = create_store_engine(store_url)
    try:
        with engine.begin() as conn:
            assert "label_rejections" not in sa.inspect(conn).get_table_names()
            conn.execute(
                m.items.insert(),
                [
                    {"id": "a", "text": "ä text", "split": "train", "meta": {}, "created_at": t0},
                    {"id": "b", "text": "b", "split": "train", "meta": {"k": 1}, "created_at": t0},
                    {"id": "c", "text": "c", "split": "train", "meta": {}, "created_at": t0},
                    {"id": "t", "text": "t", "split": "test", "meta": {}, "created_at": t0},
                ],
            )
            label_id = conn.scalar(
                m.labels.insert()
                .values(
                    item_id="a",
                    source="ls",
                    annotation_id="1",
                    annotator="ann",
                    value="pos",
                    skipped=False,
                    withdrawn=False,
                    created_at=t0,
                    updated_at=t0,
                )
                .returning(m.labels.c.id)
            )
            conn.execute(
                m.label_events.insert().values(
                    label_id=label_id,
                    item_id="a",
                    action="insert",
                    value="pos",
                    skipped=False,
                    created_at=t0,
                )
            )
            conn.execute(
                m.iterations.insert().values(
                    number=1, status="running", step="begin", started_at=t0, timings={}, info={}
                )
            )
            conn.execute(
                m.queries.insert().values(
                    item_id="b",
                    iteration=1,
                    score=0.5,
                    rank=0,
                    strategy="entropy",
                    kind="query",
                    sent=True,
                    created_at=t0,
                )
            )
            conn.execute(m.meta.insert().values(key="classes", value=["neg", "pos"]))
    finally:
        engine.dispose()
    with pytest.raises(StoreError, match="alloop db upgrade"):
        SqlStore.open(store_url, migrate=False)

    with SqlStore.open(store_url) as s:
        assert current_revision(store_url) == head_revision() != "0001"
        assert s.get_items(["a", "b", "t"]) == [
            Item(id="a", text="ä text"),
            Item(id="b", text="b", meta={"k": 1}),
            Item(id="t", text="t", split="test"),
        ]
        assert s.labels() == [lab("a", "pos", "1", annotator="ann", created_at=t0)]
        assert s.label_revision() == 1
        assert s.queries() == [query("b", 1, 0, sent=True)]
        assert s.unfinished_iteration() is not None
        assert s.get_meta("classes") == ["neg", "pos"]
        assert ids(s.pool()) == ["c"]
        # the new table works on the upgraded database, and the schema equals the models
        assert s.record_rejections([rej("a", "2")]) == 1
        assert s.assign_split(["c"], "eval") == 1
        with s._engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(ctx, m.metadata) == []

    # and back down: the table goes, the rest stays
    command.downgrade(cfg, "0001")
    assert current_revision(store_url) == "0001"
    engine = create_store_engine(store_url)
    try:
        with engine.connect() as conn:
            assert "label_rejections" not in sa.inspect(conn).get_table_names()
            assert conn.scalar(sa.select(sa.func.count()).select_from(m.items)) == 4
    finally:
        engine.dispose()


def _fill_at_0002(store_url: str, t0: datetime) -> None:
    """Items of every split; some referred to by a label (and its event), a rejection, a query."""
    engine = create_store_engine(store_url)
    try:
        with engine.begin() as conn:
            assert "origin_split" not in {c["name"] for c in sa.inspect(conn).get_columns("items")}
            conn.execute(
                m.items.insert(),
                [
                    {"id": "a", "text": "ä text", "split": "train", "meta": {}, "created_at": t0},
                    {"id": "b", "text": "b", "split": "train", "meta": {"k": 1}, "created_at": t0},
                    {"id": "c", "text": "c", "split": "train", "meta": {}, "created_at": t0},
                    {"id": "e", "text": "e", "split": "eval", "meta": {}, "created_at": t0},
                    {"id": "t", "text": "t", "split": "test", "meta": {}, "created_at": t0},
                ],
            )
            label_id = conn.scalar(
                m.labels.insert()
                .values(
                    item_id="a",
                    source="ls",
                    annotation_id="1",
                    annotator="ann",
                    value="pos",
                    skipped=False,
                    withdrawn=False,
                    created_at=t0,
                    updated_at=t0,
                )
                .returning(m.labels.c.id)
            )
            conn.execute(
                m.label_events.insert().values(
                    label_id=label_id,
                    item_id="a",
                    action="insert",
                    value="pos",
                    skipped=False,
                    created_at=t0,
                )
            )
            conn.execute(
                m.label_rejections.insert().values(
                    item_id="t",
                    source="ls",
                    annotation_id="2",
                    reason="no choice",
                    created_at=t0,
                    updated_at=t0,
                )
            )
            conn.execute(
                m.iterations.insert().values(
                    number=1, status="done", step="done", started_at=t0, timings={}, info={}
                )
            )
            conn.execute(
                m.queries.insert().values(
                    item_id="b",
                    iteration=1,
                    score=0.5,
                    rank=0,
                    strategy="entropy",
                    kind="query",
                    sent=True,
                    created_at=t0,
                )
            )
    finally:
        engine.dispose()


def _item_splits(store_url: str) -> dict[str, tuple[str, str]]:
    engine = create_store_engine(store_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(m.items.c.id, m.items.c.split, m.items.c.origin_split))
            return {row.id: (row.split, row.origin_split) for row in rows}
    finally:
        engine.dispose()


def test_upgrading_a_filled_database_from_revision_0002_backfills_origin_split(
    store_url: str,
) -> None:
    cfg = alembic_config(store_url)
    command.upgrade(cfg, "0002")
    t0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    _fill_at_0002(store_url, t0)
    with SqlStore.open(store_url) as s:
        assert current_revision(store_url) == head_revision()
        data = [
            Item(id="a", text="ä text"),
            Item(id="b", text="b", meta={"k": 1}),
            Item(id="c", text="c"),
            Item(id="e", text="e", split="eval"),
            Item(id="t", text="t", split="test"),
        ]
        assert s.items() == data
        assert s.labels() == [lab("a", "pos", "1", annotator="ann", created_at=t0)]
        assert s.label_revision() == 1
        assert [(r.item_id, r.reason) for r in s.rejections()] == [("t", "no choice")]
        assert s.queries() == [query("b", 1, 0, sent=True)]
        assert ids(s.pool()) == ["c"]
        # every existing row was backfilled with its split, and the column is NOT NULL
        assert _item_splits(store_url) == {x.id: (x.split, x.split) for x in data}
        with s._engine.connect() as conn:
            columns = {c["name"]: c for c in sa.inspect(conn).get_columns("items")}
            assert columns["origin_split"]["nullable"] is False
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(ctx, m.metadata) == []
        with pytest.raises(sa.exc.IntegrityError), s._engine.begin() as conn:
            conn.execute(
                m.items.insert().values(id="n", text="n", split="train", meta={}, created_at=t0)
            )
        # moved items of the upgraded database are found again by a re-import
        assert s.assign_split(["c"], "eval") == 1
        assert s.add_items(data) == AddItemsResult(added=0, existing=5)
        assert _item_splits(store_url)["c"] == ("eval", "train")
        # the foreign keys survived the rebuild of items (SQLite) and are still enforced
        with pytest.raises(StoreError, match="'ghost'"):
            s.add_labels([lab("ghost", "pos", "9")])

    # and back down: the column goes, every row stays
    command.downgrade(cfg, "0002")
    assert current_revision(store_url) == "0002"
    engine = create_store_engine(store_url)
    try:
        with engine.connect() as conn:
            assert "origin_split" not in {c["name"] for c in sa.inspect(conn).get_columns("items")}
            counts = {
                t.name: conn.scalar(sa.select(sa.func.count()).select_from(t))
                for t in (m.items, m.labels, m.label_events, m.label_rejections, m.queries)
            }
            assert counts == {
                "items": 5,
                "labels": 1,
                "label_events": 1,
                "label_rejections": 1,
                "queries": 1,
            }
    finally:
        engine.dispose()


def test_upgrading_a_filled_database_from_revision_0003_adds_working_leases(
    store_url: str,
) -> None:
    cfg = alembic_config(store_url)
    command.upgrade(cfg, "0003")
    engine = create_store_engine(store_url)
    t0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    try:
        with engine.begin() as conn:
            assert "leases" not in sa.inspect(conn).get_table_names()
            conn.execute(
                m.items.insert().values(
                    id="a", text="a", split="eval", origin_split="train", meta={}, created_at=t0
                )
            )
    finally:
        engine.dispose()
    with SqlStore.open(store_url) as s:
        assert current_revision(store_url) == head_revision()
        assert s.items() == [Item(id="a", text="a", split="eval")]
        assert s.acquire_lease("loop", "a", 60) is True
        assert s.acquire_lease("loop", "b", 60) is False
        with s._engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(ctx, m.metadata) == []
        # the primary key on the name is the database's own guarantee of one row per lease
        with pytest.raises(sa.exc.IntegrityError), s._engine.begin() as conn:
            conn.execute(
                m.leases.insert().values(
                    name="loop", holder="c", acquired_at=t0, expires_at=t0, renewed_at=t0
                )
            )

    # and back down: the table goes, the rest stays
    command.downgrade(cfg, "0003")
    assert current_revision(store_url) == "0003"
    engine = create_store_engine(store_url)
    try:
        with engine.connect() as conn:
            assert "leases" not in sa.inspect(conn).get_table_names()
            assert conn.scalar(sa.select(sa.func.count()).select_from(m.items)) == 1
    finally:
        engine.dispose()


def test_upgrading_sqlite_with_a_dangling_reference_is_refused_and_changes_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "alloop.db"
    url = f"sqlite:///{path}"
    command.upgrade(alembic_config(url), "0002")
    t0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    _fill_at_0002(url, t0)
    # written behind the store's back, without foreign-key enforcement (SQLite's default)
    raw = sqlite3.connect(path)
    try:
        with raw:
            raw.execute("UPDATE labels SET item_id = 'ghost'")
    finally:
        raw.close()
    with pytest.raises(StoreError, match="1 point at no item \\(in labels\\)") as err:
        SqlStore.open(url)
    assert "Fix:" in str(err.value)
    assert current_revision(url) == "0002"
    engine = create_store_engine(url)
    try:
        with engine.connect() as conn:
            assert "origin_split" not in {c["name"] for c in sa.inspect(conn).get_columns("items")}
            assert conn.scalar(sa.select(sa.func.count()).select_from(m.items)) == 5
    finally:
        engine.dispose()


def test_a_database_from_a_newer_alloop_is_refused(store_url: str) -> None:
    with SqlStore.open(store_url) as s:
        with s._engine.begin() as conn:
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'fffffff'")
    with pytest.raises(StoreError, match="'fffffff'.*does not know"):
        SqlStore.open(store_url)


# -- errors that must be clear ---------------------------------------------------------------
def test_unreachable_postgres_is_a_store_error_without_the_password() -> None:
    url = "postgresql://alice:s3cret-pw@127.0.0.1:1/alloop"
    with pytest.raises(StoreError) as err:
        SqlStore.open(url)
    text = str(err.value)
    assert "s3cret-pw" not in text
    assert "127.0.0.1:1" in text and "Fix:" in text


@pytest.mark.parametrize(
    "url", ["mysql://u:pw@localhost/db", "not a url", ""], ids=["mysql", "garbage", "empty"]
)
def test_unsupported_or_malformed_url_is_a_store_error(url: str) -> None:
    with pytest.raises(StoreError, match="Expected .*URL") as err:
        SqlStore.open(url)
    assert ":pw@" not in str(err.value)


def test_sqlite_parent_dir_is_created_and_unwritable_parent_is_clear(tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b" / "c" / "state.db"
    with SqlStore.open(f"sqlite:///{deep}") as s:
        s.add_items(items_("a"))
    assert deep.exists()
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match="directory"):
        SqlStore.open(f"sqlite:///{blocker / 'sub' / 'state.db'}")


def test_sqlite_connections_use_wal_foreign_keys_and_a_busy_timeout(tmp_path: Path) -> None:
    with SqlStore.open(f"sqlite:///{tmp_path / 'state.db'}") as s:
        with s._engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert (conn.exec_driver_sql("PRAGMA busy_timeout").scalar() or 0) >= 1000
        # foreign keys are enforced: a label row for an unknown item is refused by the database
        with pytest.raises(sa.exc.IntegrityError), s._engine.begin() as conn:
            conn.execute(
                m.labels.insert().values(
                    item_id="ghost",
                    source="s",
                    annotation_id="1",
                    skipped=False,
                    withdrawn=False,
                    created_at=datetime.now(UTC),
                    updated_at=datetime.now(UTC),
                )
            )


def test_in_memory_sqlite_works() -> None:
    with SqlStore.open("sqlite://") as s:
        s.add_items(items_("a", "b"))
        assert ids(s.pool()) == ["a", "b"]


# -- two stores on one database -----------------------------------------------------------
def _race(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """Run ``fn(i)`` for i in range(n) in threads started together; results or exceptions."""
    barrier = threading.Barrier(n)
    out: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            out[i] = fn(i)
        except Exception as err:  # collected here, asserted on by the caller
            out[i] = err

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return out


@pytest.mark.timeout(120)
def test_two_stores_opening_an_empty_database_at_once_migrate_it_once(store_url: str) -> None:
    results = _race(2, lambda _k: SqlStore.open(store_url))
    try:
        assert all(isinstance(r, SqlStore) for r in results), results
        assert current_revision(store_url) == head_revision()
        results[0].add_items(items_("a"))
        assert ids(results[1].items()) == ["a"]
    finally:
        for r in results:
            if isinstance(r, SqlStore):
                r.close()


@pytest.mark.timeout(120)
def test_two_stores_writing_at_once_neither_corrupt_nor_duplicate(store_url: str) -> None:
    a, b = SqlStore.open(store_url), SqlStore.open(store_url)
    try:
        pair = (a, b)
        batch = items_(*(f"i{n:04d}" for n in range(1500)))
        results = _race(2, lambda k: pair[k].add_items(batch[k * 500 : 1000 + k * 500]))
        assert not any(isinstance(r, Exception) for r in results), results
        assert sum(r.added for r in results) == 1500
        assert sum(r.existing for r in results) == 500
        assert a.count_items() == 1500

        labels = [lab(f"i{n:04d}", "pos", f"ann{n}") for n in range(300)]
        results = _race(2, lambda k: pair[k].add_labels(labels))
        assert not any(isinstance(r, Exception) for r in results), results
        assert sum(r.inserted for r in results) == 300
        assert sum(r.unchanged for r in results) == 300
        assert len(b.labels()) == 300

        results = _race(2, lambda k: pair[k].begin_iteration({"by": k}))
        began = [r for r in results if not isinstance(r, Exception)]
        refused = [r for r in results if isinstance(r, Exception)]
        assert len(began) == 1 and began[0].number == 1
        assert len(refused) == 1 and isinstance(refused[0], StoreError)

        qs = [query(f"i{n:04d}", 1, n) for n in range(1000, 1100)]
        results = _race(2, lambda k: pair[k].record_queries(1, qs))
        assert sorted(results) == [0, 100]
        assert len(a.queries(1)) == 100
        assert a.iterations()[0].step == "selected"

        rejections = [rej(f"i{n:04d}", f"r{n}") for n in range(300, 500)]
        results = _race(2, lambda k: pair[k].record_rejections(rejections))
        assert sorted(results) == [0, 200]
        assert b.rejections() == a.rejections() and len(a.rejections()) == 200

        sample = [f"i{n:04d}" for n in range(500, 600)]
        results = _race(2, lambda k: pair[k].assign_split(sample, "eval"))
        assert sorted(results) == [0, 100]
        assert ids(a.items("eval")) == sample
    finally:
        a.close()
        b.close()


def _lease_race(store_url: str, n: int, name: str, ttl: float = 60) -> list[Any]:
    """``n`` stores (one each) call ``acquire_lease(name, "holder-i", ttl)`` at once."""
    stores = [SqlStore.open(store_url, migrate=False) for _ in range(n)]
    try:
        return _race(n, lambda i: stores[i].acquire_lease(name, f"holder-{i}", ttl))
    finally:
        for s in stores:
            s.close()


@pytest.mark.timeout(120)
def test_threads_racing_for_one_lease_exactly_one_wins(store: SqlStore, store_url: str) -> None:
    n = 8
    for round_ in range(3):
        results = _lease_race(store_url, n, "loop")
        assert all(isinstance(r, bool) for r in results), results
        winners = [i for i, won in enumerate(results) if won]
        assert len(winners) == 1, (round_, results)
        lease = store.lease("loop")
        assert lease is not None and lease[0] == f"holder-{winners[0]}"
        store.release_lease("loop", f"holder-{winners[0]}")
        assert store.lease("loop") is None


@pytest.mark.timeout(120)
def test_threads_racing_for_an_expired_lease_exactly_one_takes_it(
    store: SqlStore, store_url: str
) -> None:
    n = 8
    for round_ in range(3):
        # an expired row of a crashed holder is there to be taken over (the update path)
        assert store.acquire_lease("loop", "crashed", 0.05) is True
        time.sleep(0.15)
        assert store.lease("loop") is None
        results = _lease_race(store_url, n, "loop")
        assert all(isinstance(r, bool) for r in results), results
        winners = [i for i, won in enumerate(results) if won]
        assert len(winners) == 1, (round_, results)
        lease = store.lease("loop")
        assert lease is not None and lease[0] == f"holder-{winners[0]}"
        assert store.renew_lease("loop", "crashed", 60) is False
        store.release_lease("loop", f"holder-{winners[0]}")


def _acquire_in_process(url: str, holder: str, barrier: Any, results: Any) -> None:
    """Child process: open a store of its own, wait for the others, race for the lease."""
    try:
        with SqlStore.open(url, migrate=False) as s:
            barrier.wait(timeout=60)
            results.put((holder, s.acquire_lease("loop", holder, 60)))
    except Exception as err:  # reported to the parent, which fails the test
        results.put((holder, f"{type(err).__name__}: {err}"))


@pytest.mark.timeout(180)
def test_processes_racing_for_one_lease_exactly_one_wins(store: SqlStore, store_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    n = 3
    barrier = ctx.Barrier(n)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_acquire_in_process, args=(store_url, f"proc-{i}", barrier, results))
        for i in range(n)
    ]
    for p in procs:
        p.start()
    try:
        got = dict(results.get(timeout=120) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert all(isinstance(v, bool) for v in got.values()), got
    winners = [h for h, won in got.items() if won]
    assert len(got) == n and len(winners) == 1, got
    lease = store.lease("loop")
    assert lease is not None and lease[0] == winners[0]
    assert all(p.exitcode == 0 for p in procs)


# -- size ----------------------------------------------------------------------------------
def test_fifty_thousand_items_insert_and_pool(store: SqlStore) -> None:
    n = 50_000
    res = store.add_items(Item(id=f"item-{i:06d}", text=f"text number {i}") for i in range(n))
    assert (res.added, res.existing) == (n, 0)
    store.add_labels(lab(f"item-{i:06d}", "pos" if i % 2 else "neg", f"a{i}") for i in range(500))
    pool = store.pool()
    assert len(pool) == n - 500
    assert pool[0].id == "item-000500"
    assert len(store.training_set()) == 500
    assert (
        store.add_items(
            Item(id=f"item-{i:06d}", text=f"text number {i}") for i in range(n)
        ).existing
        == n
    )


# -- the text rule (loop/text.py): the same on SQLite and PostgreSQL ------------------------
@pytest.mark.parametrize("bad", ["nul\x00inside", "esc\x1b[31m", "c1\x9f", "lone\ud800"])
def test_control_characters_are_refused_whole_and_nothing_is_written(
    store: Store, bad: str
) -> None:
    store.add_items(items_("ok"))
    with pytest.raises(StoreError, match="control character") as err:
        store.add_items([*items_("fine"), Item(id="x", text=bad)])
    assert "nothing was written" in str(err.value)
    assert [i.id for i in store.items()] == ["ok"]
    for item in (Item(id=f"id{bad}", text="t"), Item(id="m", text="t", meta={"note": bad})):
        with pytest.raises(StoreError, match="control character"):
            store.add_items([item])
    with pytest.raises(StoreError, match="control character"):
        store.add_labels([lab("ok", "pos", "a1"), lab("ok", "pos", "a2", annotator=bad)])
    with pytest.raises(StoreError, match="control character"):
        store.add_labels([lab("ok", bad, "a3")])
    assert store.labels() == [] and store.label_revision() == 0
    with pytest.raises(StoreError, match="control character"):
        store.record_rejections([LabelRejection("ok", "ls", "a4", f"reason {bad}")])
    assert store.rejections() == []
    with pytest.raises(StoreError, match="control character"):
        store.set_meta("k", {"v": bad})
    assert store.get_meta("k") is None


def test_tab_newline_carriage_return_and_unicode_are_kept(store: Store) -> None:
    text = "line one\r\nline\ttwo\u2028 — ünïcode 🙂"
    store.add_items([Item(id="u", text=text, meta={"note": "a\tb"})])
    (got,) = store.get_items(["u"])
    assert got.text == text and got.meta == {"note": "a\tb"}


def test_texts_over_the_stores_cap_are_refused(store_url: str) -> None:
    s = SqlStore.open(store_url, max_text_chars=50)
    try:
        s.add_items([Item(id="a", text="x" * 50)])
        with pytest.raises(StoreError, match="at most 50 characters; item 'b' has 51"):
            s.add_items([Item(id="b", text="x" * 51), Item(id="c", text="short")])
        assert [i.id for i in s.items()] == ["a"]
    finally:
        s.close()


# -- jobs: requests to the worker, and the jobs it ran ---------------------------------------
def test_job_requests_are_taken_once_oldest_first(clocked: SqlStore, clock: FakeClock) -> None:
    assert clocked.job_requests() == [] and clocked.take_job_requests("w-1") == []
    a = clocked.request_job("retrain", "api", push=True)
    clock.advance(1)
    b = clocked.request_job("reconcile", "webhook")
    waiting = clocked.job_requests()
    assert [(r.id, r.kind, r.source, r.push, r.taken_by) for r in waiting] == [
        (a, "retrain", "api", True, None),
        (b, "reconcile", "webhook", False, None),
    ]
    assert waiting[0].requested_at == T0 and waiting[1].requested_at == T0 + timedelta(seconds=1)
    clock.advance(1)
    taken = clocked.take_job_requests("w-1")
    assert [(r.id, r.taken_by, r.taken_at) for r in taken] == [
        (a, "w-1", T0 + timedelta(seconds=2)),
        (b, "w-1", T0 + timedelta(seconds=2)),
    ]
    assert clocked.job_requests() == [] and clocked.take_job_requests("w-2") == []
    c = clocked.request_job("nightly", "schedule")
    assert [r.id for r in clocked.take_job_requests("w-2")] == [c] and c > b


@pytest.mark.parametrize(
    ("kind", "source"), [("train", "api"), ("", "api"), ("iteration", ""), ("iteration", 3)]
)
def test_a_bad_job_request_raises_and_writes_nothing(
    store: SqlStore, kind: Any, source: Any
) -> None:
    with pytest.raises(StoreError, match="Expected"):
        store.request_job(kind, source)
    assert store.job_requests() == []


@pytest.mark.timeout(120)
def test_workers_racing_for_the_requests_each_takes_a_request_at_most_once(
    store: SqlStore, store_url: str
) -> None:
    ids = {store.request_job("iteration", f"client-{k}") for k in range(40)}
    stores = [SqlStore.open(store_url, migrate=False) for _ in range(4)]
    try:
        results = _race(4, lambda i: stores[i].take_job_requests(f"w-{i}"))
    finally:
        for s in stores:
            s.close()
    assert all(isinstance(r, list) for r in results), results
    taken = [(r.id, r.taken_by) for got in results for r in got]
    assert sorted(i for i, _ in taken) == sorted(ids)  # every request once, by one worker
    for i, got in enumerate(results):
        assert all(r.taken_by == f"w-{i}" for r in got)


def test_a_job_record_runs_then_finishes_once(clocked: SqlStore, clock: FakeClock) -> None:
    job = clocked.start_job("fast", "iteration", "host:1", ["webhook", "poll"], "12 new labels")
    assert (job.lane, job.kind, job.holder, job.sources, job.reason, job.status) == (
        "fast",
        "iteration",
        "host:1",
        ("webhook", "poll"),
        "12 new labels",
        "running",
    )
    assert job.started_at == job.updated_at == T0 and job.finished_at is None
    clock.advance(2)
    steps = [{"description": "train", "total": 3, "done": 1, "seconds": 1.5}]
    job = clocked.update_job(job.id, progress=steps)
    assert job.progress == tuple(steps) and job.updated_at == T0 + timedelta(seconds=2)
    clock.advance(3)
    done = clocked.update_job(job.id, status="done", result={"summary": "ok", "n": [1, 2]})
    assert done.status == "done" and done.finished_at == T0 + timedelta(seconds=5)
    assert done.progress == () and dict(done.result) == {"summary": "ok", "n": [1, 2]}
    assert done.as_dict()["seconds"] == 5.0
    # a finished record stays as it is (a late progress flush changes nothing)
    clock.advance(1)
    assert clocked.update_job(job.id, status="failed", error="late", progress=steps) == done
    with pytest.raises(StoreError, match="job with id"):
        clocked.update_job(10_000, status="done")
    with pytest.raises(StoreError, match="job status"):
        clocked.update_job(job.id, status="finished")
    with pytest.raises(StoreError, match="JSON"):
        clocked.update_job(job.id, result={"auc": float("nan")})


def test_jobs_lists_the_newest_per_lane_and_status_oldest_first(store: SqlStore) -> None:
    ids = []
    for k in range(5):
        j = store.start_job("fast", "iteration", "h", ["api"], f"r{k}")
        ids.append(j.id)
    slow = store.start_job("slow", "slow-train", "h", ["slow-lane"], "due")
    store.update_job(ids[0], status="done")
    store.update_job(ids[1], status="interrupted")
    assert [j.id for j in store.jobs(limit=3)] == [ids[3], ids[4], slow.id]
    assert [j.id for j in store.jobs(lane="fast", limit=None)] == ids
    assert [j.id for j in store.jobs(lane="slow")] == [slow.id]
    assert [j.id for j in store.jobs(status="running", limit=None)] == [*ids[2:], slow.id]
    assert [j.id for j in store.jobs(status="interrupted")] == [ids[1]]
    with pytest.raises(StoreError, match="job lane"):
        store.jobs(lane="medium")
    with pytest.raises(StoreError, match="job lane"):
        store.start_job("medium", "iteration", "h", [], "")
