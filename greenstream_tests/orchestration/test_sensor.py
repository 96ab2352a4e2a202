"""The landing sensor (DESIGN.md section 6, issue 3): which files are taken and when, what they
start, and what the operator is told.

The watching rules are tested on ``landing_watch.scan`` with an injected clock; the sensor
itself through ``dg.build_sensor_context`` over a temporary data home, with a settle period of
zero so that two ticks (two looks) take a file without waiting.
"""

import datetime as dt
import errno
import hashlib
import json
import os
from pathlib import Path

import dagster as dg
import pytest

from greenstream_dagster import landing_watch
from greenstream_dagster.landing_watch import follow_up_days, plan_runs, scan, take_files
from greenstream_dagster.orchestration.resources import resources_for
from greenstream_dagster.orchestration.sensors import landing_sensor, run_failure_alert
from greenstream_dagster.storage.raw_zone import RawZone
from greenstream_tests.support import series, write_csv

SETTLE = 5.0


def land(folder: Path, name: str, text: str = "data\n", mtime: float | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def names(paths) -> list[str]:
    return [p.name for p in paths]


def look(folder: Path, cursor, now: float, limit: int = 50, **kwargs):
    return scan(folder, cursor, now, SETTLE, limit, **kwargs)


# ---------------------------------------------------------------------------------------------
# scan: settle, ignore rules, vanishing files, bounded state
# ---------------------------------------------------------------------------------------------


def test_a_file_is_taken_once_unchanged_for_the_settle_period(tmp_path):
    land(tmp_path, "a.csv")
    first = look(tmp_path, None, now=1000.0)
    assert first.ready == [] and first.waiting == 1
    early = look(tmp_path, first.cursor(), now=1000.0 + SETTLE - 0.1)
    assert early.ready == [] and early.waiting == 1
    settled = look(tmp_path, early.cursor(), now=1000.0 + SETTLE)
    assert names(settled.ready) == ["a.csv"] and settled.waiting == 0
    # once taken it is forgotten: the state holds only what is still in the folder
    assert settled.cursor(taken=settled.ready) == "{}"


def test_a_file_that_changes_between_looks_starts_its_settle_period_again(tmp_path):
    path = land(tmp_path, "a.csv", "meter_id")
    first = look(tmp_path, None, now=1000.0)
    with open(path, "a") as out:  # still being written
        out.write(",timestamp\n")
    grown = look(tmp_path, first.cursor(), now=1010.0)
    assert grown.ready == [] and grown.waiting == 1
    assert look(tmp_path, grown.cursor(), now=1010.0 + SETTLE - 1).ready == []
    assert names(look(tmp_path, grown.cursor(), now=1010.0 + SETTLE).ready) == ["a.csv"]


def test_a_single_look_never_takes_a_file_however_old(tmp_path):
    land(tmp_path, "old.csv", mtime=0)
    assert look(tmp_path, None, now=10**9).ready == []


@pytest.mark.parametrize(
    "name",
    [".hidden.csv", "a.csv.tmp", "A.CSV.TMP", "a.csv.part", "a.csv~", "a.csv.partial", ".~lock"],
)
def test_hidden_and_temporary_names_are_ignored(tmp_path, name):
    land(tmp_path, name)
    first = look(tmp_path, None, now=1000.0)
    second = look(tmp_path, first.cursor(), now=2000.0)
    assert second.ready == [] and second.waiting == 0 and second.cursor() == "{}"


def test_directories_and_links_are_ignored(tmp_path):
    landing = tmp_path / "landing"
    (landing / "folder.csv").mkdir(parents=True)
    land(landing / "folder.csv", "inside.csv")
    target = land(tmp_path / "elsewhere", "target.csv")
    (landing / "link.csv").symlink_to(target)
    (landing / "dangling.csv").symlink_to(tmp_path / "nowhere.csv")
    first = look(landing, None, now=1000.0)
    second = look(landing, first.cursor(), now=2000.0)
    assert second.ready == [] and second.cursor() == "{}"


def test_a_missing_landing_folder_is_no_error(tmp_path):
    result = look(tmp_path / "not_there", None, now=1000.0)
    assert result.ready == [] and result.cursor() == "{}"


def test_a_file_that_vanishes_between_two_looks_is_forgotten(tmp_path):
    path = land(tmp_path, "a.csv")
    land(tmp_path, "b.csv")
    first = look(tmp_path, None, now=1000.0)
    path.unlink()
    second = look(tmp_path, first.cursor(), now=2000.0)
    assert names(second.ready) == ["b.csv"]
    assert "a.csv" not in json.loads(second.cursor())


def test_a_file_that_vanishes_while_being_looked_at_is_no_error(tmp_path, monkeypatch):
    land(tmp_path, "a.csv")
    land(tmp_path, "gone.csv")
    real_lstat = Path.lstat

    def lstat(self):
        if self.name == "gone.csv":  # listed by the folder, gone when looked at
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(self))
        return real_lstat(self)

    first = look(tmp_path, None, now=1000.0)
    monkeypatch.setattr(Path, "lstat", lstat)
    second = look(tmp_path, first.cursor(), now=2000.0)
    assert names(second.ready) == ["a.csv"]


