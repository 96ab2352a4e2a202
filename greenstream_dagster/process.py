"""``greenstream process``: land files, then materialize their days in order, in-process:
consecutive days as one run, as a backfill from the web UI runs them.

The same asset and check definitions as the deployment run here through ``dg.materialize``,
so a file processed from the command line and one picked up by the sensor give the same rows.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import duckdb

from . import landed_tables, startup_gc
from .alerts import raise_alert
from .landing import Landed, land_files
from .landing_child import LandingFailed, LandingInChild
from .orchestration import handover
from .orchestration.assets import ASSETS, DAILY, RANGE_END_TAG, RANGE_START_TAG
from .orchestration.checks import CHECKS
from .orchestration.resources import resources_for
from .orchestration.sensors import follow_up_days
from .rules import codes
from .settings import Settings
from .storage.raw_zone import REJECTED


@dataclass
class DayOutcome:
    day: dt.date
    success: bool
    failed_steps: list[str] = field(default_factory=list)
    failed_checks: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    summary: dict[str, object] = field(default_factory=dict)


@dataclass
class ProcessOutcome:
    landed: list[Landed]
    days: list[DayOutcome]
    skipped_days: list[dt.date]
    error: str | None = None  # why no day could be run at all

    @property
    def ok(self) -> bool:
        return self.error is None and all(d.success and not d.failed_checks for d in self.days)

    def failure_message(self) -> str:
        if self.error:
            return self.error
        bad = [d for d in self.days if not d.success or d.failed_checks]
        parts = [
            f"{d.day}: failed steps {d.failed_steps or '-'}, failed blocking checks "
            f"{d.failed_checks or '-'}"
            for d in bad
        ]
        return "processing failed; " + "; ".join(parts)

    def summary(self) -> str:
        lines = []
        for item in self.landed:
            s = item.sidecar
            if item.already_landed:
                state = "already landed before (same bytes)"
            elif s.status == REJECTED:
                state = f"REJECTED: {s.reason}"
            else:
                state = f"accepted, days {', '.join(map(str, s.days)) or '-'}"
            lines.append(f"file {s.original_name} [{s.source_file[:12]}]: {state}")
        for day in self.skipped_days:
            lines.append(f"day {day}: outside the pipeline's partitions, not processed")
        for d in self.days:
            s = d.summary
            reasons = ", ".join(f"{k} {v}" for k, v in s.get("reasons", {}).items()) or "none"
            peak = s.get("peak")
            lines += [
                f"day {d.day}: {'OK' if d.success and not d.failed_checks else 'FAILED'}",
                f"  rows in {s.get('raw', 0)}, clean {s.get('clean', 0)} (measured "
                f"{s.get('measured', 0)}, filled {s.get('filled', 0)}, missing "
                f"{s.get('missing', 0)}), quarantined {s.get('quarantined', 0)}",
                f"  quarantined by reason: {reasons}",
                f"  faulty meters: {s.get('faulty', 0)}"
                + (f" ({', '.join(s['faulty_ids'][:5])})" if s.get("faulty_ids") else ""),
                "  system peak: "
                + (
                    f"{peak[1]:.3f} kW at {peak[0]:%Y-%m-%dT%H:%M}Z from {peak[2]} meters"
                    if peak
                    else "none"
                ),
            ]
            lines += [f"  warning: {w}" for w in d.warnings]
            if d.failed_steps or d.failed_checks:
                lines.append(f"  failed: {', '.join(d.failed_steps + d.failed_checks)}")
        return "\n".join(lines)


def _instance(dagster_home: str | None) -> dg.DagsterInstance:
    """The deployment's instance when DAGSTER_HOME is set (runs then show in the web UI)."""
    if dagster_home and Path(dagster_home, "dagster.yaml").exists():
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


class WarehouseUnavailable(RuntimeError):
    """The warehouse could not be opened, even after the connection's backoff."""


@contextmanager
def _warehouse(settings: Settings) -> Iterator[duckdb.DuckDBPyConnection]:
    """The warehouse, opened like the assets open it: with backoff while another process
    holds its lock."""
    try:
        with resources_for(settings)["duckdb"].get_connection() as con:
            yield con
    except duckdb.IOException as exc:
        raise WarehouseUnavailable(
            f"the warehouse {settings.warehouse_path} cannot be opened: {exc}. Another process "
            "(a running `dagster dev` or a second `greenstream process`) may hold its lock; "
            "stop it or wait, then run the command again"
        ) from exc


