"""Steps 1 to 3 of DESIGN.md section 2, and the day each raw row belongs to.

``checked_rows_sql`` turns raw text rows into typed rows with the first early reason (if any).
The raw rows are placed on their days with it, and a day is standardized with it: the same SQL,
so a row can never be placed on one day and judged on another. Landing learns a file's days from
the same timestamp parsing (``stamps_sql``), per distinct text.

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
# A parsed timestamp (``stamps_sql``) later than the file's arrival plus the tolerance.
IS_FUTURE = "ts_us > epoch_us(arrival_time) + CAST($future_minutes * 60000000 AS BIGINT)"
# A parsed timestamp that places a well-formed row on its own UTC day (``ts_day``).
DATED = "dst_problem IS NULL AND NOT is_future AND NOT before_start"
# The UTC day a row's own timestamp places it on; NULL when the row is malformed or its
# timestamp is unreadable, ambiguous, in the future or before the first day.
OWN_DAY = f"CASE WHEN raw_line IS NULL AND {DATED} THEN ts_day END"


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


def distinct_texts(source: str) -> str:
    """The distinct timestamp texts of ``source`` as a relation for ``stamps_sql``."""
    return f'(SELECT DISTINCT "timestamp" AS ts_text FROM {source})'


def stamps_sql(texts: str, settings: Settings) -> str:
    """SQL parsing each timestamp text of ``texts`` (one column, ``ts_text``) once: the UTC
    time, its day and microseconds, the DST problem of a naive local time, and whether it is
    before the first day."""
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
                    FROM {texts}
                )
            )
        )
    """


def checked_rows_sql(source: str, settings: Settings) -> str:
    """SQL selecting every row of ``source`` with its parsed fields and first early reason.

    Added columns: ``meter_key`` (trimmed id), ``reading_ts`` (UTC), ``value`` (the number, NULL
    when missing), ``unit`` (``W``/``KW`` or other upper-cased text), ``early_reason``, ``detail``.
    """
    return f"""
    WITH stamps AS (
        -- A day's rows share a few hundred distinct timestamp texts: each is parsed once here
        -- and joined back, instead of running the pattern on millions of rows.
        {stamps_sql(distinct_texts(source), settings)}
    ),
    numbers AS (
        -- Likewise each distinct value text: the benchmark day has 9,148 among 4.7 M rows, and
        -- judging texts rather than rows took its checks from 0.48 to 0.41 s. A NULL text
        -- (no such field) joins nothing and is missing, as before.
        SELECT value_raw, trim(value_raw) AS value_text,
            value_text IS NULL OR value_text IN {sql_list(codes.MISSING_MARKERS)} AS is_missing,
            CASE WHEN regexp_full_match(value_text, $number_pattern)
                 THEN TRY_CAST(value_text AS DOUBLE) END AS number
        FROM (SELECT DISTINCT energy_value AS value_raw FROM {source})
    ),
    located AS (
        SELECT src.*,
            nullif(trim(src.meter_id), '') AS meter_key,
            numbers.value_text,
            upper(trim(src.energy_unit)) AS unit,
            stamps.reading_ts, stamps.ts_day, stamps.ts_us, stamps.dst_problem,
            stamps.before_start,
            coalesce(numbers.is_missing, TRUE) AS is_missing,
            numbers.number
        FROM {source} src LEFT JOIN stamps ON src."timestamp" = stamps.ts_text
        LEFT JOIN numbers ON src.energy_value = numbers.value_raw
    ),
    judged AS (
        SELECT *,
            -- each condition once, shared by the row's day, its reason and its detail
            {IS_FUTURE} AS is_future,
            NOT is_missing AND (number IS NULL OR NOT isfinite(number)) AS bad_value,
            NOT is_missing AND unit IS DISTINCT FROM '{codes.UNIT_WATT}'
                AND unit IS DISTINCT FROM '{codes.UNIT_KILOWATT}' AS bad_unit
        FROM located
    )
    SELECT * EXCLUDE (number, ts_day, ts_us, dst_problem, is_future, before_start, bad_value,
                      bad_unit),
        CASE WHEN is_missing THEN NULL ELSE number END AS value,
        -- the row's own day, whatever else is wrong with the row
        {OWN_DAY} AS reading_day,
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
    """The rows of ``source`` with ``partition_date``: the UTC day each row is processed on.

    A row is on the day its own timestamp places it on (see ``reading_day`` in
    ``checked_rows_sql``); a row without one belongs to its file's ``first_day``, a column of
    ``source`` (``landing.file_placement`` finds it). Only the timestamps are parsed here: the
    values are checked when the day is standardized.
    """
    return f"""
    WITH stamps AS ({stamps_sql(distinct_texts(source), settings)}),
    located AS (
        SELECT src.*, stamps.ts_day, stamps.ts_us, stamps.dst_problem, stamps.before_start
        FROM {source} src LEFT JOIN stamps ON src."timestamp" = stamps.ts_text
    ),
    judged AS (SELECT *, {IS_FUTURE} AS is_future FROM located)
    SELECT * EXCLUDE (ts_day, ts_us, dst_problem, before_start, is_future),
        coalesce({OWN_DAY}, first_day) AS partition_date
    FROM judged
    """


def file_dates_sql(source: str, settings: Settings) -> str:
    """SQL giving, one row per file (``file_no``, a column of ``source``), the sorted UTC days
    the file's rows place themselves on, and whether some row has no day of its own (it then
    joins the file's first day, see ``placed_rows_sql``).

    Grouped by timestamp text first: a day's file has a few hundred distinct texts among
    hundreds of thousands of rows, and a row's own day depends on nothing else but whether it
    is well formed. Landing needs only this, not the values checked row by row."""
    return f"""
    WITH texts AS (
        SELECT file_no, "timestamp" AS ts_text, bool_or(raw_line IS NULL) AS wellformed,
            bool_or(raw_line IS NOT NULL) AS malformed, max(arrival_time) AS arrival_time
        FROM {source} GROUP BY ALL
    ),
    stamps AS ({stamps_sql("(SELECT DISTINCT ts_text FROM texts)", settings)}),
    dated AS (
        SELECT file_no, wellformed, malformed, CASE WHEN {DATED} THEN ts_day END AS own_day
        FROM (SELECT texts.*, stamps.* EXCLUDE (ts_text), {IS_FUTURE} AS is_future
              FROM texts LEFT JOIN stamps USING (ts_text))
    )
    SELECT file_no, coalesce(list_sort(list_distinct(
               list(own_day) FILTER (WHERE wellformed AND own_day IS NOT NULL))), []) AS days,
        coalesce(bool_or(malformed OR (wellformed AND own_day IS NULL)), FALSE) AS undated
    FROM dated GROUP BY file_no
    """


def valid_row_on_sql(source: str, settings: Settings) -> str:
    """SQL selecting one valid row (no early reason) of ``source`` on the day ``$day``, if any.
    It stops at the first one: asking day by day for a file's first valid day costs a fraction
    of checking every row of the file."""
    return f"""
    SELECT 1 FROM ({checked_rows_sql(source, settings)})
    WHERE reading_day = $day AND early_reason IS NULL LIMIT 1
    """


def valid_days_sql(source: str, settings: Settings) -> str:
    """SQL giving each file (``file_no``) of ``source`` and each day on which one of its rows is
    valid (no early reason). Landing asks it of a few rows from the head of each file, to prove
    most files' first valid day in one query (``landing.file_placements``)."""
    return f"""
    SELECT DISTINCT file_no, reading_day FROM ({checked_rows_sql(source, settings)})
    WHERE reading_day IS NOT NULL AND early_reason IS NULL
    """
