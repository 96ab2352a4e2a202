"""``WarehouseResource``: a run opens the warehouse once and closes it when it ends; what a day
leaves cached is let go without closing; outside a run, each use opens and closes."""

import dagster as dg
import duckdb
import pytest

from greenstream_dagster.landing import land_file
from greenstream_dagster.orchestration import assets, resources
from greenstream_dagster.orchestration.assets import ASSETS
from greenstream_dagster.orchestration.checks import CHECKS
from greenstream_dagster.orchestration.resources import WarehouseResource, resources_for
from greenstream_tests.support import series, write_csv


@pytest.fixture
def opened(monkeypatch):
    """The databases opened through ``duckdb.connect`` while the test runs."""
    paths = []
    connect = duckdb.connect

    def counting(database=":memory:", *args, **kwargs):
        paths.append(str(database))
        return connect(database, *args, **kwargs)

    monkeypatch.setattr(duckdb, "connect", counting)
    return paths


def _in_run(resource: WarehouseResource) -> WarehouseResource:
    resource.setup_for_execution(dg.build_init_resource_context())
    return resource


def _held_bytes(con) -> int:
    return con.execute("SELECT sum(memory_usage_bytes) FROM duckdb_memory()").fetchall()[0][0]


def test_a_run_opens_the_warehouse_once_for_all_its_steps(tmp_path, settings, opened):
    land_file(write_csv(tmp_path / "d.csv", series("M1", "2026-11-20 00:00", [1.0] * 96)), settings)
    result = dg.materialize(
        [*ASSETS, *CHECKS], partition_key="2026-11-20", resources=resources_for(settings)
    )
    assert result.success
    assert opened.count(str(settings.warehouse_path)) == 1
    # closed when the run ended: the file opens again with another configuration
    with duckdb.connect(str(settings.warehouse_path), config={"memory_limit": "64MB"}) as con:
        assert con.execute("SELECT count(*) FROM standardized_readings").fetchall() == [(96,)]


def test_a_run_keeps_the_memory_its_arrays_free(tmp_path, settings, monkeypatch):
    """The process running a run's steps sets the malloc policy, whether the run is in process
    (the command, tests) or in a run worker of the deployment; outside a run, nothing does."""
    calls = []
    monkeypatch.setattr(resources.malloc_policy, "keep_freed_memory", lambda: calls.append(1))
    resource = WarehouseResource(database=str(tmp_path / "w.duckdb"))
    with resource.get_connection():
        pass
    assert calls == []
    land_file(write_csv(tmp_path / "d.csv", series("M1", "2026-11-20 00:00", [1.0] * 96)), settings)
    result = dg.materialize(
        [*ASSETS, *CHECKS], partition_key="2026-11-20", resources=resources_for(settings)
    )
    assert result.success
    assert calls == [1]


def test_outside_a_run_each_use_opens_and_closes(tmp_path, opened):
    resource = WarehouseResource(database=str(tmp_path / "w.duckdb"))
    for _ in range(2):
        with resource.get_connection() as con:
            assert con.execute("SELECT count(*) FROM raw_readings").fetchall() == [(0,)]
    assert opened == [str(tmp_path / "w.duckdb")] * 2
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True):
        pass  # nothing holds it


def test_steps_share_the_database_on_cursors_of_their_own(tmp_path, opened):
    resource = _in_run(WarehouseResource(database=str(tmp_path / "w.duckdb")))
    with resource.get_connection() as first:
        first.execute("CREATE TEMP TABLE mine AS SELECT 1 AS x")
        first.execute("CREATE TABLE shared AS SELECT 2 AS y")
    with resource.get_connection() as second:
        assert second.execute("SELECT y FROM shared").fetchall() == [(2,)]
        with pytest.raises(duckdb.CatalogException):
            second.execute("SELECT x FROM mine")  # a step's temp tables are its own
        assert second.execute("SELECT current_setting('TimeZone')").fetchall() == [("UTC",)]
    assert len(opened) == 1
    resource.teardown_after_execution(dg.build_init_resource_context())
    with duckdb.connect(str(tmp_path / "w.duckdb"), config={"memory_limit": "64MB"}):
        pass


