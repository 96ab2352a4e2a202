"""Issue 5, load, end to end: 200 files dropped at once into landing/ of a real `dagster dev`
(web server and daemon) with the deployment's `deploy/dagster.yaml` (one run at a time, one
warehouse step at a time), watched through the GraphQL API the web UI uses.

The files are small (two meters each, an hour of readings, some with a malformed line), over
three days, and 15 of them are re-uploads of earlier files' bytes under new names. What must
come out, computed here from the files written, not from the pipeline's own accounting:

- every distinct file in the raw zone once, each of its lines in the day's raw rows once;
  landing/ empty; the re-uploads started nothing;
- every run succeeded, and no run overlapped another;
- each day: every raw line is in the clean data or in quarantine, exactly once; the clean data,
  the quarantine and the Parquet archive hold exactly the expected rows.

Run alone with ``pytest -m integration``. About two minutes on two cores.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
from collections import Counter

import duckdb
import pytest

from .test_dagster_dev import (
    REPO,
    TERMINAL,
    Api,
    drop,
    free_port,
    log_tail,
    run_day,
    serving,
    wait_for,
)

pytestmark = [
    pytest.mark.integration,
    # the dagster-graphql client calls gql in a way gql deprecates; not ours to fix
    pytest.mark.filterwarnings("ignore::DeprecationWarning:gql"),
]

HEADER = "meter_id,timestamp,energy_value,energy_unit"
FILES = 200
REUPLOADS = 15  # of the 200, this many repeat an earlier file's bytes under a new name
METERS_PER_FILE = 2
READINGS = 4  # per meter: one hour of 15-minute readings, no gap
MALFORMED_EVERY = 10  # every tenth file has one line with too few fields
PER_TICK = 100
# Three consecutive past UTC days, partitions wherever and whenever this runs.
DAYS = [dt.datetime.now(dt.UTC).date() - dt.timedelta(days=k) for k in (6, 5, 4)]

STARTUP_TIMEOUT = 90
SETTLE_TIMEOUT = 150

RUNS = """{ runsOrError { ... on Runs { results {
    runId status startTime endTime tags { key value } } } } }"""

TICKS = """query($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) { ... on Sensor { sensorState { ticks(limit: 5) {
    status timestamp } } } } }"""

TICK_LOGS = """query($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) { ... on Sensor { sensorState { ticks(limit: 100) {
    logEvents { events { message } } } } } } }"""

SELECTOR = {
    "repositoryLocationName": "greenstream",
    "repositoryName": "__repository__",
    "sensorName": "landing_sensor",
}


def export(i: int) -> tuple[dt.date, str]:
    """Distinct file ``i``: its day and text. Meters are unique to the file and its readings
    are consecutive, so no step adds or drops a row: the clean rows are exactly its readings."""
    day = DAYS[i % len(DAYS)]
    start = dt.datetime.combine(day, dt.time(), dt.UTC) + dt.timedelta(minutes=15 * (i % 80))
    lines = [HEADER]
    for k in range(METERS_PER_FILE):
        for r in range(READINGS):
            ts = (start + dt.timedelta(minutes=15 * r)).strftime("%Y-%m-%dT%H:%M:%SZ")
            value = f"{400 + 100 * r},W" if k else f"{1 + r / 10:.1f},kW"
            lines.append(f"F{i:03d}-{k},{ts},{value}")
    if i % MALFORMED_EVERY == 0:
        lines.append(f"F{i:03d}-0,{start:%Y-%m-%dT%H:%M:%SZ},1.5")  # malformed_row
    return day, "\n".join(lines) + "\n"


class Expected:
    """What the files written must give, per day and per file (by SHA-256)."""

    def __init__(self) -> None:
        self.texts: dict[str, str] = {}  # name -> text, all 200
        self.day_of: dict[str, dt.date] = {}  # sha -> day, distinct files
        self.names_of: dict[str, set[str]] = {}  # sha -> every name its bytes were dropped as
        self.raw_lines: dict[dt.date, set[tuple[str, int]]] = {d: set() for d in DAYS}
        self.clean = Counter()
        self.quarantined = Counter()
        files = [(f"export_{i:03d}.csv", *export(i)) for i in range(FILES - REUPLOADS)]
        # The re-uploads come last, as a second upload of the same export would.
        files += [(f"again_{j:03d}.csv", *files[7 * j][1:]) for j in range(REUPLOADS)]
        for name, day, text in files:
            self.texts[name] = text
            sha = hashlib.sha256(text.encode()).hexdigest()
            self.names_of.setdefault(sha, set()).add(name)
            if sha in self.day_of:
                continue
            self.day_of[sha] = day
            body = text.splitlines()[1:]
            self.raw_lines[day] |= {(sha, n) for n in range(2, len(body) + 2)}
            self.quarantined[day] += sum(line.count(",") != 3 for line in body)
            self.clean[day] += sum(line.count(",") == 3 for line in body)


def accounting(con: duckdb.DuckDBPyConnection, day: dt.date) -> dict[str, object]:
    """Each raw line of the day and where it went, counted here in plain SQL."""
    raw = set(
        con.execute(
            "SELECT source_file, source_line FROM raw_readings WHERE partition_date = ?", [day]
        ).fetchall()
    )
    outcomes = con.execute(
        """SELECT source_file, source_line, count(*) FROM (
               SELECT source_file, source_line FROM standardized_readings
               WHERE partition_date = $day AND source_line IS NOT NULL
               UNION ALL
               SELECT source_file, source_line FROM quarantine WHERE partition_date = $day)
           GROUP BY ALL""",
        {"day": day},
    ).fetchall()
    return {
        "raw": raw,
        "raw_rows": con.execute(
            "SELECT count(*) FROM raw_readings WHERE partition_date = ?", [day]
        ).fetchone()[0],
        "placed_once": {(f, n) for f, n, c in outcomes if c == 1},
        "placed_more": sorted((f, n) for f, n, c in outcomes if c > 1),
        "clean": con.execute(
            "SELECT count(*), count(source_line), count(*) FILTER (WHERE quality = 'measured') "
            "FROM standardized_readings WHERE partition_date = ?",
            [day],
        ).fetchone(),
        "quarantine": con.execute(
            "SELECT reason, count(*) FROM quarantine WHERE partition_date = ? GROUP BY ALL",
            [day],
        ).fetchall(),
    }


def test_200_files_at_once_through_the_daemon(tmp_path, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    home, dagster_home, log = tmp_path / "home", tmp_path / "dagster_home", tmp_path / "dev.log"
    landing = home / "landing"
    landing.mkdir(parents=True)
    dagster_home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", dagster_home / "dagster.yaml")
    expected = Expected()
    assert len(expected.texts) == FILES and len(expected.day_of) == FILES - REUPLOADS

    port = free_port()
    env = {
        **os.environ,
        "GREENSTREAM_HOME": str(home),
        "DAGSTER_HOME": str(dagster_home),
        "GREENSTREAM_SETTLE_SECONDS": "1",
        # Two ticks' worth of files: each tick runs the three days, so every day is run twice,
        # the second time replacing its outputs. (The default, 50, means four ticks and twelve
        # runs, about eight seconds each plus the launch of a run worker: too long for CI.)
        "GREENSTREAM_MAX_FILES_PER_TICK": str(PER_TICK),
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "PYTHONWARNINGS": "ignore",
    }
    env.pop("GREENSTREAM_ALERT_WEBHOOK", None)
    api = Api(port)
    try:
        with serving(env, port, log, api, STARTUP_TIMEOUT):
            # --- 200 files at once, each written aside and renamed in, as uploaders do -------
            for name, text in expected.texts.items():
                drop(landing, name, text)

            def settled():
                """Every file taken, a tick since then that found nothing new (so every run
                the sensor asked for exists), and every run finished."""
                if any(landing.iterdir()):
                    return None
                ticks = api(TICKS, selector=SELECTOR)["sensorOrError"]["sensorState"]["ticks"]
                latest = max(ticks, key=lambda t: t["timestamp"])
                if latest["status"] != "SKIPPED":
                    return None
                runs = api(RUNS)["runsOrError"]["results"]
                done = runs and all(r["status"] in TERMINAL for r in runs)
                return runs if done else None

            runs = wait_for("the files' runs", settled, SETTLE_TIMEOUT, log, every=2)
            # Every run succeeded, one at a time: each started after the one before ended.
            assert [r["status"] for r in runs] == ["SUCCESS"] * len(runs), runs
            in_order = sorted(runs, key=lambda r: r["startTime"])
            for before, after in zip(in_order, in_order[1:], strict=False):
                assert after["startTime"] >= before["endTime"], (before, after)
            # The 185 new files took at least two ticks, each with files of every day.
            run_days = [run_day(r) for r in in_order]
            assert sorted(set(run_days)) == [d.isoformat() for d in DAYS]
            assert min(Counter(run_days).values()) >= 2, run_days
            # What the sensor said of each file, as the UI shows it in the ticks.
            ticks = api(TICK_LOGS, selector=SELECTOR)["sensorOrError"]["sensorState"]["ticks"]
            told = [e["message"] for t in ticks for e in t["logEvents"]["events"]]

            # --- the warehouse, read while the server still runs (no run active) -------------
            with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
                found = {day: accounting(con, day) for day in DAYS}
                raw_files = con.execute(
                    "SELECT source_file, original_name, status FROM raw_files"
                ).fetchall()
            with duckdb.connect() as con:
                archived = {
                    day: con.execute(
                        "SELECT count(*) FROM read_parquet(?)",
                        [str(home / "archive" / "readings" / f"date={day}" / "*.parquet")],
                    ).fetchone()[0]
                    for day in DAYS
                }
    except BaseException:
        print(log_tail(log))  # shown with the failure
        raise

    # --- the raw zone: every distinct file once, under one of the names its bytes came as -----
    landed = [m for m in told if ": landed [" in m]
    assert sorted(m.split(":")[0] for m in landed) == sorted(
        n for n in expected.texts if n.startswith("export_")
    )
    for j in range(REUPLOADS):
        assert any(
            m.startswith(f"again_{j:03d}.csv: same bytes already landed as export_{7 * j:03d}.csv")
            and m.endswith("nothing to run")
            for m in told
        ), j
    assert list(landing.iterdir()) == []
    stored = sorted(p.name for p in (home / "raw").iterdir() if not p.name.endswith(".json"))
    assert stored == sorted(expected.day_of)
    assert len(raw_files) == len(expected.day_of)
    for sha, name, status in raw_files:
        assert status == "accepted" and name in expected.names_of[sha], (sha, name)

    # --- each day: its lines in exactly once, each placed exactly once, the counts expected ---
    for day in DAYS:
        day_found = found[day]
        assert day_found["raw"] == expected.raw_lines[day], day
        assert day_found["raw_rows"] == len(expected.raw_lines[day]), day  # no line twice
        assert day_found["placed_once"] == expected.raw_lines[day], day
        assert day_found["placed_more"] == [], day
        clean = expected.clean[day]
        assert day_found["clean"] == (clean, clean, clean), day
        assert day_found["quarantine"] == [("malformed_row", expected.quarantined[day])], day
        assert archived[day] == clean, day
    print(f"{len(runs)} runs, in start order: {run_days}")
