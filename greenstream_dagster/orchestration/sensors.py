"""The landing sensor and the run-failure alert.

The sensor moves each complete new file into the raw zone and asks for one run per UTC day the
tick's files touch, plus the already processed days after them whose outputs late data can
change (the next day's window and fill, the fault rules' look-back). Run keys are built from the
day and the files' hashes, so no day is run twice for the same file.
"""

import datetime as dt
import hashlib
import time

import dagster as dg

from ..alerts import raise_alert
from ..landing import land_file
from ..landing_watch import scan
from ..storage.raw_zone import REJECTED
from .assets import ASSET_KEYS, DAILY
from .resources import GreenstreamSettings

# Landing reads each file once to learn its days; stop taking files well inside the tick's
# time limit and leave the rest for the next tick.
TICK_BUDGET_SECONDS = 40

daily_job = dg.define_asset_job(
    "daily_pipeline",
    selection=dg.AssetSelection.assets(*ASSET_KEYS),
    partitions_def=DAILY,
    description="Every asset and check of one UTC day.",
)


def follow_up_days(touched: set[dt.date], processed: set[dt.date], after: int) -> set[dt.date]:
    """Processed days within ``after`` days of a touched day, whose outputs may change."""
    return {
        day + dt.timedelta(days=k)
        for day in touched
        for k in range(1, after + 1)
        if day + dt.timedelta(days=k) in processed
    } - touched


@dg.sensor(
    job=daily_job,
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Moves complete files from landing/ into the raw zone; runs the days they touch.",
)
def landing_sensor(context: dg.SensorEvaluationContext, greenstream: GreenstreamSettings):
    settings = greenstream.settings()
    started = time.monotonic()
    found = scan(
        settings.landing_dir,
        context.cursor,
        time.time(),
        settings.settle_seconds,
        settings.max_files_per_tick,
    )
    files_by_day: dict[dt.date, list[str]] = {}
    notes: list[str] = []
    for path in found.ready:
        if time.monotonic() - started > TICK_BUDGET_SECONDS:
            notes.append("tick time budget used; the rest waits for the next tick")
            break
        try:
            landed = land_file(path, settings, remove_source=True)
        except FileNotFoundError:
            continue  # vanished while being taken
        sidecar = landed.sidecar
        if landed.already_landed:
            notes.append(f"{path.name}: same bytes already landed as {sidecar.source_file[:12]}")
        elif sidecar.status == REJECTED:
            notes.append(f"{path.name}: rejected: {sidecar.reason}")
            raise_alert(
                settings,
                "file_rejected",
                f"file {path.name} was rejected: {sidecar.reason}",
                {"file": path.name, "source_file": sidecar.source_file, "reason": sidecar.reason},
                log=context.log,
            )
        else:
            notes.append(f"{path.name}: landed, days {', '.join(map(str, sidecar.days))}")
            for day in sidecar.days:
                files_by_day.setdefault(day, []).append(sidecar.source_file)
    processed = {
        dt.date.fromisoformat(key)
        for key in context.instance.get_materialized_partitions(
            dg.AssetKey("standardized_readings")
        )
    }
    after = follow_up_days(set(files_by_day), processed, settings.reprocess_days_after)
    for day in after:
        earlier = [d for d in files_by_day if d < day]
        files_by_day[day] = sorted({sha for d in earlier for sha in files_by_day[d]})
    partitions = set(DAILY.get_partition_keys())
    requests = []
    for day in sorted(files_by_day):
        if day.isoformat() not in partitions:
            notes.append(f"{day}: outside the pipeline's days, not run")
            continue
        hashes = hashlib.sha256("".join(sorted(files_by_day[day])).encode()).hexdigest()[:16]
        requests.append(
            dg.RunRequest(
                run_key=f"{day.isoformat()}:{hashes}",
                partition_key=day.isoformat(),
                tags={
                    "greenstream/trigger": "landing",
                    "greenstream/files": str(len(files_by_day[day])),
                },
            )
        )
    for note in notes:
        context.log.info(note)
    message = "; ".join(notes) or f"no complete new file ({found.waiting} settling)"
    return dg.SensorResult(
        run_requests=requests,
        cursor=found.state,
        skip_reason=None if requests else dg.SkipReason(message),
    )


@dg.run_failure_sensor(
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Raises an alert for every failed run.",
)
def run_failure_alert(context: dg.RunFailureSensorContext, greenstream: GreenstreamSettings):
    run = context.dagster_run
    partition = run.tags.get("dagster/partition", "-")
    raise_alert(
        greenstream.settings(),
        "run_failed",
        f"run {run.run_id[:8]} of {run.job_name} for {partition} failed: "
        f"{context.failure_event.message}",
        {"run_id": run.run_id, "job": run.job_name, "partition": partition},
        log=context.log,
    )
