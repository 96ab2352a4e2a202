"""Steps 4 to 8 of DESIGN.md section 2 for one UTC day: the clean rows and the quarantine.

Input: the day's rows in ``raw_readings`` (and ``raw_files`` for each file's arrival), plus what
the rules need from the day before: its clean rows and its quarantined readings (the z-score's
trailing window, the forward fill across midnight) and its ``meter_spacings`` (the meter's
interval, the gap across midnight).

Output: ``staged_standardized`` (a temp view over the staged steps), ``staged_quarantine`` and
``staged_meter_spacings`` (temp tables), with the columns of the warehouse tables of the same
name, ready for ``warehouse.replace_days``. Every raw row of the day lands in exactly one of the
first two (quarantine, or a clean row that carries its source_line).
"""

from __future__ import annotations

import collections
import concurrent.futures
import datetime as dt
import functools
import math

import duckdb
import pyarrow as pa

from ..settings import Settings
from . import codes
from .row_checks import checked_rows_sql, parameters, run, sql_list
from .zscore import trailing_outliers

STAGED_STANDARDIZED = "staged_standardized"
STAGED_QUARANTINE = "staged_quarantine"
STAGED_SPACINGS = "staged_meter_spacings"
# Readings of step 7's population in one group of meters (``_stage_zscores``), and groups
# judged at once. numpy lets go of the GIL in its array work, so two groups keep both cores
# busy (1.65 s to 1.15 s for a 50,000-meter day); the arrays take about 80 bytes a reading,
# so two groups in flight stay near 0.2 GB.
ZSCORE_GROUP_READINGS = 1_250_000
ZSCORE_THREADS = 2


# Minutes between a reading and the one before it (``prev_ts``), from integer microseconds:
# epoch() of an interval costs several times more.
SPACING_MINUTES = "(epoch_us(reading_ts) - epoch_us(prev_ts)) / 1000000 / 60"


def _micros(hours: float) -> int:
    return int(round(hours * 3_600_000_000))


