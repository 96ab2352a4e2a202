"""The daily assets. Each one calls its ``pipeline.build_*`` function per day and reports
what it did as metadata the web UI shows.

Policies are declared where each asset is: daily UTC partitions, the ``duckdb`` pool (DuckDB
has a single writer), retries with backoff for transient failures (a locked file), and a backfill
as one run over its days: each step takes the days in order (a day's clean data and fault
streaks need the day before), and each check reports on its own day.
"""

import datetime as dt
import re
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import TypeVar

import dagster as dg
import duckdb as duckdb_module

from .. import pipeline
from ..alerts import raise_alert
from ..settings import Settings
from ..storage.warehouse import TABLES
from . import handover
from .metadata import day_preview, report_metadata, table_schema
from .resources import GreenstreamSettings, WarehouseResource

_ENV = Settings.from_env()
T = TypeVar("T")

# Today's partition exists (end_offset=1), and tomorrow's too: a reading may be up to
# GREENSTREAM_FUTURE_TOLERANCE_MINUTES past a file's arrival, which can be after midnight.
DAILY = dg.DailyPartitionsDefinition(start_date=_ENV.start_date, end_offset=2, timezone="UTC")
# Dagster's tags on a run: one day, or a range of days (a backfill run, `greenstream process`).
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
POOL = "duckdb"
RETRY = dg.RetryPolicy(
    max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)
# One run for a backfill's range, not one per day: a run costs about a second of Dagster's own
# bookkeeping, which a month of days would pay 30 times.
ONE_RUN_PER_BACKFILL = dg.BackfillPolicy.single_run()
DAY_BEFORE = dg.TimeWindowPartitionMapping(
    start_offset=-1, end_offset=-1, allow_nonexistent_upstream_partitions=True
)
OWNERS = ["team:greenstream-data"]
COMMON = {
    "partitions_def": DAILY,
    "pool": POOL,
    "retry_policy": RETRY,
    "backfill_policy": ONE_RUN_PER_BACKFILL,
}


def partition_keys_of(tags: dict[str, str]) -> list[str]:
    """The days a run's tags name, oldest first: its day, its range, or none."""
    if PARTITION_TAG in tags:
        return [tags[PARTITION_TAG]]
    if RANGE_START_TAG in tags:
        start = tags[RANGE_START_TAG]
        end = tags.get(RANGE_END_TAG, start)
        return DAILY.get_partition_keys_in_range(dg.PartitionKeyRange(start, end))
    return []


def first_and_last_day(tags: dict[str, str]) -> list[str]:
    """The first and the last day a run's tags name (one, when it is one day), to label it."""
    keys = partition_keys_of(tags)
    return list(dict.fromkeys([keys[0], keys[-1]])) if keys else []


def days_of(context: dg.AssetExecutionContext) -> list[dt.date]:
    """The run's days in order (one, unless a run was launched for a range)."""
    return [dt.date.fromisoformat(key) for key in context.partition_keys]


# The line each step logs when done with its days (read back by ``days_done``): one line, not
# one per day, since every log line is an event Dagster writes to its storage.
DAYS_DONE = "days done: {days}"
DAY_TOOK = "{day} in {seconds:.2f} s"
_DAY_TOOK = re.compile(r"(\d{4}-\d{2}-\d{2}) in ([0-9.]+) s")


def days_done(message: str) -> list[tuple[str, float]]:
    """The (day, seconds) of a step's ``DAYS_DONE`` line, in order; none for another line."""
    if not message.startswith(DAYS_DONE.format(days="")):
        return []
    return [(day, float(seconds)) for day, seconds in _DAY_TOOK.findall(message)]


# A step keeps what DuckDB cached for its next day while its own days added less than this to
# what DuckDB held (a tiny day, such as the evening before that a file in +01:00 touches); a
# real day adds far more, so each day of a month's backfill after a step's second starts with an
# empty cache.
REUSE_BELOW_BYTES = 16 << 20


def each_day(
    context,
    duckdb: WarehouseResource,
    build: Callable[[duckdb_module.DuckDBPyConnection, dt.date], T],
) -> list[T]:
    """``build(con, day)`` for each of the run's days, oldest first. Before a day, what this
    step's days before it added to DuckDB's cache is let go when it is much
    (``release_memory``): DuckDB keeps the blocks it read and wrote cached, and a month of days
    with the cache kept ended 0.4 GB higher than its first day. What the step before left
    cached is not counted: it is what this step reads first (the step before wrote it), so a
    tiny first day (the evening before that a +01:00 file touches) does not throw it away before
    the real day. The step's last day keeps its cache for the next step: letting it go after
    every day made a one-day command 0.3 to 1.9 s slower (four pairs taken in turn) for 0.1 GB
    less at its peak. The step then logs what each day took, so a run over a month says which
    day of a step was slow."""
    done, took = [], []
    with ExitStack() as connection:
        con = None
        carried = 0  # what DuckDB held when this step opened its connection
        for day in days_of(context):
            started = time.perf_counter()
            if con is not None and _cached_bytes(con) - carried >= REUSE_BELOW_BYTES:
                connection.close()
                con = None
                duckdb.release_memory()
            if con is None:
                con = connection.enter_context(duckdb.get_connection())
                carried = _cached_bytes(con)
            done.append(build(con, day))
            took.append(DAY_TOOK.format(day=day, seconds=time.perf_counter() - started))
    context.log.info(DAYS_DONE.format(days="; ".join(took)))
    return done


