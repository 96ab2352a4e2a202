"""Pandera schemas: the shape every warehouse table must have for one day.

One schema per asset, built from the settings (the kW ceiling is configurable). The Dagster
checks (``orchestration/checks.py``) run them with ``lazy=True`` and show the failure cases.
Every column a check reads is declared, since the checks fetch only the declared columns.
A column's own checks judge each value on its own (checks across rows or columns are the
frame's): validation judges a dictionary-encoded column once per distinct value.

The schemas are Pandera's Polars flavour: DuckDB hands a day's rows over as Arrow, which Polars
reads without a copy and checks on every core. The same schemas on pandas took 1.4 s for the
clean rows of a 50,000-meter day (plus 0.3 s converting them), on Polars 0.2 s.
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData

from ..settings import Settings
from . import codes


def _rows(data: PolarsData, expression: pl.Expr) -> pl.LazyFrame:
    return data.lazyframe.select(expression)


def _utc_day_matches(ts_column: str):
    """Each row's timestamp falls on its partition day (UTC)."""

    def check(data: PolarsData) -> pl.LazyFrame:
        day = pl.col(ts_column).dt.convert_time_zone("UTC").dt.date()
        return _rows(data, day == pl.col("partition_date"))

    return check


def _nonblank(data: PolarsData) -> pl.LazyFrame:
    return _rows(data, pl.col(data.key).str.strip_chars().str.len_bytes() > 0)


def _trimmed(data: PolarsData) -> pl.LazyFrame:
    return _rows(data, pl.col(data.key) == pl.col(data.key).str.strip_chars())


def _quality_is(quality: str, condition: pl.Expr):
    """Rows of ``quality``, and only they, meet ``condition``."""
    return lambda data: _rows(data, (pl.col("quality") == quality) == condition)


def schemas(settings: Settings) -> dict[str, pa.DataFrameSchema]:
    kw_range = pa.Check.in_range(0, settings.max_kw)
    flag = {"dtype": pl.Boolean, "nullable": False}
    kw, missing, filled = pl.col("kw"), pl.col("missing_value"), pl.col("filled")
    return {
        "raw_readings": pa.DataFrameSchema(
            {
                "source_file": pa.Column(pl.String, pa.Check(_nonblank), nullable=False),
                "source_line": pa.Column(pl.Int64, pa.Check.ge(1), nullable=False),
                "field_count": pa.Column(pl.Int32, pa.Check.ge(1), nullable=False),
                "partition_date": pa.Column(pl.Date, nullable=False),
            },
            unique=["source_file", "source_line"],
            name="raw_readings",
        ),
        "standardized_readings": pa.DataFrameSchema(
            {
                "meter_id": pa.Column(
                    pl.String,
                    nullable=False,
                    checks=[
                        pa.Check(_nonblank, error="meter_id is empty"),
                        pa.Check(_trimmed, error="meter_id is not trimmed"),
                    ],
                ),
                "reading_ts": pa.Column(nullable=False),
                "kw": pa.Column(pl.Float64, kw_range, nullable=True),
                "quality": pa.Column(pl.String, pa.Check.isin(codes.QUALITIES), nullable=False),
                "missing_value": pa.Column(**flag),
                "filled": pa.Column(**flag),
                "unit_converted": pa.Column(**flag),
                "had_duplicates": pa.Column(**flag),
                "interval_minutes": pa.Column(pl.Float64, pa.Check.gt(0), nullable=False),
                "source_line": pa.Column(pl.Int64, pa.Check.ge(1), nullable=True),
                "partition_date": pa.Column(pl.Date, nullable=False),
            },
            checks=[
                pa.Check(
                    _utc_day_matches("reading_ts"),
                    error="reading_ts is not on partition_date (UTC)",
                ),
                pa.Check(
                    _quality_is(codes.QUALITY_MEASURED, kw.is_not_null() & ~missing & ~filled),
                    error="measured rows, and only they, have a kW and no missing flag",
                ),
                pa.Check(
                    _quality_is(codes.QUALITY_FILLED, filled),
                    error="filled rows, and only they, are flagged filled",
                ),
                pa.Check(
                    lambda data: _rows(
                        data, (pl.col("quality") != codes.QUALITY_FILLED) | kw.is_not_null()
                    ),
                    error="filled rows have a kW",
                ),
                pa.Check(
                    lambda data: _rows(
                        data, (pl.col("quality") != codes.QUALITY_MISSING) | kw.is_null()
                    ),
                    error="missing rows have no kW",
                ),
                pa.Check(
                    lambda data: _rows(
                        data, missing == (pl.col("quality") != codes.QUALITY_MEASURED)
                    ),
                    error="every row but a measured one is flagged missing_value",
                ),
            ],
            unique=["meter_id", "reading_ts"],
            name="standardized_readings",
        ),
        "quarantine": pa.DataFrameSchema(
            {
                "reason": pa.Column(pl.String, pa.Check.isin(codes.REASONS), nullable=False),
                "detail": pa.Column(pl.String, pa.Check(_nonblank), nullable=False),
                "source_file": pa.Column(pl.String, nullable=False),
                "source_line": pa.Column(pl.Int64, pa.Check.ge(1), nullable=False),
            },
            unique=["source_file", "source_line"],
            name="quarantine",
        ),
        "fault_flags": pa.DataFrameSchema(
            {
                "meter_id": pa.Column(pl.String, nullable=False),
                "rule": pa.Column(pl.String, pa.Check.isin(codes.FAULT_RULES), nullable=False),
                "run_start": pa.Column(nullable=False),
                "run_end": pa.Column(nullable=False),
            },
            checks=[
                pa.Check(
                    lambda data: _rows(data, pl.col("run_end") > pl.col("run_start")),
                    error="run_end is after run_start",
                )
            ],
            unique=["meter_id", "rule"],
            name="fault_flags",
        ),
        "meter_daily_peaks": pa.DataFrameSchema(
            {
                "meter_id": pa.Column(pl.String, nullable=False, unique=True),
                "peak_kw": pa.Column(pl.Float64, kw_range, nullable=False),
                "peak_ts": pa.Column(nullable=False),
                "partition_date": pa.Column(pl.Date, nullable=False),
            },
            checks=[
                pa.Check(
                    _utc_day_matches("peak_ts"), error="peak_ts is not on partition_date (UTC)"
                )
            ],
            name="meter_daily_peaks",
        ),
        "system_peaks": pa.DataFrameSchema(
            {
                "peak_ts": pa.Column(nullable=False),
                "total_kw": pa.Column(pl.Float64, pa.Check.ge(0), nullable=False),
                "meters_reporting": pa.Column(pl.Int32, pa.Check.ge(1), nullable=False),
                "partition_date": pa.Column(pl.Date, nullable=False),
            },
            checks=[
                pa.Check(
                    lambda data: _rows(data, pl.len() <= 1),
                    error="at most one system peak per day",
                ),
                pa.Check(
                    _utc_day_matches("peak_ts"), error="peak_ts is not on partition_date (UTC)"
                ),
            ],
            name="system_peaks",
        ),
    }
