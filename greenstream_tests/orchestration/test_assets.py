"""The assets and checks materialized through Dagster (dg.materialize, ephemeral instance) on
small files over several days, then the same days again: identical outputs (DESIGN.md 5)."""

import datetime as dt
import threading
import time

import dagster as dg
import duckdb
import pyarrow.parquet as pq
import pytest

from greenstream_dagster import process, validation
from greenstream_dagster.landing import land_file
from greenstream_dagster.orchestration.assets import (
    ASSETS,
    RANGE_END_TAG,
    RANGE_START_TAG,
    first_and_last_day,
    partition_keys_of,
)
from greenstream_dagster.orchestration.checks import CHECKS, SCHEMA_TABLES
from greenstream_dagster.orchestration.resources import resources_for
from greenstream_dagster.process import consecutive, run_days
from greenstream_dagster.settings import Settings
from greenstream_dagster.storage import archive
from greenstream_tests.support import series, write_csv

DAYS = ["2026-11-18", "2026-11-19", "2026-11-20"]
TABLES = SCHEMA_TABLES  # the six table assets


def day_file(tmp_path, day: str):
    """A day of two meters: M1 normal with one absent reading and one bad row, M2 stuck at 0."""
    normal = [1 + 0.1 * (i % 4) for i in range(96)]
    normal[40] = None  # absent from the file: a 15-minute gap, forward-filled
    rows = series("M1", f"{day} 00:00", normal) + series("M2", f"{day} 00:00", [0] * 96)
    rows.append(("M3", "not a time", "1", "kW"))
    return write_csv(tmp_path / f"meters_{day}.csv", rows)


def materialize(settings, day, instance):
    return dg.materialize(
        [*ASSETS, *CHECKS],
        partition_key=day,
        resources=resources_for(settings),
        instance=instance,
        raise_on_error=False,
    )


def snapshot(settings) -> dict[str, list]:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        return {
            table: con.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall() for table in TABLES
        }


@pytest.fixture
def processed(tmp_path, settings):
    """Three days landed and materialized in order."""
    instance = dg.DagsterInstance.ephemeral()
    for day in DAYS:
        land_file(day_file(tmp_path, day), settings)
    results = {day: materialize(settings, day, instance) for day in DAYS}
    return settings, instance, results


def test_every_asset_and_check_succeeds_each_day(processed):
    settings, _, results = processed
    for day, result in results.items():
        assert result.success, day
        materialized = {
            e.asset_key.to_user_string() for e in result.get_asset_materialization_events()
        }
        assert materialized == {*TABLES, "parquet_archive"}
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert len(checks) == 10
        assert all(checks.values()), checks


def test_outputs_of_each_day(processed):
    settings, _, _ = processed
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        per_day = con.execute(
            """SELECT partition_date, count(*) FILTER (WHERE quality = 'measured'),
                      count(*) FILTER (WHERE quality = 'filled'), count(*)
               FROM standardized_readings GROUP BY 1 ORDER BY 1"""
        ).fetchall()
        assert per_day == [(dt.date.fromisoformat(d), 191, 1, 192) for d in DAYS]
        # The bad row of every file is quarantined on that file's day.
        assert con.execute(
            "SELECT partition_date, reason FROM quarantine ORDER BY 1"
        ).fetchall() == [(dt.date.fromisoformat(d), "invalid_timestamp") for d in DAYS]
        # M2 reads 0 kW from the first day on: near_zero from day 2 (the run then spans
        # more than 24 hours), zero_daily_total from the fourth zero day only (not yet).
        assert con.execute(
            "SELECT partition_date, meter_id, rule, run_start FROM fault_flags ORDER BY 1"
        ).fetchall() == [
            (dt.date(2026, 11, 19), "M2", "near_zero", dt.datetime(2026, 11, 18, tzinfo=dt.UTC)),
            (dt.date(2026, 11, 20), "M2", "near_zero", dt.datetime(2026, 11, 18, tzinfo=dt.UTC)),
        ]
        # One alert for the whole episode, on its first day.
        assert con.execute(
            "SELECT meter_id, rule, partition_date FROM fault_alerts"
        ).fetchall() == [("M2", "near_zero", dt.date(2026, 11, 19))]
    for day in DAYS:
        path = archive.day_path(settings.archive_dir, dt.date.fromisoformat(day))
        table = pq.read_table(path)
        assert table.num_rows == 192
        assert path.parent.name == f"date={day}"
        assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "ZSTD"


