"""Asset checks, partitioned by day like the assets they check.

- One Pandera schema check per table asset (``validation``); failures show their cases. The
  clean rows and the quarantine are validated by the step that stores them, while it holds
  them, and their checks take that result (``handover``); the others read the day back.
- The accounting check (nothing lost) and the schema of the clean data are blocking: when either
  fails, the Parquet archive of that day is not written.
- Quality rates warn above their thresholds; the archive is compared with the warehouse.

Each check is a plain function of (connection, settings, day, run id) returning its result (the
run id finds what that run's steps handed over); checks that can run at the same point of a
day's run share one step (``check_group``), and those of the day's last assets (fault flags,
peaks, archive) share one at its end.
"""

import datetime as dt

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    # Not exported: what AssetCheckResult itself records as the materialization a check saw.
    AssetCheckEvaluationTargetMaterializationData,
)

from ..rules import accounting
from ..storage import archive
from . import handover
from .assets import DAILY, POOL, RETRY, days_of, each_day
from .handover import schema_check_name
from .resources import GreenstreamSettings, WarehouseResource

BLOCKING_SCHEMAS = {"standardized_readings"}


def _markdown(frame) -> str:
    header = list(frame.columns)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(str(v).replace("|", "\\|")[:80] for v in row) + " |")
    return "\n".join(lines)


ACCOUNTING = dg.AssetCheckSpec(
    "accounting_balanced",
    asset="standardized_readings",
    description="Nothing is lost: raw rows = clean rows from a raw row + quarantine rows, with "
    "no raw line missing from both or present in both (blocking).",
    blocking=True,
    additional_deps=["quarantine", "raw_readings"],
    partitions_def=DAILY,
)
ARCHIVE_MATCHES = dg.AssetCheckSpec(
    "archive_matches_warehouse",
    asset="parquet_archive",
    description="The archived Parquet day has exactly the warehouse's clean rows of that day.",
    partitions_def=DAILY,
)


def schema_result(
    con, settings, table: str, day: dt.date, run_id: str | None = None
) -> dg.AssetCheckResult:
    """The day's rows of ``table`` against its Pandera schema; failures show their cases. The
    rows as the step of run ``run_id`` that stored them validated them, if it did
    (``handover``), else read from the warehouse."""
    from .. import validation  # deferred: see validation's docstring

    found = handover.take(run_id, table, day)
    if found is None:
        found = validation.validate_day(con, table, validation.schemas(settings)[table], day)
    rows, cases = found
    key = {"asset_key": dg.AssetKey(table), "check_name": schema_check_name(table)}
    if cases is None:
        return dg.AssetCheckResult(**key, passed=True, metadata={"rows_checked": rows})
    by_check = cases.groupby(["column", "check"], dropna=False).size().reset_index(name="rows")
    return dg.AssetCheckResult(
        **key,
        passed=False,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "rows_checked": rows,
            "failure_cases": len(cases),
            "failures_by_check": dg.MetadataValue.md(_markdown(by_check)),
            "sample": dg.MetadataValue.md(
                _markdown(cases.head(validation.FAILURE_SAMPLE).astype(str))
            ),
        },
    )


def accounting_result(con, settings, day: dt.date, run_id=None) -> dg.AssetCheckResult:
    """Nothing is lost: every raw line of the day is in the clean data or the quarantine."""
    result = accounting.account_day(con, day)
    return dg.AssetCheckResult(
        asset_key=ACCOUNTING.asset_key,
        check_name=ACCOUNTING.name,
        passed=result.balanced,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "raw_rows": result.raw,
            "clean_rows_from_raw": result.clean_from_raw,
            "quarantine_rows": result.quarantined,
            "lost_lines": dg.MetadataValue.json([list(map(str, r)) for r in result.lost]),
            "doubled_lines": dg.MetadataValue.json([list(map(str, r)) for r in result.doubled]),
        },
    )


def rate_result(asset: str, name: str, compute, threshold: str, counts: tuple[str, str]):
    """A warn-level check: the day's rate from ``compute`` against a settings threshold."""

    def result(con, settings, day: dt.date, run_id=None) -> dg.AssetCheckResult:
        rate, part, whole = compute(con, day)
        limit = getattr(settings, threshold)
        return dg.AssetCheckResult(
            asset_key=asset,
            check_name=name,
            passed=rate <= limit,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={name: rate, "threshold": limit, counts[0]: part, counts[1]: whole},
        )

    return result


def archive_result(con, settings, day: dt.date, run_id=None) -> dg.AssetCheckResult:
    """The archived Parquet day holds exactly the warehouse's clean rows of that day."""
    [(warehouse_rows,)] = con.execute(
        "SELECT count(*) FROM standardized_readings WHERE partition_date = ?", [day]
    ).fetchall()
    archived = archive.count_rows(settings.archive_dir, day)
    return dg.AssetCheckResult(
        asset_key=ARCHIVE_MATCHES.asset_key,
        check_name=ARCHIVE_MATCHES.name,
        passed=archived == warehouse_rows,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "warehouse_rows": warehouse_rows,
            "archived_rows": -1 if archived is None else archived,
        },
    )


def _schema_spec(table: str) -> tuple[dg.AssetCheckSpec, object]:
    blocking = table in BLOCKING_SCHEMAS
    spec = dg.AssetCheckSpec(
        schema_check_name(table),
        asset=table,
        description=f"The day's rows of {table} match its Pandera schema"
        + (" (blocking: a failure stops the archive)." if blocking else "."),
        blocking=blocking,
        partitions_def=DAILY,
    )
    return spec, lambda con, settings, day, run_id=None: schema_result(
        con, settings, table, day, run_id
    )


