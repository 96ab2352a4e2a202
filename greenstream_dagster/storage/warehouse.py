"""The DuckDB warehouse: table definitions and the one way a day's rows are replaced.

Every table that holds daily data has a ``partition_date`` column. A day is always replaced
inside one transaction (delete the day, insert the new rows), so a re-run never doubles rows and
a failure half way leaves the previous rows of that day in place (DESIGN.md section 5).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from ..rules import codes
from ..rules.row_checks import sql_list

# Types of the tables' columns, created before the tables. A clean row's quality is one of
# three codes for ever (DESIGN.md section 2), and it is in millions of rows a day: as an ENUM
# each is one byte, the Parquet archive writes the codes without hashing every row's text
# (for a 50,000-meter day the archive step took 0.72 to 0.74 s instead of 0.87 to 0.91 s,
# three runs each way), and a value outside the three is refused when stored. Readers see
# text: compared, grouped and archived as before.
TYPES: dict[str, str] = {
    "quality_code": f"ENUM {sql_list(codes.QUALITIES)}",
}

# Columns of DESIGN.md section 5, plus a few the pipeline needs to carry state between days;
# the extras are documented in the README.
TABLES: dict[str, str] = {
    # One row per landed file, mirrored from the raw zone's sidecars.
    "raw_files": """
        source_file VARCHAR PRIMARY KEY,
        original_name VARCHAR NOT NULL,
        size_bytes BIGINT NOT NULL,
        arrival_time TIMESTAMPTZ NOT NULL,
        days DATE[] NOT NULL,
        status VARCHAR NOT NULL,
        reason VARCHAR
    """,
    "raw_readings": """
        meter_id VARCHAR,
        "timestamp" VARCHAR,
        energy_value VARCHAR,
        energy_unit VARCHAR,
        extra_fields VARCHAR,
        field_count INTEGER NOT NULL,
        raw_line VARCHAR,
        source_file VARCHAR NOT NULL,
        source_line BIGINT NOT NULL,
        partition_date DATE NOT NULL
    """,
    "standardized_readings": """
        meter_id VARCHAR NOT NULL,
        reading_ts TIMESTAMPTZ NOT NULL,
        kw DOUBLE,
        quality quality_code NOT NULL,
        missing_value BOOLEAN NOT NULL,
        filled BOOLEAN NOT NULL,
        unit_converted BOOLEAN NOT NULL,
        had_duplicates BOOLEAN NOT NULL,
        interval_minutes DOUBLE NOT NULL,
        source_file VARCHAR,
        source_line BIGINT,
        partition_date DATE NOT NULL
    """,
    "quarantine": """
        meter_id VARCHAR,
        "timestamp" VARCHAR,
        energy_value VARCHAR,
        energy_unit VARCHAR,
        reason VARCHAR NOT NULL,
        detail VARCHAR NOT NULL,
        reading_ts TIMESTAMPTZ,
        kw DOUBLE,
        source_file VARCHAR NOT NULL,
        source_line BIGINT NOT NULL,
        partition_date DATE NOT NULL
    """,
    "fault_flags": """
        meter_id VARCHAR NOT NULL,
        rule VARCHAR NOT NULL,
        run_start TIMESTAMPTZ NOT NULL,
        run_end TIMESTAMPTZ NOT NULL,
        partition_date DATE NOT NULL
    """,
    # What the fault rules carry from one day to the next: the open near-zero run and the
    # zero-energy streak of each meter that has one (sparse: other meters have no row).
    "meter_fault_state": """
        meter_id VARCHAR NOT NULL,
        near_zero_run_start TIMESTAMPTZ,
        zero_streak INTEGER NOT NULL,
        zero_streak_start DATE,
        partition_date DATE NOT NULL
    """,
    # What step 8 carries from one day to the next, per meter: how often each spacing (minutes)
    # occurs between consecutive surviving readings within the day (``minutes`` NULL when there
    # is none), and the day's last surviving reading. The next day's interval counts them
    # instead of sorting this day's readings again.
    "meter_spacings": """
        meter_id VARCHAR NOT NULL,
        minutes DOUBLE,
        times BIGINT NOT NULL,
        last_ts TIMESTAMPTZ NOT NULL,
        partition_date DATE NOT NULL
    """,
    # One row per fault episode alerted, so a flag that goes on day after day, or a re-run
    # of a day, never alerts twice.
    "fault_alerts": """
        meter_id VARCHAR NOT NULL,
        rule VARCHAR NOT NULL,
        run_start TIMESTAMPTZ NOT NULL,
        partition_date DATE NOT NULL,
        raised_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (meter_id, rule, run_start)
    """,
    "meter_daily_peaks": """
        meter_id VARCHAR NOT NULL,
        partition_date DATE NOT NULL,
        peak_kw DOUBLE NOT NULL,
        peak_ts TIMESTAMPTZ NOT NULL
    """,
    "system_peaks": """
        partition_date DATE NOT NULL,
        peak_ts TIMESTAMPTZ NOT NULL,
        total_kw DOUBLE NOT NULL,
        meters_reporting INTEGER NOT NULL
    """,
}

# How DuckDB stores the clean rows' columns other than text: the method its own analysis picks
# for them, fixed. Left to choose, it tries every method on every column of each row group it
# writes, and for a 50,000-meter day that analysis was a sixth of the insert: 1.06 to 1.09 s
# against 0.90 to 0.92 s, 2.0 s of CPU against 1.7 s, three inserts each way, with the same
# file size and the same time to read the rows back. The text columns keep the analysis: it is
# what picks their dictionary. (Fixed when a table is created: an older warehouse keeps
# choosing per row group, with the same rows stored.)
COMPRESSION: dict[str, dict[str, str]] = {
    "standardized_readings": {
        "reading_ts": "bitpacking",
        "kw": "alp",
        "quality": "rle",
        "missing_value": "roaring",
        "filled": "roaring",
        "unit_converted": "rle",
        "had_duplicates": "rle",
        "interval_minutes": "rle",
        "source_line": "bitpacking",
        "partition_date": "rle",
    },
}


def table_definition(table: str) -> str:
    """The columns of ``table`` as created: ``TABLES`` with the compression of ``COMPRESSION``."""
    compression = COMPRESSION.get(table, {})
    lines = []
    for line in TABLES[table].strip().splitlines():
        name = line.split()[0].strip('"')
        if name in compression:
            ending = "," if line.rstrip().endswith(",") else ""
            line = f"{line.rstrip().rstrip(',')} USING COMPRESSION {compression[name]}{ending}"
        lines.append(line)
    return "\n".join(lines)


def configure(con: duckdb.DuckDBPyConnection) -> None:
    """Make every session compute in UTC, whatever the machine's zone, keep rows in the order
    they were inserted (DuckDB's default, stated because the archive relies on it: a day's
    clean rows go in by meter and time), create the types and the tables (``table_definition``),
    and convert an older warehouse's quality text once (``_typed_quality``)."""
    con.execute("SET TimeZone = 'UTC'; SET preserve_insertion_order = true")
    for name, definition in TYPES.items():
        con.execute(f"CREATE TYPE IF NOT EXISTS {name} AS {definition}")
    for name in TABLES:
        con.execute(f"CREATE TABLE IF NOT EXISTS {name} ({table_definition(name)})")
    _typed_quality(con)