def test_a_file_that_vanishes_while_being_taken_is_no_error(settings):
    gone = settings.landing_dir / "gone.csv"
    intake = take_files([gone], settings)
    assert intake.taken == [gone] and intake.failed == [] and intake.days == {}


def test_files_are_taken_oldest_first_within_the_tick_limit(tmp_path):
    for i, name in enumerate(["e.csv", "d.csv", "c.csv", "b.csv", "a.csv"]):
        land(tmp_path, name, mtime=100 + i)  # e.csv is the oldest
    cursor, taken_per_tick, now = None, [], 1000.0
    for _ in range(6):
        result = look(tmp_path, cursor, now=now, limit=2)
        for path in result.ready:
            path.unlink()
        taken_per_tick.append(names(result.ready))
        cursor, now = result.cursor(taken=result.ready), now + SETTLE
    assert taken_per_tick == [[], ["e.csv", "d.csv"], ["c.csv", "b.csv"], ["a.csv"], [], []]


def test_the_state_stays_small_with_a_thousand_files_landed(tmp_path):
    """A burst of 1,000 files: they are looked at a batch at a time (the tracking bound), taken
    50 per tick, and the cursor never holds more than the bound."""
    for i in range(1000):
        land(tmp_path, f"headend_{i:04d}.csv", mtime=1000 + i)
    cursor, now, taken, sizes, ticks = None, 5000.0, [], [], 0
    while len(taken) < 1000:
        ticks += 1
        assert ticks < 100
        result = look(tmp_path, cursor, now=now, limit=50)
        for path in result.ready:
            path.unlink()
        taken += names(result.ready)
        cursor = result.cursor(taken=result.ready)
        sizes.append(len(cursor))
        assert len(json.loads(cursor)) <= 100
        now += SETTLE
    assert taken == sorted(taken) and len(set(taken)) == 1000  # oldest first, each once
    assert ticks == 21  # one look to start, then 50 per tick
    assert max(sizes) < 10_000
    assert cursor == "{}"


def test_an_unreadable_cursor_means_looking_again(tmp_path):
    land(tmp_path, "a.csv")
    assert look(tmp_path, "not json", now=1000.0).waiting == 1
    assert look(tmp_path, "[1, 2]", now=1000.0).waiting == 1


def test_a_file_that_failed_to_land_is_held_until_it_changes(tmp_path):
    path = land(tmp_path, "a.csv")
    first = look(tmp_path, None, now=1000.0)
    second = look(tmp_path, first.cursor(), now=1000.0 + SETTLE)
    assert names(second.ready) == ["a.csv"]
    cursor = second.cursor(failed=second.ready, now=1000.0 + SETTLE)
    held = look(tmp_path, cursor, now=1100.0)
    assert held.ready == [] and held.held == 1 and "1 held" in held.describe()
    assert look(tmp_path, held.cursor(), now=1200.0).held == 1
    # retried after the retry period, like a new file
    retry_at = 1000.0 + SETTLE + landing_watch.RETRY_FAILED_SECONDS
    again = look(tmp_path, held.cursor(), now=retry_at)
    assert again.held == 0 and again.ready == []
    assert names(look(tmp_path, again.cursor(), now=retry_at + SETTLE).ready) == ["a.csv"]
    # or as soon as it changes (the operator fixed it)
    path.write_text("fixed\n")
    changed = look(tmp_path, held.cursor(), now=1300.0)
    assert changed.held == 0 and changed.waiting == 1


