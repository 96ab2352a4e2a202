"""Steps 1 to 3 of DESIGN.md section 2, and the day each raw row belongs to.

``checked_rows_sql`` turns raw text rows into typed rows with the first early reason (if any).
It runs twice on purpose: when a file lands (to learn which UTC days it touches) and when a day is
standardized; both calls are the same SQL, so a row can never be placed on one day and judged on
another.

The input relation needs the raw text columns of ``raw_readings`` plus ``arrival_time`` (the
file's arrival, TIMESTAMPTZ). Settings reach the SQL as parameters, never as pasted text.
"""

from __future__ import annotations

import re

from ..settings import Settings
from . import codes

# ISO-8601 date and time, with an optional fraction and an optional offset (Z, +01:00, +0100, +01).
TIMESTAMP_PATTERN = (
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}(?::\d{2})?)(\.\d+)?\s*([Zz]|[+-]\d{2}(?::?\d{2})?)?$"
)
# A plain decimal number: no thousands separators, no words like inf or nan.
NUMBER_PATTERN = r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$"
# Largest UTC offset accepted, in hours (ISO 8601 allows up to 18).
MAX_OFFSET_HOURS = 18


def sql_list(values: tuple[str, ...]) -> str:
    """A SQL list literal of trusted constants from ``codes`` (never of input text)."""
    return "(" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + ")"


def bind(sql: str, params: dict[str, object]) -> dict[str, object]:
    """The subset of ``params`` that ``sql`` names: DuckDB refuses parameters it does not use."""
    used = set(re.findall(r"\$([a-z_]+)", sql))
    return {name: value for name, value in params.items() if name in used}


def run(con, sql: str, params: dict[str, object] | None = None):
    """Execute ``sql`` with the named parameters it uses, picked from ``params``."""
    return con.execute(sql, bind(sql, params or {}))


def parameters(settings: Settings) -> dict[str, object]:
    """The named parameters ``checked_rows_sql`` expects."""
    return {
        "ts_pattern": TIMESTAMP_PATTERN,
        "number_pattern": NUMBER_PATTERN,
        "source_tz": settings.source_tz,
        "future_minutes": settings.future_tolerance_minutes,
        "start_date": settings.start_date,
    }