def _typed_quality(con: duckdb.DuckDBPyConnection) -> None:
    """A warehouse made before ``quality`` was a ``quality_code`` has its text converted,
    once (a value that is not a quality code stops it, naming the value)."""
    found = con.execute(
        """SELECT data_type FROM duckdb_columns()
           WHERE database_name = current_database() AND schema_name = 'main'
             AND table_name = 'standardized_readings' AND column_name = 'quality'"""
    ).fetchall()
    if found == [("VARCHAR",)]:
        try:
            con.execute("ALTER TABLE standardized_readings ALTER quality TYPE quality_code")
        except duckdb.ConversionException as exc:
            exc.add_note(
                "standardized_readings.quality holds a value that is not a quality code: "
                "re-run its days (or delete those rows), then open the warehouse again"
            )
            raise


@contextmanager
def connect(path: Path | str, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """A configured connection to the warehouse file (or ``:memory:`` in tests)."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path), read_only=read_only)
    try:
        if read_only:
            con.execute("SET TimeZone = 'UTC'")
        else:
            configure(con)
        yield con
    finally:
        con.close()


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """One transaction around the caller's statements: committed when they all succeed, rolled
    back on any error (or a kill), so readers never see half of a change."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


@contextmanager
def replacing_days(
    con: duckdb.DuckDBPyConnection, tables: list[str], days: list[dt.date]
) -> Iterator[None]:
    """Delete the rows of ``days`` from ``tables`` and let the caller insert the new ones, all
    in one transaction: readers see the old day or the new one, never a mix, and an error (or a
    kill) anywhere inside leaves the old rows in place."""
    with transaction(con):
        for table in tables:
            con.execute(f"DELETE FROM {table} WHERE partition_date = ANY(?)", [days])
        yield


def replace_days(
    con: duckdb.DuckDBPyConnection, outputs: dict[str, str], days: list[dt.date]
) -> dict[str, int]:
    """Replace the rows of ``days`` in each target table by the rows of a staged relation.

    ``outputs`` maps a warehouse table to the name of a temp table or view holding the new rows
    (same columns); all tables change in one transaction (see ``replacing_days``).
    """
    counts: dict[str, int] = {}
    with replacing_days(con, list(outputs), days):
        for table, staged in outputs.items():
            counts[table] = con.execute(
                f"INSERT INTO {table} BY NAME SELECT * FROM {staged}"
            ).fetchone()[0]
    return counts
