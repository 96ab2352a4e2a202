"""The warehouse's tables and types, as every connection finds them."""

import datetime as dt

import duckdb
import pyarrow.parquet as pq
import pytest

from greenstream_dagster.rules import codes
from greenstream_dagster.storage import archive, warehouse

ROW = [
    "M1",
    dt.datetime(2026, 11, 20, tzinfo=dt.UTC),
    1.5,
    "filled",
    False,
    True,
    False,
    False,
    15.0,
    "f1",
    2,
    dt.date(2026, 11, 20),
]


def _insert(con, row) -> None:
    con.execute(
        "INSERT INTO standardized_readings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row
    )


def _quality_type(con) -> str:
    [(kind,)] = con.execute(
        """SELECT data_type FROM duckdb_columns()
           WHERE table_name = 'standardized_readings' AND column_name = 'quality'"""
    ).fetchall()
    return kind


def test_quality_is_one_of_the_three_codes_and_reads_as_text(con, tmp_path):
    _insert(con, ROW)
    assert _quality_type(con) == "ENUM('measured', 'filled', 'missing')"
    assert con.execute(
        "SELECT quality, quality = 'filled', quality || '!' FROM standardized_readings"
    ).fetchall() == [("filled", True, "filled!")]
    with pytest.raises(duckdb.ConversionException, match="'guessed'"):
        _insert(con, [*ROW[:3], "guessed", *ROW[4:]])
    written = archive.write_day(con, tmp_path / "archive", dt.date(2026, 11, 20))
    column = pq.read_table(written.path)["quality"]
    assert str(column.type) == "string" and column.to_pylist() == ["filled"]


def test_a_warehouse_with_quality_as_text_has_it_converted_once(tmp_path):
    """A warehouse made before the quality codes were a type: opened, its rows keep their
    quality, now coded; opened again, nothing changes."""
    path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(path)) as old:
        columns = warehouse.TABLES["standardized_readings"].replace("quality_code", "VARCHAR")
        old.execute(f"CREATE TABLE standardized_readings ({columns})")
        for quality in codes.QUALITIES:
            _insert(old, [*ROW[:3], quality, *ROW[4:]])
    for _ in range(2):
        with warehouse.connect(path) as con:
            assert _quality_type(con) == "ENUM('measured', 'filled', 'missing')"
            assert con.execute(
                "SELECT quality FROM standardized_readings ORDER BY quality"
            ).fetchall() == [("measured",), ("filled",), ("missing",)]


def test_a_text_quality_that_is_no_code_stops_the_conversion_naming_it(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(path)) as old:
        columns = warehouse.TABLES["standardized_readings"].replace("quality_code", "VARCHAR")
        old.execute(f"CREATE TABLE standardized_readings ({columns})")
        _insert(old, [*ROW[:3], "estimated", *ROW[4:]])
    with pytest.raises(duckdb.ConversionException, match="'estimated'"):
        with warehouse.connect(path):
            pass


def test_the_clean_rows_numbers_and_flags_keep_their_fixed_compression(tmp_path):
    """Each column of ``COMPRESSION`` is stored with its method whatever the rows: here flags
    that alternate row by row, where DuckDB's own analysis picks bit-packing for them. (A
    segment of one value is stored as a constant all the same: every column varies here.)"""
    fixed = warehouse.COMPRESSION["standardized_readings"]
    with warehouse.connect(tmp_path / "warehouse.duckdb") as con:
        con.execute(
            """INSERT INTO standardized_readings
            SELECT 'M' || (i // 96), TIMESTAMPTZ '2026-11-20' + to_minutes(15 * (i % 96)),
                i / 7, ['measured', 'filled', 'missing'][i % 3 + 1], i % 2 = 0, i % 2 = 1,
                i % 2 = 0, i % 2 = 1, [15.0, 5.0][i // 96 % 2 + 1], 'f1', i + 2,
                DATE '2026-11-20' + CAST(i // 10000 AS INTEGER)
            FROM range(20000) r(i)"""
        )
        con.execute("CHECKPOINT")
        stored = dict(
            con.execute(
                """SELECT column_name, list(DISTINCT lower(compression))
                FROM pragma_storage_info('standardized_readings')
                WHERE segment_type <> 'VALIDITY' GROUP BY ALL"""
            ).fetchall()
        )
    assert {column: stored[column] for column in fixed} == {
        column: [method] for column, method in fixed.items()
    }