def _processed_days(settings: Settings) -> set[dt.date]:
    if not settings.warehouse_path.exists():
        return set()
    with _warehouse(settings) as con:
        rows = con.execute("SELECT DISTINCT partition_date FROM standardized_readings").fetchall()
    return {d for (d,) in rows}


def _day_summary(con: duckdb.DuckDBPyConnection, day: dt.date) -> dict[str, object]:
    raw = con.execute(
        "SELECT count(*) FROM raw_readings WHERE partition_date = ?", [day]
    ).fetchone()[0]
    quality = dict(
        con.execute(
            "SELECT quality, count(*) FROM standardized_readings WHERE partition_date = ? "
            "GROUP BY ALL",
            [day],
        ).fetchall()
    )
    reasons = dict(
        con.execute(
            "SELECT reason, count(*) FROM quarantine WHERE partition_date = ? "
            "GROUP BY ALL ORDER BY 2 DESC, 1",
            [day],
        ).fetchall()
    )
    faulty = [
        m
        for (m,) in con.execute(
            "SELECT DISTINCT meter_id FROM fault_flags WHERE partition_date = ? ORDER BY 1",
            [day],
        ).fetchall()
    ]
    peak = con.execute(
        "SELECT peak_ts, total_kw, meters_reporting FROM system_peaks WHERE partition_date = ?",
        [day],
    ).fetchone()
    return {
        "raw": raw,
        "clean": sum(quality.values()),
        "measured": quality.get(codes.QUALITY_MEASURED, 0),
        "filled": quality.get(codes.QUALITY_FILLED, 0),
        "missing": quality.get(codes.QUALITY_MISSING, 0),
        "quarantined": sum(reasons.values()),
        "reasons": reasons,
        "faulty": len(faulty),
        "faulty_ids": faulty,
        "peak": peak,
    }


# DuckDB keeps every block a connection read cached until its database closes. The summaries
# read a few columns of each of the run's days: over a 91-day run that was 1.0 GB of cached
# blocks (the summaries alone peaked at 1.21 GB, 0.32 GB with this limit), on top of what the
# run had left the process holding. With this limit DuckDB drops blocks it is done with; the
# summaries' own work needs little.
SUMMARY_MEMORY_LIMIT = "128MB"


def summaries(settings: Settings, days: list[dt.date]) -> dict[dt.date, dict[str, object]]:
    """Each day's summary as the warehouse holds it, on one connection for all the days."""
    with _warehouse(settings) as con:
        con.execute("SET memory_limit = ?", [SUMMARY_MEMORY_LIMIT])
        return {day: _day_summary(con, day) for day in days}


def consecutive(days: list[dt.date]) -> list[list[dt.date]]:
    """Sorted days cut into runs of consecutive days."""
    groups: list[list[dt.date]] = []
    for day in sorted(days):
        if groups and day - groups[-1][-1] == dt.timedelta(days=1):
            groups[-1].append(day)
        else:
            groups.append([day])
    return groups


