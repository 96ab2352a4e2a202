"""Issue 5, faults: a run killed hard while writing, a locked warehouse, a failing archive write,
and outputs that drifted apart.

The killed runs are child processes; a child that must stop at a precise point wraps its own
warehouse connection (test code only) and waits there to be killed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from greenstream_dagster import pipeline
from greenstream_dagster.landing import land_file
from greenstream_dagster.orchestration.checks import archive_result
from greenstream_dagster.settings import Settings
from greenstream_dagster.storage import archive, warehouse
from greenstream_dagster.storage.raw_zone import RawZone
from greenstream_dagster.storage.warehouse import TABLES

from .helpers import ARRIVAL, DAY, write_lines

METERS = 60

# The child: runs every asset of one day on the file warehouse. MODE names the statement after
# which it stops for good (and is killed): inside replace_days' transaction, after the archive's
# COPY wrote the temp file, or nowhere ("run").
CHILD = r"""
import datetime as dt, sys, time
from pathlib import Path
from greenstream_dagster import pipeline
from greenstream_dagster.settings import Settings
from greenstream_dagster.storage import warehouse

home, day, mode, marker = sys.argv[1:5]
settings = Settings(home=Path(home))
day = dt.date.fromisoformat(day)
STOP_AFTER = {
    "run": None,
    "in_replace_days": "INSERT INTO standardized_readings",
    "in_archive_write": "COPY",
}[mode]


class StoppingConnection:
    def __init__(self, con):
        self._con = con

    def __getattr__(self, name):
        return getattr(self._con, name)

    def execute(self, sql, *args, **kwargs):
        result = self._con.execute(sql, *args, **kwargs)
        if STOP_AFTER and sql.lstrip().startswith(STOP_AFTER):
            Path(marker).write_text("stopped")
            time.sleep(600)
        return result


with warehouse.connect(settings.warehouse_path) as real:
    con = StoppingConnection(real)
    pipeline.build_raw_readings(con, settings, day)
    pipeline.build_standardized(con, settings, day)
    pipeline.build_fault_flags(con, settings, day)
    pipeline.build_peaks(con, day)
    pipeline.build_archive(con, settings, day)
