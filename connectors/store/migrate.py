"""Schema migrations, run in code (no alembic.ini): ``upgrade(url)`` for ``alloop db upgrade``,
``current_revision(url)`` and ``head_revision()`` to report where a database stands.

A new migration, after changing ``models.py``: upgrade a scratch database to head, then
``alembic.command.revision(alembic_config(url), "what changed", autogenerate=True)`` writes
``migrations/versions/<rev>_what_changed.py`` (review it; ``test_store.py`` checks the result).
"""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from connectors.store.engine import create_store_engine, parse_url, redact, write_transaction
from loop.errors import StoreError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Serialises concurrent upgrades of one PostgreSQL database (any constant unique to alloop).
_PG_MIGRATION_LOCK = 0x616C6C6F6F70
# Alembic's ``context`` is process-global: one migration at a time per process.
_ALEMBIC_LOCK = threading.Lock()


def alembic_config(url: str | URL | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations (and at ``url`` when given)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        # "%" is configparser interpolation syntax: escape it.
        rendered = parse_url(url).render_as_string(hide_password=False)
        cfg.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    """The newest revision this version of alloop knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships migrations
        raise StoreError(
            f"Expected migrations in {MIGRATIONS_DIR}; found none.", "reinstall alloop."
        )
    return head


def revision_of(conn: Connection) -> str | None:
    """The revision recorded in the database behind ``conn`` (None when never migrated)."""
    return MigrationContext.configure(conn).get_current_revision()


def upgrade_connection(conn: Connection, url_text: str) -> str:
    """Upgrade the database behind ``conn`` (inside its open transaction) to head."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
    current = revision_of(conn)
    head = head_revision()
    if current == head:
        return head
    script = ScriptDirectory.from_config(alembic_config())
    if current is not None:
        try:
            script.get_revision(current)
        except CommandError as err:
            raise StoreError(
                f"The store at {url_text} is at schema revision {current!r}, which this version "
                f"of alloop does not know (its newest is {head!r}).",
                "upgrade alloop to the version that wrote this database, or use another database.",
            ) from err
    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    try:
        with _ALEMBIC_LOCK:
            command.upgrade(cfg, "head")
    except CommandError as err:
        raise StoreError(
            f"Expected to migrate the store at {url_text} from {current!r} to {head!r}; "
            f"Alembic said: {err}.",
            "check the database is writable; restore a backup if the schema was edited by hand.",
        ) from err
    return head


def _with_engine(url: str | URL) -> tuple[Engine, URL]:
    parsed = parse_url(url)
    return create_store_engine(parsed), parsed


def upgrade(url: str | URL) -> str:
    """Migrate the database at ``url`` to the newest schema; returns that revision."""
    engine, shown = _with_engine(url)
    try:
        with write_transaction(engine) as conn:
            return upgrade_connection(conn, redact(shown))
    except SQLAlchemyError as err:
        raise connection_error(shown, "migrate the store", err) from err
    finally:
        engine.dispose()


def current_revision(url: str | URL) -> str | None:
    """The schema revision of the database at ``url``; None for an empty database."""
    engine, shown = _with_engine(url)
    try:
        with engine.connect() as conn:
            return revision_of(conn)
    except SQLAlchemyError as err:
        raise connection_error(shown, "read the schema revision", err) from err
    finally:
        engine.dispose()


def connection_error(url: URL, doing: str, err: BaseException) -> StoreError:
    """A StoreError for a failure to reach or use the store at ``url``; never shows a password."""
    orig = getattr(err, "orig", None) or err
    text = str(orig).strip()
    detail = text.splitlines()[0] if text else type(orig).__name__
    if url.password:
        detail = detail.replace(str(url.password), "***")
    if url.get_backend_name() == "sqlite":
        fix = (
            "check that the database file and its directory are writable and that no other "
            "program holds a write lock on it for long."
        )
    else:
        fix = (
            "check that the PostgreSQL server is running and that the URL (host, port, user, "
            "database name) is right; create the database first (createdb NAME)."
        )
    return StoreError(
        f"Could not {doing} (database {redact(url)}): {type(orig).__name__}: {detail}", fix
    )