def checked_rows_sql(source: str, settings: Settings) -> str:
    """SQL selecting every row of ``source`` with its parsed fields and first early reason.

    Added columns: ``meter_key`` (trimmed id), ``reading_ts`` (UTC), ``value`` (the number, NULL
    when missing), ``unit`` (``W``/``KW`` or other upper-cased text), ``early_reason``, ``detail``.
    """
    utc_source = settings.source_tz in ("UTC", "Etc/UTC")
    # A naive time is local in the source zone. For UTC there is no DST to worry about, so the
    # conversion and the DST checks are left out of the SQL entirely.
    naive_ts = "CAST(local_ts AS TIMESTAMPTZ)" if utc_source else "timezone($source_tz, local_ts)"
    dst_problem = (
        "NULL"
        if utc_source
        else """CASE
            WHEN timezone($source_tz, reading_ts) <> local_ts THEN 'does not exist'
            WHEN timezone($source_tz, reading_ts - INTERVAL 1 HOUR) = local_ts
              OR timezone($source_tz, reading_ts + INTERVAL 1 HOUR) = local_ts
              OR timezone($source_tz, reading_ts - INTERVAL 30 MINUTE) = local_ts
              OR timezone($source_tz, reading_ts + INTERVAL 30 MINUTE) = local_ts
              THEN 'is ambiguous'
          END"""
    )
    return f"""
    WITH stamps AS (
        -- A day's rows share a few hundred distinct timestamp texts: each is parsed once here
        -- and joined back, instead of running the pattern on millions of rows.
        SELECT ts_text, reading_ts,
            -- the UTC day and the microseconds, per distinct text: the zone-aware cast to a
            -- date is the slowest part of the whole check when done on every row
            CAST(reading_ts AS DATE) AS ts_day, epoch_us(reading_ts) AS ts_us,
            CASE WHEN NOT has_offset AND reading_ts IS NOT NULL THEN {dst_problem} END
                AS dst_problem,
            reading_ts < CAST(CAST($start_date AS DATE) AS TIMESTAMPTZ) AS before_start
        FROM (
            SELECT *,
                CASE
                    WHEN local_ts IS NULL OR offset_hours > {MAX_OFFSET_HOURS} OR offset_mins > 59
                        THEN NULL
                    WHEN has_offset THEN CAST(local_ts AS TIMESTAMPTZ)
                        - to_minutes(CAST((offset_hours * 60 + offset_mins)
                            * CASE WHEN starts_with(ts_parts.offset, '-') THEN -1 ELSE 1 END
                            AS BIGINT))
                    ELSE {naive_ts}
                END AS reading_ts
            FROM (
                SELECT *,
                    TRY_CAST(ts_parts.day || ' ' || ts_parts.clock || left(ts_parts.fraction, 7)
                             AS TIMESTAMP) AS local_ts,
                    CASE WHEN ts_parts.offset IN ('', 'Z', 'z') THEN 0
                         ELSE TRY_CAST(substr(ts_parts.offset, 2, 2) AS INTEGER) END
                        AS offset_hours,
                    CASE WHEN length(replace(ts_parts.offset, ':', '')) = 5
                         THEN TRY_CAST(right(ts_parts.offset, 2) AS INTEGER) ELSE 0 END
                        AS offset_mins,
                    ts_parts.offset <> '' AS has_offset
                FROM (
                    SELECT ts_text,
                        regexp_extract(trim(ts_text), $ts_pattern,
                                       ['day', 'clock', 'fraction', 'offset']) AS ts_parts
                    FROM (SELECT DISTINCT "timestamp" AS ts_text FROM {source})
                )
            )
        )
    ),
    located AS (
        SELECT src.*,
            nullif(trim(src.meter_id), '') AS meter_key,
            trim(src.energy_value) AS value_text,
            upper(trim(src.energy_unit)) AS unit,
            stamps.reading_ts, stamps.ts_day, stamps.ts_us, stamps.dst_problem,
            stamps.before_start,
            value_text IS NULL OR value_text IN {sql_list(codes.MISSING_MARKERS)} AS is_missing,
            CASE WHEN regexp_full_match(value_text, $number_pattern)
                 THEN TRY_CAST(value_text AS DOUBLE) END AS number
        FROM {source} src LEFT JOIN stamps ON src."timestamp" = stamps.ts_text
    ),
    judged AS (
        SELECT *,
            -- each condition once, shared by the row's day, its reason and its detail
            ts_us > epoch_us(arrival_time) + CAST($future_minutes * 60000000 AS BIGINT)
                AS is_future,
            NOT is_missing AND (number IS NULL OR NOT isfinite(number)) AS bad_value,
            NOT is_missing AND unit IS DISTINCT FROM '{codes.UNIT_WATT}'
                AND unit IS DISTINCT FROM '{codes.UNIT_KILOWATT}' AS bad_unit
        FROM located
    )
    SELECT * EXCLUDE (number, ts_day, ts_us, dst_problem, is_future, before_start, bad_value,
                      bad_unit),
        CASE WHEN is_missing THEN NULL ELSE number END AS value,
        -- The UTC day the row's own timestamp places it on, whatever else is wrong with the
        -- row; NULL when the row is malformed or its timestamp is unreadable, ambiguous,
        -- in the future or before the first day.
        CASE WHEN raw_line IS NULL AND dst_problem IS NULL AND NOT is_future
              AND NOT before_start THEN ts_day END AS reading_day,
        CASE
            WHEN raw_line IS NOT NULL THEN '{codes.MALFORMED_ROW}'
            WHEN meter_key IS NULL THEN '{codes.MISSING_METER_ID}'
            WHEN reading_ts IS NULL THEN '{codes.INVALID_TIMESTAMP}'
            WHEN dst_problem IS NOT NULL THEN '{codes.AMBIGUOUS_TIMESTAMP}'
            WHEN is_future THEN '{codes.FUTURE_TIMESTAMP}'
            WHEN before_start THEN '{codes.INVALID_TIMESTAMP}'
            WHEN bad_value THEN '{codes.INVALID_VALUE}'
            WHEN bad_unit THEN '{codes.UNKNOWN_UNIT}'
        END AS early_reason,
        CASE
            WHEN raw_line IS NOT NULL THEN 'expected the header''s fields, found '
                || field_count || ': ' || raw_line
            WHEN meter_key IS NULL THEN 'meter_id is empty'
            WHEN reading_ts IS NULL THEN 'cannot read ' || coalesce('''' || "timestamp" || '''',
                'an empty value') || ' as an ISO-8601 date and time'
            WHEN dst_problem IS NOT NULL THEN 'local time ''' || trim("timestamp") || ''' '
                || dst_problem || ' in ' || $source_tz || ' (DST change)'
            WHEN is_future
                THEN strftime(reading_ts, '%Y-%m-%dT%H:%M:%SZ') || ' is after the file''s arrival '
                    || strftime(arrival_time, '%Y-%m-%dT%H:%M:%SZ') || ' plus '
                    || $future_minutes || ' minutes'
            WHEN before_start
                THEN strftime(reading_ts, '%Y-%m-%dT%H:%M:%SZ')
                    || ' is before the first day ' || $start_date || ' (GREENSTREAM_START_DATE)'
            WHEN bad_value
                THEN 'energy_value ''' || value_text || ''' is not a finite decimal number'
            WHEN bad_unit
                THEN 'energy_unit ' || coalesce('''' || energy_unit || '''', 'is missing')
                    || ', expected W or kW'
        END AS detail
    FROM judged
    """


