"""DESIGN.md section 4: the day's peaks, from measured readings only (filled and missing rows
never count). Ties go to the earliest timestamp.

The system sum is taken over exact decimals, so the same readings always give the same peak
whatever order DuckDB's threads add them in.
"""

from __future__ import annotations

import datetime as dt

import duckdb

from . import codes
from .row_checks import run

STAGED_METER_PEAKS = "staged_meter_daily_peaks"
STAGED_SYSTEM_PEAKS = "staged_system_peaks"


def peaks_day(con: duckdb.DuckDBPyConnection, day: dt.date) -> None:
    """Stage each meter's peak and the system peak of ``day``."""
    measured = f"""standardized_readings
        WHERE partition_date = $day AND quality = '{codes.QUALITY_MEASURED}'"""
    run(
        con,
        f"""CREATE OR REPLACE TEMP TABLE {STAGED_METER_PEAKS} AS
        SELECT meter_id, CAST($day AS DATE) AS partition_date, max(kw) AS peak_kw,
            -- the highest kW, the earliest timestamp among equal ones
            arg_max(reading_ts, (kw, -epoch_us(reading_ts))) AS peak_ts
        FROM {measured}
        GROUP BY meter_id""",
        {"day": day},
    )
    run(
        con,
        f"""CREATE OR REPLACE TEMP TABLE {STAGED_SYSTEM_PEAKS} AS
        SELECT CAST($day AS DATE) AS partition_date, reading_ts AS peak_ts,
            CAST(total AS DOUBLE) AS total_kw, meters AS meters_reporting
        FROM (SELECT reading_ts, sum(CAST(kw AS DECIMAL(38, 9))) AS total,
                     CAST(count(*) AS INTEGER) AS meters
              FROM {measured} GROUP BY reading_ts)
        ORDER BY total DESC, reading_ts
        LIMIT 1""",
        {"day": day},
    )