def test_rematerializing_gives_identical_outputs(processed):
    settings, instance, _ = processed
    before = snapshot(settings)
    archived_before = {
        d: pq.read_table(archive.day_path(settings.archive_dir, dt.date.fromisoformat(d)))
        for d in DAYS
    }
    for day in DAYS:
        assert materialize(settings, day, instance).success
    assert snapshot(settings) == before
    for day in DAYS:
        again = pq.read_table(archive.day_path(settings.archive_dir, dt.date.fromisoformat(day)))
        assert again.equals(archived_before[day])


def test_blocking_check_failure_stops_the_archive(tmp_path, settings, monkeypatch):
    """A schema failure on the clean data: the archive of that day is not written."""
    from greenstream_dagster.rules import schemas as schemas_module

    original = schemas_module.schemas

    def strict(s):
        found = original(s)
        found["standardized_readings"] = found["standardized_readings"].update_column(
            "kw", checks=[schemas_module.pa.Check.le(0.5)]
        )
        return found

    monkeypatch.setattr("greenstream_dagster.validation.schemas", strict)
    land_file(day_file(tmp_path, DAYS[0]), settings)
    result = materialize(settings, DAYS[0], dg.DagsterInstance.ephemeral())
    failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert [e.check_name for e in failed] == ["standardized_readings_schema"]
    assert failed[0].metadata["failure_cases"].value > 0
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "parquet_archive" not in materialized
    assert not archive.day_path(settings.archive_dir, dt.date.fromisoformat(DAYS[0])).exists()


def test_the_clean_checks_take_what_the_step_validated(tmp_path, settings, monkeypatch):
    """The standardize step validates the clean rows and the quarantine while it holds them;
    the checks of its run take those results and read neither back from the warehouse. The
    other tables are read back. Run again, the day's checks take that run's results."""
    calls = []
    validate_day = validation.validate_day

    def spy(con, table, schema, day, held=None):
        calls.append((table, held is not None))
        return validate_day(con, table, schema, day, held)

    monkeypatch.setattr(validation, "validate_day", spy)
    land_file(day_file(tmp_path, DAYS[0]), settings)
    instance = dg.DagsterInstance.ephemeral()
    for _ in range(2):
        calls.clear()
        result = materialize(settings, DAYS[0], instance)
        assert result.success
        assert sorted(calls) == [
            ("fault_flags", False),
            ("meter_daily_peaks", False),
            ("quarantine", True),
            ("raw_readings", False),
            ("standardized_readings", True),
            ("system_peaks", False),
        ]
        rows = {
            e.check_name: e.metadata["rows_checked"].value
            for e in result.get_asset_check_evaluations()
            if "rows_checked" in e.metadata
        }
        assert rows["standardized_readings_schema"] == 192
        assert rows["quarantine_schema"] == 1


# --- a run over a range of days (a backfill from the web UI, `greenstream process`) ----------


def materialize_range(settings, days, instance):
    return dg.materialize(
        [*ASSETS, *CHECKS],
        resources=resources_for(settings),
        instance=instance,
        raise_on_error=False,
        tags={RANGE_START_TAG: days[0], RANGE_END_TAG: days[-1]},
    )


def test_one_run_over_the_days_gives_the_same_outputs_and_checks_each_day(processed, tmp_path):
    """The three days in one run: the same rows as three runs, each check's result recorded on
    its day (and pointing at that day's materialization), every asset materialized per day."""
    by_day, _, _ = processed
    settings = Settings(home=tmp_path / "range_home")
    for day in DAYS:
        land_file(day_file(tmp_path, day), settings)
    result = materialize_range(settings, DAYS, dg.DagsterInstance.ephemeral())
    assert result.success
    assert snapshot(settings) == snapshot(by_day)
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == 30
    assert {(e.check_name, e.partition) for e in evaluations} == {
        (name, day) for name in {e.check_name for e in evaluations} for day in DAYS
    }
    assert all(e.passed for e in evaluations)
    assert all(e.target_materialization_data is not None for e in evaluations)
    materialized = {
        (e.asset_key.to_user_string(), e.partition)
        for e in result.get_asset_materialization_events()
    }
    assert materialized == {(key, day) for key in (*TABLES, "parquet_archive") for day in DAYS}
    # Each day's materialization carries that day's own counts, not the run's last day's.
    clean = {
        e.partition: (
            e.materialization.metadata["partition_date"].value,
            e.materialization.metadata["rows"].value,
        )
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == "standardized_readings"
    }
    assert clean == {day: (day, 192) for day in DAYS}
    raw = {
        e.partition: (
            e.materialization.metadata["partition_date"].value,
            "preview" in e.materialization.metadata,
        )
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == "raw_readings"
    }
    assert raw == {day: (day, True) for day in DAYS}