Path(marker).write_text("done")
"""


def day_file(path: Path, value: float, extra_meter: bool = False) -> Path:
    """A day of readings for METERS meters every 15 minutes (with a few gaps and bad rows)."""
    start = dt.datetime.combine(DAY, dt.time(), dt.UTC)
    lines = []
    for m in range(METERS):
        for i in range(96):
            if (i + m) % 17 == 0:
                continue  # a gap
            ts = start + dt.timedelta(minutes=15 * i)
            lines.append(f"m{m:03d},{ts:%Y-%m-%dT%H:%M:%SZ},{value + (i % 7) / 10:.3f},kW")
    lines += ["bad,yesterday,1,kW", "m000,2026-11-20T00:00:00Z,-4,kW"]
    if extra_meter:
        lines.append("late,2026-11-20T12:00:00Z,2.5,kW")
    return write_lines(path, lines)


def snapshot(home: Path) -> dict[str, list]:
    """Every table's rows for DAY (fault_alerts without its wall-clock column), the archived
    day's rows, what a reader of the whole archive gets, and the files in the day's folder."""
    state: dict[str, list] = {}
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        for table in TABLES:
            columns = "* EXCLUDE (raised_at)" if table == "fault_alerts" else "*"
            where = "" if table == "raw_files" else f" WHERE partition_date = DATE '{DAY}'"
            state[table] = con.execute(
                f"SELECT {columns} FROM {table}{where} ORDER BY ALL"
            ).fetchall()
        path = archive.day_path(home / "archive" / "readings", DAY)
        state["archive"] = (
            con.execute(f"SELECT * FROM read_parquet('{path}') ORDER BY ALL").fetchall()
            if path.exists()
            else None
        )
        # What a reader globbing the whole archive gets (hidden files included).
        state["archive_glob"] = (
            con.execute(
                f"SELECT count(*) FROM read_parquet('{home}/archive/readings/**')"
            ).fetchall()
            if path.exists()
            else None
        )
    state["archive_files"] = sorted(p.name for p in path.parent.iterdir()) if path.exists() else []
    return state


class Homes:
    """The data homes of the kill test: the day processed from one file (``old``), and the same
    after a correcting file, processed without interruption (``new``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.child = root / "child.py"
        self.child.write_text(CHILD)
        self.first = day_file(root / "in" / "first.csv", 1.0)
        self.correction = day_file(root / "in" / "correction.csv", 2.0, extra_meter=True)
        self.base = root / "base"
        land_file(self.first, Settings(home=self.base), arrival=ARRIVAL)
        assert self.run_child(self.base, "run").wait(timeout=120) == 0
        self.old = snapshot(self.base)
        reference = self.copy_with_correction("reference")
        started = time.monotonic()
        assert self.run_child(reference, "run").wait(timeout=120) == 0
        self.run_seconds = time.monotonic() - started
        self.new = snapshot(reference)
        assert self.old["standardized_readings"] != self.new["standardized_readings"]

    def copy_with_correction(self, name: str) -> Path:
        home = self.root / name
        shutil.copytree(self.base, home)
        self.marker(home).unlink(missing_ok=True)
        land_file(self.correction, Settings(home=home), arrival=ARRIVAL + dt.timedelta(hours=1))
        return home

    def marker(self, home: Path) -> Path:
        return self.root / f"{home.name}.marker"

    def run_child(self, home: Path, mode: str) -> subprocess.Popen:
        self.marker(home).unlink(missing_ok=True)
        return subprocess.Popen(
            [
                sys.executable,
                str(self.child),
                str(home),
                DAY.isoformat(),
                mode,
                str(self.marker(home)),
            ],
        )


@pytest.fixture(scope="module")
def homes(tmp_path_factory) -> Homes:
    return Homes(tmp_path_factory.mktemp("kill"))


def kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 60) -> None:
    """Until the child says it stopped where it was told to."""
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text() == "stopped"):
        assert process.poll() is None, "the child ended before reaching the stop"
        assert time.monotonic() < deadline, "the child never reached the stop"
        time.sleep(0.02)


def assert_each_output_old_or_new(state, homes: Homes) -> None:
    for key, rows in state.items():
        assert rows in (homes.old[key], homes.new[key]), f"{key} is neither the old nor the new"


def assert_rerun_matches_uninterrupted(home: Path, homes: Homes) -> None:
    assert homes.run_child(home, "run").wait(timeout=120) == 0
    assert snapshot(home) == homes.new
    staging = archive.staging_dir(home / "archive" / "readings")
    assert list(staging.iterdir()) == []


def test_killed_inside_the_day_replacement_keeps_the_previous_day(homes):
    home = homes.copy_with_correction("in_replace_days")
    child = homes.run_child(home, "in_replace_days")
    wait_for(homes.marker(home), child)
    kill(child)
    state = snapshot(home)
    # raw_readings was committed before; the clean rows and quarantine are exactly the old ones.
    assert state["raw_readings"] == homes.new["raw_readings"]
    for key in ("standardized_readings", "quarantine", "fault_flags", "system_peaks", "archive"):
        assert state[key] == homes.old[key], key
    assert_rerun_matches_uninterrupted(home, homes)


def test_killed_while_writing_the_archive_leaves_the_old_file_visible(homes):
    home = homes.copy_with_correction("in_archive_write")
    child = homes.run_child(home, "in_archive_write")
    wait_for(homes.marker(home), child)
    kill(child)
    # Stopped half way indeed: the new day is written, but only to the staging folder.
    assert len(list(archive.staging_dir(home / "archive" / "readings").iterdir())) == 1
    state = snapshot(home)
    assert state["standardized_readings"] == homes.new["standardized_readings"]
    assert state["archive"] == homes.old["archive"]
    assert state["archive_files"] == [archive.FILE_NAME]
    assert_rerun_matches_uninterrupted(home, homes)


