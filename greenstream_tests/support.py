"""Helpers shared by the tests: build raw rows, run the rules on an in-memory warehouse, write
CSV files. Kept small so each test reads like the contract line it checks."""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import duckdb

from greenstream_dagster import landing, pipeline
from greenstream_dagster.rules.meter_csv import read_meter_csv
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


# --- added for the rule tests (issue 2) ------------------------------------------------------


def land_rows(
    con: duckdb.DuckDBPyConnection,
    name: str,
    rows: Iterable[tuple | str],
    arrival: dt.datetime = DEFAULT_ARRIVAL,
    settings: Settings | None = None,
) -> list[dt.date]:
    """Land a file as the pipeline does: write the CSV (a tuple is joined by commas, a str is a
    line as is), read it, place each row on its UTC day and put it into raw_readings. Returns
    the days the file touches."""
    settings = settings or Settings()
    lines = [row if isinstance(row, str) else ",".join(map(str, row)) for row in rows]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "file.csv"
        path.write_text("\n".join([HEADER, *lines]) + "\n", encoding="utf-8")
        table = read_meter_csv(path).table
    placed = landing.placed_file_rows(con, table, name, arrival, settings)
    placed.insert_into("raw_readings")
    con.unregister("file_rows")
    days = [
        d
        for (d,) in con.execute(
            "SELECT DISTINCT partition_date FROM raw_readings WHERE source_file = ? ORDER BY 1",
            [name],
        ).fetchall()
    ]
    con.execute(
        "INSERT OR IGNORE INTO raw_files VALUES (?, ?, 0, ?, ?, 'accepted', NULL)",
        [name, name, arrival, days],
    )
    return days


def raw_days(con: duckdb.DuckDBPyConnection, name: str) -> list[tuple]:
    """(source_line, partition_date) of a file's raw rows, in line order."""
    return con.execute(
        "SELECT source_line, partition_date FROM raw_readings WHERE source_file = ? ORDER BY 1",
        [name],
    ).fetchall()


def quarantine_rows(
    con: duckdb.DuckDBPyConnection,
    day: dt.date,
    columns: str = "source_file, source_line, reason",
) -> list[tuple]:
    """The day's quarantine with the chosen columns, in file and line order."""
    return con.execute(
        f"SELECT {columns} FROM quarantine WHERE partition_date = ? "
        "ORDER BY source_file, source_line",
        [day],
    ).fetchall()


def fault_rows(con: duckdb.DuckDBPyConnection, rule: str | None = None) -> list[tuple]:
    """Every fault flag as (partition_date, meter_id, rule, run_start, run_end), times as
    'YYYY-MM-DD HH:MM' UTC text, in day, meter and rule order."""
    sql = """SELECT partition_date, meter_id, rule, strftime(run_start, '%Y-%m-%d %H:%M'),
                    strftime(run_end, '%Y-%m-%d %H:%M') FROM fault_flags"""
    params: list[object] = []
    if rule:
        sql += " WHERE rule = ?"
        params.append(rule)
    return con.execute(sql + " ORDER BY ALL", params).fetchall()


def meter_peaks(con: duckdb.DuckDBPyConnection, day: dt.date) -> list[tuple]:
    """(meter_id, peak_kw, peak_ts as 'YYYY-MM-DD HH:MM') of the day, by meter."""
    return con.execute(
        """SELECT meter_id, peak_kw, strftime(peak_ts, '%Y-%m-%d %H:%M')
           FROM meter_daily_peaks WHERE partition_date = ? ORDER BY meter_id""",
        [day],
    ).fetchall()


def system_peaks(con: duckdb.DuckDBPyConnection, day: dt.date) -> list[tuple]:
    """(peak_ts as 'YYYY-MM-DD HH:MM', total_kw, meters_reporting) rows of the day."""
    return con.execute(
        """SELECT strftime(peak_ts, '%Y-%m-%d %H:%M'), total_kw, meters_reporting
           FROM system_peaks WHERE partition_date = ? ORDER BY peak_ts""",
        [day],
    ).fetchall()


class Batch:
    """Independent cases run together on one warehouse, so a long table stays fast.

    Case ``k`` writes its rows as usual (meters ``m1``, ``m2`` ...); they are stored under
    meter ``k|m1`` and files ``k/<file>``, so cases share no meter and no file. Reading back
    strips the prefixes, so expectations are written as for a case alone. Only for rules that
    work per meter (steps 1 to 8, faults), never for the system peak.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    @staticmethod
    def meter(case: str, meter: str) -> str:
        """The stored meter id; leading spaces stay in front (meter_id is trimmed)."""
        stripped = meter.lstrip()
        if not stripped:
            return meter
        return meter[: len(meter) - len(stripped)] + f"{case}|{stripped}"

    def add(
        self,
        case: str,
        rows: Iterable[tuple],
        day: dt.date,
        file: str = "a",
        arrival: dt.datetime = DEFAULT_ARRIVAL,
        first_line: int = 2,
    ) -> None:
        rows = [(self.meter(case, row[0]), *row[1:]) for row in rows]
        if not rows:  # a case without rows on this day
            return
        add_file(
            self.con,
            f"{case}/{file}",
            rows,
            day,
            arrival,
            first_line,
        )

    def clean(
        self,
        case: str,
        day: dt.date,
        columns: str = "meter_id, strftime(reading_ts, '%Y-%m-%d %H:%M'), kw, quality",
    ) -> list[tuple]:
        """The case's clean rows of ``day``; ``columns`` must start with meter_id."""
        rows = self.con.execute(
            f"""SELECT {columns} FROM standardized_readings
                WHERE partition_date = ? AND starts_with(meter_id, ?)
                ORDER BY meter_id, reading_ts""",
            [day, f"{case}|"],
        ).fetchall()
        return [(row[0].split("|", 1)[1], *row[1:]) for row in rows]

    def quarantine(self, case: str, day: dt.date) -> list[tuple]:
        """(file, source_line, reason) of the case's quarantine of ``day``."""
        rows = self.con.execute(
            """SELECT source_file, source_line, reason FROM quarantine
               WHERE partition_date = ? AND starts_with(source_file, ?)
               ORDER BY source_file, source_line""",
            [day, f"{case}/"],
        ).fetchall()
        return [(f.split("/", 1)[1], line, reason) for f, line, reason in rows]

    def faults(self, case: str) -> list[tuple]:
        """The case's fault flags as ``fault_rows`` gives them, meter prefix stripped."""
        return [
            (day, meter.split("|", 1)[1], *rest)
            for day, meter, *rest in fault_rows(self.con)
            if meter.startswith(f"{case}|")
        ]