# ---------------------------------------------------------------------------------------------
# Which days run
# ---------------------------------------------------------------------------------------------

D = dt.date(2026, 11, 20)


def day(offset: int) -> dt.date:
    return D + dt.timedelta(days=offset)


@pytest.mark.parametrize(
    "touched, processed, after, expected",
    [
        ({0}, set(), 3, set()),  # nothing processed yet: nothing to redo
        ({0}, {-2, -1, 0}, 3, set()),  # only earlier days processed
        ({0}, {1, 2, 3, 4}, 3, {1, 2, 3}),  # late data for day 0: up to 3 days after
        ({0}, {2, 5}, 3, {2}),  # only processed days
        ({0, 1}, {0, 1, 2}, 3, {2}),  # touched days are runs anyway, not follow-ups
        ({0}, {1, 2}, 0, set()),  # follow-ups switched off
    ],
)
def test_follow_up_days(touched, processed, after, expected):
    result = follow_up_days({day(t) for t in touched}, {day(p) for p in processed}, after)
    assert result == {day(e) for e in expected}


def key(d: dt.date, *shas: str, after: bool = False) -> str:
    digest = hashlib.sha256("".join(sorted(shas)).encode()).hexdigest()[:16]
    return f"{d.isoformat()}:{'after:' if after else ''}{digest}"


def test_plan_runs_one_run_per_day_with_run_keys_from_the_files():
    runs = plan_runs({day(1): ["bb", "aa"], day(0): ["aa"]}, {day(2), day(5)}, 3)
    assert [(r.day, r.files, r.follow_up, r.run_key) for r in runs] == [
        (day(0), ("aa",), False, key(day(0), "aa")),
        (day(1), ("aa", "bb"), False, key(day(1), "aa", "bb")),
        (day(2), ("aa", "bb"), True, key(day(2), "aa", "bb", after=True)),
    ]


# ---------------------------------------------------------------------------------------------
# The sensor, through dg.build_sensor_context
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def instance():
    return dg.DagsterInstance.ephemeral()


@pytest.fixture
def quick(settings):
    """Settings with no settle wait, so that two ticks take a file."""
    return settings.replace(settle_seconds=0.0)


class Ticker:
    """Ticks the sensor as the daemon would: each tick gets the cursor the last one returned."""

    def __init__(self, settings, instance):
        self.resources = {"greenstream": resources_for(settings)["greenstream"]}
        self.instance = instance
        self.cursor = None

    def tick(self) -> dg.SensorResult:
        context = dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources=self.resources
        )
        result = landing_sensor(context)
        self.cursor = result.cursor
        return result

    def ticks(self, n: int) -> list[dg.SensorResult]:
        return [self.tick() for _ in range(n)]


def requested(result: dg.SensorResult) -> list[tuple[str, str]]:
    return [(r.partition_key, r.run_key) for r in result.run_requests]


def skip_message(result: dg.SensorResult) -> str:
    return result.skip_reason.skip_message if result.skip_reason else ""


def meter_file(folder: Path, name: str, start: str, readings: int, meter: str = "M1") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_csv(folder / name, series(meter, start, [1.0] * readings))


def sha_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def alerts(settings) -> list[dict]:
    if not settings.alerts_path.exists():
        return []
    return [json.loads(line) for line in settings.alerts_path.read_text().splitlines()]


