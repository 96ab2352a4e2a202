"""Helpers of the robustness tests (issue 5): land real files, run their days on a warehouse,
and tell what became of each line."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb

from greenstream_dagster import pipeline
from greenstream_dagster.landing import Landed, land_file
from greenstream_dagster.rules.accounting import account_day
from greenstream_dagster.settings import Settings

HEADER = "meter_id,timestamp,energy_value,energy_unit"
DAY = dt.date(2026, 11, 20)
# Arrival of every file unless a test says otherwise: the day after DAY, at midnight UTC.
ARRIVAL = dt.datetime(2026, 11, 21, tzinfo=dt.UTC)


def write_lines(path: Path, lines: list[str], header: str = HEADER, newline: str = "\n") -> Path:
    """A CSV file whose lines are written exactly as given (quoting is the test's business)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((newline.join([header, *lines]) + newline).encode("utf-8"))
    return path


def run_days(
    con: duckdb.DuckDBPyConnection, settings: Settings, days: list[dt.date] | set[dt.date]
) -> None:
    """Every asset but the archive, for each day in order, as the daily job does."""
    for day in sorted(days):
        pipeline.build_raw_readings(con, settings, day)
        pipeline.build_standardized(con, settings, day)
        pipeline.build_fault_flags(con, settings, day)
        pipeline.build_peaks(con, day)


def land_and_run(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    files: list[Path],
    arrivals: list[dt.datetime] | None = None,
) -> list[Landed]:
    """Land ``files`` in order (arrival ARRIVAL, or the given ones) and run the days they touch."""
    arrivals = arrivals or [ARRIVAL] * len(files)
    landed = [
        land_file(path, settings, arrival=arrival)
        for path, arrival in zip(files, arrivals, strict=True)
    ]
    run_days(con, settings, {day for item in landed for day in item.sidecar.days})
    return landed


def line_outcome(con: duckdb.DuckDBPyConnection, sha: str, line: int) -> tuple:
    """What became of one input line: ("clean", meter_id, reading_ts, kw, quality) or
    ("quarantine", reason, detail). Fails when the line is in both or in neither."""
    clean = con.execute(
        """SELECT 'clean', meter_id, reading_ts, kw, quality FROM standardized_readings
           WHERE source_file = ? AND source_line = ?""",
        [sha, line],
    ).fetchall()
    held = con.execute(
        "SELECT 'quarantine', reason, detail FROM quarantine WHERE source_file = ? "
        "AND source_line = ?",
        [sha, line],
    ).fetchall()
    found = clean + held
    assert len(found) == 1, f"line {line} of {sha[:12]} is in {len(found)} places: {found}"
    return found[0]


def assert_balanced(con: duckdb.DuckDBPyConnection, days) -> None:
    """DESIGN.md section 5: raw = clean from raw + quarantine, no line lost or doubled."""
    for day in days:
        result = account_day(con, day)
        assert result.balanced, f"{day}: {result}"


def utc(text: str) -> dt.datetime:
    """'2026-11-20T00:00:00.5Z' -> an aware UTC datetime."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC)
