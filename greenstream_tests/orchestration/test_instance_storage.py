"""``instance_storage``: the deployment's run and event storages keep each SQLite database open
between calls, in Dagster's own files, across forks and a wipe; and the Dagster internals they
override still have the shape they rely on."""

import collections
import inspect
import multiprocessing
import os
import shutil
import sqlite3.dbapi2
import time
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy.event
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage

from greenstream_dagster.orchestration.instance_storage import (
    KEPT_SHARDS,
    KeptSqliteEventLogStorage,
    KeptSqliteRunStorage,
)

DEPLOY_DAGSTER_YAML = Path(__file__).parents[2] / "deploy" / "dagster.yaml"
LINES = 30


@dg.asset
def talkative(context: dg.AssetExecutionContext) -> None:
    """Stores one event per line logged, beside the run's own events."""
    for i in range(LINES):
        context.log.info(f"line {i}")


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A DAGSTER_HOME with the deployment's dagster.yaml."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    shutil.copy(DEPLOY_DAGSTER_YAML, tmp_path / "dagster.yaml")
    return tmp_path


@pytest.fixture
def opened(monkeypatch) -> collections.Counter:
    """SQLite databases opened while the test runs, by file name."""
    counts: collections.Counter = collections.Counter()
    connect = sqlite3.dbapi2.connect

    def counting(database, *args, **kwargs):
        counts[os.path.basename(str(database))] += 1
        return connect(database, *args, **kwargs)

    monkeypatch.setattr(sqlite3.dbapi2, "connect", counting)
    return counts


def _stock_instance(home: Path) -> dg.DagsterInstance:
    """The same home opened with Dagster's default SQLite storage."""
    (home / "dagster.yaml").unlink()
    return dg.DagsterInstance.from_config(str(home))


def test_the_deployment_stores_runs_and_events_where_dagsters_default_reads_them(home):
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.run_storage, KeptSqliteRunStorage)
        assert isinstance(instance.event_log_storage, KeptSqliteEventLogStorage)
        result = dg.materialize([talkative], instance=instance)
        assert result.success
        events = [e.message for e in instance.all_logs(result.run_id) if not e.is_dagster_event]
    assert (home / "history" / "runs.db").is_file()
    assert (home / "history" / "runs" / f"{result.run_id}.db").is_file()
    with _stock_instance(home) as stock:
        assert isinstance(stock.event_log_storage, SqliteEventLogStorage)
        assert not isinstance(stock.event_log_storage, KeptSqliteEventLogStorage)
        assert stock.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.SUCCESS
        assert [e.message for e in stock.all_logs(result.run_id) if not e.is_dagster_event] == (
            events
        )
        assert events[-LINES:] == [f"line {i}" for i in range(LINES)]
        latest = stock.get_latest_materialization_event(dg.AssetKey("talkative"))
        assert latest is not None and latest.run_id == result.run_id


def test_a_run_opens_each_database_once_where_dagsters_default_opens_one_per_call(home, opened):
    with dg.DagsterInstance.from_config(str(home)) as instance:
        opened.clear()  # what opening the instance opened: Dagster's own set-up
        result = dg.materialize([talkative], instance=instance)
        assert result.success
        stored = len(instance.all_logs(result.run_id))
    shard = f"{result.run_id}.db"
    # The run's shard is made during the run: Dagster's check of its new schema takes a second
    # connection while the first is open. runs.db was opened with the instance, before the run.
    assert dict(opened) == {shard: 2, "index.db": 1}
    with _stock_instance(home) as stock:
        opened.clear()
        result = dg.materialize([talkative], instance=stock)
        assert result.success
    assert opened[f"{result.run_id}.db"] > stored  # each event opens the shard at least once


def test_the_event_storage_keeps_the_databases_used_last_and_closes_the_others(home, opened):
    storage = KeptSqliteEventLogStorage(str(home / "history" / "runs"))
    runs = [f"run-{i}" for i in range(KEPT_SHARDS + 2)]
    for run_id in runs:
        for i in range(3):
            storage.store_event(_log_entry(run_id, f"message {i}"))
    assert len(storage._engines) == KEPT_SHARDS
    assert [opened[f"{run_id}.db"] for run_id in runs] == [2] * len(runs)
    # the last KEPT_SHARDS are still open: read again, none is opened
    for run_id in runs[2:]:
        assert [e.message for e in storage.get_logs_for_run(run_id)] == [
            f"message {i}" for i in range(3)
        ]
    assert [opened[f"{run_id}.db"] for run_id in runs] == [2] * len(runs)
    # the first two were closed to keep the limit: read again, each is opened once more
    for run_id in runs[:2]:
        assert [e.message for e in storage.get_logs_for_run(run_id)] == [
            f"message {i}" for i in range(3)
        ]
    assert [opened[f"{run_id}.db"] for run_id in runs] == [3, 3] + [2] * KEPT_SHARDS
    assert len(storage._engines) == KEPT_SHARDS


