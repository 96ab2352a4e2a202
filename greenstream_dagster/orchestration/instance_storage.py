"""Dagster's SQLite run and event storages, with their connections kept open between calls.

``deploy/dagster.yaml`` names these classes for the instance's runs and events; they store the
same tables in the same files (``$DAGSTER_HOME/history``) as Dagster's default SQLite storage,
so a home made before them, or opened without them, reads the same history.

Why: Dagster's SQLite storages build a SQLAlchemy engine for every call and dispose of it after,
so each event a run stores opens a database, compiles its statements anew and closes it again.
A 50,000-meter day's run stores 106 events, some in two or three databases: storing them took
0.67 to 0.77 s, and 0.25 to 0.30 s with each database's engine and connection kept (three runs'
events each way, twice). The run storage is called about 88 times by such a command: 0.21 s,
0.07 s kept. The command took 9.72 to 10.12 s against 10.35 to 10.79 s (four runs each way,
taken in turn; medians 9.90 and 10.50 s).

What stays as Dagster does it: every call is its own transaction, taken under the event
storage's lock; the databases are in WAL mode, so an idle connection kept open blocks no other
process (the web server, the daemon, a run worker). Closing the last connection to a database
copied its new pages from the WAL into the file; the web UI's live view of a run waits for that
file to change (Dagster's ``watch``), so a run's events are copied at the end of each call that
stored any, as before. What is added:

- a forked process never uses its parent's connections: it opens its own;
- the event storage keeps the engines of the ``KEPT_SHARDS`` databases used last (the index and
  the runs being written or read) and closes the others, so a web server that reads many runs
  does not hold a file open for each;
- ``wipe`` closes the connections before Dagster deletes the files.

These override ``_connect`` and ``connect``, which Dagster does not document: ``pyproject.toml``
pins Dagster to one release, and ``test_instance_storage`` checks the signatures and behaviour
they rely on, so an upgrade that changes them fails there first.
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from dagster._config import StringSource
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SqliteEventLogStorage,
)
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.sql import create_engine
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._serdes import ConfigurableClassData

if TYPE_CHECKING:  # SQLAlchemy comes with Dagster, which pins its range
    from sqlalchemy.engine import Connection, Engine

# Engines the event storage keeps: the index, the run being written, and a few runs being read.
KEPT_SHARDS = 8


def _history(dagster_home: str, *parts: str) -> str:
    """Where Dagster's default SQLite storage keeps runs and events under ``DAGSTER_HOME``."""
    return os.path.join(dagster_home, "history", *parts, "")


class _Engines:
    """SQLAlchemy engines by database, made once per process and the fewest used lately closed.

    Each engine pools its connections, so a database is opened once, not once per call. A fork
    starts afresh: the parent's connections are let go of in the child without closing them
    (closing would end them for the parent too)."""

    def __init__(self, connect_args: Mapping[str, Any], kept: int | None = None) -> None:
        self._connect_args = dict(connect_args)
        self._kept = kept
        self._by_url: collections.OrderedDict[str, Engine] = collections.OrderedDict()
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def get(self, url: str) -> Engine:
        with self._lock:
            if self._pid != os.getpid():
                for engine in self._by_url.values():
                    engine.dispose(close=False)
                self._by_url.clear()
                self._pid = os.getpid()
            engine = self._by_url.get(url)
            if engine is not None:
                self._by_url.move_to_end(url)
                return engine
            engine = create_engine(url, connect_args=self._connect_args)
            self._by_url[url] = engine
            while self._kept is not None and len(self._by_url) > self._kept:
                _, oldest = self._by_url.popitem(last=False)
                oldest.dispose()
            return engine

    def close_all(self) -> None:
        with self._lock:
            for engine in self._by_url.values():
                engine.dispose(close=self._pid == os.getpid())
            self._by_url.clear()

    def __len__(self) -> int:
        return len(self._by_url)


class _InDagsterHome:
    """Configured with ``dagster_home`` (``env: DAGSTER_HOME`` in ``deploy/dagster.yaml``), so
    that the files are where Dagster's default storage puts them under it."""

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {"dagster_home": StringSource}

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> Any:
        return cls._in_home(config_value["dagster_home"], inst_data)

    @classmethod
    def _in_home(cls, dagster_home: str, inst_data: ConfigurableClassData | None) -> Any:
        raise NotImplementedError


class KeptSqliteEventLogStorage(_InDagsterHome, SqliteEventLogStorage):
    """Dagster's run-sharded SQLite event storage, with its databases' connections kept; the
    shards in ``$DAGSTER_HOME/history/runs``."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        # Before Dagster's constructor, which may already connect.
        self._engines = _Engines({"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}, kept=KEPT_SHARDS)
        super().__init__(base_dir, inst_data)

    @classmethod
    def _in_home(
        cls, dagster_home: str, inst_data: ConfigurableClassData | None
    ) -> KeptSqliteEventLogStorage:
        return cls(_history(dagster_home, "runs"), inst_data)

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        # As Dagster's, with the engine kept: one call at a time, each in its own transaction.
        with self._db_lock:
            engine = self._engines.get(self.conn_string_for_shard(shard))
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn:
                sqlite = conn.connection.driver_connection
                changes = sqlite.total_changes
                with conn.begin():
                    yield conn
                if shard != INDEX_SHARD_NAME and sqlite.total_changes != changes:
                    # What closing the last connection did: copy the new events from the WAL
                    # into the run's file, whose change the web UI's live view of the run
                    # waits on (``watch``). Passive: never waits on a reader. After a call
                    # that wrote, not after the web server's many reads.
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    def wipe(self) -> None:
        with self._db_lock:
            self._engines.close_all()
        super().wipe()

    def dispose(self) -> None:
        self._engines.close_all()
        super().dispose()


class KeptSqliteRunStorage(_InDagsterHome, SqliteRunStorage):
    """Dagster's SQLite run storage, with its database's connections kept; the database is
    ``$DAGSTER_HOME/history/runs.db``."""

    def __init__(self, conn_string: str, inst_data: ConfigurableClassData | None = None) -> None:
        # Dagster's run storage sets no busy timeout of its own: SQLite's driver default.
        self._engines = _Engines({})
        super().__init__(conn_string, inst_data)

    @classmethod
    def _in_home(
        cls, dagster_home: str, inst_data: ConfigurableClassData | None
    ) -> KeptSqliteRunStorage:
        return cls.from_local(_history(dagster_home), inst_data)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with self._engines.get(self._conn_string).connect() as conn, conn.begin():
            yield conn

    def dispose(self) -> None:
        self._engines.close_all()
        super().dispose()