def standardize_day(con: duckdb.DuckDBPyConnection, day: dt.date, settings: Settings) -> None:
    """Stage the clean rows and the quarantine of ``day`` (see the module docstring)."""
    lookback_days = max(1, math.ceil(settings.zscore_window_hours / 24))
    p = {
        **parameters(settings),
        "day": day,
        "prev_day": day - dt.timedelta(days=1),
        "window_start_day": day - dt.timedelta(days=lookback_days),
        "max_kw": settings.max_kw,
        "default_minutes": settings.default_interval_minutes,
        "fill_minutes": settings.fill_max_minutes,
    }

    # Each file as a small number ordered by arrival (then hash), so that the steps below carry
    # four bytes per row instead of a 64-character hash, and "latest arrival" is a comparison.
    run(
        con,
        """CREATE OR REPLACE TEMP TABLE day_files AS
        SELECT source_file, arrival_time,
            CAST(row_number() OVER (ORDER BY arrival_time, source_file) AS INTEGER) AS file_no
        FROM raw_files""",
    )
    # Steps 1-3 on the day's raw rows (same SQL as when the file landed). Only what the later
    # steps need is kept; the raw text is fetched again for the few rows quarantined.
    raw_day = """(SELECT r.meter_id, r."timestamp", r.energy_value, r.energy_unit, r.field_count,
                         r.raw_line, r.source_line, f.file_no, f.arrival_time
                  FROM raw_readings r JOIN day_files f USING (source_file)
                  WHERE r.partition_date = $day)"""
    run(
        con,
        f"""CREATE OR REPLACE TEMP TABLE day_checked AS
        SELECT meter_key, reading_ts, value, unit, early_reason, detail, reading_day, file_no,
            source_line
        FROM ({checked_rows_sql(raw_day, settings)})""",
        p,
    )

    # Steps 4 to 6 and the spacings of step 8 in one sorted pass. Each meter's valid rows in
    # time order, the versions of one timestamp best first (a version with a value, then the
    # latest arrival, then the latest line): the first version of a timestamp survives step 4,
    # and the row before it is the last version of the timestamp before, so ``lag`` gives each
    # survivor the reading before it. The day before's last surviving reading (from
    # ``meter_spacings``, which each day stores with its clean rows) opens each meter's day.
    _stage_prev_spacings(con, p)
    run(
        con,
        f"""CREATE OR REPLACE TEMP TABLE day_spaced AS
        WITH stamps AS (
            SELECT meter_key, reading_ts, value, unit, file_no, source_line, TRUE AS is_today
            FROM day_checked WHERE early_reason IS NULL
            -- the day before's stamp is on another day: never a version of today's readings
            UNION ALL BY NAME
            SELECT DISTINCT meter_key, last_ts AS reading_ts, FALSE AS is_today
            FROM prev_spacings
        ),
        ordered AS (
            SELECT *,
                lag(reading_ts) OVER versions AS before_ts,
                lead(reading_ts) OVER versions AS after_ts
            FROM stamps
            WINDOW versions AS (PARTITION BY meter_key
                ORDER BY reading_ts, value IS NOT NULL DESC, file_no DESC, source_line DESC)
        ),
        converted AS (
            SELECT meter_key, reading_ts, is_today, file_no, source_line,
                before_ts IS DISTINCT FROM reading_ts AS survives,
                -- of a survivor: the reading before it (another timestamp); of another version,
                -- its own timestamp
                before_ts AS prev_ts,
                coalesce(after_ts = reading_ts, FALSE) AND before_ts IS DISTINCT FROM reading_ts
                    AS had_duplicates,
                CASE WHEN unit = '{codes.UNIT_WATT}' THEN value / 1000 ELSE value END AS kw,
                value IS NOT NULL AND unit = '{codes.UNIT_WATT}' AS unit_converted
            FROM ordered
        )
        SELECT *,
            CASE WHEN kw < 0 THEN '{codes.NEGATIVE_VALUE}'
                 WHEN kw > $max_kw THEN '{codes.ABOVE_MAX}' END AS range_reason
        FROM converted""",
        p,
    )
    # The versions that lose, with the version that wins: few, so they are staged alone and
    # joined to the winners (which makes DuckDB build its hash table on them).
    run(
        con,
        """CREATE OR REPLACE TEMP TABLE day_losers AS
        SELECT meter_key, reading_ts, file_no, source_line, kw FROM day_spaced
        WHERE is_today AND NOT survives""",
    )

    # Step 7 (``_stage_zscores``).
    _stage_zscores(con, p, settings)

    # The quarantine is complete once the z-scores are known: stage it now, and let go of the
    # rows of steps 1 to 4, so that no more than two tables of the day's size are held at once
    # (a 50,000-meter day otherwise outgrows DuckDB's memory limit and spills to disk).
    _stage_quarantine(con, p)
    con.execute("DROP TABLE day_checked; DROP TABLE day_losers")
    # From here on only the survivors of step 4 matter.
    con.execute("DELETE FROM day_spaced WHERE NOT survives")

    # Step 8, first the interval: each meter's most common spacing between consecutive distinct
    # timestamps of rows that survived step 4, the day before included (shorter on a tie). The
    # day before's spacings come from ``meter_spacings``: it is not sorted again.
    run(
        con,
        f"""CREATE OR REPLACE TEMP TABLE day_spacings AS
        SELECT meter_key, {SPACING_MINUTES} AS minutes,
            prev_ts >= CAST($day AS TIMESTAMPTZ) AS within_day, count(*) AS times
        FROM day_spaced WHERE is_today AND prev_ts IS NOT NULL GROUP BY ALL""",
        p,
    )
    run(
        con,
        """CREATE OR REPLACE TEMP TABLE meter_intervals AS
        WITH counted AS (
            SELECT meter_key, minutes, sum(times) AS times
            FROM (SELECT meter_key, minutes, times FROM day_spacings
                  UNION ALL
                  SELECT meter_key, minutes, times FROM prev_spacings WHERE minutes IS NOT NULL)
            GROUP BY ALL
        ),
        modes AS (
            SELECT meter_key, arg_min(minutes, (-times, minutes)) AS interval_minutes
            FROM counted GROUP BY meter_key
        )
        SELECT m.meter_key, coalesce(modes.interval_minutes, $default_minutes)
            AS interval_minutes
        FROM (SELECT DISTINCT meter_key FROM day_spaced WHERE is_today) m
        LEFT JOIN modes USING (meter_key)
        """,
        p,
    )
    # What the next day needs of this one: the spacings within the day, and the last reading.
    run(
        con,
        f"""CREATE OR REPLACE TEMP TABLE {STAGED_SPACINGS} AS
        SELECT last.meter_key AS meter_id, within.minutes, coalesce(within.times, 0) AS times,
            last.last_ts, CAST($day AS DATE) AS partition_date
        FROM (SELECT meter_key, max(reading_ts) AS last_ts FROM day_spaced WHERE is_today
              GROUP BY ALL) last
        LEFT JOIN (SELECT meter_key, minutes, times FROM day_spacings WHERE within_day) within
            USING (meter_key)""",
        p,
    )

    # Every interval of the day in order: the surviving readings, and the intervals between two
    # of them more than one interval apart (generated one interval apart). The day before's
    # last reading opens the day; generated intervals before midnight only count run lengths.
    run(
        con,
        """CREATE OR REPLACE TEMP TABLE day_intervals AS
        WITH spaced AS (
            SELECT s.meter_key, s.reading_ts, s.prev_ts,
                CASE WHEN s.range_reason IS NULL AND z.meter_key IS NULL THEN s.kw END AS kw,
                s.range_reason IS NOT NULL OR z.meter_key IS NOT NULL AS rejected,
                s.unit_converted, s.had_duplicates, s.file_no, s.source_line,
                i.interval_minutes, CAST(i.interval_minutes * 60e6 AS BIGINT) AS step_us,
                -- more than one interval after the reading before: missing intervals between
                epoch_us(s.reading_ts) - epoch_us(s.prev_ts) > step_us AS after_gap
            FROM day_spaced s
            JOIN meter_intervals i USING (meter_key)
            LEFT JOIN day_zscores z USING (meter_key, reading_ts)
            WHERE s.is_today
        ),
        gaps AS (
            SELECT meter_key, interval_minutes,
                unnest(range(prev_ts + to_microseconds(step_us), reading_ts,
                             to_microseconds(step_us))) AS reading_ts
            FROM spaced
            WHERE after_gap
        )
        SELECT *, reading_ts >= CAST($day AS TIMESTAMPTZ) AS in_day,
            CAST($day AS DATE) AS partition_date
        FROM (
            SELECT meter_key, reading_ts, kw, rejected, unit_converted, had_duplicates,
                file_no, source_line, interval_minutes,
                -- a missing interval comes right after the reading before this one: that
                -- reading is the one that may open (anchor) a run of missing intervals
                CASE WHEN kw IS NULL OR after_gap THEN prev_ts END AS before_missing_ts
            FROM spaced
            UNION ALL
            SELECT meter_key, reading_ts, NULL, FALSE, FALSE, FALSE, NULL, NULL, interval_minutes,
                NULL
            FROM gaps
        )
        """,
        p,
    )
    con.execute("DROP TABLE day_spaced")

    # Forward fill: a run of consecutive missing intervals shorter than the limit in total,
    # right after a measured reading (the day before's clean rows count), takes that reading's kW.
    # The run of a missing interval is every missing interval with the same latest measured
    # reading before it (its anchor), found with an ASOF join: only missing rows are grouped.
    run(
        con,
        f"""CREATE OR REPLACE TEMP TABLE day_fill AS
        WITH prev_tail AS (
            -- the day before's clean rows from its last measured reading on: they open the run
            SELECT p.meter_id AS meter_key, p.reading_ts, p.kw,
                p.quality = '{codes.QUALITY_MEASURED}' AS measured
            FROM standardized_readings p
            JOIN (SELECT meter_id, max(reading_ts) AS last_measured FROM standardized_readings
                  WHERE partition_date = $prev_day AND quality = '{codes.QUALITY_MEASURED}'
                  GROUP BY meter_id) m USING (meter_id)
            WHERE p.partition_date = $prev_day AND p.reading_ts >= m.last_measured
              AND p.meter_id IN (SELECT meter_key FROM meter_intervals)
        ),
        -- The measured readings that a missing interval follows: the only ones that can be the
        -- latest measured reading before a missing interval, so the only ones the ASOF join
        -- needs to search (a few per meter instead of every reading of the day).
        before_missing AS (
            SELECT DISTINCT meter_key, before_missing_ts AS reading_ts FROM day_intervals
            WHERE before_missing_ts IS NOT NULL
        ),
        measured AS (
            SELECT meter_key, reading_ts, kw FROM day_intervals SEMI JOIN before_missing
                USING (meter_key, reading_ts)
            WHERE kw IS NOT NULL
            UNION ALL
            SELECT meter_key, reading_ts, kw FROM prev_tail WHERE measured
        ),
        missing AS (
            SELECT meter_key, reading_ts FROM day_intervals WHERE kw IS NULL
            UNION ALL
            SELECT meter_key, reading_ts FROM prev_tail WHERE NOT measured
        ),
        anchored AS (
            SELECT m.meter_key, m.reading_ts, a.reading_ts AS anchor_ts, a.kw AS anchor_kw
            FROM missing m ASOF LEFT JOIN measured a
                ON m.meter_key = a.meter_key AND m.reading_ts > a.reading_ts
        ),
        decided AS (
            SELECT a.meter_key, a.reading_ts,
                a.anchor_ts IS NOT NULL
                    AND count(*) OVER (PARTITION BY a.meter_key, a.anchor_ts)
                        * i.interval_minutes < $fill_minutes AS fillable,
                a.anchor_kw
            FROM anchored a JOIN meter_intervals i USING (meter_key)
        )
        SELECT * FROM decided
        """,
        p,
    )

    # The clean rows are a view: the warehouse insert computes them once, with no staged copy
    # of millions of rows in between.
    run(
        con,
        f"""CREATE OR REPLACE TEMP VIEW {STAGED_STANDARDIZED} AS
        SELECT i.meter_key AS meter_id, i.reading_ts,
            CASE WHEN i.kw IS NOT NULL THEN i.kw WHEN d.fillable THEN d.anchor_kw END AS kw,
            CASE WHEN i.kw IS NOT NULL THEN '{codes.QUALITY_MEASURED}'
                 WHEN d.fillable THEN '{codes.QUALITY_FILLED}'
                 ELSE '{codes.QUALITY_MISSING}' END AS quality,
            i.kw IS NULL AS missing_value,
            coalesce(i.kw IS NULL AND d.fillable, FALSE) AS filled,
            coalesce(i.unit_converted AND NOT i.rejected, FALSE) AS unit_converted,
            coalesce(i.had_duplicates AND NOT i.rejected, FALSE) AS had_duplicates,
            i.interval_minutes,
            CASE WHEN NOT i.rejected THEN files.source_file END AS source_file,
            CASE WHEN NOT i.rejected THEN i.source_line END AS source_line,
            i.partition_date
        FROM day_intervals i
        LEFT JOIN day_files files USING (file_no)
        LEFT JOIN day_fill d ON i.kw IS NULL AND d.meter_key = i.meter_key
            AND d.reading_ts = i.reading_ts
        WHERE i.in_day
        """,
    )