def test_a_file_touching_two_days_runs_exactly_those_two_days(quick, instance):
    path = meter_file(quick.landing_dir, "two_days.csv", "2026-11-20 23:00", 8)  # to 00:45
    sha = sha_of(path)
    ticker = Ticker(quick, instance)
    first = ticker.tick()
    assert first.run_requests == [] and "1 settling" in skip_message(first)
    second = ticker.tick()
    assert requested(second) == [
        ("2026-11-20", key(dt.date(2026, 11, 20), sha)),
        ("2026-11-21", key(dt.date(2026, 11, 21), sha)),
    ]
    assert {r.tags["greenstream/trigger"] for r in second.run_requests} == {"landing"}
    assert second.run_requests[0].tags["greenstream/files"] == "two_days.csv"
    # moved into the raw zone, named by its hash, with its sidecar
    assert not path.exists()
    sidecar = RawZone(quick.raw_dir).sidecar(sha)
    assert sidecar.original_name == "two_days.csv"
    assert sidecar.days == [dt.date(2026, 11, 20), dt.date(2026, 11, 21)]
    assert json.loads(second.cursor) == {}
    assert ticker.tick().run_requests == []


def test_relanding_the_same_bytes_starts_nothing_and_says_so(quick, instance):
    first = meter_file(quick.landing_dir, "day.csv", "2026-11-20 00:00", 4)
    copy_text = first.read_text()
    ticker = Ticker(quick, instance)
    assert len(ticker.ticks(2)[1].run_requests) == 1
    (quick.landing_dir / "day_again.csv").write_text(copy_text)
    again = ticker.ticks(2)
    assert [r.run_requests for r in again] == [[], []]
    message = skip_message(again[1])
    assert "day_again.csv: same bytes already landed as day.csv" in message
    assert "nothing to run" in message
    assert not (quick.landing_dir / "day_again.csv").exists()


def test_a_rejected_file_is_told_in_the_tick_and_alerted(quick, instance):
    bad = quick.landing_dir / "no_unit.csv"
    bad.parent.mkdir(parents=True)
    bad.write_text("meter_id,timestamp,energy_value\nM1,2026-11-20T00:00:00Z,1\n")
    ticker = Ticker(quick, instance)
    result = ticker.ticks(2)[1]
    assert result.run_requests == []
    message = skip_message(result)
    assert "no_unit.csv: REJECTED" in message and "energy_unit" in message
    (alert,) = alerts(quick)
    assert alert["kind"] == "file_rejected" and alert["file"] == "no_unit.csv"
    assert "energy_unit" in alert["reason"]
    # kept in the raw zone as rejected
    (sidecar,) = RawZone(quick.raw_dir).sidecars()
    assert sidecar.status == "rejected"


def test_temporary_and_hidden_files_start_nothing(quick, instance):
    for name in ["upload.csv.part", "upload.csv.tmp", ".upload.csv", "upload.csv~"]:
        meter_file(quick.landing_dir, name, "2026-11-20 00:00", 4)
    results = Ticker(quick, instance).ticks(3)
    assert all(r.run_requests == [] for r in results)
    assert skip_message(results[-1]) == "no complete new file (0 settling)"
    assert len(list(quick.landing_dir.iterdir())) == 4


def test_a_file_still_being_written_waits(settings, instance):
    meter_file(settings.landing_dir, "day.csv", "2026-11-20 00:00", 4)
    results = Ticker(settings, instance).ticks(2)  # settle of 5 s: two quick ticks are too soon
    assert [r.run_requests for r in results] == [[], []]
    assert "1 settling" in skip_message(results[1])


def test_a_burst_is_taken_in_ticks_of_at_most_the_limit(quick, instance):
    limited = quick.replace(max_files_per_tick=2)
    for i in range(5):
        path = meter_file(limited.landing_dir, f"f{i}.csv", f"2026-11-{10 + i} 00:00", 4)
        os.utime(path, (1000 + i, 1000 + i))
    ticker = Ticker(limited, instance)
    per_tick = [[r.partition_key for r in t.run_requests] for t in ticker.ticks(5)]
    assert per_tick == [
        [],
        ["2026-11-10", "2026-11-11"],
        ["2026-11-12", "2026-11-13"],
        ["2026-11-14"],
        [],
    ]
    assert list(limited.landing_dir.iterdir()) == []