def test_a_forked_process_stores_through_connections_of_its_own(home):
    storage = KeptSqliteEventLogStorage(str(home / "history" / "runs"))
    storage.store_event(_log_entry("run-1", "before the fork"))
    engine = storage._engines.get(storage.conn_string_for_shard("run-1"))
    with engine.connect() as conn:
        parent_connection = conn.connection.driver_connection

    child = multiprocessing.get_context("fork").Process(
        target=_store_in_child, args=(storage, engine, "run-1", "from the child")
    )
    child.start()
    child.join(60)
    assert child.exitcode == 0
    storage.store_event(_log_entry("run-1", "after the fork"))
    # the parent goes on through the engine and the connection it had before the fork
    assert storage._engines.get(storage.conn_string_for_shard("run-1")) is engine
    with engine.connect() as conn:
        assert conn.connection.driver_connection is parent_connection
    assert [e.message for e in storage.get_logs_for_run("run-1")] == [
        "before the fork",
        "from the child",
        "after the fork",
    ]


def _store_in_child(
    storage: KeptSqliteEventLogStorage, parents: object, run_id: str, message: str
) -> None:
    storage.store_event(_log_entry(run_id, message))
    mine = storage._engines.get(storage.conn_string_for_shard(run_id))
    os._exit(0 if mine is not parents else 3)


def test_a_wipe_closes_the_databases_before_their_files_go(home):
    storage = KeptSqliteEventLogStorage(str(home / "history" / "runs"))
    storage.store_event(_log_entry("run-1", "old"))
    storage.wipe()
    assert not (home / "history" / "runs" / "run-1.db").exists()
    storage.store_event(_log_entry("run-1", "new"))
    assert [e.message for e in storage.get_logs_for_run("run-1")] == ["new"]


def test_the_dagster_internals_overridden_have_the_shape_relied_on():
    """Dagster is pinned to one release; an upgrade that changes these fails here first."""
    assert list(inspect.signature(SqliteEventLogStorage._connect).parameters) == ["self", "shard"]
    assert list(inspect.signature(SqliteRunStorage.connect).parameters) == ["self"]
    source = inspect.getsource(SqliteEventLogStorage)
    for name in ("self._db_lock", "self._initialized_dbs", "self._initdb(engine)"):
        assert name in source
    assert "self._conn_string" in inspect.getsource(SqliteRunStorage)


def test_a_watcher_of_a_run_sees_each_event_as_it_is_stored(home):
    """The web UI's live view of a run watches the run's database file change (Dagster's
    ``watch``): each event stored through a kept connection must reach the file at once, as
    closing the connection after each event did."""
    directory = str(home / "history" / "runs")
    writer = KeptSqliteEventLogStorage(directory)  # a run worker
    viewer = KeptSqliteEventLogStorage(directory)  # the web server
    writer.store_event(_log_entry("run-1", "message 0"))
    seen: list[str] = []
    viewer.watch("run-1", None, lambda entry, cursor: seen.append(entry.user_message))
    try:
        for i in range(1, 6):
            writer.store_event(_log_entry("run-1", f"message {i}"))
            deadline = time.monotonic() + 10
            while f"message {i}" not in seen and time.monotonic() < deadline:
                time.sleep(0.02)
            assert seen[-1:] == [f"message {i}"]
    finally:
        viewer.dispose()
    assert seen == [f"message {i}" for i in range(6)]


def test_a_runs_events_are_copied_into_its_file_after_a_write_not_after_a_read(home):
    storage = KeptSqliteEventLogStorage(str(home / "history" / "runs"))
    storage.store_event(_log_entry("run-1", "message 0"))
    engine = storage._engines.get(storage.conn_string_for_shard("run-1"))
    statements: list[str] = []
    sqlalchemy.event.listen(
        engine, "before_cursor_execute", lambda conn, cursor, sql, *rest: statements.append(sql)
    )
    storage.store_event(_log_entry("run-1", "message 1"))
    assert [s for s in statements if "wal_checkpoint" in s] == ["PRAGMA wal_checkpoint(PASSIVE)"]
    statements.clear()
    assert [e.message for e in storage.get_logs_for_run("run-1")] == ["message 0", "message 1"]
    assert statements and not [s for s in statements if "wal_checkpoint" in s]


def _log_entry(run_id: str, message: str) -> dg.EventLogEntry:
    return dg.EventLogEntry(
        error_info=None,
        level="INFO",
        user_message=message,
        run_id=run_id,
        timestamp=1_795_000_000.0,
    )