def _stage_zscores(con: duckdb.DuckDBPyConnection, p: dict[str, object], settings: Settings):
    """``day_zscores``: the day's readings that step 7 rejects, with their window's figures.

    The trailing window holds readings that passed step 6, the day before included: there, the
    clean measured readings and the readings that step 7 itself rejected. The window sums are
    running sums over arrays (``zscore``), taken over groups of meters so that the arrays stay
    small however many meters there are; only the outliers come back.

    Each of the day's meters stands as a small integer (``zscore_meters``): the population is
    staged once with it, and each group is a range of it. Fetching and encoding the ids of
    9 million readings as text cost 0.4 s a group of a 50,000-meter day; the readings of meters
    with nothing to judge today are left out at the same time.
    """
    run(
        con,
        """CREATE OR REPLACE TEMP TABLE zscore_meters AS
        SELECT meter_key, CAST(row_number() OVER () - 1 AS INTEGER) AS meter_code
        FROM (SELECT DISTINCT meter_key FROM day_spaced WHERE is_today)""",
    )
    run(
        con,
        f"""CREATE OR REPLACE TEMP TABLE zscore_population AS
        SELECT m.meter_code, r.t, r.kw, r.is_today
        FROM ({_POPULATION_SQL}) r JOIN zscore_meters m USING (meter_key)""",
        p,
    )
    [(meters,)] = con.execute("SELECT count(*) FROM zscore_meters").fetchall()
    [(readings,)] = con.execute("SELECT count(*) FROM zscore_population").fetchall()
    groups = max(1, min(meters, math.ceil(readings / ZSCORE_GROUP_READINGS)))
    judge = functools.partial(
        trailing_outliers,
        window_us=_micros(settings.zscore_window_hours),
        min_readings=settings.zscore_min_readings,
        threshold=settings.zscore_threshold,
    )
    found = []
    with concurrent.futures.ThreadPoolExecutor(ZSCORE_THREADS) as pool:
        pending = collections.deque()
        for group in range(groups):
            # Two integers computed here, never input text.
            first_code = meters * group // groups
            end_code = meters * (group + 1) // groups
            population = con.sql(
                f"""SELECT meter_code AS meter_key, t, kw, is_today FROM zscore_population
                WHERE meter_code >= {first_code:d} AND meter_code < {end_code:d}"""
            ).to_arrow_table()
            if len(pending) == ZSCORE_THREADS:
                found.append(pending.popleft().result())
            pending.append(pool.submit(judge, population))
            del population
        found.extend(done.result() for done in pending)
    con.register("day_outliers", pa.concat_tables(found))
    con.execute(
        """CREATE OR REPLACE TEMP TABLE day_zscores AS
        SELECT m.meter_key, o.* EXCLUDE (meter_key)
        FROM day_outliers o JOIN zscore_meters m ON m.meter_code = o.meter_key;
        DROP TABLE zscore_population; DROP TABLE zscore_meters"""
    )
    con.unregister("day_outliers")


