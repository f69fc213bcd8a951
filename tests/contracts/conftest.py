"""Fixtures for the Store contract suite: every test runs on SQLite and on PostgreSQL.

PostgreSQL: one fresh database per test module on the server named by ``ALLOOP_TEST_PG_URL``
(default ``postgresql+psycopg://root@127.0.0.1:5432/test``), one fresh schema per test (the
store URL sets ``search_path``); both are dropped afterwards. When the server cannot be
reached the PostgreSQL cases are skipped, except with ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import SQLAlchemyError

from connectors.store import SqlStore
from connectors.store.engine import parse_url, redact

PG_URL_ENV = "ALLOOP_TEST_PG_URL"
DEFAULT_PG_URL = "postgresql+psycopg://root@127.0.0.1:5432/test"

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


def _admin_engine(url: URL) -> Engine:
    return sa.create_engine(url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})


@pytest.fixture(scope="module")
def pg_database() -> Iterator[tuple[URL, Engine]]:
    """A fresh PostgreSQL database for this module: its URL and an AUTOCOMMIT engine on it."""
    base = parse_url(os.environ.get(PG_URL_ENV, DEFAULT_PG_URL))
    name = f"alloop_test_{uuid.uuid4().hex[:12]}"
    server = _admin_engine(base)
    try:
        with server.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except SQLAlchemyError as err:
        server.dispose()
        reason = (
            f"PostgreSQL at {redact(base)} is not reachable or refused CREATE DATABASE "
            f"({str(getattr(err, 'orig', err)).strip().splitlines()[0]}); set {PG_URL_ENV} to a "
            "server where this user may create databases."
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    url = base.set(database=name)
    engine = _admin_engine(url)
    try:
        yield url, engine
    finally:
        engine.dispose()
        with server.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        server.dispose()


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database (never opened): a SQLite file or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state' / 'alloop.db'}"
        return
    url, engine = request.getfixturevalue("pg_database")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        scoped = url.update_query_dict({"options": f"-csearch_path={schema}"})
        yield scoped.render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def store(store_url: str) -> Iterator[SqlStore]:
    """A migrated, empty store."""
    s = SqlStore.open(store_url)
    try:
        yield s
    finally:
        s.close()