def test_release_memory_empties_the_cache_and_keeps_the_limit(tmp_path):
    resource = WarehouseResource(
        database=str(tmp_path / "w.duckdb"), connection_config={"memory_limit": "1GB"}
    )
    _in_run(resource)
    with resource.get_connection() as con:
        con.execute(
            "CREATE TABLE big AS SELECT range AS i, md5(range::VARCHAR) AS s FROM range(3000000)"
        )
        con.execute("SELECT sum(i), max(s) FROM big").fetchall()
        assert _held_bytes(con) > 32 << 20
    resource.release_memory()
    with resource.get_connection() as con:
        assert _held_bytes(con) <= 16 << 20
        limit = "SELECT current_setting('memory_limit')"
        configured = duckdb.connect(config={"memory_limit": "1GB"}).execute(limit).fetchall()
        assert con.execute(limit).fetchall() == configured
        assert con.execute("SELECT count(*) FROM big").fetchall() == [(3_000_000,)]
    resource.teardown_after_execution(dg.build_init_resource_context())


def test_a_failed_step_leaves_the_next_one_a_database_opened_afresh(tmp_path, opened):
    resource = _in_run(WarehouseResource(database=str(tmp_path / "w.duckdb")))
    with pytest.raises(RuntimeError, match="step failed"):
        with resource.get_connection():
            raise RuntimeError("step failed")
    with resource.get_connection() as con:
        assert con.execute("SELECT 1").fetchall() == [(1,)]
    assert len(opened) == 2
    resource.teardown_after_execution(dg.build_init_resource_context())


def test_what_cannot_be_evicted_goes_with_the_database(tmp_path, monkeypatch, opened):
    resource = _in_run(WarehouseResource(database=str(tmp_path / "w.duckdb")))
    with resource.get_connection():
        pass
    monkeypatch.setattr(resources, "RELEASED_LIMIT", "not a size")
    resource.release_memory()  # the limit is refused: the database is closed instead
    with duckdb.connect(str(tmp_path / "w.duckdb"), config={"memory_limit": "64MB"}):
        pass
    with resource.get_connection():
        pass
    assert len(opened) == 3
    resource.teardown_after_execution(dg.build_init_resource_context())


class _Steps:
    """What ``each_day`` needs of a step's context: its days and a log."""

    def __init__(self, days):
        self.partition_keys = days
        self.log = self
        self.lines = []

    def info(self, line):
        self.lines.append(line)


def test_a_step_lets_go_of_a_day_before_the_next_not_after_its_last(tmp_path, monkeypatch):
    resource = _in_run(WarehouseResource(database=str(tmp_path / "w.duckdb")))
    released = []
    monkeypatch.setattr(
        WarehouseResource, "release_memory", lambda self: released.append(len(built))
    )
    monkeypatch.setattr(assets, "REUSE_BELOW_BYTES", 0)  # every day counts as a big one
    built = []
    days = ["2026-11-19", "2026-11-20", "2026-11-21"]
    assets.each_day(_Steps(days), resource, lambda con, day: built.append(day))
    # released before the second and the third day, and not after the last
    assert released == [1, 2]
    assert [d.isoformat() for d in built] == days
    monkeypatch.setattr(assets, "REUSE_BELOW_BYTES", 1 << 40)  # no day is big
    released.clear()
    assets.each_day(_Steps(days), resource, lambda con, day: None)
    assert released == []
    resource.teardown_after_execution(dg.build_init_resource_context())


def test_a_step_keeps_what_the_step_before_left_cached_through_a_tiny_first_day(
    tmp_path, monkeypatch
):
    """What DuckDB holds when a step starts is the step before's last day, which this step
    reads first: a tiny first day (the evening before of a +01:00 file) does not let it go
    before the real day. Only what the step's own days add is let go, before a later day."""
    resource = _in_run(WarehouseResource(database=str(tmp_path / "w.duckdb")))
    held = {"bytes": 600 << 20}  # the step before's last day
    monkeypatch.setattr(assets, "_cached_bytes", lambda con: held["bytes"])
    released = []

    def release(self):
        released.append(len(built))
        held["bytes"] = 0

    monkeypatch.setattr(WarehouseResource, "release_memory", release)
    added = {"2026-11-19": 1 << 20, "2026-11-20": 400 << 20, "2026-11-21": 400 << 20}
    built = []

    def build(con, day):
        built.append(day)
        held["bytes"] += added[day.isoformat()]

    assets.each_day(_Steps(list(added)), resource, build)
    # kept through the tiny first day; the second day's own 400 MB let go before the third
    assert released == [2]
    resource.teardown_after_execution(dg.build_init_resource_context())