# Step 7's population: the day's readings that passed step 6, and the readings of the days
# before that count in their windows.
_POPULATION_SQL = f"""
    SELECT meter_key, epoch_us(reading_ts) AS t, kw, TRUE AS is_today
    FROM day_spaced
    WHERE is_today AND survives AND kw IS NOT NULL AND range_reason IS NULL
    UNION ALL
    SELECT meter_id, epoch_us(reading_ts), kw, FALSE FROM standardized_readings
    WHERE partition_date BETWEEN $window_start_day AND $prev_day
      AND quality = '{codes.QUALITY_MEASURED}'
    UNION ALL
    SELECT trim(meter_id), epoch_us(reading_ts), kw, FALSE FROM quarantine
    WHERE partition_date BETWEEN $window_start_day AND $prev_day
      AND reason = '{codes.OUTLIER_ZSCORE}'"""


def _stage_prev_spacings(con: duckdb.DuckDBPyConnection, p: dict[str, object]) -> None:
    """``prev_spacings``: the day before's ``meter_spacings``, or, for a day stored without
    them (by an earlier version), the same rows derived from its clean rows and quarantine."""
    [(stored,)] = run(
        con, "SELECT count(*) FROM meter_spacings WHERE partition_date = $prev_day", p
    ).fetchall()
    if stored:
        run(
            con,
            """CREATE OR REPLACE TEMP TABLE prev_spacings AS
            SELECT meter_id AS meter_key, minutes, times, last_ts FROM meter_spacings
            WHERE partition_date = $prev_day""",
            p,
        )
        return
    run(con, f"CREATE OR REPLACE TEMP TABLE prev_spacings AS {spacings_of_stored_day_sql()}", p)