def _cached_bytes(con: duckdb_module.DuckDBPyConnection) -> int:
    [(held,)] = con.execute(
        "SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory()"
    ).fetchall()
    return int(held)


def previewed(build: Callable[[duckdb_module.DuckDBPyConnection, dt.date], T], *tables: str):
    """``build``, then the first rows of the day of each of ``tables``, on the same connection
    (a connection of their own cost about 25 ms an asset)."""

    def built(con, day: dt.date) -> tuple[T, dict[str, dg.MetadataValue]]:
        return build(con, day), {table: day_preview(con, table, day) for table in tables}

    return built


def checked_in_run(context: dg.AssetExecutionContext, tables: tuple[str, ...]) -> set[str]:
    """Those of ``tables`` whose schema check this run includes: only their rows are worth
    validating while the step holds them."""
    selection = context.run.asset_check_selection
    return {
        table
        for table in tables
        if selection is None
        or dg.AssetCheckKey(dg.AssetKey(table), handover.schema_check_name(table)) in selection
    }


def record_days(context, reports, keys=None, *, asset_key=None, previews=None):
    """Each day's counts, and its ``previews`` (one per report, when given), on that day's own
    materialization: a MaterializeResult's metadata would go on every day of a run over a
    range alike."""
    for i, report in enumerate(reports):
        metadata = report_metadata(report, keys)
        if previews:
            metadata["preview"] = previews[i]
        context.add_asset_metadata(
            metadata, asset_key=asset_key, partition_key=report.day.isoformat()
        )


@dg.asset(
    **COMMON,
    group_name="ingest",
    kinds={"duckdb", "csv"},
    owners=OWNERS,
    metadata={"dagster/column_schema": table_schema("raw_readings")},
)
def raw_readings(
    context: dg.AssetExecutionContext, greenstream: GreenstreamSettings, duckdb: WarehouseResource
) -> dg.MaterializeResult:
    """Every row of every accepted meter file that belongs to this UTC day, as text exactly as
    it arrived, with its file (SHA-256) and line. Rows whose timestamp cannot place them on a
    day belong to their file's first day. Rejected files are listed in the raw_files table."""
    settings = greenstream.settings()
    handover.warm_validation()  # its checks come next; the DuckDB insert frees the interpreter
    built = each_day(
        context,
        duckdb,
        previewed(lambda con, day: pipeline.build_raw_readings(con, settings, day), "raw_readings"),
    )
    record_days(
        context, [report for report, _ in built], previews=[p["raw_readings"] for _, p in built]
    )
    return dg.MaterializeResult()


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "standardized_readings",
            # The day before's quarantine (the z-score window reads its outliers) comes with
            # the day before's clean rows: both are this step's. Declared apart, it made the
            # asset graph's backfill give the two assets different days, and Dagster refused it.
            deps=[raw_readings, dg.AssetDep("standardized_readings", partition_mapping=DAY_BEFORE)],
            description=(
                "The clean readings of the UTC day: one row per meter and interval, in kW, "
                "with quality measured, filled or missing. Gaps are filled in as rows; runs "
                "of missing intervals under an hour after a measured reading are forward-filled."
            ),
            group_name="clean",
            kinds={"duckdb"},
            owners=OWNERS,
            metadata={"dagster/column_schema": table_schema("standardized_readings")},
        ),
        dg.AssetSpec(
            "quarantine",
            deps=[raw_readings],
            description=(
                "Every raw row of the UTC day that did not become a clean reading, with the "
                "reason code of the first rule that rejected it, and a detail to act on."
            ),
            group_name="clean",
            kinds={"duckdb"},
            owners=OWNERS,
            metadata={"dagster/column_schema": table_schema("quarantine")},
        ),
    ],
    **COMMON,
)
def standardized_readings_and_quarantine(
    context: dg.AssetExecutionContext, greenstream: GreenstreamSettings, duckdb: WarehouseResource
):
    """Rules 1 to 8 of DESIGN.md: one pass produces the clean rows and the quarantine."""
    settings = greenstream.settings()
    # The two tables' checks take their validation from here (``handover``): no read back.
    checked = checked_in_run(context, ("standardized_readings", "quarantine"))
    run_id = context.run.run_id
    built = each_day(
        context,
        duckdb,
        previewed(
            lambda con, day: pipeline.build_standardized(
                con, settings, day, handover.validating(run_id, settings, con, day, checked)
            ),
            "quarantine",
            "standardized_readings",
        ),
    )
    reports = [report for report, _ in built]
    clean_keys = (
        "rows",
        "measured",
        "filled",
        "missing",
        "unit_converted",
        "had_duplicates",
        "meters",
    )
    quarantine_keys = ("quarantined", "quarantine_by_reason")
    record_days(
        context,
        reports,
        quarantine_keys,
        asset_key="quarantine",
        previews=[p["quarantine"] for _, p in built],
    )
    record_days(
        context,
        reports,
        clean_keys,
        asset_key="standardized_readings",
        previews=[p["standardized_readings"] for _, p in built],
    )
    # The clean rows depend on the day before's quarantine, so quarantine is reported first.
    yield dg.MaterializeResult(asset_key="quarantine")
    yield dg.MaterializeResult(asset_key="standardized_readings")