def test_late_data_reruns_its_day_and_the_processed_days_after_it(quick, instance):
    for d in ["2026-11-18", "2026-11-19", "2026-11-20", "2026-11-21", "2026-11-22"]:
        instance.report_runless_asset_event(
            dg.AssetMaterialization("standardized_readings", partition=d)
        )
    late = meter_file(quick.landing_dir, "late.csv", "2026-11-17 12:00", 4)
    sha = sha_of(late)
    result = Ticker(quick, instance).ticks(2)[1]
    late_day = dt.date(2026, 11, 17)
    assert requested(result) == [
        ("2026-11-17", key(late_day, sha)),
        ("2026-11-18", key(dt.date(2026, 11, 18), sha, after=True)),
        ("2026-11-19", key(dt.date(2026, 11, 19), sha, after=True)),
        ("2026-11-20", key(dt.date(2026, 11, 20), sha, after=True)),
    ]
    triggers = [r.tags["greenstream/trigger"] for r in result.run_requests]
    assert triggers == ["landing"] + ["late data before this day"] * 3


def test_a_day_being_computed_counts_as_processed(quick, instance):
    """A run in progress for the day after reads the day before as it was: re-run it."""
    instance.add_run(
        dg.DagsterRun(
            job_name="daily_pipeline",
            run_id="a" * 36,
            status=dg.DagsterRunStatus.STARTED,
            tags={"dagster/partition": "2026-11-21"},
        )
    )
    meter_file(quick.landing_dir, "late.csv", "2026-11-20 12:00", 4)
    result = Ticker(quick, instance).ticks(2)[1]
    assert [r.partition_key for r in result.run_requests] == ["2026-11-20", "2026-11-21"]


def refuse_to_store(monkeypatch, name: str) -> None:
    """The raw zone cannot read the landing file ``name`` (the others land as usual)."""
    real_store = RawZone.store

    def store(self, src, *args, **kwargs):
        if Path(src).name == name:
            raise PermissionError(13, "Permission denied", str(src))
        return real_store(self, src, *args, **kwargs)

    monkeypatch.setattr(RawZone, "store", store)


def test_a_file_that_cannot_be_landed_is_alerted_once_and_left_in_place(
    quick, instance, monkeypatch
):
    path = meter_file(quick.landing_dir, "locked.csv", "2026-11-20 00:00", 4)
    refuse_to_store(monkeypatch, "locked.csv")
    results = Ticker(quick, instance).ticks(4)
    assert all(r.run_requests == [] for r in results)
    assert "locked.csv: could not be landed (PermissionError" in skip_message(results[1])
    assert "1 held after a failed landing" in skip_message(results[3])
    assert [a["kind"] for a in alerts(quick)] == ["landing_failed"]
    assert path.exists()


def test_a_file_that_cannot_be_landed_holds_back_no_other_file_of_its_batch(settings, monkeypatch):
    """Files land a batch at a time: the one that fails is left in place and alerted once, and
    the others of the batch land, leave landing/ and run their days."""
    before = meter_file(settings.landing_dir, "before.csv", "2026-11-19 00:00", 4)
    locked = meter_file(settings.landing_dir, "locked.csv", "2026-11-20 00:00", 4)
    after = meter_file(settings.landing_dir, "after.csv", "2026-11-21 00:00", 4)
    refuse_to_store(monkeypatch, "locked.csv")
    intake = take_files([before, locked, after], settings)
    assert intake.taken == [before, after] and intake.failed == [locked]
    assert sorted(intake.days) == [dt.date(2026, 11, 19), dt.date(2026, 11, 21)]
    assert "locked.csv: could not be landed (PermissionError" in intake.notes[1]
    assert [a["kind"] for a in alerts(settings)] == ["landing_failed"]
    assert locked.exists() and not before.exists() and not after.exists()
    assert len(RawZone(settings.raw_dir).sidecars()) == 2