@pytest.mark.parametrize("trial", range(3))
def test_killed_at_a_random_moment(homes, trial):
    home = homes.copy_with_correction(f"random{trial}")
    child = homes.run_child(home, "run")
    # The child spends its first moments importing; kill it while it works on the day.
    time.sleep(random.Random(trial).uniform(0.4, 1.0) * homes.run_seconds)
    kill(child)
    assert_each_output_old_or_new(snapshot(home), homes)
    assert_rerun_matches_uninterrupted(home, homes)


# --- a locked warehouse -------------------------------------------------------------------------

HOLDER = r"""
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""

# ``greenstream process`` with dagster's connection backoff and the assets' retry delays made
# short (test only): a run that cannot succeed then gives up in seconds instead of minutes.
FAST_RETRIES_CLI = r"""
import itertools, sys
import dagster as dg
import dagster._utils.backoff as backoff
backoff.exponential_delay_generator = lambda *a, **k: itertools.repeat(0.01)
policy = dg.RetryPolicy
dg.RetryPolicy = lambda **kwargs: policy(**{**kwargs, "delay": 0.05})
from greenstream_dagster.cli import main
sys.exit(main(sys.argv[1:]))
"""


def hold_lock(path: Path, seconds: float) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "locked"
    return holder


def cli_env(home: Path) -> dict[str, str]:
    env = {**os.environ, "GREENSTREAM_HOME": str(home)}
    for name in ("DAGSTER_HOME", "GREENSTREAM_ALERT_WEBHOOK"):
        env.pop(name, None)
    return env


def run_cli(home: Path, *command: str, prefix: list[str] | None = None):
    """``python COMMAND...`` against the data home, as an operator runs it, to its end."""
    return subprocess.run(
        [*(prefix or []), sys.executable, *command],
        env=cli_env(home),
        capture_output=True,
        text=True,
        timeout=300,
    )


def processed_home(tmp_path: Path) -> tuple[Path, Path]:
    """A data home with DAY processed from one small file, and a second file for DAY."""
    home = tmp_path / "home"
    settings = Settings(home=home)
    first = write_lines(tmp_path / "in" / "first.csv", ["m1,2026-11-20T00:00:00Z,1.5,kW"])
    land_file(first, settings)
    with warehouse.connect(settings.warehouse_path) as con:
        for build in (pipeline.build_raw_readings, pipeline.build_standardized):
            build(con, settings, DAY)
        pipeline.build_archive(con, settings, DAY)
    second = write_lines(tmp_path / "in" / "second.csv", ["m2,2026-11-20T00:00:00Z,2.5,kW"])
    return home, second


def clean_meters(home: Path) -> list[tuple]:
    with warehouse.connect(home / "warehouse.duckdb", read_only=True) as con:
        return con.execute(
            "SELECT meter_id, kw FROM standardized_readings WHERE partition_date = ? ORDER BY 1",
            [DAY],
        ).fetchall()


def alerts(home: Path) -> list[dict]:
    path = home / "alerts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_locked_warehouse_run_waits_and_succeeds(tmp_path):
    """One day's run (the same call ``greenstream process`` makes) while another process holds
    the warehouse for a few seconds: it waits with backoff and succeeds."""
    from greenstream_dagster.process import run_days

    home, second = processed_home(tmp_path)
    settings = Settings(home=home)
    land_file(second, settings)
    holder = hold_lock(settings.warehouse_path, 3)
    try:
        [outcome] = run_days([DAY], settings, dg.DagsterInstance.ephemeral())
    finally:
        kill(holder)
    assert (outcome.success, outcome.failed_steps, outcome.failed_checks) == (True, [], [])
    assert clean_meters(home) == [("m1", 1.5), ("m2", 2.5)]
    assert alerts(home) == []


def test_locked_warehouse_process_command_waits_and_succeeds(tmp_path):
    """``greenstream process`` finds the warehouse locked when it needs it (right after landing
    its file), and the lock goes away two seconds later."""
    home, second = processed_home(tmp_path)
    holder = hold_lock(home / "warehouse.duckdb", 600)
    try:
        command = subprocess.Popen(
            [sys.executable, "-m", "greenstream_dagster.cli", "process", str(second)],
            env=cli_env(home),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        while len(RawZone(home / "raw").sidecars()) < 2 and command.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(2)
    finally:
        kill(holder)
    stdout, stderr = command.communicate(timeout=300)
    done = subprocess.CompletedProcess(command.args, command.returncode, stdout, stderr)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "day 2026-11-20: OK" in done.stdout
    assert clean_meters(home) == [("m1", 1.5), ("m2", 2.5)]


def test_warehouse_locked_for_good_fails_clearly_with_an_alert(tmp_path):
    home, second = processed_home(tmp_path)
    holder = hold_lock(home / "warehouse.duckdb", 600)
    try:
        done = run_cli(home, "-c", FAST_RETRIES_CLI, "process", str(second))
    finally:
        kill(holder)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "lock" in done.stderr.lower()
    failed = [a for a in alerts(home) if a["kind"] == "run_failed"]
    assert failed and "2026-11-20" in failed[0]["message"]
    # The previous outputs of the day are intact.
    assert clean_meters(home) == [("m1", 1.5)]


# --- the archive write failing ------------------------------------------------------------------


def unprivileged() -> list[str]:
    """A command prefix under which file permissions apply (root ignores them otherwise)."""
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: a read-only folder would not stop writes")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]


def test_archive_write_failing_leaves_nothing_partial_and_fails_the_run(tmp_path):
    home, second = processed_home(tmp_path)
    day_dir = archive.day_path(home / "archive" / "readings", DAY).parent
    before = (day_dir / archive.FILE_NAME).read_bytes()
    day_dir.chmod(0o555)
    try:
        done = run_cli(home, "-c", FAST_RETRIES_CLI, "process", str(second), prefix=unprivileged())
    finally:
        day_dir.chmod(0o755)
    assert done.returncode == 1, done.stdout + done.stderr[-3000:]
    assert "parquet_archive" in done.stderr
    assert "Traceback" not in done.stderr
    assert "day 2026-11-20: FAILED" in done.stdout
    assert sorted(p.name for p in day_dir.iterdir()) == [archive.FILE_NAME]
    assert (day_dir / archive.FILE_NAME).read_bytes() == before
    failed = [a for a in alerts(home) if a["kind"] == "run_failed"]
    assert len(failed) == 1 and "parquet_archive" in failed[0]["message"]

    # Once the folder is writable again, the next run completes and the outputs agree.
    from greenstream_dagster.process import process_files

    again = process_files([second], Settings(home=home))
    assert again.ok, again.failure_message()
    assert archive.count_rows(home / "archive" / "readings", DAY) == len(clean_meters(home)) == 2


# --- the disk filling up during the archive write ---------------------------------------------

# ``greenstream process`` (with short retry delays) on a disk that is full for the archive: while
# the day's Parquet file is written the process may write files of at most LIMIT bytes
# (RLIMIT_FSIZE, the kernel's own file-size quota), so the write really fails half way, with
# EFBIG. The quota is set for that write only, as the warehouse file written before it is
# larger than the day's Parquet file; every retry of the step meets the full disk again. (A
# small tmpfs would give ENOSPC, but mounting one needs root or a user namespace, which CI
# runners often forbid; a file-size quota works for any user.)
DISK_FULL_CLI = r"""
import itertools, resource, signal, sys
import dagster as dg
import dagster._utils.backoff as backoff
backoff.exponential_delay_generator = lambda *a, **k: itertools.repeat(0.01)
policy = dg.RetryPolicy
dg.RetryPolicy = lambda **kwargs: policy(**{**kwargs, "delay": 0.05})
from greenstream_dagster.storage import archive

