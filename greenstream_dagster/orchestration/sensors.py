"""The landing sensor and the run-failure alert.

The sensor moves each complete new file into the raw zone and asks for one run per UTC day the
tick's files touch, plus the already processed days after them whose outputs late data can
change (the next day's window and fill, the fault rules' look-back). Run keys are built from the
day and the files' hashes, so no day is run twice for the same file. The rules of what is
complete, what is taken and which days run are plain Python in ``landing_watch.py``.
"""

import datetime as dt
import time

import dagster as dg

from ..alerts import raise_alert
from ..landing_watch import follow_up_days, plan_runs, scan, take_files
from .assets import ASSET_KEYS, DAILY, first_and_last_day, partition_keys_of
from .resources import GreenstreamSettings

__all__ = ["daily_job", "follow_up_days", "landing_sensor", "run_failure_alert"]

# Landing reads each file once to learn its days; stop taking files well inside the tick's
# time limit (60 seconds by default) and leave the rest for the next tick.
TICK_BUDGET_SECONDS = 40
# The tags of the files behind a run are shown in the UI; keep them short.
TAG_NAMES_LIMIT = 200

daily_job = dg.define_asset_job(
    "daily_pipeline",
    selection=dg.AssetSelection.assets(*ASSET_KEYS),
    description=(
        "Every asset and check of one UTC day. To re-process a range of days, launch the "
        "backfill from this job (Materialize all, choose the days): one run goes through the "
        "days oldest first, and each day's check results are recorded on that day."
    ),
)


def processed_days(instance: dg.DagsterInstance) -> set[dt.date]:
    """Days whose clean data exist or are being computed now: late data for an earlier day
    can change them. (Queued runs need nothing: they start after the runs asked for now.)"""
    keys = set(instance.get_materialized_partitions(dg.AssetKey("standardized_readings")))
    for run in instance.get_runs(
        filters=dg.RunsFilter(
            statuses=[
                dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED,
                dg.DagsterRunStatus.CANCELING,
            ]
        )
    ):
        keys.update(partition_keys_of(run.tags))
    days = set()
    for key in keys:
        try:
            days.add(dt.date.fromisoformat(key))
        except ValueError:
            continue
    return days


@dg.sensor(
    job=daily_job,
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Takes each complete new file from landing/ (unchanged for GREENSTREAM_SETTLE_SECONDS) "
        "into the raw zone and runs the UTC days it touches, plus the processed days after "
        "them that late data can change. Temporary, hidden and already landed files start "
        "nothing; rejected files raise an alert. The tick says what became of each file."
    ),
)
def landing_sensor(context: dg.SensorEvaluationContext, greenstream: GreenstreamSettings):
    settings = greenstream.settings()
    settings.landing_dir.mkdir(parents=True, exist_ok=True)
    now = time.time()
    found = scan(
        settings.landing_dir,
        context.cursor,
        now,
        settings.settle_seconds,
        settings.max_files_per_tick,
    )
    intake = take_files(
        found.ready,
        settings,
        log=context.log,
        budget_seconds=TICK_BUDGET_SECONDS,
        expected=found.signatures(),
    )
    processed = processed_days(context.instance) if intake.days else set()
    partitions = set(DAILY.get_partition_keys())
    notes = list(intake.notes)
    requests = []
    for run in plan_runs(intake.days, processed, settings.reprocess_days_after):
        if run.day.isoformat() not in partitions:
            notes.append(f"{run.day}: outside the pipeline's days, not run")
            continue
        names = ", ".join(sorted(intake.names.get(sha, sha[:12]) for sha in run.files))
        requests.append(
            dg.RunRequest(
                run_key=run.run_key,
                partition_key=run.day.isoformat(),
                tags={
                    "greenstream/trigger": "late data before this day"
                    if run.follow_up
                    else "landing",
                    "greenstream/files": names[:TAG_NAMES_LIMIT],
                },
            )
        )
    for note in notes:  # what became of each file: in the tick's log in the UI
        context.log.info(note)
    cursor = found.cursor(taken=intake.taken, failed=intake.failed, now=now)
    if requests:
        return dg.SensorResult(run_requests=requests, cursor=cursor)
    if notes:
        message = f"{'; '.join(notes)} ({found.describe()})"
    else:
        message = f"no complete new file ({found.describe()})"
    return dg.SensorResult(cursor=cursor, skip_reason=dg.SkipReason(message))


@dg.run_failure_sensor(
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Raises an alert for every failed run.",
)
def run_failure_alert(context: dg.RunFailureSensorContext, greenstream: GreenstreamSettings):
    run = context.dagster_run
    partition = " to ".join(first_and_last_day(run.tags)) or "-"
    raise_alert(
        greenstream.settings(),
        "run_failed",
        f"run {run.run_id[:8]} of {run.job_name} for {partition} failed: "
        f"{context.failure_event.message}",
        {"run_id": run.run_id, "job": run.job_name, "partition": partition},
        log=context.log,
    )
