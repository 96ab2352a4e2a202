"""Helpers shared by the tests: build raw rows, run the rules on an in-memory warehouse, write
CSV files. Kept small so each test reads like the contract line it checks."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from pathlib import Path

import duckdb

from greenstream_dagster import pipeline
from greenstream_dagster.settings import Settings

HEADER = "meter_id,timestamp,energy_value,energy_unit"
DEFAULT_ARRIVAL = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def utc(text: str) -> dt.datetime:
    """'2026-11-20 00:15' -> an aware UTC datetime."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def series(
    meter: str, start: str, values: Sequence[object], minutes: int = 15, unit: str = "kW"
) -> list[tuple]:
    """Rows (meter_id, timestamp, value, unit) one interval apart; a None value skips the slot
    (the reading is absent from the file)."""
    first = utc(start)
    rows = []
    for i, value in enumerate(values):
        if value is None:
            continue
        ts = first + dt.timedelta(minutes=minutes * i)
        rows.append((meter, ts.strftime("%Y-%m-%dT%H:%M:%SZ"), str(value), unit))
    return rows


def add_file(
    con: duckdb.DuckDBPyConnection,
    name: str,
    rows: Iterable[tuple],
    day: dt.date,
    arrival: dt.datetime = DEFAULT_ARRIVAL,
    first_line: int = 2,
) -> None:
    """Register a file and put its rows (meter_id, timestamp, energy_value, energy_unit) into
    raw_readings on ``day``, one line each from ``first_line``."""
    con.execute(
        "INSERT OR IGNORE INTO raw_files VALUES (?, ?, 0, ?, [?], 'accepted', NULL)",
        [name, name, arrival, day],
    )
    con.executemany(
        "INSERT INTO raw_readings VALUES (?, ?, ?, ?, NULL, 4, NULL, ?, ?, ?)",
        [(*row, name, first_line + i, day) for i, row in enumerate(rows)],
    )


def run_day(
    con: duckdb.DuckDBPyConnection,
    day: dt.date,
    settings: Settings | None = None,
    faults: bool = True,
    peaks: bool = True,
) -> None:
    """Steps 1-8, then faults and peaks, for one day already in raw_readings."""
    settings = settings or Settings()
    pipeline.build_standardized(con, settings, day)
    if faults:
        pipeline.build_fault_flags(con, settings, day)
    if peaks:
        pipeline.build_peaks(con, day)


def clean_rows(
    con: duckdb.DuckDBPyConnection,
    day: dt.date,
    meter: str | None = None,
    columns: str = "meter_id, strftime(reading_ts, '%Y-%m-%d %H:%M'), kw, quality",
) -> list[tuple]:
    sql = f"SELECT {columns} FROM standardized_readings WHERE partition_date = ?"
    params: list[object] = [day]
    if meter:
        sql += " AND meter_id = ?"
        params.append(meter)
    return con.execute(sql + " ORDER BY meter_id, reading_ts", params).fetchall()


def quarantined(con: duckdb.DuckDBPyConnection, day: dt.date) -> list[tuple]:
    """(source_line, reason) of the day's quarantine, in line order."""
    return con.execute(
        "SELECT source_line, reason FROM quarantine WHERE partition_date = ? "
        "ORDER BY source_file, source_line",
        [day],
    ).fetchall()


def write_csv(path: Path, rows: Iterable[tuple], header: str = HEADER, newline: str = "\n") -> Path:
    lines = [header, *(",".join(map(str, row)) for row in rows)]
    path.write_text(newline.join(lines) + newline, encoding="utf-8")
    return path