def spacings_of_stored_day_sql() -> str:
    """SQL deriving the ``meter_spacings`` of ``$prev_day`` (as ``meter_key``, ``minutes``,
    ``times``, ``last_ts``) from its stored outputs: the readings that survived step 4 are the
    clean rows from a raw row and the readings quarantined in steps 5 to 7."""
    return f"""
    WITH survivors AS (
        SELECT meter_id AS meter_key, reading_ts FROM standardized_readings
        WHERE partition_date = $prev_day AND source_line IS NOT NULL
        UNION ALL
        SELECT trim(meter_id), reading_ts FROM quarantine
        WHERE partition_date = $prev_day
          AND reason IN {sql_list(codes.READING_REJECTED_REASONS)}
    ),
    spaced AS (
        SELECT *, lag(reading_ts) OVER (PARTITION BY meter_key ORDER BY reading_ts) AS prev_ts
        FROM survivors
    ),
    within AS (
        SELECT meter_key, {SPACING_MINUTES} AS minutes, count(*) AS times
        FROM spaced WHERE prev_ts IS NOT NULL GROUP BY ALL
    )
    SELECT last.meter_key, within.minutes, coalesce(within.times, 0) AS times, last.last_ts
    FROM (SELECT meter_key, max(reading_ts) AS last_ts FROM survivors GROUP BY ALL) last
    LEFT JOIN within USING (meter_key)
    """