def placed_rows_sql(source: str, settings: Settings) -> str:
    """``checked_rows_sql`` plus ``partition_date``: the UTC day each row is processed on.

    A row whose timestamp places it on no day (steps 1 to 3) belongs to the first UTC day of its
    file: the earliest day among the file's valid rows, or the arrival day if there is none.
    """
    return f"""
    WITH checked AS ({checked_rows_sql(source, settings)}),
    first_days AS (
        SELECT source_file,
            coalesce(min(reading_day) FILTER (WHERE early_reason IS NULL),
                     CAST(min(arrival_time) AS DATE)) AS first_day
        FROM checked GROUP BY source_file
    )
    SELECT checked.*, coalesce(reading_day, first_days.first_day) AS partition_date
    FROM checked JOIN first_days USING (source_file)
    """


def placed_days_sql(source: str, settings: Settings) -> str:
    """SQL giving, in one row, the sorted UTC days ``placed_rows_sql`` puts the rows of
    ``source`` (one file) on: each row's own day, plus the file's first day when some row has
    none. An aggregate, so nothing is materialised and no detail text is built: landing only
    needs the days."""
    return f"""
    SELECT list_sort(list_distinct(
        list(reading_day) FILTER (WHERE reading_day IS NOT NULL)
        || CASE WHEN bool_or(reading_day IS NULL)
                THEN [coalesce(min(reading_day) FILTER (WHERE has_valid),
                               CAST(min(arrival) AS DATE))]
                ELSE [] END)) AS days
    FROM (
        -- a handful of groups: the days, and NULL for the rows without one
        SELECT reading_day, bool_or(early_reason IS NULL) AS has_valid,
            min(arrival_time) AS arrival
        FROM ({checked_rows_sql(source, settings)})
        GROUP BY reading_day
    )
    """