# Runs that hold the warehouse while they last.
IN_PROGRESS = [
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
WAIT_POLL_SECONDS = 1.0
WAIT_SAY_EVERY_SECONDS = 30.0


def wait_for_runs_in_progress(
    instance: dg.DagsterInstance,
    sleep: Callable[[float], None] = time.sleep,
    say: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> int:
    """Wait until no run of ``instance`` is in progress, saying which one it waits for (at
    once, then every ``WAIT_SAY_EVERY_SECONDS``); returns how many times it looked again.

    The deployment claims its ``duckdb`` pool per run (``granularity: run`` in its
    dagster.yaml): its queue starts a run only once no run in progress holds the pool, this
    command's runs included, and a run's steps then claim nothing. This command's runs are not
    queued, so they wait here for the deployment's: two runs never share the warehouse. A run
    whose process died stays in progress until it is marked failed (the daemon's run
    monitoring, or *Terminate* in the web UI); the message names it."""
    looks = 0
    while True:
        records = instance.get_run_records(dg.RunsFilter(statuses=IN_PROGRESS), limit=1)
        if not records:
            return looks
        if looks % round(WAIT_SAY_EVERY_SECONDS / WAIT_POLL_SECONDS) == 0:
            run = records[0].dagster_run
            say(
                f"greenstream: waiting for run {run.run_id} ({run.job_name}, "
                f"{run.status.value}) to finish: one run at a time uses the warehouse"
            )
        sleep(WAIT_POLL_SECONDS)
        looks += 1


def run_days(days: list[dt.date], settings: Settings, instance: dg.DagsterInstance):
    """Materialize every asset and check of consecutive ``days`` in one run, oldest first;
    report each day's failed steps and checks.

    One run, not one per day: a run costs about a second of Dagster's own bookkeeping, and
    every check still reports on its day. A failed step fails the run for all of its days, and
    a blocking check failing on any day keeps the run's archive from being written."""
    wait_for_runs_in_progress(instance)
    tags = {"greenstream/trigger": "cli"}
    if len(days) > 1:
        tags |= {RANGE_START_TAG: days[0].isoformat(), RANGE_END_TAG: days[-1].isoformat()}
    result = dg.materialize(
        [*ASSETS, *CHECKS],
        partition_key=days[0].isoformat() if len(days) == 1 else None,
        resources=resources_for(settings),
        instance=instance,
        raise_on_error=False,
        tags=tags,
        # The summary is the command's output; Dagster's own log shows warnings and errors only.
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
    )
    failed_steps = [e.step_key for e in result.all_events if e.is_step_failure and e.step_key]
    outcomes = {day: DayOutcome(day, result.success, list(failed_steps)) for day in days}
    for evaluation in result.get_asset_check_evaluations():
        if evaluation.passed:
            continue
        outcome = outcomes[dt.date.fromisoformat(evaluation.partition)]
        name = f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
        if evaluation.severity == dg.AssetCheckSeverity.ERROR:
            outcome.failed_checks.append(name)
        else:
            outcome.warnings.append(f"check {name} warns")
    for day, outcome in outcomes.items():
        if not outcome.success or outcome.failed_checks:
            raise_alert(
                settings,
                "run_failed",
                f"processing of {day} failed: steps {outcome.failed_steps or '-'}, blocking "
                f"checks {outcome.failed_checks or '-'}",
                {"partition": day.isoformat(), "run_id": result.run_id},
            )
    try:
        for day, summary in summaries(settings, days).items():
            outcomes[day].summary = summary
    except WarehouseUnavailable as exc:
        for outcome in outcomes.values():
            outcome.warnings.append(f"no summary: {exc}")
    return list(outcomes.values())


def process_files(
    files: list[Path],
    settings: Settings,
    dagster_home: str | None = None,
    landing: LandingInChild | None = None,
) -> ProcessOutcome:
    """Land ``files`` in the given order (that is their arrival order), then run their days.

    The tables landing reads are kept for the runs' raw rows (see ``landed_tables``). When
    ``landing`` is given, a child process is landing the files already: its result is taken
    once Dagster's instance is open."""
    with landed_tables.keeping():
        return _land_and_run(files, settings, dagster_home, landing)


def _land_and_run(
    files: list[Path], settings: Settings, dagster_home: str | None, landing: LandingInChild | None
) -> ProcessOutcome:
    instance = _instance(dagster_home)
    if landing is None:
        landed = land_files([Path(f) for f in files], settings)
    else:
        # Dagster is loaded and the child still lands (for a 50,000-meter day, for about 1 s
        # more): the validation's imports take that wait instead of the run's first step.
        handover.warm_validation()
        try:
            landed = landing.result()
        except LandingFailed as exc:
            return ProcessOutcome([], [], [], error=str(exc))
    touched = {
        day for item in landed if item.sidecar.status != REJECTED for day in item.sidecar.days
    }
    for item in landed:
        if item.sidecar.status == REJECTED and not item.already_landed:
            raise_alert(
                settings,
                "file_rejected",
                f"file {item.sidecar.original_name} was rejected: {item.sidecar.reason}",
                {"file": item.sidecar.original_name, "source_file": item.sidecar.source_file},
            )
    try:
        processed = _processed_days(settings)
    except WarehouseUnavailable as exc:
        for day in sorted(touched):
            raise_alert(
                settings,
                "run_failed",
                f"processing of {day} failed: {exc}",
                {"partition": day.isoformat()},
            )
        return ProcessOutcome(landed, [], [], error=str(exc))
    days = touched | follow_up_days(touched, processed, settings.reprocess_days_after)
    partitions = set(DAILY.get_partition_keys())
    runnable = sorted(d for d in days if d.isoformat() in partitions)
    skipped = sorted(days - set(runnable))
    startup_gc.resume()  # the start is over: the days' data comes next
    outcomes = [o for days in consecutive(runnable) for o in run_days(days, settings, instance)]
    return ProcessOutcome(landed, outcomes, skipped)