def _stage_quarantine(con: duckdb.DuckDBPyConnection, p: dict[str, object]) -> None:
    """Every raw row of the day that no clean row carries, with the first reason that hit it,
    and its raw text fetched back from raw_readings."""
    run(
        con,
        f"""CREATE OR REPLACE TEMP TABLE {STAGED_QUARANTINE} AS
        WITH rejected AS (
            SELECT file_no, source_line, early_reason AS reason, detail,
                CASE WHEN reading_day IS NOT NULL THEN reading_ts END AS reading_ts,
                NULL::DOUBLE AS kw
            FROM day_checked WHERE early_reason IS NOT NULL
            UNION ALL
            SELECT v.file_no, v.source_line, '{codes.DUPLICATE}',
                'meter ' || v.meter_key || ' at ' || strftime(v.reading_ts, '%Y-%m-%dT%H:%M:%SZ')
                    || ' has a version that wins: file ' || wf.source_file
                    || ' line ' || w.source_line,
                v.reading_ts, v.kw
            FROM day_losers v
            JOIN day_spaced w ON w.meter_key = v.meter_key AND w.reading_ts = v.reading_ts
                AND w.survives
            JOIN day_files wf ON wf.file_no = w.file_no
            UNION ALL
            SELECT file_no, source_line, range_reason,
                'kW ' || kw || CASE WHEN range_reason = '{codes.NEGATIVE_VALUE}'
                    THEN ' is below 0' ELSE ' is above the maximum ' || $max_kw END,
                reading_ts, kw
            FROM day_spaced WHERE is_today AND survives AND range_reason IS NOT NULL
            UNION ALL
            SELECT s.file_no, s.source_line, '{codes.OUTLIER_ZSCORE}',
                'z = ' || round(z, 2) || ' from ' || n || ' readings of the trailing window '
                    || '(mean ' || round(mean, 4) || ' kW, sd ' || round(sd, 4) || ' kW)',
                reading_ts, kw
            FROM day_spaced s JOIN day_zscores USING (meter_key, reading_ts)
            WHERE s.is_today AND s.survives AND s.range_reason IS NULL
        )
        SELECT r.meter_id, r."timestamp", r.energy_value, r.energy_unit, q.reason, q.detail,
            q.reading_ts, q.kw, f.source_file, q.source_line, CAST($day AS DATE) AS partition_date
        FROM rejected q
        JOIN day_files f USING (file_no)
        JOIN raw_readings r ON r.partition_date = $day AND r.source_file = f.source_file
            AND r.source_line = q.source_line
        """,
        p,
    )