def fails_on(day: str):
    """Schemas whose clean-data check fails on ``day`` only (every row of it)."""
    from greenstream_dagster.rules import schemas as schemas_module

    def schemas(s):
        found = schemas_module.schemas(s)
        not_that_day = schemas_module.pa.Check(
            lambda data: data.lazyframe.select(
                schemas_module.pl.col("partition_date") != dt.date.fromisoformat(day)
            ),
            error=f"not {day}",
        )
        found["standardized_readings"] = found["standardized_readings"].add_columns(
            {"partition_date": schemas_module.pa.Column(checks=not_that_day)}
        )
        return found

    return schemas


def test_a_blocking_failure_on_one_day_of_a_run_stops_the_runs_archive(
    tmp_path, settings, monkeypatch
):
    """Its check fails on that day only, the others pass; no archive of the run is written."""
    monkeypatch.setattr("greenstream_dagster.validation.schemas", fails_on(DAYS[1]))
    for day in DAYS:
        land_file(day_file(tmp_path, day), settings)
    result = materialize_range(settings, DAYS, dg.DagsterInstance.ephemeral())
    assert not result.success
    schema_results = {
        e.partition: e.passed
        for e in result.get_asset_check_evaluations()
        if e.check_name == "standardized_readings_schema"
    }
    assert schema_results == {DAYS[0]: True, DAYS[1]: False, DAYS[2]: True}
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "parquet_archive" not in materialized
    for day in DAYS:
        assert not archive.day_path(settings.archive_dir, dt.date.fromisoformat(day)).exists()


def test_process_reports_each_day_of_its_run(tmp_path, settings, monkeypatch):
    """``greenstream process`` runs consecutive days as one run: the failed check is reported
    on its day, and every day of the run is reported failed (none was archived)."""
    monkeypatch.setattr("greenstream_dagster.validation.schemas", fails_on(DAYS[1]))
    for day in DAYS:
        land_file(day_file(tmp_path, day), settings)
    days = [dt.date.fromisoformat(d) for d in DAYS]
    outcomes = run_days(days, settings, dg.DagsterInstance.ephemeral())
    assert [(o.day, o.success, o.failed_checks) for o in outcomes] == [
        (days[0], False, []),
        (days[1], False, ["standardized_readings:standardized_readings_schema"]),
        (days[2], False, []),
    ]
    assert all(o.failed_steps == ["clean_checks"] for o in outcomes)
    assert [o.summary["clean"] for o in outcomes] == [192, 192, 192]


def test_the_summaries_read_each_day_under_their_own_memory_limit(processed, monkeypatch):
    """The command's summary of each day, read from the warehouse on a connection whose
    memory limit makes DuckDB drop what it read: with the pipeline's limit, the summaries of
    a 91-day run held 1.0 GB of cached blocks."""
    limits = []

    def summary_seeing_the_limit(con, day):
        [(limit,)] = con.execute("SELECT current_setting('memory_limit')").fetchall()
        limits.append(limit)
        return day_summary(con, day)

    day_summary = process._day_summary
    monkeypatch.setattr(process, "_day_summary", summary_seeing_the_limit)
    days = [dt.date.fromisoformat(d) for d in DAYS]
    settings, instance, _ = processed
    outcomes = run_days(days, settings, instance)  # the days again, as the command runs them
    assert limits == ["122.0 MiB"] * 3  # 128 MB
    assert [o.day for o in outcomes] == days
    assert [
        (s["raw"], s["clean"], s["measured"], s["filled"], s["quarantined"])
        for s in (o.summary for o in outcomes)
    ] == [(192, 192, 191, 1, 1)] * 3
    assert [o.summary["faulty_ids"] for o in outcomes] == [[], ["M2"], ["M2"]]


def test_a_run_whose_summaries_cannot_be_read_warns_on_each_day(tmp_path, settings, monkeypatch):
    """The runs succeeded; only their summaries are missing, and every day says why."""

    def locked(settings, days):
        raise process.WarehouseUnavailable("the warehouse is locked")

    monkeypatch.setattr(process, "summaries", locked)
    for day in DAYS[:2]:
        land_file(day_file(tmp_path, day), settings)
    days = [dt.date.fromisoformat(d) for d in DAYS[:2]]
    outcomes = run_days(days, settings, dg.DagsterInstance.ephemeral())
    assert [(o.day, o.success, o.summary, o.warnings) for o in outcomes] == [
        (day, True, {}, ["no summary: the warehouse is locked"]) for day in days
    ]


