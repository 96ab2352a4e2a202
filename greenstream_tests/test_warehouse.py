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