def _rate_spec(name, asset, description, compute, threshold, counts, additional_deps=()):
    spec = dg.AssetCheckSpec(
        name,
        asset=asset,
        description=description,
        additional_deps=list(additional_deps),
        partitions_def=DAILY,
    )
    return spec, rate_result(asset, name, compute, threshold, counts)


def _materializations_seen(context, asset_key: dg.AssetKey, days: list[dt.date]) -> dict:
    """Each day's latest materialization of the checked asset: the UI shows a check result as
    current while it refers to that materialization. When the run materialized the asset, its
    days' latest are the asset's newest records, found in one query; a day not among them
    (the check run alone, say) is looked up by itself."""
    keys = {day.isoformat(): day for day in days}

    def latest(partitions: list[str], limit: int):
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=partitions), limit=limit
        ).records
        found = {}
        for record in records:  # newest first
            found.setdefault(record.partition_key, record)
        return found

    found = latest(list(keys), len(keys))
    for key in keys.keys() - found.keys():
        found |= latest([key], 1)
    return {
        keys[key]: AssetCheckEvaluationTargetMaterializationData(
            storage_id=record.storage_id,
            run_id=record.event_log_entry.run_id,
            timestamp=record.timestamp,
        )
        for key, record in found.items()
    }


def day_evaluation(
    spec: dg.AssetCheckSpec, result: dg.AssetCheckResult, day: dt.date, materialization
) -> dg.AssetCheckEvaluation:
    """A check's result recorded on its day. Dagster records an AssetCheckResult on the run's
    partition, and on none in a run over a range of days; an evaluation names its day, so a
    backfill run over a month reports every check of every day, as a run of one day does."""
    return dg.AssetCheckEvaluation(
        asset_key=spec.asset_key,
        check_name=spec.name,
        passed=result.passed,
        metadata=result.metadata,
        target_materialization_data=materialization,
        severity=result.severity,
        description=result.description,
        blocking=spec.blocking,
        partition=day.isoformat(),
    )


def check_group(name: str, description: str, checks) -> dg.AssetChecksDefinition:
    """Several checks of the day run as one step (one Dagster step costs about 0.1 s however
    little it checks); each keeps its own result, severity and blocking in the UI, and any one
    of them can still be run alone. In a run over several days, every day is checked in turn
    and each result is recorded on its day; a blocking check failing on any day fails the step,
    so no archive of the run is written."""
    specs = {spec.key: spec for spec, _ in checks}
    functions = {spec.key: function for spec, function in checks}

    @dg.multi_asset_check(
        name=name,
        description=description,
        specs=list(specs.values()),
        can_subset=True,
        pool=POOL,
        retry_policy=RETRY,
    )
    def _checks(
        context: dg.AssetCheckExecutionContext,
        greenstream: GreenstreamSettings,
        duckdb: WarehouseResource,
    ):
        settings = greenstream.settings()
        selected = [key for key in functions if key in context.selected_asset_check_keys]
        results = each_day(
            context,
            duckdb,
            lambda con, day: [
                (key, functions[key](con, settings, day, context.run.run_id)) for key in selected
            ],
        )
        days = days_of(context)
        seen = {
            asset: _materializations_seen(context, asset, days)
            for asset in {specs[key].asset_key for key in selected}
        }
        evaluations = [
            day_evaluation(specs[key], result, day, seen[specs[key].asset_key].get(day))
            for day, day_results in zip(days, results, strict=True)
            for key, result in day_results
        ]
        yield from evaluations
        # The check's output, which the steps gated by a blocking check wait for.
        for key in selected:
            yield dg.Output(None, output_name=output_names[key])

    output_names = {key: _checks.get_output_name_for_asset_check_key(key) for key in specs}
    return _checks


SCHEMA_TABLES = (
    "raw_readings",
    "standardized_readings",
    "quarantine",
    "fault_flags",
    "meter_daily_peaks",
    "system_peaks",
)
CHECKS = [
    check_group("raw_checks", "The raw rows of the day.", [_schema_spec("raw_readings")]),
    check_group(
        "clean_checks",
        "The clean rows and the quarantine of the day; the blocking ones gate the archive.",
        [
            _schema_spec("standardized_readings"),
            (ACCOUNTING, accounting_result),
            _schema_spec("quarantine"),
            _rate_spec(
                "quarantine_rate",
                "quarantine",
                "Warns when the day's share of quarantined raw rows is above "
                "GREENSTREAM_QUARANTINE_RATE_WARN.",
                accounting.quarantine_rate,
                "quarantine_rate_warn",
                ("quarantined", "raw_rows"),
                additional_deps=("raw_readings",),
            ),
            _rate_spec(
                "missing_rate",
                "standardized_readings",
                "Warns when the day's share of intervals without a measured reading is above "
                "GREENSTREAM_MISSING_RATE_WARN.",
                accounting.missing_rate,
                "missing_rate_warn",
                ("missing_or_filled", "clean_rows"),
            ),
        ],
    ),
    # The last assets of a day are checked together, once all of them are built: a step of
    # their own each cost about 0.1 s more a run.
    check_group(
        "output_checks",
        "The fault flags, the peaks and the archived day.",
        [
            *(
                _schema_spec(table)
                for table in ("fault_flags", "meter_daily_peaks", "system_peaks")
            ),
            (ARCHIVE_MATCHES, archive_result),
        ],
    ),
]
