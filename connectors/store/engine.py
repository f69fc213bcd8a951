"""Database URLs and engines: SQLite (file or memory) and PostgreSQL through psycopg 3.

SQLite connections get WAL, foreign keys and a busy timeout; SQLAlchemy emits the ``BEGIN``
itself so that write transactions start with ``BEGIN IMMEDIATE`` (they take the write lock
up front and wait for it instead of failing half-way with "database is locked").
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import StaticPool

from loop.errors import StoreError

SQLITE_BUSY_TIMEOUT_S = 30.0
PG_CONNECT_TIMEOUT_S = 10

_WRITE_OPTION = "alloop_write"
_URL_EXAMPLES = "sqlite:///path/to/alloop.db or postgresql+psycopg://user@host:5432/dbname"
_PASSWORD_IN_TEXT = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def redact(url: str | URL) -> str:
    """The URL with its password replaced by ``***`` (safe to print)."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    return _PASSWORD_IN_TEXT.sub(r"\1***@", url)


def parse_url(url: str | URL) -> URL:
    """Parse and normalise a store URL; ``postgresql://`` and ``postgres://`` mean psycopg 3."""
    if isinstance(url, URL):
        parsed = url
    else:
        if not isinstance(url, str) or not url.strip():
            raise StoreError(
                f"Expected a database URL such as {_URL_EXAMPLES}; found {url!r}.",
                "set the store URL in the settings (or pass --db).",
            )
        try:
            parsed = sa.make_url(url.strip())
        except ArgumentError as err:
            raise StoreError(
                f"Expected a database URL such as {_URL_EXAMPLES}; found {redact(url)!r} ({err}).",
                "write the URL as dialect://user@host/database, or sqlite:///path for a file.",
            ) from err
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "postgres":
        backend = "postgresql"
    if backend == "sqlite" and driver in ("", "pysqlite"):
        return parsed.set(drivername="sqlite")
    if backend == "postgresql" and driver in ("", "psycopg"):
        return parsed.set(drivername="postgresql+psycopg")
    raise StoreError(
        f"Expected a SQLite or PostgreSQL (psycopg 3) URL such as {_URL_EXAMPLES}; "
        f"found the driver {parsed.drivername!r} in {redact(parsed)!r}.",
        "use sqlite:///... or postgresql+psycopg://...; other databases are not supported.",
    )


def is_memory_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def _dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=False, ensure_ascii=False)


def create_store_engine(url: str | URL) -> Engine:
    """An engine for ``url``; a SQLite file's parent directory is created. Connects lazily."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    return sa.create_engine(
        parsed,
        pool_pre_ping=True,
        json_serializer=_dumps,
        connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S},
    )


def _sqlite_engine(url: URL) -> Engine:
    kwargs: dict[str, Any] = {"json_serializer": _dumps}
    connect_args: dict[str, Any] = {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}
    memory = is_memory_sqlite(url)
    if memory:
        kwargs["poolclass"] = StaticPool
    else:
        path = Path(str(url.database)).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(
                f"Expected to create the directory {str(path.parent)!r} for the SQLite store; "
                f"the system said: {err.strerror or err}.",
                "choose a writable location for the database file.",
            ) from err
        url = url.set(database=str(path))
    engine = sa.create_engine(url, connect_args=connect_args, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # SQLAlchemy, not the sqlite3 module, decides where transactions begin (see "begin").
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if not memory:
                _enable_wal(cursor)
                cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _enable_wal(cursor: Any) -> None:
    """Switch to WAL (persistent in the file). The switch needs an exclusive lock and SQLite
    does not wait for it (no busy handler), so a connection racing another one retries."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    delay = 0.005
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                return
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction meant to write: ``BEGIN IMMEDIATE`` on SQLite, a plain one elsewhere."""
    with engine.execution_options(**{_WRITE_OPTION: True}).begin() as conn:
        yield conn
