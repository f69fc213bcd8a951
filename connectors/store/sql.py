"""``SqlStore``: the ``Store`` contract on SQLAlchemy Core (SQLite or PostgreSQL).

Every public write is one transaction. On SQLite, writes start with ``BEGIN IMMEDIATE`` so two
stores on one file serialise instead of interleaving; on PostgreSQL a write that loses a race on
a unique constraint is retried once (the second pass sees the winner's rows and is idempotent).

Leases are one conditional upsert each (``INSERT ... ON CONFLICT (name) DO UPDATE ... WHERE the
lease is expired or already ours RETURNING``): the database decides who gets a contested lease,
and PostgreSQL's upsert never fails on the insert race. Lease times come from the store's clock
(the application's UTC now), so machines sharing a PostgreSQL store need synchronised clocks.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import groupby
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import URL, Connection, Engine, Row
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from connectors.store import models as m
from connectors.store.engine import create_store_engine, parse_url, redact, write_transaction
from connectors.store.migrate import (
    connection_error,
    head_revision,
    revision_of,
    upgrade_connection,
)
from loop.errors import StoreError
from loop.records import (
    ITERATION_STEPS,
    SPLITS,
    AddItemsResult,
    Item,
    Iteration,
    Job,
    JobRequest,
    Label,
    LabelRejection,
    LabelSnapshot,
    LabelWriteResult,
    ModelVersion,
    Query,
    TrainingSet,
)
from loop.text import DEFAULT_MAX_CHARS, char_problem, json_problem

T = TypeVar("T")

ITERATION_STATUSES: tuple[str, ...] = ("running", "done", "failed")
MODEL_STATUSES: tuple[str, ...] = ("candidate", "promoted", "rejected")
JOB_REQUEST_KINDS: tuple[str, ...] = ("iteration", "retrain", "nightly", "reconcile")
JOB_LANES: tuple[str, ...] = ("fast", "slow")
JOB_STATUSES: tuple[str, ...] = ("running", "done", "failed", "interrupted")
# Ids per IN (...) list: far below SQLite's 32,766 and PostgreSQL's 65,535 bound parameters.
_CHUNK = 2000
_SHOW = 5  # ids quoted in an error message
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01"})  # serialization failure, deadlock


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _lease_ttl(ttl_seconds: Any) -> timedelta:
    """``ttl_seconds`` as a positive, finite timedelta; StoreError otherwise."""
    ok = isinstance(ttl_seconds, int | float) and not isinstance(ttl_seconds, bool)
    if ok and math.isfinite(ttl_seconds) and ttl_seconds > 0:
        try:
            return timedelta(seconds=ttl_seconds)
        except OverflowError:
            pass
    raise StoreError(
        f"Expected a lease ttl_seconds that is a finite number of seconds above 0; "
        f"found {ttl_seconds!r}.",
        "pass how long the lease lasts without renewal, e.g. ttl_seconds=60.",
    )


def _is_transient(err: OperationalError) -> bool:
    """A PostgreSQL deadlock or serialisation failure: the transaction may simply be retried."""
    return getattr(err.orig, "sqlstate", None) in _TRANSIENT_SQLSTATES


def _chunks(values: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _show(ids: Iterable[str], *, quote: bool = True) -> str:
    """The first few of ``ids`` for an error message (``quote=False``: already formatted)."""
    ids = list(ids)
    head = ", ".join(repr(i) if quote else i for i in ids[:_SHOW])
    return f"{head} (and {len(ids) - _SHOW} more)" if len(ids) > _SHOW else head


def _json(value: Any, what: str) -> Any:
    """``value`` as stored JSON (mappings become dicts); StoreError when it cannot be."""
    if isinstance(value, Mapping):
        value = dict(value)
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise StoreError(
            f"Expected {what} to be JSON (dicts, lists, str, finite numbers, bool, None); "
            f"found {err}.",
            "convert the value to plain JSON types (NaN and infinity are not allowed: use None).",
        ) from err
    why = json_problem(value)
    if why:
        raise StoreError(
            f"Expected {what} to hold text without control characters; {why}.",
            "remove those characters (see loop/text.py for the rule); nothing was written.",
        )
    return value


def _require_str(value: Any, what: str, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not empty and not value):
        raise StoreError(
            f"Expected {what} to be a non-empty string; found {value!r}.",
            f"give every record a string {what}.",
        )
    why = char_problem(value)
    if why:
        raise StoreError(
            f"Expected {what} to be text without control characters; {value[:60]!r} {why}.",
            "remove those characters (see loop/text.py for the rule); nothing was written.",
        )
    return value


def _check_choice(value: str, allowed: Sequence[str], what: str) -> str:
    if value not in allowed:
        raise StoreError(
            f"Expected {what} to be one of {', '.join(allowed)}; found {value!r}.",
            f"use one of {', '.join(allowed)}.",
        )
    return value


@dataclass(slots=True)
class _LabelState:
    """A label row as it will be after the batch (``id`` None until inserted)."""

    id: int | None
    value: str | None
    skipped: bool
    annotator: str | None
    withdrawn: bool
    created_at: datetime
    dirty: bool = False
    updated_at: datetime | None = None  # when the store last wrote it (None: new in this batch)


@dataclass(slots=True)
class _RejectionState:
    """A rejection row as it will be after the batch (``id`` None until inserted)."""

    id: int | None
    reason: str
    stored_reason: str | None
    created_at: datetime


def _item_columns() -> tuple[sa.Column[Any], ...]:
    """The columns an ``Item`` needs (not ``created_at``: parsing it is most of the read cost)."""
    return (m.items.c.id, m.items.c.text, m.items.c.split, m.items.c.meta)


def _raw_meta(value: Any) -> dict[str, Any]:
    """The metadata column as the driver gives it (SQLite: JSON text; psycopg: decoded)."""
    if value is None:
        return {}
    if isinstance(value, str | bytes):
        return dict(json.loads(value))
    return dict(value)


def _item(row: Row[Any]) -> Item:
    return Item(id=row.id, text=row.text, split=row.split, meta=dict(row.meta or {}))


def _label(row: Row[Any]) -> Label:
    return Label(
        item_id=row.item_id,
        value=row.value,
        source=row.source,
        annotation_id=row.annotation_id,
        annotator=row.annotator,
        created_at=row.created_at,
        skipped=bool(row.skipped),
    )


def _rejection(row: Row[Any]) -> LabelRejection:
    return LabelRejection(
        item_id=row.item_id,
        source=row.source,
        annotation_id=row.annotation_id,
        reason=row.reason,
        created_at=row.created_at,
    )


def _query(row: Row[Any]) -> Query:
    return Query(
        item_id=row.item_id,
        iteration=row.iteration,
        score=float(row.score),
        rank=row.rank,
        strategy=row.strategy,
        model_version=row.model_version,
        kind=row.kind,
        sent=bool(row.sent),
    )


def _model_version(row: Row[Any]) -> ModelVersion:
    return ModelVersion(
        id=row.id,
        trainer=row.trainer,
        path=row.path,
        classes=tuple(row.classes),
        n_labels=row.n_labels,
        label_revision=row.label_revision,
        metrics=dict(row.metrics),
        config=dict(row.config),
        iteration=row.iteration,
        status=row.status,
        created_at=row.created_at,
    )


def _iteration(row: Row[Any]) -> Iteration:
    return Iteration(
        number=row.number,
        status=row.status,
        step=row.step,
        model_version=row.model_version,
        started_at=row.started_at,
        finished_at=row.finished_at,
        timings=dict(row.timings),
        info=dict(row.info),
    )


def _job_request(row: Row[Any]) -> JobRequest:
    return JobRequest(
        id=row.id,
        kind=row.kind,
        source=row.source,
        push=bool(row.push),
        requested_at=row.requested_at,
        taken_by=row.taken_by,
        taken_at=row.taken_at,
    )


def _job(row: Row[Any]) -> Job:
    return Job(
        id=row.id,
        lane=row.lane,
        kind=row.kind,
        holder=row.holder,
        sources=tuple(row.sources),
        reason=row.reason,
        status=row.status,
        started_at=row.started_at,
        finished_at=row.finished_at,
        result=dict(row.result),
        error=row.error,
        lease_lost=bool(row.lease_lost),
        progress=tuple(dict(p) for p in row.progress),
        updated_at=row.updated_at,
    )


def _later_step(current: str, target: str) -> str:
    """Steps only move forward: the later of ``current`` and ``target``."""
    order = {step: i for i, step in enumerate(ITERATION_STEPS)}
    return target if order.get(target, 0) > order.get(current, -1) else current


class SqlStore:
    """Persistent state of one project in one SQL database (implements ``loop.contracts.Store``).

    Open with ``SqlStore.open(url)``; ``url`` is ``sqlite:///path/alloop.db`` (the directory is
    created) or ``postgresql+psycopg://user@host:5432/db``. Usable as a context manager.
    """

    def __init__(
        self,
        engine: Engine,
        url: URL,
        *,
        clock: Callable[[], datetime] = _now,
        max_text_chars: int = DEFAULT_MAX_CHARS,
    ) -> None:
        """Wrap an engine whose database is already at the current schema (see ``open``).
        ``clock`` gives the current time of leases (timezone-aware UTC; naive means UTC).
        ``max_text_chars`` is the longest item text ``add_items`` accepts."""
        self._engine = engine
        self._url = url
        self._clock = clock
        self._closed = False
        self.max_text_chars = max_text_chars

    # -- lifecycle -----------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        url: str,
        *,
        migrate: bool = True,
        clock: Callable[[], datetime] | None = None,
        max_text_chars: int = DEFAULT_MAX_CHARS,
    ) -> SqlStore:
        """Connect to ``url`` and, with ``migrate``, upgrade its schema to the newest revision.
        ``clock`` replaces ``datetime.now(UTC)`` as the time of leases (tests pass a fake one).
        ``max_text_chars``: the longest item text accepted (setting ``text.max_chars``).

        Raises StoreError when the database cannot be reached, or when ``migrate`` is False and
        the schema is not current (run ``alloop db upgrade``)."""
        parsed = parse_url(url)
        engine = create_store_engine(parsed)
        shown = redact(parsed)
        try:
            with engine.connect() as conn:
                current = revision_of(conn)
            head = head_revision()
            if current != head:
                if not migrate:
                    raise StoreError(
                        f"Expected the store at {shown} to be at schema revision {head!r}; "
                        f"found {current!r}.",
                        "run `alloop db upgrade` (or open it with migrate=True) to migrate it.",
                    )
                with write_transaction(engine) as conn:
                    upgrade_connection(conn, shown)
        except StoreError:
            engine.dispose()
            raise
        except SQLAlchemyError as err:
            engine.dispose()
            raise connection_error(parsed, "open the store", err) from err
        return cls(engine, parsed, clock=clock or _now, max_text_chars=max_text_chars)

    @property
    def url(self) -> str:
        """The database URL with its password hidden."""
        return redact(self._url)

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._engine.dialect.name

    def close(self) -> None:
        """Release the connections; the store cannot be used afterwards."""
        if not self._closed:
            self._closed = True
            self._engine.dispose()

    def __enter__(self) -> SqlStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SqlStore({self.url!r})"

    # -- transactions --------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(
                f"Expected an open store; the store at {self.url} was closed.",
                "open it again with SqlStore.open(url).",
            )

    @contextmanager
    def _read(self, doing: str) -> Iterator[Connection]:
        self._check_open()
        try:
            with self._engine.connect() as conn:
                yield conn
        except SQLAlchemyError as err:
            raise connection_error(self._url, doing, err) from err

    def _write(self, doing: str, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in one write transaction; retry once after losing a uniqueness race."""
        self._check_open()
        for attempt in (1, 2):
            try:
                with write_transaction(self._engine) as conn:
                    return work(conn)
            except (IntegrityError, OperationalError) as err:
                lost_race = isinstance(err, IntegrityError) or _is_transient(err)
                if not lost_race:
                    raise connection_error(self._url, doing, err) from err
                if attempt == 2:
                    raise StoreError(
                        f"Could not {doing} (database {self.url}): lost a race with another "
                        f"writer twice in a row ({str(err.orig).strip().splitlines()[0]}).",
                        "another process is writing the same records; retry, and report a bug "
                        "if it persists.",
                    ) from err
            except SQLAlchemyError as err:
                raise connection_error(self._url, doing, err) from err
        raise StoreError(f"Could not {doing}.")  # pragma: no cover - the loop always returns

    def _missing_items(self, conn: Connection, ids: Iterable[str]) -> list[str]:
        wanted = sorted(set(ids))
        found: set[str] = set()
        for chunk in _chunks(wanted):
            found.update(conn.scalars(sa.select(m.items.c.id).where(m.items.c.id.in_(chunk))))
        return [i for i in wanted if i not in found]

    def _require_items(self, conn: Connection, ids: Iterable[str], whose: str) -> None:
        """StoreError naming the ids not stored; ``whose`` completes "every item id ..."."""
        missing = self._missing_items(conn, ids)
        if missing:
            raise StoreError(
                f"Expected every item id {whose} to exist in the store; "
                f"{len(missing)} unknown: {_show(missing)}.",
                "add the items first (alloop import / Store.add_items); nothing was written.",
            )

    # -- items ---------------------------------------------------------------------------
    def add_items(self, items: Iterable[Item]) -> AddItemsResult:
        """Insert new items in one transaction; all-or-nothing.

        An id already stored with the same text and the same split it was imported with counts
        as existing, even after ``assign_split`` moved it (the stored item keeps its current
        split); so does an id repeated in the batch with the same text and split. The same id
        with another text or another import split raises StoreError."""
        batch: dict[str, Item] = {}
        total = 0
        for item in items:
            total += 1
            if not isinstance(item, Item):
                raise StoreError(f"Expected Item records; found {type(item).__name__}.")
            _require_str(item.id, "item id")
            _require_str(item.text, f"text of item {item.id!r}", empty=True)
            if len(item.text) > self.max_text_chars:
                raise StoreError(
                    f"Expected texts of at most {self.max_text_chars:,} characters; item "
                    f"{item.id!r} has {len(item.text):,}.",
                    "shorten the text, or raise text.max_chars (ALLOOP_TEXT__MAX_CHARS); "
                    "nothing was written.",
                )
            _check_choice(item.split, SPLITS, f"split of item {item.id!r}")
            if item.meta:
                _json(item.meta, f"meta of item {item.id!r}")
            seen = batch.get(item.id)
            if seen is None:
                batch[item.id] = item
            elif (seen.text, seen.split) != (item.text, item.split):
                raise StoreError(
                    f"Expected each item id once per batch; {item.id!r} appears twice with "
                    "different text or split.",
                    "de-duplicate the input (ids must be unique); nothing was written.",
                )
        if not batch:
            return AddItemsResult(added=0, existing=0)
        ids = list(batch)

        def work(conn: Connection) -> AddItemsResult:
            conflicts: list[str] = []
            stored: set[str] = set()
            for chunk in _chunks(ids):
                rows = conn.execute(
                    sa.select(m.items.c.id, m.items.c.text, m.items.c.origin_split).where(
                        m.items.c.id.in_(chunk)
                    )
                )
                for row in rows:
                    stored.add(row.id)
                    item = batch[row.id]
                    why: list[str] = []
                    if row.text != item.text:
                        why.append("another text")
                    if row.origin_split != item.split:
                        why.append(f"imported as {row.origin_split!r}, given {item.split!r}")
                    if why:
                        conflicts.append(f"{row.id!r} ({'; '.join(why)})")
            if conflicts:
                raise StoreError(
                    f"Expected existing item ids to keep their text and the split they were "
                    f"imported with; {len(conflicts)} differ from the stored items: "
                    f"{_show(sorted(conflicts), quote=False)}.",
                    "give changed texts new ids (an id names one text and one import split "
                    "forever; moves by assign_split do not count); nothing was written.",
                )
            now = _now()
            new = [
                {
                    "id": item.id,
                    "text": item.text,
                    "split": item.split,
                    "origin_split": item.split,
                    "meta": dict(item.meta),
                    "created_at": now,
                }
                for item_id, item in batch.items()
                if item_id not in stored
            ]
            if new:
                conn.execute(m.items.insert(), new)
            return AddItemsResult(added=len(new), existing=total - len(new))

        return self._write("add items", work)

    def get_items(self, ids: Sequence[str]) -> list[Item]:
        """Items in the order of ``ids``; an unknown id raises StoreError."""
        wanted = list(ids)
        found: dict[str, Item] = {}
        with self._read("read items") as conn:
            for chunk in _chunks(sorted(set(wanted))):
                for row in conn.execute(sa.select(*_item_columns()).where(m.items.c.id.in_(chunk))):
                    found[row.id] = _item(row)
        missing = [i for i in dict.fromkeys(wanted) if i not in found]
        if missing:
            raise StoreError(
                f"Expected every requested item id to exist; {len(missing)} unknown: "
                f"{_show(missing)}.",
                "check the ids (they are the ids given at import).",
            )
        return [found[i] for i in wanted]

    def items(self, split: str | None = None) -> list[Item]:
        """All items (of ``split`` when given), ordered by id."""
        stmt = sa.select(*_item_columns()).order_by(m.items.c.id)
        if split is not None:
            stmt = stmt.where(m.items.c.split == _check_choice(split, SPLITS, "split"))
        with self._read("read items") as conn:
            return [_item(row) for row in conn.execute(stmt)]

    def count_items(self, split: str | None = None) -> int:
        stmt = sa.select(sa.func.count()).select_from(m.items)
        if split is not None:
            stmt = stmt.where(m.items.c.split == _check_choice(split, SPLITS, "split"))
        with self._read("count items") as conn:
            return int(conn.scalar(stmt) or 0)

    def _pool_filter(self) -> list[Any]:
        i, q, lab = m.items, m.queries, m.labels
        return [
            i.c.split == "train",
            ~sa.exists().where(q.c.item_id == i.c.id),
            ~sa.exists().where(lab.c.item_id == i.c.id),
        ]

    def pool(self) -> list[Item]:
        """``train`` items never queried and without any label row (no answer, no skip, not even
        a withdrawn label); ordered by id. The same rule as ``assign_split``, so any sample of
        the pool may move to another split."""
        stmt = sa.select(*_item_columns()).where(*self._pool_filter()).order_by(m.items.c.id)
        with self._read("read the pool") as conn:
            return [_item(row) for row in conn.execute(stmt)]

    def count_pool(self) -> int:
        """How many items :meth:`pool` holds, counted in the database (nothing loaded)."""
        stmt = sa.select(sa.func.count()).select_from(m.items).where(*self._pool_filter())
        with self._read("count the pool") as conn:
            return int(conn.scalar(stmt) or 0)

    def _pool_rows(self, columns: Sequence[Any], chunk_size: int) -> Iterator[list[Any]]:
        """``train`` rows in id order, ``chunk_size`` read at a time by keyset pagination on the
        (split, id) index, with the items that have a query or any label row dropped: those are
        looked up per chunk by the chunk's id range (a few index range scans), which is many
        times cheaper on a large pool than an anti-join probe per row. A chunk may come out
        shorter than ``chunk_size`` (or empty) when it held asked or labeled items."""
        if chunk_size < 1:
            raise StoreError(f"chunk_size must be >= 1, got {chunk_size}.", "pass e.g. 10000.")
        i, q, lab = m.items, m.queries, m.labels
        last: str | None = None
        while True:
            cond = [i.c.split == "train"]
            if last is not None:
                cond.append(i.c.id > last)
            stmt = sa.select(*columns).where(*cond).order_by(i.c.id).limit(chunk_size)
            with self._read("read the pool") as conn:
                # the driver's own tuples: id, text and split need no type processing, and
                # building a Row per item is most of the cost of a large pool
                rows = conn.execute(stmt).cursor.fetchall()
                if not rows:
                    return
                lo, hi = rows[0][0], rows[-1][0]
                taken = set(
                    conn.scalars(
                        sa.union(
                            sa.select(q.c.item_id).where(q.c.item_id >= lo, q.c.item_id <= hi),
                            sa.select(lab.c.item_id).where(
                                lab.c.item_id >= lo, lab.c.item_id <= hi
                            ),
                        )
                    )
                )
            yield [r for r in rows if r[0] not in taken] if taken else list(rows)
            if len(rows) < chunk_size:
                return
            last = rows[-1][0]

    def iter_pool(self, chunk_size: int = 10_000, *, meta: bool = True) -> Iterator[list[Item]]:
        """The pool in id order, at most ``chunk_size`` items at a time (keyset pagination, so
        memory holds one chunk and a pool of millions streams; no chunk is empty). Items that
        leave the pool while iterating are not returned again; an item entering it behind the
        cursor is not seen until the next pass. ``meta=False`` leaves ``Item.meta`` empty
        (decoding it is most of the read cost; selection reads texts only)."""
        i = m.items
        if meta:
            for rows in self._pool_rows(_item_columns(), chunk_size):
                if rows:
                    yield [Item(r[0], r[1], r[2], _raw_meta(r[3])) for r in rows]
            return
        for rows in self._pool_rows((i.c.id, i.c.text, i.c.split), chunk_size):
            if rows:
                yield [Item(r[0], r[1], r[2]) for r in rows]

    def iter_pool_texts(self, chunk_size: int = 10_000) -> Iterator[tuple[list[str], list[str]]]:
        """The pool as ``(ids, texts)`` chunks in id order (as :meth:`iter_pool`, without
        building an ``Item`` per row: what scoring a pool of millions needs)."""
        i = m.items
        for rows in self._pool_rows((i.c.id, i.c.text), chunk_size):
            if rows:
                yield [r[0] for r in rows], [r[1] for r in rows]

    def iter_pool_ids(self, chunk_size: int = 100_000) -> Iterator[list[str]]:
        """The pool's ids in id order, at most ``chunk_size`` at a time (as :meth:`iter_pool`)."""
        for rows in self._pool_rows((m.items.c.id,), chunk_size):
            if rows:
                yield [r[0] for r in rows]

    def assign_split(self, item_ids: Sequence[str], split: str) -> int:
        """Move items to ``split`` (e.g. pool items into the ``eval`` sample); one transaction.

        Returns how many moved; items already in ``split`` are left as they are (not counted,
        not checked). An item that was ever asked or labeled never moves: one with a query, or
        with any label row (an answer, a skip, or a withdrawn label, since some model may have
        trained on it while it was active) raises StoreError naming it; ``pool()`` holds none of
        these, so pool items always move. Recorded rejections do not hold an item (nothing was
        trained on them). Unknown ids raise StoreError too; on any error nothing moves. Only
        ``split`` changes: the split an item was imported with stays, so ``add_items`` of the
        same data still finds the moved items existing."""
        _check_choice(split, SPLITS, "split")
        if isinstance(item_ids, str):
            raise StoreError(
                f"Expected a sequence of item ids; found the string {item_ids!r}.",
                f"pass a list, e.g. [{item_ids!r}].",
            )
        ids = sorted({_require_str(i, "item id") for i in item_ids})
        if not ids:
            return 0
        i = m.items

        def work(conn: Connection) -> int:
            # FOR UPDATE (PostgreSQL) conflicts with the key-share lock a concurrent insert of a
            # query or label takes on its item: that insert is either visible to the check
            # below, or waits until the items have moved. SQLite writes are serialised anyway.
            current: dict[str, str] = {}
            for chunk in _chunks(ids):
                rows = conn.execute(
                    sa.select(i.c.id, i.c.split)
                    .where(i.c.id.in_(chunk))
                    .order_by(i.c.id)
                    .with_for_update()
                )
                current.update((row.id, row.split) for row in rows)
            missing = [x for x in ids if x not in current]
            if missing:
                raise StoreError(
                    f"Expected every item id to move to split {split!r} to exist in the store; "
                    f"{len(missing)} unknown: {_show(missing)}.",
                    "check the ids (they are the ids given at import); nothing moved.",
                )
            moving = [x for x in ids if current[x] != split]
            if not moving:
                return 0
            held = self._asked_or_labeled(conn, moving)
            if held:
                raise StoreError(
                    f"Expected only items never queried and never labeled to move to split "
                    f"{split!r}; {len(held)} were: "
                    f"{_show((f'{x!r} ({why})' for x, why in sorted(held.items())), quote=False)}.",
                    "choose items from Store.pool() that were never labeled (an item asked or "
                    "labeled keeps its split, so no model is evaluated on what it trained on); "
                    "nothing moved.",
                )
            for chunk in _chunks(moving):
                conn.execute(i.update().where(i.c.id.in_(chunk)).values(split=split))
            return len(moving)

        return self._write(f"move items to split {split!r}", work)

    @staticmethod
    def _asked_or_labeled(conn: Connection, ids: Sequence[str]) -> dict[str, str]:
        """Why each of ``ids`` that was ever queried or labeled must keep its split."""
        q, lab = m.queries, m.labels
        why: dict[str, str] = {}
        for chunk in _chunks(ids):
            for row in conn.execute(
                sa.select(q.c.item_id, q.c.iteration).where(q.c.item_id.in_(chunk))
            ):
                why[row.item_id] = f"queried in iteration {row.iteration}"
            label_rows = conn.execute(
                sa.select(lab.c.item_id, lab.c.skipped, lab.c.withdrawn)
                .where(lab.c.item_id.in_(chunk))
                .order_by(lab.c.item_id, lab.c.id)
            )
            kinds: dict[str, set[str]] = {}
            for lrow in label_rows:
                kind = "withdrawn" if lrow.withdrawn else "skipped" if lrow.skipped else "labeled"
                kinds.setdefault(lrow.item_id, set()).add(kind)
            for item_id, seen in kinds.items():
                if item_id in why:
                    continue
                if "labeled" in seen:
                    why[item_id] = "labeled"
                elif "skipped" in seen:
                    why[item_id] = "skipped"
                else:
                    why[item_id] = "withdrawn label"
        return why

    # -- labels --------------------------------------------------------------------------
    def add_labels(self, labels: Iterable[Label]) -> LabelWriteResult:
        """Write labels, idempotent on ``(source, annotation_id, item_id)``; one transaction.

        Same value (and skip flag) → unchanged; another value → updated; a withdrawn annotation
        given again → updated (active again). ``value=None, skipped=False`` withdraws the
        annotation (a no-op, counted unchanged, when it is not active). Labels are applied in
        order, so the last of repeated identities wins. Unknown item ids raise StoreError and
        nothing is written."""
        batch = [self._checked_label(label) for label in labels]
        if not batch:
            return LabelWriteResult()
        return self._write("add labels", lambda conn: self._write_labels(conn, batch, None))

    def sync_labels(self, snapshot: LabelSnapshot) -> LabelWriteResult:
        """Make the active labels of ``snapshot.source`` on ``snapshot.item_ids`` exactly
        ``snapshot.labels``; other active labels of that source there are withdrawn. One
        transaction; idempotent."""
        source = _require_str(snapshot.source, "snapshot source")
        scope = [_require_str(i, "snapshot item id") for i in snapshot.item_ids]
        in_scope = set(scope)
        batch = [self._checked_label(label) for label in snapshot.labels]
        strays = [
            f"{label.item_id!r}/{label.source!r}"
            for label in batch
            if label.source != source or label.item_id not in in_scope
        ]
        if strays:
            raise StoreError(
                f"Expected every label of a snapshot of {source!r} to have that source and one "
                f"of its item ids; {len(strays)} do not: {_show(strays)}.",
                "build the snapshot from one source and list every labelled item in item_ids.",
            )
        if not scope:
            return LabelWriteResult()
        return self._write(
            "sync labels",
            lambda conn: self._write_labels(conn, batch, (source, in_scope), snapshot.as_of),
        )

    @staticmethod
    def _checked_label(label: Label) -> Label:
        if not isinstance(label, Label):
            raise StoreError(f"Expected Label records; found {type(label).__name__}.")
        _require_str(label.item_id, "label item id")
        _require_str(label.source, f"label source (item {label.item_id!r})")
        _require_str(label.annotation_id, f"label annotation id (item {label.item_id!r})")
        if label.annotator is not None:
            _require_str(label.annotator, f"annotator (item {label.item_id!r})", empty=True)
        if label.value is not None:
            _require_str(label.value, f"label value (item {label.item_id!r})")
        if label.skipped and label.value is not None:
            raise StoreError(
                f"Expected a skip to have no value; annotation {label.annotation_id!r} on item "
                f"{label.item_id!r} is skipped with value {label.value!r}.",
                "set value=None for skips, or skipped=False for answers.",
            )
        return label

    def _write_labels(
        self,
        conn: Connection,
        batch: Sequence[Label],
        scope: tuple[str, set[str]] | None,
        as_of: datetime | None = None,
    ) -> LabelWriteResult:
        """Apply ``batch`` in order (and, for a snapshot, withdraw the rest of ``scope``)."""
        lab = m.labels
        item_ids = {label.item_id for label in batch} | (scope[1] if scope else set())
        self._require_items(conn, item_ids, "to label")
        sources = {label.source for label in batch} | ({scope[0]} if scope else set())
        state: dict[tuple[str, str, str], _LabelState] = {}
        for chunk in _chunks(sorted(item_ids)):
            rows = conn.execute(
                sa.select(lab).where(lab.c.item_id.in_(chunk), lab.c.source.in_(sorted(sources)))
            )
            for row in rows:
                state[(row.source, row.annotation_id, row.item_id)] = _LabelState(
                    id=row.id,
                    value=row.value,
                    skipped=bool(row.skipped),
                    annotator=row.annotator,
                    withdrawn=bool(row.withdrawn),
                    created_at=row.created_at,
                    updated_at=row.updated_at,
                )
        now = _now()
        inserted = updated = unchanged = withdrawn = 0
        events: list[tuple[tuple[str, str, str], str, str | None, bool]] = []
        for label in batch:
            key = (label.source, label.annotation_id, label.item_id)
            cur = state.get(key)
            if label.value is None and not label.skipped:
                if cur is None or cur.withdrawn:
                    unchanged += 1
                    continue
                cur.withdrawn, cur.dirty = True, True
                withdrawn += 1
                events.append((key, "withdraw", cur.value, cur.skipped))
                continue
            annotator = label.annotator
            if cur is None:
                state[key] = _LabelState(
                    id=None,
                    value=label.value,
                    skipped=label.skipped,
                    annotator=annotator,
                    withdrawn=False,
                    created_at=_utc(label.created_at) or now,
                    dirty=True,
                )
                inserted += 1
                events.append((key, "insert", label.value, label.skipped))
                continue
            if as_of is not None and cur.updated_at is not None and cur.updated_at >= as_of:
                unchanged += 1  # written after the snapshot was taken (a webhook): keep the newer
                continue
            same = (
                not cur.withdrawn
                and cur.value == label.value
                and cur.skipped == label.skipped
                and (annotator is None or annotator == cur.annotator)
            )
            if same:
                unchanged += 1
                continue
            cur.value, cur.skipped, cur.withdrawn, cur.dirty = (
                label.value,
                label.skipped,
                False,
                True,
            )
            if annotator is not None:
                cur.annotator = annotator
            updated += 1
            events.append((key, "update", label.value, label.skipped))
        if scope is not None:
            source, in_scope = scope
            given = {(label.source, label.annotation_id, label.item_id) for label in batch}
            for key, cur in sorted(state.items()):
                if key[0] == source and key[2] in in_scope and key not in given:
                    if as_of is not None and cur.updated_at is not None and cur.updated_at >= as_of:
                        continue  # written after the snapshot was taken: not missing from it
                    if not cur.withdrawn:
                        cur.withdrawn, cur.dirty = True, True
                        withdrawn += 1
                        events.append((key, "withdraw", cur.value, cur.skipped))

        new_keys = [key for key, cur in state.items() if cur.id is None]
        if new_keys:
            new_rows = [
                {
                    "item_id": key[2],
                    "source": key[0],
                    "annotation_id": key[1],
                    "annotator": state[key].annotator,
                    "value": state[key].value,
                    "skipped": state[key].skipped,
                    "withdrawn": state[key].withdrawn,
                    "created_at": state[key].created_at,
                    "updated_at": now,
                }
                for key in new_keys
            ]
            stmt = lab.insert().returning(lab.c.id, sort_by_parameter_order=True)
            for key, label_id in zip(new_keys, conn.scalars(stmt, new_rows), strict=True):
                state[key].id = label_id
                state[key].dirty = False
        # by id: concurrent writers lock rows in the same order and cannot deadlock
        changed = sorted((cur for cur in state.values() if cur.dirty), key=lambda c: c.id or 0)
        if changed:
            conn.execute(
                lab.update()
                .where(lab.c.id == sa.bindparam("_id"))
                .values(
                    value=sa.bindparam("_value"),
                    skipped=sa.bindparam("_skipped"),
                    annotator=sa.bindparam("_annotator"),
                    withdrawn=sa.bindparam("_withdrawn"),
                    updated_at=sa.bindparam("_updated_at"),
                ),
                [
                    {
                        "_id": cur.id,
                        "_value": cur.value,
                        "_skipped": cur.skipped,
                        "_annotator": cur.annotator,
                        "_withdrawn": cur.withdrawn,
                        "_updated_at": now,
                    }
                    for cur in changed
                ],
            )
        if events:
            conn.execute(
                m.label_events.insert(),
                [
                    {
                        "label_id": state[key].id,
                        "item_id": key[2],
                        "action": action,
                        "value": value,
                        "skipped": skipped,
                        "created_at": now,
                    }
                    for key, action, value, skipped in events
                ],
            )
        return LabelWriteResult(
            inserted=inserted, updated=updated, unchanged=unchanged, withdrawn=withdrawn
        )

    # -- rejected answers ----------------------------------------------------------------
    def record_rejections(self, rejections: Iterable[LabelRejection]) -> int:
        """Record answers that could not become labels; one transaction, all-or-nothing.

        Idempotent on ``(source, annotation_id, item_id)``: the same reason again changes
        nothing; another reason replaces the stored one (the row keeps its first
        ``created_at`` and its place in ``rejections()``). Applied in order, so the last of
        repeated identities wins. Returns how many identities were new. Unknown item ids raise
        StoreError and nothing is written."""
        batch = [self._checked_rejection(r) for r in rejections]
        if not batch:
            return 0
        rej = m.label_rejections

        def work(conn: Connection) -> int:
            item_ids = sorted({r.item_id for r in batch})
            self._require_items(conn, item_ids, "of a rejection")
            sources = sorted({r.source for r in batch})
            state: dict[tuple[str, str, str], _RejectionState] = {}
            for chunk in _chunks(item_ids):
                rows = conn.execute(
                    sa.select(rej).where(rej.c.item_id.in_(chunk), rej.c.source.in_(sources))
                )
                for row in rows:
                    state[(row.source, row.annotation_id, row.item_id)] = _RejectionState(
                        id=row.id,
                        reason=row.reason,
                        stored_reason=row.reason,
                        created_at=row.created_at,
                    )
            now = _now()
            for r in batch:
                key = (r.source, r.annotation_id, r.item_id)
                cur = state.get(key)
                if cur is None:
                    state[key] = _RejectionState(
                        id=None,
                        reason=r.reason,
                        stored_reason=None,
                        created_at=_utc(r.created_at) or now,
                    )
                else:
                    cur.reason = r.reason
            new = [(key, cur) for key, cur in state.items() if cur.id is None]
            if new:
                # ordered by parameter: ids (and so rejections()) follow the batch order
                stmt = rej.insert().returning(rej.c.id, sort_by_parameter_order=True)
                rows_in = [
                    {
                        "item_id": key[2],
                        "source": key[0],
                        "annotation_id": key[1],
                        "reason": cur.reason,
                        "created_at": cur.created_at,
                        "updated_at": now,
                    }
                    for key, cur in new
                ]
                for (_key, cur), row_id in zip(new, conn.scalars(stmt, rows_in), strict=True):
                    cur.id = row_id
                    cur.stored_reason = cur.reason
            # by id: concurrent writers lock rows in the same order and cannot deadlock
            changed = sorted(
                (c for c in state.values() if c.reason != c.stored_reason),
                key=lambda c: c.id or 0,
            )
            if changed:
                conn.execute(
                    rej.update()
                    .where(rej.c.id == sa.bindparam("_id"))
                    .values(reason=sa.bindparam("_reason"), updated_at=sa.bindparam("_now")),
                    [{"_id": c.id, "_reason": c.reason, "_now": now} for c in changed],
                )
            return len(new)

        return self._write("record label rejections", work)

    @staticmethod
    def _checked_rejection(rejection: LabelRejection) -> LabelRejection:
        if not isinstance(rejection, LabelRejection):
            raise StoreError(f"Expected LabelRejection records; found {type(rejection).__name__}.")
        _require_str(rejection.item_id, "rejection item id")
        where = f"(rejection of item {rejection.item_id!r})"
        _require_str(rejection.source, f"source {where}")
        _require_str(rejection.annotation_id, f"annotation id {where}")
        _require_str(rejection.reason, f"reason {where}")
        return rejection

    def rejections(self) -> list[LabelRejection]:
        """Every recorded rejection, oldest first (in the order first recorded)."""
        rej = m.label_rejections
        with self._read("read label rejections") as conn:
            return [_rejection(row) for row in conn.execute(sa.select(rej).order_by(rej.c.id))]

    def labels(self, item_ids: Sequence[str] | None = None) -> list[Label]:
        """Active (not withdrawn) labels, skips included; ordered by item id, then first write."""
        lab = m.labels
        base = sa.select(lab).where(lab.c.withdrawn.is_(sa.false()))
        with self._read("read labels") as conn:
            if item_ids is None:
                rows = list(conn.execute(base.order_by(lab.c.item_id, lab.c.id)))
            else:
                rows = []
                for chunk in _chunks(sorted(set(item_ids))):
                    rows.extend(conn.execute(base.where(lab.c.item_id.in_(chunk))))
                rows.sort(key=lambda r: (r.item_id, r.id))
        return [_label(row) for row in rows]

    def label_revision(self) -> int:
        """Grows with every label insert, update or withdrawal (the id of the last event)."""
        with self._read("read the label revision") as conn:
            return int(conn.scalar(sa.select(sa.func.max(m.label_events.c.id))) or 0)

    def training_set(self, split: str = "train") -> TrainingSet:
        """One label per item of ``split`` by majority vote over its active, non-skipped labels.

        Ties are left out and listed in ``ties``; items whose active labels are all skips are
        not included. ``agreement`` is the mean, over items with >= 2 answers, of the fraction
        of annotator pairs that agree (None when no item has 2 answers). Ordered by item id."""
        _check_choice(split, SPLITS, "split")
        i, lab = m.items, m.labels
        stmt = (
            sa.select(i.c.id, i.c.text, lab.c.value)
            .select_from(i.join(lab, lab.c.item_id == i.c.id))
            .where(
                i.c.split == split,
                lab.c.withdrawn.is_(sa.false()),
                lab.c.skipped.is_(sa.false()),
            )
            .order_by(i.c.id, lab.c.id)
        )
        ids: list[str] = []
        texts: list[str] = []
        values: list[str] = []
        ties: list[str] = []
        agreements: list[float] = []
        with self._read("read the training set") as conn:
            rows = conn.execute(stmt).all()
        for (item_id, text), group in groupby(rows, key=lambda r: (r.id, r.text)):
            votes = Counter(r.value for r in group)
            n = sum(votes.values())
            if n >= 2:
                agreeing = sum(c * (c - 1) for c in votes.values())
                agreements.append(agreeing / (n * (n - 1)))
            ranked = votes.most_common(2)
            if len(ranked) == 2 and ranked[0][1] == ranked[1][1]:
                ties.append(item_id)
                continue
            ids.append(item_id)
            texts.append(text)
            values.append(ranked[0][0])
        agreement = sum(agreements) / len(agreements) if agreements else None
        return TrainingSet(
            item_ids=tuple(ids),
            texts=tuple(texts),
            labels=tuple(values),
            ties=tuple(ties),
            agreement=agreement,
        )

    # -- queries -------------------------------------------------------------------------
    def record_queries(self, iteration: int, queries: Sequence[Query]) -> int:
        """Record the iteration's selection and move it to step ``selected``, in one transaction.

        Returns how many were recorded. When the iteration already has queries this is a no-op
        returning 0. Raises StoreError for an unknown iteration or item, a query of another
        iteration, an item twice in the batch, or an item already asked in an earlier
        iteration (an item is asked at most once); nothing is written then."""
        batch = list(queries)
        seen: set[str] = set()
        for q in batch:
            if not isinstance(q, Query):
                raise StoreError(f"Expected Query records; found {type(q).__name__}.")
            _require_str(q.item_id, "query item id")
            if q.iteration != iteration:
                raise StoreError(
                    f"Expected every query to belong to iteration {iteration}; the query for "
                    f"{q.item_id!r} says iteration {q.iteration}.",
                    "record each iteration's queries separately.",
                )
            if q.item_id in seen:
                raise StoreError(
                    f"Expected each item at most once per selection; {q.item_id!r} repeats.",
                    "de-duplicate the selection (top-k returns distinct indices).",
                )
            seen.add(q.item_id)
            if not isinstance(q.score, int | float) or not math.isfinite(q.score):
                raise StoreError(
                    f"Expected a finite score for the query of {q.item_id!r}; found {q.score!r}.",
                    "check the strategy's output (scores must be finite).",
                )
            _require_str(q.strategy, f"strategy of the query of {q.item_id!r}")
            _require_str(q.kind, f"kind of the query of {q.item_id!r}")

        def work(conn: Connection) -> int:
            # the row lock serialises concurrent recordings of one iteration (PostgreSQL)
            it = conn.execute(
                sa.select(m.iterations).where(m.iterations.c.number == iteration).with_for_update()
            ).first()
            if it is None:
                raise StoreError(
                    f"Expected iteration {iteration} to exist before recording its queries; "
                    "it does not.",
                    "start it with begin_iteration() first.",
                )
            done = conn.scalar(sa.select(sa.exists().where(m.queries.c.iteration == iteration)))
            if done:
                return 0
            ids = [q.item_id for q in batch]
            self._require_items(conn, ids, "to query")
            asked: list[str] = []
            for chunk in _chunks(sorted(ids)):
                asked.extend(
                    f"{r.item_id!r} (iteration {r.iteration})"
                    for r in conn.execute(
                        sa.select(m.queries.c.item_id, m.queries.c.iteration).where(
                            m.queries.c.item_id.in_(chunk)
                        )
                    )
                )
            if asked:
                raise StoreError(
                    f"Expected items not asked before; {len(asked)} were already queried: "
                    f"{_show(asked, quote=False)}.",
                    "select from Store.pool() only; nothing was written.",
                )
            now = _now()
            if batch:
                conn.execute(
                    m.queries.insert(),
                    [
                        {
                            "item_id": q.item_id,
                            "iteration": iteration,
                            "score": float(q.score),
                            "rank": int(q.rank),
                            "strategy": q.strategy,
                            "model_version": q.model_version,
                            "kind": q.kind,
                            "sent": bool(q.sent),
                            "created_at": now,
                        }
                        for q in batch
                    ],
                )
            conn.execute(
                m.iterations.update()
                .where(m.iterations.c.number == iteration)
                .values(step=_later_step(it.step, "selected"))
            )
            return len(batch)

        return self._write("record queries", work)

    def queries(self, iteration: int | None = None, *, sent: bool | None = None) -> list[Query]:
        """Recorded queries, ordered by iteration, then rank, then item id."""
        q = m.queries
        stmt = sa.select(q).order_by(q.c.iteration, q.c.rank, q.c.item_id)
        if iteration is not None:
            stmt = stmt.where(q.c.iteration == iteration)
        if sent is not None:
            stmt = stmt.where(q.c.sent.is_(sa.true() if sent else sa.false()))
        with self._read("read queries") as conn:
            return [_query(row) for row in conn.execute(stmt)]

    def mark_sent(self, item_ids: Sequence[str]) -> None:
        """Mark the queries of ``item_ids`` as sent (idempotent). An id with no recorded query
        raises StoreError and nothing is marked."""
        ids = sorted({_require_str(i, "item id") for i in item_ids})
        if not ids:
            return

        def work(conn: Connection) -> None:
            q = m.queries
            known: set[str] = set()
            for chunk in _chunks(ids):
                known.update(conn.scalars(sa.select(q.c.item_id).where(q.c.item_id.in_(chunk))))
            missing = [i for i in ids if i not in known]
            if missing:
                raise StoreError(
                    f"Expected a recorded query for every item marked sent; {len(missing)} have "
                    f"none: {_show(missing)}.",
                    "record the queries (record_queries) before sending them.",
                )
            for chunk in _chunks(ids):
                conn.execute(q.update().where(q.c.item_id.in_(chunk)).values(sent=True))

        self._write("mark queries sent", work)

    # -- model versions ------------------------------------------------------------------
    def add_model_version(self, mv: ModelVersion) -> None:
        """Record a model version; when ``mv.iteration`` is set, that iteration moves to step
        ``trained`` (never backwards) with this version, in the same transaction.

        Adding the same version again is a no-op; another version under a used id raises
        StoreError."""
        _require_str(mv.id, "model version id")
        _require_str(mv.trainer, f"trainer of model version {mv.id!r}")
        _require_str(mv.path, f"path of model version {mv.id!r}", empty=True)
        classes = [_require_str(c, f"class of model version {mv.id!r}") for c in mv.classes]
        _check_choice(mv.status, MODEL_STATUSES, f"status of model version {mv.id!r}")
        metrics = _json(mv.metrics, f"metrics of model version {mv.id!r}")
        config = _json(mv.config, f"config of model version {mv.id!r}")
        mvs = m.model_versions

        def work(conn: Connection) -> None:
            old = conn.execute(sa.select(mvs).where(mvs.c.id == mv.id)).first()
            if old is not None:
                same = (old.trainer, old.path, list(old.classes), old.iteration) == (
                    mv.trainer,
                    mv.path,
                    classes,
                    mv.iteration,
                ) and (old.n_labels, old.label_revision) == (mv.n_labels, mv.label_revision)
                if same:
                    return
                raise StoreError(
                    f"Expected a new model version id; {mv.id!r} is already recorded with "
                    "another trainer, path, classes, iteration or training data.",
                    "give every trained model a fresh id.",
                )
            it = None
            if mv.iteration is not None:
                it = conn.execute(
                    sa.select(m.iterations)
                    .where(m.iterations.c.number == mv.iteration)
                    .with_for_update()
                ).first()
                if it is None:
                    raise StoreError(
                        f"Expected iteration {mv.iteration} of model version {mv.id!r} to "
                        "exist; it does not.",
                        "begin the iteration first, or leave ModelVersion.iteration None.",
                    )
            seq = int(conn.scalar(sa.select(sa.func.max(mvs.c.seq))) or 0) + 1
            conn.execute(
                mvs.insert().values(
                    id=mv.id,
                    seq=seq,
                    trainer=mv.trainer,
                    path=mv.path,
                    classes=classes,
                    n_labels=int(mv.n_labels),
                    label_revision=int(mv.label_revision),
                    metrics=metrics,
                    config=config,
                    iteration=mv.iteration,
                    status=mv.status,
                    created_at=_utc(mv.created_at) or _now(),
                )
            )
            if it is not None:
                conn.execute(
                    m.iterations.update()
                    .where(m.iterations.c.number == mv.iteration)
                    .values(step=_later_step(it.step, "trained"), model_version=mv.id)
                )

        self._write("add a model version", work)

    def get_model_version(self, version_id: str) -> ModelVersion:
        mvs = m.model_versions
        with self._read("read a model version") as conn:
            row = conn.execute(sa.select(mvs).where(mvs.c.id == version_id)).first()
        if row is None:
            raise StoreError(
                f"Expected a recorded model version {version_id!r}; there is none.",
                "list the versions with model_versions() (or `alloop status`).",
            )
        return _model_version(row)

    def model_versions(self) -> list[ModelVersion]:
        """Oldest first (by creation time, then order of recording)."""
        mvs = m.model_versions
        with self._read("read model versions") as conn:
            rows = conn.execute(sa.select(mvs).order_by(mvs.c.created_at, mvs.c.seq))
            return [_model_version(row) for row in rows]

    def set_model_status(self, version_id: str, status: str) -> None:
        """Set the status (candidate | promoted | rejected) of a recorded model version."""
        _check_choice(status, MODEL_STATUSES, "model status")
        mvs = m.model_versions

        def work(conn: Connection) -> None:
            result = conn.execute(mvs.update().where(mvs.c.id == version_id).values(status=status))
            if result.rowcount == 0:
                raise StoreError(
                    f"Expected a recorded model version {version_id!r}; there is none.",
                    "list the versions with model_versions() (or `alloop status`).",
                )

        self._write("set a model status", work)

    # -- iterations ----------------------------------------------------------------------
    def begin_iteration(self, info: Mapping[str, Any]) -> Iteration:
        """Start iteration ``last + 1`` (numbers start at 1; status running, step begin).
        Raises StoreError if an unfinished iteration exists (resume that one instead)."""
        stored_info = _json(info, "iteration info")
        its = m.iterations

        def work(conn: Connection) -> Iteration:
            running = conn.execute(
                sa.select(its).where(its.c.status == "running").order_by(its.c.number)
            ).first()
            if running is not None:
                raise StoreError(
                    f"Expected no unfinished iteration before starting a new one; iteration "
                    f"{running.number} is still running (step {running.step!r}).",
                    f"resume iteration {running.number}, or end it with "
                    f"update_iteration({running.number}, status='failed').",
                )
            number = int(conn.scalar(sa.select(sa.func.max(its.c.number))) or 0) + 1
            row = {
                "number": number,
                "status": "running",
                "step": "begin",
                "model_version": None,
                "started_at": _now(),
                "finished_at": None,
                "timings": {},
                "info": stored_info,
            }
            conn.execute(its.insert().values(**row))
            return Iteration(**row)

        return self._write("begin an iteration", work)

    def unfinished_iteration(self) -> Iteration | None:
        """The running iteration, if any."""
        its = m.iterations
        with self._read("read iterations") as conn:
            row = conn.execute(
                sa.select(its).where(its.c.status == "running").order_by(its.c.number.desc())
            ).first()
        return None if row is None else _iteration(row)

    def update_iteration(
        self,
        number: int,
        *,
        step: str | None = None,
        status: str | None = None,
        timings: Mapping[str, float] | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> Iteration:
        """Set step/status; ``timings`` and ``info`` are merged into what is there. Moving to
        status done or failed stamps ``finished_at``; back to running clears it."""
        if step is not None:
            _check_choice(step, ITERATION_STEPS, "iteration step")
        if status is not None:
            _check_choice(status, ITERATION_STATUSES, "iteration status")
        new_timings = _json(timings or {}, "iteration timings")
        new_info = _json(info or {}, "iteration info")
        its = m.iterations

        def work(conn: Connection) -> Iteration:
            row = conn.execute(
                sa.select(its).where(its.c.number == number).with_for_update()
            ).first()
            if row is None:
                raise StoreError(
                    f"Expected iteration {number} to exist; it does not.",
                    "start iterations with begin_iteration(); list them with iterations().",
                )
            values: dict[str, Any] = {
                "step": step if step is not None else row.step,
                "status": status if status is not None else row.status,
                "timings": {**dict(row.timings), **new_timings},
                "info": {**dict(row.info), **new_info},
                "finished_at": row.finished_at,
            }
            if status in ("done", "failed") and (row.status == "running" or not row.finished_at):
                values["finished_at"] = _now()
            elif status == "running":
                values["finished_at"] = None
            conn.execute(its.update().where(its.c.number == number).values(**values))
            return Iteration(
                number=number,
                model_version=row.model_version,
                started_at=row.started_at,
                **values,
            )

        return self._write("update an iteration", work)

    def iterations(self) -> list[Iteration]:
        """All iterations, by number."""
        its = m.iterations
        with self._read("read iterations") as conn:
            return [_iteration(row) for row in conn.execute(sa.select(its).order_by(its.c.number))]

    # -- leases --------------------------------------------------------------------------
    def _lease_now(self) -> datetime:
        now = self._clock()
        if not isinstance(now, datetime):
            raise StoreError(
                f"Expected the store's clock to return a datetime; found {now!r}.",
                "give SqlStore.open a clock returning timezone-aware UTC datetimes.",
            )
        return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)

    @staticmethod
    def _expiry(now: datetime, ttl: timedelta) -> datetime:
        try:
            return now + ttl
        except OverflowError as err:
            raise StoreError(
                f"Expected a lease ttl that ends before the year 10000; found {ttl} from {now}.",
                "pass a ttl_seconds of at most a few years.",
            ) from err

    def acquire_lease(self, name: str, holder: str, ttl_seconds: float) -> bool:
        """Take lease ``name`` for ``holder`` until now + ``ttl_seconds`` when it is free,
        expired, or already ``holder``'s (then it is renewed). One conditional upsert, so of
        any number of stores racing for a free lease exactly one gets it. Returns whether
        ``holder`` holds it now."""
        _require_str(name, "lease name")
        _require_str(holder, "lease holder")
        ttl = _lease_ttl(ttl_seconds)
        insert = pg_dialect.insert if self.dialect == "postgresql" else sqlite_dialect.insert
        ls = m.leases

        def work(conn: Connection) -> bool:
            now = self._lease_now()  # after BEGIN IMMEDIATE got the lock, on SQLite
            stmt = insert(ls).values(
                name=name,
                holder=holder,
                acquired_at=now,
                expires_at=self._expiry(now, ttl),
                renewed_at=now,
            )
            still_ours = sa.and_(ls.c.holder == holder, ls.c.expires_at > now)
            upsert = stmt.on_conflict_do_update(
                index_elements=[ls.c.name],
                set_={
                    "holder": stmt.excluded.holder,
                    "acquired_at": sa.case(
                        (still_ours, ls.c.acquired_at), else_=stmt.excluded.acquired_at
                    ),
                    "expires_at": stmt.excluded.expires_at,
                    "renewed_at": stmt.excluded.renewed_at,
                },
                where=sa.or_(ls.c.holder == holder, ls.c.expires_at <= now),
            ).returning(ls.c.name)
            # a row comes back only when it was inserted or the conflict update applied
            return conn.execute(upsert).first() is not None

        return self._write("acquire a lease", work)

    def renew_lease(self, name: str, holder: str, ttl_seconds: float) -> bool:
        """Extend ``holder``'s lease to now + ``ttl_seconds``. True while nobody else took it
        (also just after it expired); False once it was released or taken by another holder."""
        _require_str(name, "lease name")
        _require_str(holder, "lease holder")
        ttl = _lease_ttl(ttl_seconds)
        ls = m.leases

        def work(conn: Connection) -> bool:
            now = self._lease_now()
            result = conn.execute(
                ls.update()
                .where(ls.c.name == name, ls.c.holder == holder)
                .values(expires_at=self._expiry(now, ttl), renewed_at=now)
            )
            return result.rowcount == 1

        return self._write("renew a lease", work)

    def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up if ``holder`` holds it (expired or not); a no-op otherwise."""
        _require_str(name, "lease name")
        _require_str(holder, "lease holder")
        ls = m.leases

        def work(conn: Connection) -> None:
            conn.execute(ls.delete().where(ls.c.name == name, ls.c.holder == holder))

        self._write("release a lease", work)

    def lease(self, name: str) -> tuple[str, datetime] | None:
        """``(holder, expires_at)`` (UTC) of the unexpired lease ``name``, else None."""
        ls = m.leases
        now = self._lease_now()
        with self._read("read a lease") as conn:
            row = conn.execute(
                sa.select(ls.c.holder, ls.c.expires_at).where(
                    ls.c.name == name, ls.c.expires_at > now
                )
            ).first()
        return None if row is None else (row.holder, row.expires_at)

    # -- jobs: requests to the worker and the jobs it ran ---------------------------------
    def request_job(self, kind: str, source: str, *, push: bool = False) -> int:
        """Ask the worker for a job through the database; returns the request's id."""
        _check_choice(kind, JOB_REQUEST_KINDS, "job request kind")
        _require_str(source, "job request source")
        jr = m.job_requests

        def work(conn: Connection) -> int:
            row = conn.execute(
                jr.insert()
                .values(kind=kind, source=source, push=bool(push), requested_at=self._lease_now())
                .returning(jr.c.id)
            ).one()
            return int(row.id)

        return self._write("record a job request", work)

    def job_requests(self) -> list[JobRequest]:
        """The requests no worker took yet, oldest first."""
        jr = m.job_requests
        with self._read("read the job requests") as conn:
            rows = conn.execute(sa.select(jr).where(jr.c.taken_by.is_(None)).order_by(jr.c.id))
            return [_job_request(r) for r in rows]

    def take_job_requests(self, holder: str) -> list[JobRequest]:
        """Take every request no worker took yet, for ``holder`` (one conditional update: of
        workers racing, each request goes to exactly one). Oldest first."""
        _require_str(holder, "job request holder")
        jr = m.job_requests

        def work(conn: Connection) -> list[JobRequest]:
            rows = conn.execute(
                jr.update()
                .where(jr.c.taken_by.is_(None))
                .values(taken_by=holder, taken_at=self._lease_now())
                .returning(*jr.c)
            ).all()
            return sorted((_job_request(r) for r in rows), key=lambda r: r.id)

        return self._write("take the job requests", work)

    def start_job(
        self, lane: str, kind: str, holder: str, sources: Sequence[str], reason: str
    ) -> Job:
        """Record a job that starts now (status running); returns it with its id."""
        _check_choice(lane, JOB_LANES, "job lane")
        _require_str(kind, "job kind")
        _require_str(holder, "job holder")
        who = [_require_str(x, "job source") for x in sources]
        _require_str(reason, "job reason", empty=True)
        j = m.jobs

        def work(conn: Connection) -> Job:
            now = self._lease_now()
            row = conn.execute(
                j.insert()
                .values(
                    lane=lane,
                    kind=kind,
                    holder=holder,
                    sources=who,
                    reason=reason,
                    status="running",
                    started_at=now,
                    result={},
                    lease_lost=False,
                    progress=[],
                    updated_at=now,
                )
                .returning(*j.c)
            ).one()
            return _job(row)

        return self._write("record a job", work)

    def update_job(
        self,
        job_id: int,
        *,
        status: str | None = None,
        result: Mapping[str, Any] | None = None,
        error: str | None = None,
        lease_lost: bool | None = None,
        progress: Sequence[Mapping[str, Any]] | None = None,
    ) -> Job:
        """Change a job's record; a finished status (done | failed | interrupted) stamps
        ``finished_at`` and clears the progress. A finished job does not change again."""
        values: dict[str, Any] = {}
        if status is not None:
            values["status"] = _check_choice(status, JOB_STATUSES, "job status")
        if result is not None:
            values["result"] = _json(result, "the job's result")
        if error is not None:
            values["error"] = _require_str(error, "job error", empty=True)
        if lease_lost is not None:
            values["lease_lost"] = bool(lease_lost)
        if progress is not None:
            values["progress"] = _json([dict(p) for p in progress], "the job's progress")
        j = m.jobs

        def work(conn: Connection) -> Job:
            now = self._lease_now()
            row = conn.execute(sa.select(j).where(j.c.id == job_id)).first()
            if row is None:
                raise StoreError(
                    f"Expected a recorded job with id {job_id!r}; found none.",
                    "pass the id start_job returned.",
                )
            if row.status != "running":
                return _job(row)
            extra: dict[str, Any] = {"updated_at": now}
            if values.get("status", "running") != "running":
                extra.update(finished_at=now, progress=[])
            conn.execute(j.update().where(j.c.id == job_id).values(**values, **extra))
            return _job(conn.execute(sa.select(j).where(j.c.id == job_id)).one())

        return self._write("update a job", work)

    def jobs(
        self, *, lane: str | None = None, status: str | None = None, limit: int | None = 10
    ) -> list[Job]:
        """The newest ``limit`` jobs (of ``lane``, with ``status``; None = all), oldest first."""
        j = m.jobs
        query = sa.select(j).order_by(j.c.id.desc())
        if lane is not None:
            query = query.where(j.c.lane == _check_choice(lane, JOB_LANES, "job lane"))
        if status is not None:
            query = query.where(j.c.status == _check_choice(status, JOB_STATUSES, "job status"))
        if limit is not None:
            query = query.limit(int(limit))
        with self._read("read the jobs") as conn:
            return [_job(r) for r in reversed(conn.execute(query).all())]

    # -- key/value metadata --------------------------------------------------------------
    def get_meta(self, key: str, default: Any = None) -> Any:
        with self._read("read metadata") as conn:
            row = conn.execute(sa.select(m.meta.c.value).where(m.meta.c.key == key)).first()
        return default if row is None else row.value

    def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON value under ``key`` (replacing what was there)."""
        _require_str(key, "metadata key")
        stored = _json(value, f"metadata {key!r}")
        insert = pg_dialect.insert if self.dialect == "postgresql" else sqlite_dialect.insert

        def work(conn: Connection) -> None:
            stmt = insert(m.meta).values(key=key, value=stored)
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["key"], set_={"value": stmt.excluded.value}
                )
            )

        self._write("write metadata", work)
