"""DESIGN.md section 3: faulty meters, evaluated per meter at the end of each UTC day.

Both rules need history, which travels from one day to the next in ``meter_fault_state`` (the
open near-zero run's start, the zero-energy streak) instead of re-reading weeks of readings.
A day's result uses that day's clean rows and the state of the day before only, so it never
depends on later days. A day without a processed day before it starts with no history.

Output: temp tables ``staged_fault_flags`` and ``staged_fault_state`` for
``warehouse.replace_days``.
"""

from __future__ import annotations

import datetime as dt

import duckdb

from ..settings import Settings
from . import codes
from .row_checks import run

STAGED_FAULT_FLAGS = "staged_fault_flags"
STAGED_FAULT_STATE = "staged_fault_state"


def evaluate_faults_day(con: duckdb.DuckDBPyConnection, day: dt.date, settings: Settings) -> None:
    """Stage the fault flags of ``day`` and the state the next day starts from."""
    p = {
        "day": day,
        "prev_day": day - dt.timedelta(days=1),
        "near_zero_kw": settings.near_zero_kw,
        "near_zero_micros": int(round(settings.near_zero_hours * 3_600_000_000)),
        "zero_days": settings.zero_days,
    }
    # near_zero: a run of measured readings below the threshold, with no measured reading at or
    # above it in between (missing intervals do not break it). The run open at the end of the
    # day before continues into the day's readings before its first breaking reading.
    run(
        con,
        f"""CREATE OR REPLACE TEMP TABLE day_near_zero_runs AS
        WITH low_meters AS (
            -- only meters with a near-zero reading today can have a run today
            SELECT DISTINCT meter_id FROM standardized_readings
            WHERE partition_date = $day AND quality = '{codes.QUALITY_MEASURED}'
              AND kw < $near_zero_kw
        ),
        measured AS (
            SELECT meter_id, reading_ts, kw < $near_zero_kw AS low,
                reading_ts + to_microseconds(CAST(interval_minutes * 60e6 AS BIGINT)) AS ends
            FROM standardized_readings SEMI JOIN low_meters USING (meter_id)
            WHERE partition_date = $day AND quality = '{codes.QUALITY_MEASURED}'
        ),
        segmented AS (
            SELECT *, sum(CAST(NOT low AS INTEGER)) OVER (PARTITION BY meter_id
                ORDER BY reading_ts ROWS UNBOUNDED PRECEDING) AS segment
            FROM measured
        ),
        runs AS (
            SELECT meter_id, segment, min(reading_ts) FILTER (WHERE low) AS first_start,
                max(ends) FILTER (WHERE low) AS run_end
            FROM segmented GROUP BY meter_id, segment
            HAVING bool_or(low)
        )
        SELECT runs.meter_id, runs.segment, runs.run_end,
            CASE WHEN runs.segment = 0 AND prev.near_zero_run_start IS NOT NULL
                 THEN prev.near_zero_run_start ELSE runs.first_start END AS run_start
        FROM runs LEFT JOIN meter_fault_state prev
            ON prev.meter_id = runs.meter_id AND prev.partition_date = $prev_day""",
        p,
    )
    # zero_daily_total: the day's energy of measured readings, exactly zero, on more than
    # zero_days consecutive days. A day without measured readings breaks the streak.
    run(
        con,
        f"""CREATE OR REPLACE TEMP TABLE day_energy AS
        SELECT meter_id,
            sum(kw * interval_minutes / 60) AS kwh,
            max(reading_ts) AS last_ts,
            arg_max(kw < $near_zero_kw, reading_ts) AS ends_low
        FROM standardized_readings
        WHERE partition_date = $day AND quality = '{codes.QUALITY_MEASURED}'
        GROUP BY meter_id""",
        p,
    )
    run(
        con,
        f"""CREATE OR REPLACE TEMP TABLE {STAGED_FAULT_STATE} AS
        WITH prev AS (
            SELECT * FROM meter_fault_state WHERE partition_date = $prev_day
        ),
        meters AS (
            SELECT meter_id FROM day_energy UNION SELECT meter_id FROM prev
        ),
        state AS (
            SELECT meters.meter_id,
                CASE
                    WHEN e.meter_id IS NULL THEN prev.near_zero_run_start
                    WHEN e.ends_low THEN (SELECT r.run_start FROM day_near_zero_runs r
                                          WHERE r.meter_id = meters.meter_id
                                          ORDER BY r.segment DESC LIMIT 1)
                END AS near_zero_run_start,
                CASE WHEN e.kwh = 0 THEN coalesce(prev.zero_streak, 0) + 1 ELSE 0 END
                    AS zero_streak,
                CASE WHEN e.kwh = 0 THEN coalesce(prev.zero_streak_start, CAST($day AS DATE))
                    END AS zero_streak_start
            FROM meters
            LEFT JOIN day_energy e USING (meter_id)
            LEFT JOIN prev USING (meter_id)
        )
        SELECT *, CAST($day AS DATE) AS partition_date FROM state
        WHERE near_zero_run_start IS NOT NULL OR zero_streak > 0""",
        p,
    )
    run(
        con,
        f"""CREATE OR REPLACE TEMP TABLE {STAGED_FAULT_FLAGS} AS
        SELECT meter_id, '{codes.RULE_NEAR_ZERO}' AS rule, run_start, run_end,
            CAST($day AS DATE) AS partition_date
        FROM day_near_zero_runs
        WHERE run_end - run_start > to_microseconds(CAST($near_zero_micros AS BIGINT))
        UNION ALL
        SELECT meter_id, '{codes.RULE_ZERO_DAILY_TOTAL}',
            CAST(zero_streak_start AS TIMESTAMPTZ),
            CAST($day AS TIMESTAMPTZ) + INTERVAL 1 DAY,
            CAST($day AS DATE)
        FROM {STAGED_FAULT_STATE}
        WHERE zero_streak > $zero_days""",
        p,
    )


def record_new_alerts(con: duckdb.DuckDBPyConnection, raised_at: dt.datetime) -> list[tuple]:
    """Register the staged flags not alerted before; return them (meter, rule, run_start, day).

    A fault episode is identified by its meter, rule and run start, so a flag that goes on day
    after day, or a day processed again, is alerted once.
    """
    return con.execute(
        f"""INSERT INTO fault_alerts
        SELECT meter_id, rule, run_start, partition_date, CAST(? AS TIMESTAMPTZ)
        FROM {STAGED_FAULT_FLAGS} f
        WHERE NOT EXISTS (SELECT 1 FROM fault_alerts a WHERE a.meter_id = f.meter_id
                          AND a.rule = f.rule AND a.run_start = f.run_start)
        RETURNING meter_id, rule, run_start, partition_date""",
        [raised_at],
    ).fetchall()
