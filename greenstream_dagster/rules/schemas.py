"""Pandera schemas: the shape every warehouse table must have for one day.

One schema per asset, built from the settings (the kW ceiling is configurable). The Dagster
checks (``orchestration/checks.py``) run them with ``lazy=True`` and show the failure cases.
Every column a check reads is declared, since the checks fetch only the declared columns.
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa

from ..settings import Settings
from . import codes


def _utc_day_matches(df: pd.DataFrame, ts_column: str) -> pd.Series:
    """Each row's timestamp falls on its partition day (UTC)."""
    # Vectorised: .dt.date would build one Python date object per row.
    days = df[ts_column].dt.tz_convert("UTC").dt.tz_localize(None).dt.floor("D")
    return days == pd.to_datetime(df["partition_date"])


def _nonblank(series: pd.Series) -> pd.Series:
    return series.str.strip().str.len() > 0


def schemas(settings: Settings) -> dict[str, pa.DataFrameSchema]:
    kw_range = pa.Check.in_range(0, settings.max_kw)
    flag = {"dtype": "bool", "nullable": False}
    return {
        "raw_readings": pa.DataFrameSchema(
            {
                "source_file": pa.Column(nullable=False, checks=pa.Check(_nonblank)),
                "source_line": pa.Column("int64", pa.Check.ge(1), nullable=False),
                "field_count": pa.Column("int32", pa.Check.ge(1), nullable=False),
                "partition_date": pa.Column(nullable=False),
            },
            unique=["source_file", "source_line"],
            name="raw_readings",
        ),
        "standardized_readings": pa.DataFrameSchema(
            {
                "meter_id": pa.Column(
                    nullable=False,
                    checks=[
                        pa.Check(_nonblank, error="meter_id is empty"),
                        pa.Check(lambda s: s == s.str.strip(), error="meter_id is not trimmed"),
                    ],
                ),
                "reading_ts": pa.Column(nullable=False),
                "kw": pa.Column("float64", kw_range, nullable=True),
                "quality": pa.Column(checks=pa.Check.isin(codes.QUALITIES), nullable=False),
                "missing_value": pa.Column(**flag),
                "filled": pa.Column(**flag),
                "unit_converted": pa.Column(**flag),
                "had_duplicates": pa.Column(**flag),
                "interval_minutes": pa.Column("float64", pa.Check.gt(0), nullable=False),
                "source_line": pa.Column(checks=pa.Check.ge(1), nullable=True),
                "partition_date": pa.Column(nullable=False),
            },
            checks=[
                pa.Check(
                    lambda df: _utc_day_matches(df, "reading_ts"),
                    error="reading_ts is not on partition_date (UTC)",
                ),
                pa.Check(
                    lambda df: (
                        (df["quality"] == codes.QUALITY_MEASURED)
                        == (df["kw"].notna() & ~df["missing_value"] & ~df["filled"])
                    ),
                    error="measured rows, and only they, have a kW and no missing flag",
                ),
                pa.Check(
                    lambda df: (
                        (df["quality"] == codes.QUALITY_FILLED)
                        == (df["filled"] & df["kw"].notna() & df["missing_value"])
                    ),
                    error="filled rows, and only they, are flagged filled and have a kW",
                ),
                pa.Check(
                    lambda df: (df["quality"] != codes.QUALITY_MISSING) | df["kw"].isna(),
                    error="missing rows have no kW",
                ),
            ],
            unique=["meter_id", "reading_ts"],
            name="standardized_readings",
        ),
        "quarantine": pa.DataFrameSchema(
            {
                "reason": pa.Column(checks=pa.Check.isin(codes.REASONS), nullable=False),
                "detail": pa.Column(checks=pa.Check(_nonblank), nullable=False),
                "source_file": pa.Column(nullable=False),
                "source_line": pa.Column("int64", pa.Check.ge(1), nullable=False),
            },
            unique=["source_file", "source_line"],
            name="quarantine",
        ),
        "fault_flags": pa.DataFrameSchema(
            {
                "meter_id": pa.Column(nullable=False),
                "rule": pa.Column(checks=pa.Check.isin(codes.FAULT_RULES), nullable=False),
                "run_start": pa.Column(nullable=False),
                "run_end": pa.Column(nullable=False),
            },
            checks=[
                pa.Check(
                    lambda df: df["run_end"] > df["run_start"],
                    error="run_end is after run_start",
                )
            ],
            unique=["meter_id", "rule"],
            name="fault_flags",
        ),
        "meter_daily_peaks": pa.DataFrameSchema(
            {
                "meter_id": pa.Column(nullable=False, unique=True),
                "peak_kw": pa.Column("float64", kw_range, nullable=False),
                "peak_ts": pa.Column(nullable=False),
                "partition_date": pa.Column(nullable=False),
            },
            checks=[
                pa.Check(
                    lambda df: _utc_day_matches(df, "peak_ts"),
                    error="peak_ts is not on partition_date (UTC)",
                )
            ],
            name="meter_daily_peaks",
        ),
        "system_peaks": pa.DataFrameSchema(
            {
                "peak_ts": pa.Column(nullable=False),
                "total_kw": pa.Column("float64", pa.Check.ge(0), nullable=False),
                "meters_reporting": pa.Column("int32", pa.Check.ge(1), nullable=False),
                "partition_date": pa.Column(nullable=False),
            },
            checks=[
                pa.Check(
                    lambda df: len(df) <= 1,
                    element_wise=False,
                    error="at most one system peak per day",
                ),
                pa.Check(
                    lambda df: _utc_day_matches(df, "peak_ts"),
                    error="peak_ts is not on partition_date (UTC)",
                ),
            ],
            name="system_peaks",
        ),
    }