@dg.asset(
    **COMMON,
    deps=["standardized_readings", dg.AssetDep("fault_flags", partition_mapping=DAY_BEFORE)],
    group_name="insights",
    kinds={"duckdb"},
    owners=OWNERS,
    metadata={"dagster/column_schema": table_schema("fault_flags")},
)
def fault_flags(
    context: dg.AssetExecutionContext, greenstream: GreenstreamSettings, duckdb: WarehouseResource
) -> dg.MaterializeResult:
    """Meters flagged potentially faulty on this UTC day: near_zero (readings under 0.01 kW for
    more than 24 hours) or zero_daily_total (zero energy on more than three days in a row). The
    first day of each fault raises an alert; a fault that goes on is not alerted again."""
    settings = greenstream.settings()
    reports = each_day(
        context, duckdb, lambda con, day: pipeline.build_fault_flags(con, settings, day)
    )
    for report in reports:
        for meter_id, rule, run_start, day in report.counts.pop("new_alerts"):
            raise_alert(
                settings,
                "faulty_meter",
                f"meter {meter_id} is potentially faulty ({rule}) on {day}",
                {"meter_id": meter_id, "rule": rule, "run_start": run_start, "day": day},
                log=context.log,
            )
    record_days(context, reports)
    return dg.MaterializeResult()


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "meter_daily_peaks",
            deps=["standardized_readings"],
            description="Each meter's highest measured kW of the UTC day and when it happened.",
            group_name="insights",
            kinds={"duckdb"},
            owners=OWNERS,
            metadata={"dagster/column_schema": table_schema("meter_daily_peaks")},
        ),
        dg.AssetSpec(
            "system_peaks",
            deps=["standardized_readings"],
            description=(
                "The interval of the UTC day with the highest total measured kW over all "
                "meters, that total, and how many meters reported then."
            ),
            group_name="insights",
            kinds={"duckdb"},
            owners=OWNERS,
            metadata={"dagster/column_schema": table_schema("system_peaks")},
        ),
    ],
    **COMMON,
)
def peaks(context: dg.AssetExecutionContext, duckdb: WarehouseResource):
    """Peaks from measured readings only (filled and missing rows never count)."""
    reports = each_day(context, duckdb, lambda con, day: pipeline.build_peaks(con, day))
    record_days(context, reports, ("meters",), asset_key="meter_daily_peaks")
    system_keys = ("system_peak_ts", "system_peak_kw", "meters_reporting")
    record_days(context, reports, system_keys, asset_key="system_peaks")
    yield dg.MaterializeResult(asset_key="meter_daily_peaks")
    yield dg.MaterializeResult(asset_key="system_peaks")


@dg.asset(
    **COMMON,
    deps=["standardized_readings"],
    group_name="archive",
    kinds={"parquet"},
    owners=OWNERS,
)
def parquet_archive(
    context: dg.AssetExecutionContext, greenstream: GreenstreamSettings, duckdb: WarehouseResource
) -> dg.MaterializeResult:
    """The day's clean readings as zstd Parquet under archive/readings/date=YYYY-MM-DD/,
    readable by DuckDB, pyarrow, Spark and pandas. Written only after the blocking checks of
    standardized_readings passed, and swapped in atomically."""
    settings = greenstream.settings()
    reports = each_day(context, duckdb, lambda con, day: pipeline.build_archive(con, settings, day))
    record_days(context, reports)
    return dg.MaterializeResult()


ASSETS = [raw_readings, standardized_readings_and_quarantine, fault_flags, peaks, parquet_archive]
ASSET_KEYS = [key for asset in ASSETS for key in asset.keys]
__all__ = ["ASSETS", "ASSET_KEYS", "DAILY", "POOL", "TABLES"]