LIMIT = int(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the quota a write fails, nothing is killed
write_day = archive.write_day


def write_day_on_a_full_disk(*args, **kwargs):
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, hard))
    try:
        return write_day(*args, **kwargs)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


archive.write_day = write_day_on_a_full_disk
from greenstream_dagster.cli import main
sys.exit(main(sys.argv[2:]))
"""
FULL_AT_BYTES = 2048


def files_under(folder: Path) -> list[str]:
    """Every file and folder below ``folder`` (hidden ones included), relative to it."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


@pytest.mark.parametrize("previous", ["day archived before", "first archive of the day"])
def test_disk_full_during_the_archive_write_fails_the_run_and_keeps_the_previous_day(
    homes, previous
):
    home = homes.copy_with_correction("disk_full_" + previous.split()[0])
    readings = home / "archive" / "readings"
    if previous == "first archive of the day":
        shutil.rmtree(home / "archive")
        kept = []
        before = None
    else:
        kept = files_under(readings)
        assert kept == [f"date={DAY}", f"date={DAY}/{archive.FILE_NAME}"]
        before = archive.day_path(readings, DAY).read_bytes()
    new_size = archive.day_path(homes.root / "reference" / "archive" / "readings", DAY).stat()
    assert new_size.st_size > 4 * FULL_AT_BYTES  # the write fails well after it began

    done = run_cli(home, "-c", DISK_FULL_CLI, str(FULL_AT_BYTES), "process", str(homes.correction))
    assert done.returncode == 1, done.stdout + done.stderr[-3000:]
    assert "day 2026-11-20: FAILED" in done.stdout
    assert "failed: parquet_archive" in done.stdout
    assert "File too large" in done.stderr  # the kernel refused the write: EFBIG
    assert "Traceback" not in done.stderr
    failed = [a for a in alerts(home) if a["kind"] == "run_failed"]
    assert len(failed) == 1 and "parquet_archive" in failed[0]["message"]

    # The warehouse holds the new day (its transaction committed before the archive step); the
    # archive still holds exactly what it held, and nothing half written is anywhere.
    state = snapshot(home)
    assert state["standardized_readings"] == homes.new["standardized_readings"]
    assert files_under(readings) == kept
    if before is None:
        assert state["archive"] is None
    else:
        assert archive.day_path(readings, DAY).read_bytes() == before
        assert state["archive"] == homes.old["archive"]
    assert files_under(archive.staging_dir(readings)) == []

    # Space again: the same command succeeds and gives what an uninterrupted run gives.
    again = run_cli(home, "-m", "greenstream_dagster.cli", "process", str(homes.correction))
    assert again.returncode == 0, again.stdout + again.stderr[-3000:]
    assert "day 2026-11-20: OK" in again.stdout
    assert snapshot(home) == homes.new
    assert files_under(readings) == [f"date={DAY}", f"date={DAY}/{archive.FILE_NAME}"]
    assert files_under(archive.staging_dir(readings)) == []


# --- outputs that drifted apart -----------------------------------------------------------------


def check_archive(settings: Settings) -> dg.AssetCheckResult:
    with warehouse.connect(settings.warehouse_path) as con:
        return archive_result(con, settings, DAY)


def test_archive_and_warehouse_drifting_apart_is_caught(tmp_path):
    home, _ = processed_home(tmp_path)
    settings = Settings(home=home)
    assert check_archive(settings).passed

    with warehouse.connect(settings.warehouse_path) as con:
        con.execute(
            "INSERT INTO standardized_readings SELECT * REPLACE ('m9' AS meter_id) "
            "FROM standardized_readings WHERE partition_date = ?",
            [DAY],
        )
    result = check_archive(settings)
    assert not result.passed
    assert result.severity == dg.AssetCheckSeverity.ERROR
    assert (result.metadata["warehouse_rows"].value, result.metadata["archived_rows"].value) == (
        2,
        1,
    )

    archive.day_path(settings.archive_dir, DAY).unlink()
    result = check_archive(settings)
    assert not result.passed
    assert (result.metadata["warehouse_rows"].value, result.metadata["archived_rows"].value) == (
        2,
        -1,
    )
