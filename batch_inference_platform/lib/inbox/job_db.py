"""Connections to the job store's database: one engine (pool) per URL and process, the
tables created once, and transactions whose connection failures become ``StoreUnavailable``.

sqlite writers take the lock when their transaction begins (``BEGIN IMMEDIATE``), so a
read-then-write transaction never fails on a lock upgrade; PostgreSQL needs nothing special.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError, ProgrammingError

from batch_inference_platform.lib.inbox.job_models import StoreUnavailable
from batch_inference_platform.lib.inbox.job_tables import metadata

_engines: dict[str, sa.Engine] = {}
_ready: set[sa.Engine] = set()
_lock = threading.Lock()


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def utc(value: dt.datetime) -> dt.datetime:
    """sqlite returns naive datetimes: they were stored in UTC."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def engine_for(url: str) -> sa.Engine:
    """One engine (connection pool) per database URL in this process."""
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = _create_engine(url)
        return engine


@contextmanager
def transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """One transaction; an unreachable or locked database becomes ``StoreUnavailable``."""
    try:
        _ensure_schema(engine)
        with engine.begin() as connection:
            yield connection
    except (OperationalError, InterfaceError) as error:
        reason = str(error.orig or error).strip().splitlines()[0]
        raise StoreUnavailable(f"job store unavailable: {reason}") from error


def _create_engine(url: str) -> sa.Engine:
    if not url.startswith("sqlite"):
        connect_args = {"connect_timeout": 10} if url.startswith("postgresql") else {}
        return sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    engine = sa.create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # pysqlite must not issue BEGIN itself
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 30000")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _ensure_schema(engine: sa.Engine) -> None:
    """Create the tables once per engine (several processes may race to do it)."""
    if engine in _ready:
        return
    with _lock:
        if engine in _ready:
            return
        try:
            metadata.create_all(engine)
        except (IntegrityError, ProgrammingError):  # another process created them meanwhile
            metadata.create_all(engine)
        _ready.add(engine)