def test_consecutive_days_make_one_run():
    d = dt.date(2026, 11, 18)
    days = [d + dt.timedelta(n) for n in (5, 0, 1, 2, 7, 8)]
    assert consecutive(days) == [
        [d, d + dt.timedelta(1), d + dt.timedelta(2)],
        [d + dt.timedelta(5)],
        [d + dt.timedelta(7), d + dt.timedelta(8)],
    ]
    assert consecutive([]) == []


def test_the_days_a_runs_tags_name():
    """A run of one day, a run over a range (its end included), a run with neither."""
    assert partition_keys_of({"dagster/partition": "2026-11-18"}) == ["2026-11-18"]
    assert partition_keys_of({RANGE_START_TAG: DAYS[0], RANGE_END_TAG: DAYS[-1]}) == DAYS
    assert partition_keys_of({RANGE_START_TAG: DAYS[1]}) == [DAYS[1]]
    assert partition_keys_of({"greenstream/trigger": "cli"}) == []
    # the label of a run: its first and last day, once when it is one day
    assert first_and_last_day({RANGE_START_TAG: DAYS[0], RANGE_END_TAG: DAYS[-1]}) == [
        DAYS[0],
        DAYS[-1],
    ]
    assert first_and_last_day({"dagster/partition": "2026-11-18"}) == ["2026-11-18"]
    assert first_and_last_day({"greenstream/trigger": "cli"}) == []


def in_progress_run(instance: dg.DagsterInstance, status=dg.DagsterRunStatus.STARTED):
    """A run of the deployment that holds the warehouse (as the queue started it)."""
    return instance.add_run(dg.DagsterRun(job_name="daily_pipeline", status=status))


def test_the_command_waits_for_the_runs_in_progress(monkeypatch):
    """The deployment's pool is claimed per run, and this command's runs are not queued: it
    waits until no run is in progress, naming the run it waits for, then goes on."""
    said, sleeps = [], []
    monkeypatch.setattr(process, "WAIT_SAY_EVERY_SECONDS", 2 * process.WAIT_POLL_SECONDS)
    with dg.instance_for_test() as instance:
        done = instance.add_run(dg.DagsterRun(job_name="daily_pipeline"))
        instance.report_run_failed(done)  # over: not waited for
        older = in_progress_run(instance, dg.DagsterRunStatus.CANCELING)
        newer = in_progress_run(instance)

        def sleep(seconds):
            sleeps.append(seconds)
            # The newer run ends after two looks, the older one after four.
            if len(sleeps) == 2:
                instance.report_run_failed(newer)
            if len(sleeps) == 4:
                instance.report_run_canceled(older)

        looks = process.wait_for_runs_in_progress(instance, sleep=sleep, say=said.append)
    assert looks == 4
    assert sleeps == [process.WAIT_POLL_SECONDS] * 4
    # Said at once, then every two looks: the run it waits for at that moment.
    assert [line.split()[4] for line in said] == [newer.run_id, older.run_id]
    assert said[0].startswith("greenstream: waiting for run ") and "STARTED" in said[0]
    assert "CANCELING" in said[1]


def test_the_command_looks_no_further_when_no_run_is_in_progress():
    with dg.instance_for_test() as instance:
        done = instance.add_run(dg.DagsterRun(job_name="daily_pipeline"))
        instance.report_run_failed(done)
        assert process.wait_for_runs_in_progress(instance, sleep=pytest.fail, say=pytest.fail) == 0


def test_the_command_starts_its_run_once_the_deployment_run_ends(tmp_path, settings, monkeypatch):
    """The command's run starts only after the run in progress ended, and then succeeds."""
    monkeypatch.setattr(process, "WAIT_POLL_SECONDS", 0.05)
    land_file(day_file(tmp_path, DAYS[0]), settings)
    with dg.instance_for_test() as instance:
        deployment_run = in_progress_run(instance)
        ended = []

        def end_it():
            ended.append(time.time())  # before it shows as ended
            instance.report_run_failed(deployment_run)

        ender = threading.Timer(0.5, end_it)
        ender.start()
        try:
            outcomes = run_days([dt.date.fromisoformat(DAYS[0])], settings, instance)
        finally:
            ender.cancel()
        records = instance.get_run_records()  # newest first
    assert [o.success for o in outcomes] == [True]
    cli, deployment = records
    assert cli.dagster_run.tags.get("greenstream/trigger") == "cli"
    assert cli.dagster_run.status == dg.DagsterRunStatus.SUCCESS
    assert deployment.dagster_run.run_id == deployment_run.run_id
    # Created (and so started) only once the deployment's run had ended.
    assert cli.create_timestamp.timestamp() >= ended[0]