def test_files_land_in_batches_and_the_budget_is_looked_at_between_them(settings, monkeypatch):
    """A tick's files land ``BATCH_FILES`` at a time; once the time budget is used no new batch
    starts, and the files left wait in landing/ for the next tick."""
    monkeypatch.setattr(landing_watch, "BATCH_FILES", 2)
    paths = [
        meter_file(settings.landing_dir, f"f{i}.csv", "2026-11-20 00:00", 4, meter=f"M{i}")
        for i in range(5)
    ]
    batches = []
    real_land_each = landing_watch.land_each

    def land_each(batch, *args, **kwargs):
        batches.append([path.name for path in batch])
        return real_land_each(batch, *args, **kwargs)

    monkeypatch.setattr(landing_watch, "land_each", land_each)
    clock = iter([0.0, 0.0, 5.0, 20.0])  # the start, then before each batch
    intake = take_files(paths, settings, budget_seconds=10, clock=lambda: next(clock))
    assert batches == [["f0.csv", "f1.csv"], ["f2.csv", "f3.csv"]]
    assert intake.taken == paths[:4]
    assert intake.notes[-1] == "tick time budget used; the other complete files wait"
    assert paths[4].exists()


# ---------------------------------------------------------------------------------------------
# The run-failure alert
# ---------------------------------------------------------------------------------------------


def test_a_failed_run_raises_an_alert(settings, instance):
    @dg.op
    def breaks():
        raise RuntimeError("warehouse on fire")

    @dg.job
    def daily_pipeline():
        breaks()

    result = daily_pipeline.execute_in_process(
        instance=instance, raise_on_error=False, tags={"dagster/partition": "2026-11-20"}
    )
    failure = next(e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE")
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_alert",
        dagster_event=failure,
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        resources={"greenstream": resources_for(settings)["greenstream"]},
    ).for_run_failure()
    run_failure_alert(context)
    (alert,) = alerts(settings)
    assert alert["kind"] == "run_failed"
    assert alert["partition"] == "2026-11-20" and alert["run_id"] == result.run_id
    assert "daily_pipeline for 2026-11-20 failed" in alert["message"]


# ---------------------------------------------------------------------------------------------
# No byte written to landing/ is deleted unread
# ---------------------------------------------------------------------------------------------


def test_a_file_written_to_again_after_it_settled_is_not_taken(settings):
    path = meter_file(settings.landing_dir, "day.csv", "2026-11-20 00:00", 4)
    first = scan(settings.landing_dir, None, 1000.0, SETTLE, 50)
    found = scan(settings.landing_dir, first.cursor(), 1000.0 + SETTLE, SETTLE, 50)
    assert names(found.ready) == ["day.csv"]
    with open(path, "a") as out:  # the writer was only pausing
        out.write("M1,2026-11-20T01:00:00Z,1.0,kW\n")
    intake = take_files(found.ready, settings, expected=found.signatures())
    assert intake.taken == [] and intake.days == {}
    assert "day.csv: changed again" in intake.notes[0]
    assert path.exists() and not settings.raw_dir.exists()
    again = scan(
        settings.landing_dir, found.cursor(taken=intake.taken), 1000.0 + 2 * SETTLE, SETTLE, 50
    )
    assert again.ready == [] and again.waiting == 1  # settles again from now


def test_a_file_written_to_while_being_landed_is_kept(settings, monkeypatch):
    path = meter_file(settings.landing_dir, "day.csv", "2026-11-20 00:00", 4)
    first = scan(settings.landing_dir, None, 1000.0, SETTLE, 50)
    found = scan(settings.landing_dir, first.cursor(), 1000.0 + SETTLE, SETTLE, 50)
    real_land_each = landing_watch.land_each

    def land_then_append(sources, *args, **kwargs):
        landed = real_land_each(sources, *args, **kwargs)
        for source in sources:
            with open(source, "a") as out:
                out.write("M1,2026-11-20T01:00:00Z,1.0,kW\n")
        return landed

    monkeypatch.setattr(landing_watch, "land_each", land_then_append)
    intake = take_files(found.ready, settings, expected=found.signatures())
    assert "changed while being landed" in intake.notes[0]
    assert path.exists() and path.read_text().count("\n") == 6  # header, 4 readings, 1 more
    assert list(intake.days) == [dt.date(2026, 11, 20)]  # the copy taken runs its day
    # the file is looked at afresh: it settles and lands as new bytes
    cursor = found.cursor(taken=intake.taken)
    assert json.loads(cursor) == {}
