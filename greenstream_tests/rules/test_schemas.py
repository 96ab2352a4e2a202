"""The Pandera schemas (``rules/schemas.py``) on their Polars backend: a valid day of each table
passes, and every rule, broken alone in an otherwise valid frame, is reported, and nothing else.

A failure is written (column, check, row index, failure case). Rules on the whole row
(``DataFrameSchema`` context) report the row as JSON: there the row index says which row, and
the failure case is left out (None). A dtype error has no row (index None).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import polars as pl
import pytest
from pandera.errors import SchemaErrors

from greenstream_dagster import validation
from greenstream_dagster.orchestration import checks
from greenstream_dagster.rules import codes
from greenstream_dagster.rules.schemas import schemas
from greenstream_dagster.settings import Settings
from greenstream_tests.support import add_file, run_day, series, utc

D = dt.date(2026, 11, 20)
# What DuckDB hands over for a TIMESTAMPTZ column (the warehouse's TimeZone is UTC).
TS = pl.Datetime("us", "Etc/UTC")
DEFAULT = Settings()

IN_RANGE = "in_range(0, 10.0)"
GE_1 = "greater_than_or_equal_to(1)"
UTC_DAY = "reading_ts is not on partition_date (UTC)"
PEAK_UTC_DAY = "peak_ts is not on partition_date (UTC)"
MEASURED = "measured rows, and only they, have a kW and no missing flag"
FILLED = "filled rows, and only they, are flagged filled"
FILLED_KW = "filled rows have a kW"
MISSING = "missing rows have no kW"
MISSING_FLAG = "every row but a measured one is flagged missing_value"
UNIQUE = "multiple_fields_uniqueness"


def valid(table: str) -> pl.DataFrame:
    """A small valid day of ``table``, with the warehouse's dtypes. Values sit on the edges
    the rules allow: 0 kW and exactly max_kw (10), a field count of 1, a key's parts repeated
    on their own (same line in another file, same time for another meter)."""
    if table == "raw_readings":
        return pl.DataFrame(
            {
                "source_file": ["f1", "f1", "f2"],
                "source_line": [2, 3, 2],
                "field_count": [4, 1, 5],
                "partition_date": [D, D, D],
            },
            schema={
                "source_file": pl.String,
                "source_line": pl.Int64,
                "field_count": pl.Int32,
                "partition_date": pl.Date,
            },
        )
    if table == "standardized_readings":
        return pl.DataFrame(
            {
                "meter_id": ["m1", "m1", "m1", "m1", "m2"],
                "reading_ts": [
                    utc("2026-11-20 00:00"),
                    utc("2026-11-20 00:15"),
                    utc("2026-11-20 00:30"),
                    utc("2026-11-20 00:45"),
                    utc("2026-11-20 00:00"),
                ],
                "kw": [0.0, 10.0, 10.0, None, 1.5],
                "quality": ["measured", "measured", "filled", "missing", "measured"],
                "missing_value": [False, False, True, True, False],
                "filled": [False, False, True, False, False],
                "unit_converted": [False, True, False, False, False],
                "had_duplicates": [False, False, False, False, True],
                "interval_minutes": [15.0, 15.0, 15.0, 15.0, 0.5],
                "source_line": [2, 3, None, 4, 2],
                "partition_date": [D, D, D, D, D],
            },
            schema={
                "meter_id": pl.String,
                "reading_ts": TS,
                "kw": pl.Float64,
                "quality": pl.String,
                "missing_value": pl.Boolean,
                "filled": pl.Boolean,
                "unit_converted": pl.Boolean,
                "had_duplicates": pl.Boolean,
                "interval_minutes": pl.Float64,
                "source_line": pl.Int64,
                "partition_date": pl.Date,
            },
        )
    if table == "quarantine":
        return pl.DataFrame(
            {
                "reason": [codes.INVALID_VALUE, codes.MISSING_METER_ID, codes.ABOVE_MAX],
                "detail": ["energy_value 'x' is not a finite number", "meter_id is empty", "x"],
                "source_file": ["f1", "f1", "f2"],
                "source_line": [10, 11, 10],
            },
            schema={
                "reason": pl.String,
                "detail": pl.String,
                "source_file": pl.String,
                "source_line": pl.Int64,
            },
        )
    if table == "fault_flags":
        return pl.DataFrame(
            {
                "meter_id": ["m1", "m1", "m2"],
                "rule": [codes.RULE_NEAR_ZERO, codes.RULE_ZERO_DAILY_TOTAL, codes.RULE_NEAR_ZERO],
                "run_start": [
                    utc("2026-11-18 06:00"),
                    utc("2026-11-16 00:00"),
                    utc("2026-11-19 00:00"),
                ],
                "run_end": [
                    utc("2026-11-20 23:45"),
                    utc("2026-11-21 00:00"),
                    utc("2026-11-19 00:00:00.000001"),
                ],
            },
            schema={"meter_id": pl.String, "rule": pl.String, "run_start": TS, "run_end": TS},
        )
    if table == "meter_daily_peaks":
        return pl.DataFrame(
            {
                "meter_id": ["m1", "m2"],
                "peak_kw": [10.0, 0.0],
                "peak_ts": [utc("2026-11-20 00:00"), utc("2026-11-20 23:59:59.999999")],
                "partition_date": [D, D],
            },
            schema={
                "meter_id": pl.String,
                "peak_kw": pl.Float64,
                "peak_ts": TS,
                "partition_date": pl.Date,
            },
        )
    if table == "system_peaks":
        return pl.DataFrame(
            {
                "peak_ts": [utc("2026-11-20 00:15")],
                "total_kw": [11.5],  # a sum of meters: above max_kw is fine
                "meters_reporting": [2],
                "partition_date": [D],
            },
            schema={
                "peak_ts": TS,
                "total_kw": pl.Float64,
                "meters_reporting": pl.Int32,
                "partition_date": pl.Date,
            },
        )
    raise KeyError(table)


Change = Callable[[pl.DataFrame], pl.DataFrame]


def at(row: int, **values: object) -> Change:
    """Set ``values`` in one row; each column keeps its dtype."""

    def change(frame: pl.DataFrame) -> pl.DataFrame:
        here = pl.int_range(pl.len()) == row
        return frame.with_columns(
            pl.when(here)
            .then(pl.lit(value, frame.schema[name]))
            .otherwise(pl.col(name))
            .alias(name)
            for name, value in values.items()
        )

    return change


def append(row: int, **values: object) -> Change:
    """Add a copy of ``row`` at the end, with ``values`` changed."""

    def change(frame: pl.DataFrame) -> pl.DataFrame:
        copy = at(0, **values)(frame.slice(row, 1))
        return pl.concat([frame, copy])

    return change


def then(*changes: Change) -> Change:
    """The changes one after the other."""

    def change(frame: pl.DataFrame) -> pl.DataFrame:
        for one in changes:
            frame = one(frame)
        return frame

    return change


def failures(table: str, frame: pl.DataFrame, settings: Settings = DEFAULT) -> set[tuple]:
    """(column, check, index, failure case) of every failure, see the module docstring; an
    empty set when the frame passes."""
    try:
        schemas(settings)[table].validate(frame, lazy=True)
    except SchemaErrors as errors:
        found = errors.failure_cases
    else:
        return set()
    rows = [
        (column, check, index, None if context == "DataFrameSchema" else case)
        for case, context, column, check, index in found.select(
            "failure_case", "schema_context", "column", "check", "index"
        ).iter_rows()
    ]
    assert len(rows) == len(set(rows)), rows  # no failure reported twice
    return set(rows)


TABLES = list(checks.SCHEMA_TABLES)


@pytest.mark.parametrize("table", TABLES)
def test_a_valid_day_passes(table):
    """The valid frames pass as they are: every case below differs from them in one rule."""
    assert failures(table, valid(table)) == set()


@pytest.mark.parametrize("table", TABLES)
def test_the_frames_have_the_warehouse_dtypes(con, table):
    """The frames here are what validate_day hands Pandera: the dtypes DuckDB gives (Int32 for
    INTEGER, Etc/UTC microseconds for TIMESTAMPTZ), or a dtype rule could pass here and fail
    on the real rows. A coded column (the quality ENUM comes as a Categorical) is judged as
    its text, as validate_day casts it."""
    frame = valid(table)
    columns = ", ".join(f'"{name}"' for name in frame.columns)
    empty = pl.from_arrow(
        con.cursor().sql(f"SELECT {columns} FROM {table} LIMIT 0").to_arrow_table()
    ).with_columns(pl.col(pl.Categorical).cast(pl.String))
    assert empty.schema == frame.schema


@pytest.mark.parametrize(
    ("instant", "local_day", "expected"),
    [
        # 00:30 on the 21st at +01:00: on the 20th in UTC, so on its day.
        pytest.param("2026-11-20 23:30", dt.date(2026, 11, 21), set(), id="utc-day-only"),
        # 00:30 on the 20th at +01:00: on the 19th in UTC, so off its day.
        pytest.param(
            "2026-11-19 23:30",
            D,
            {("standardized_readings", UTC_DAY, 0, None)},
            id="local-day-only",
        ),
    ],
)
def test_the_day_is_the_utc_day_in_any_zone(instant, local_day, expected):
    """reading_ts is compared with partition_date as a UTC day, whatever zone the column is
    in: here +01:00, where the local date is the other day."""
    frame = then(
        at(0, reading_ts=utc(instant)),
        lambda f: f.with_columns(pl.col("reading_ts").dt.convert_time_zone("+01:00")),
    )(valid("standardized_readings"))
    assert frame["reading_ts"].dt.date()[0] == local_day
    assert failures("standardized_readings", frame) == expected


def test_the_kw_ceiling_follows_settings():
    """max_kw is a setting, not a constant: at 5 kW the valid day's 10 kW rows fail (the
    measured and the filled one), and at 20 kW a 12 kW reading passes."""
    lower = DEFAULT.replace(max_kw=5.0)
    assert failures("standardized_readings", valid("standardized_readings"), lower) == {
        ("kw", "in_range(0, 5.0)", 1, "10.0"),
        ("kw", "in_range(0, 5.0)", 2, "10.0"),
    }
    assert failures("meter_daily_peaks", valid("meter_daily_peaks"), lower) == {
        ("peak_kw", "in_range(0, 5.0)", 0, "10.0"),
    }
    higher = DEFAULT.replace(max_kw=20.0)
    frame = at(1, kw=12.0)(valid("standardized_readings"))
    assert failures("standardized_readings", frame, higher) == set()
    assert failures("standardized_readings", frame) == {("kw", IN_RANGE, 1, "12.0")}


def case(table: str, change: Change, *expected: tuple, id: str):
    return pytest.param(table, change, set(expected), id=f"{table}-{id}")


BROKEN = [
    # raw_readings
    case(
        "raw_readings", at(1, source_file=""), ("source_file", "_nonblank", 1, ""), id="blank-file"
    ),
    case(
        "raw_readings",
        at(1, source_file=" \t"),
        ("source_file", "_nonblank", 1, " \t"),
        id="whitespace-file",
    ),
    case("raw_readings", at(2, source_line=0), ("source_line", GE_1, 2, "0"), id="line-0"),
    case("raw_readings", at(1, field_count=0), ("field_count", GE_1, 1, "0"), id="fields-0"),
    case(
        "raw_readings",
        at(2, source_line=3, source_file="f1"),
        ("raw_readings", UNIQUE, 1, None),
        ("raw_readings", UNIQUE, 2, None),
        id="doubled-key",
    ),
    # standardized_readings: meter_id
    case(
        "standardized_readings",
        at(4, meter_id=""),
        ("meter_id", "meter_id is empty", 4, ""),
        id="blank-meter",
    ),
    case(
        "standardized_readings",
        at(4, meter_id="  "),
        ("meter_id", "meter_id is empty", 4, "  "),
        ("meter_id", "meter_id is not trimmed", 4, "  "),
        id="spaces-meter",
    ),
    case(
        "standardized_readings",
        at(4, meter_id=" m2"),
        ("meter_id", "meter_id is not trimmed", 4, " m2"),
        id="leading-space-meter",
    ),
    case(
        "standardized_readings",
        at(4, meter_id="m2\t"),
        ("meter_id", "meter_id is not trimmed", 4, "m2\t"),
        id="trailing-tab-meter",
    ),
    # kw
    case("standardized_readings", at(0, kw=-0.001), ("kw", IN_RANGE, 0, "-0.001"), id="kw-below-0"),
    case(
        "standardized_readings", at(1, kw=10.001), ("kw", IN_RANGE, 1, "10.001"), id="kw-above-max"
    ),
    case(
        "standardized_readings",
        at(2, kw=float("inf")),
        ("kw", IN_RANGE, 2, "inf"),
        id="kw-infinite",
    ),
    # A NaN kW is not taken for a null (as pandas did): it fails the range.
    case("standardized_readings", at(0, kw=float("nan")), ("kw", IN_RANGE, 0, "NaN"), id="kw-nan"),
    # quality: "estimated" with no kW and the missing flag meets every consistency rule.
    case(
        "standardized_readings",
        at(3, quality="estimated"),
        ("quality", "isin(('measured', 'filled', 'missing'))", 3, "estimated"),
        id="quality-unknown",
    ),
    case(
        "standardized_readings",
        at(3, quality="Missing"),
        ("quality", "isin(('measured', 'filled', 'missing'))", 3, "Missing"),
        id="quality-case",
    ),
    # the three quality rules, each broken alone
    case(
        "standardized_readings",
        at(0, kw=None),
        ("standardized_readings", MEASURED, 0, None),
        id="measured-without-kw",
    ),
    case(
        "standardized_readings",
        at(1, missing_value=True),
        ("standardized_readings", MEASURED, 1, None),
        ("standardized_readings", MISSING_FLAG, 1, None),
        id="measured-flagged-missing",
    ),
    case(
        "standardized_readings",
        at(1, filled=True),
        ("standardized_readings", MEASURED, 1, None),
        ("standardized_readings", FILLED, 1, None),
        id="measured-flagged-filled",
    ),
    case(
        "standardized_readings",
        at(2, filled=False),
        ("standardized_readings", FILLED, 2, None),
        id="filled-not-flagged",
    ),
    case(
        "standardized_readings",
        at(2, kw=None),
        ("standardized_readings", FILLED_KW, 2, None),
        id="filled-without-kw",
    ),
    case(
        "standardized_readings",
        at(2, missing_value=False),
        ("standardized_readings", MISSING_FLAG, 2, None),
        id="filled-not-missing",
    ),
    case(
        "standardized_readings",
        at(3, kw=2.0),
        ("standardized_readings", MISSING, 3, None),
        id="missing-with-kw",
    ),
    # "and only they": a row that looks measured, or filled, under another quality
    case(
        "standardized_readings",
        at(3, kw=2.0, missing_value=False),
        ("standardized_readings", MEASURED, 3, None),
        ("standardized_readings", MISSING, 3, None),
        ("standardized_readings", MISSING_FLAG, 3, None),
        id="missing-looks-measured",
    ),
    case(
        "standardized_readings",
        at(3, filled=True, kw=2.0),
        ("standardized_readings", FILLED, 3, None),
        ("standardized_readings", MISSING, 3, None),
        id="missing-looks-filled",
    ),
    # a flag alone out of place: once let through, when the filled rule also asked for a kW
    # and the missing flag, and no rule asked a missing row for its flag
    case(
        "standardized_readings",
        at(3, filled=True),
        ("standardized_readings", FILLED, 3, None),
        id="missing-flagged-filled",
    ),
    case(
        "standardized_readings",
        at(3, missing_value=False),
        ("standardized_readings", MISSING_FLAG, 3, None),
        id="missing-not-flagged-missing",
    ),
    # reading_ts on its UTC day
    case(
        "standardized_readings",
        at(4, reading_ts=utc("2026-11-21 00:00")),
        ("standardized_readings", UTC_DAY, 4, None),
        id="ts-next-day",
    ),
    case(
        "standardized_readings",
        at(0, reading_ts=utc("2026-11-19 23:59:59.999999")),
        ("standardized_readings", UTC_DAY, 0, None),
        id="ts-day-before",
    ),
    # interval_minutes; NaN counts as null to Pandera's Polars backend
    case(
        "standardized_readings",
        at(0, interval_minutes=0.0),
        ("interval_minutes", "greater_than(0)", 0, "0.0"),
        id="interval-0",
    ),
    case(
        "standardized_readings",
        at(1, interval_minutes=-15.0),
        ("interval_minutes", "greater_than(0)", 1, "-15.0"),
        id="interval-negative",
    ),
    case(
        "standardized_readings",
        at(1, interval_minutes=float("nan")),
        ("interval_minutes", "not_nullable", 1, "NaN"),
        id="interval-nan",
    ),
    case(
        "standardized_readings",
        at(3, source_line=0),
        ("source_line", GE_1, 3, "0"),
        id="source-line-0",
    ),
    case(
        "standardized_readings",
        append(4),
        ("standardized_readings", UNIQUE, 4, None),
        ("standardized_readings", UNIQUE, 5, None),
        id="doubled-meter-ts",
    ),
    # quarantine
    case(
        "quarantine",
        at(0, reason="bad_value"),
        ("reason", f"isin({codes.REASONS!r})", 0, "bad_value"),
        id="reason-unknown",
    ),
    case(
        "quarantine",
        at(1, reason=codes.QUALITY_MISSING),
        ("reason", f"isin({codes.REASONS!r})", 1, "missing"),
        id="reason-is-a-quality",
    ),
    case("quarantine", at(2, detail=""), ("detail", "_nonblank", 2, ""), id="blank-detail"),
    case("quarantine", at(2, detail="\n "), ("detail", "_nonblank", 2, "\n "), id="space-detail"),
    case("quarantine", at(1, source_line=0), ("source_line", GE_1, 1, "0"), id="line-0"),
    case(
        "quarantine",
        at(2, source_file="f1", source_line=11),
        ("quarantine", UNIQUE, 1, None),
        ("quarantine", UNIQUE, 2, None),
        id="doubled-line",
    ),
    # fault_flags
    case(
        "fault_flags",
        at(2, rule="flatline"),
        ("rule", f"isin({codes.FAULT_RULES!r})", 2, "flatline"),
        id="rule-unknown",
    ),
    case(
        "fault_flags",
        at(0, run_end=utc("2026-11-18 06:00")),
        ("fault_flags", "run_end is after run_start", 0, None),
        id="run-ends-at-start",
    ),
    case(
        "fault_flags",
        at(1, run_end=utc("2026-11-15 23:45")),
        ("fault_flags", "run_end is after run_start", 1, None),
        id="run-ends-before-start",
    ),
    case(
        "fault_flags",
        at(2, meter_id="m1"),
        ("fault_flags", UNIQUE, 0, None),
        ("fault_flags", UNIQUE, 2, None),
        id="doubled-meter-rule",
    ),
    # meter_daily_peaks
    case(
        "meter_daily_peaks",
        at(1, meter_id="m1"),
        ("meter_id", "field_uniqueness", 0, "m1"),
        ("meter_id", "field_uniqueness", 1, "m1"),
        id="doubled-meter",
    ),
    case(
        "meter_daily_peaks",
        at(1, peak_kw=-1.0),
        ("peak_kw", IN_RANGE, 1, "-1.0"),
        id="peak-below-0",
    ),
    case(
        "meter_daily_peaks",
        at(0, peak_kw=10.5),
        ("peak_kw", IN_RANGE, 0, "10.5"),
        id="peak-above-max",
    ),
    case(
        "meter_daily_peaks",
        at(1, peak_ts=utc("2026-11-21 00:00")),
        ("meter_daily_peaks", PEAK_UTC_DAY, 1, None),
        id="peak-next-day",
    ),
    case(
        "meter_daily_peaks",
        at(0, peak_ts=utc("2026-11-19 23:45")),
        ("meter_daily_peaks", PEAK_UTC_DAY, 0, None),
        id="peak-day-before",
    ),
    # system_peaks
    case(
        "system_peaks",
        append(0, peak_ts=utc("2026-11-20 18:00")),
        ("system_peaks", "at most one system peak per day", 0, None),
        id="two-rows",
    ),
    case(
        "system_peaks",
        at(0, total_kw=-0.5),
        ("total_kw", "greater_than_or_equal_to(0)", 0, "-0.5"),
        id="total-negative",
    ),
    case(
        "system_peaks",
        at(0, meters_reporting=0),
        ("meters_reporting", GE_1, 0, "0"),
        id="no-meters",
    ),
    case(
        "system_peaks",
        at(0, peak_ts=utc("2026-11-19 12:00")),
        ("system_peaks", PEAK_UTC_DAY, 0, None),
        id="peak-other-day",
    ),
]


@pytest.mark.parametrize(("table", "change", "expected"), BROKEN)
def test_each_rule_catches_its_case(table, change, expected):
    """One rule broken in a valid frame: that rule, on that row, and nothing else fails."""
    assert failures(table, change(valid(table))) == expected


WRONG_DTYPE = {
    pl.String: pl.Categorical,
    pl.Int64: pl.Int32,
    pl.Int32: pl.Int64,
    pl.Float64: pl.Float32,
    pl.Boolean: pl.Int8,
    pl.Date: TS,
}
# Checks that use string functions cannot run on a column that is not a String.
STRING_FUNCTION_CHECKS = {
    ("raw_readings", "source_file"): ["_nonblank"],
    ("standardized_readings", "meter_id"): ["meter_id is empty", "meter_id is not trimmed"],
    ("quarantine", "detail"): ["_nonblank"],
}
TIMESTAMPS = {"reading_ts", "run_start", "run_end", "peak_ts"}


@pytest.mark.parametrize(
    ("table", "column"),
    [
        (table, column)
        for table in TABLES
        for column in valid(table).columns
        if column not in TIMESTAMPS
    ],
)
def test_a_wrong_dtype_is_caught(table, column):
    """Every column but the timestamps declares the dtype the warehouse gives (Int32 for an
    INTEGER, Int64 for a BIGINT...): a near miss is reported as a dtype error, and checks that
    need string functions report that they could not run."""
    declared = valid(table).schema[column]
    wrong = WRONG_DTYPE[declared]
    frame = valid(table).with_columns(pl.col(column).cast(wrong))
    found = {
        (name, check, index, "SchemaError" if case.startswith("SchemaError(") else case)
        for name, check, index, case in failures(table, frame)
    }
    assert found == {
        (column, f"dtype('{declared}')", None, str(wrong)),
        *(
            (column, check, None, "SchemaError")
            for check in STRING_FUNCTION_CHECKS.get((table, column), [])
        ),
    }


NOT_NULLABLE = {
    "raw_readings": ["source_file", "source_line", "field_count", "partition_date"],
    "standardized_readings": [
        "meter_id",
        "reading_ts",
        "quality",
        "missing_value",
        "filled",
        "unit_converted",
        "had_duplicates",
        "interval_minutes",
        "partition_date",
    ],
    "quarantine": ["reason", "detail", "source_file", "source_line"],
    "fault_flags": ["meter_id", "rule", "run_start", "run_end"],
    "meter_daily_peaks": ["meter_id", "peak_kw", "peak_ts", "partition_date"],
    "system_peaks": ["peak_ts", "total_kw", "meters_reporting", "partition_date"],
}


@pytest.mark.parametrize(
    ("table", "column"),
    [(table, column) for table, columns in NOT_NULLABLE.items() for column in columns],
)
def test_a_null_in_a_not_null_column_is_caught(table, column):
    """The warehouse's NOT NULL columns are not nullable in the schema either: a null is
    reported once, as not_nullable, on its row (the other rules skip a null)."""
    frame = at(0, **{column: None})(valid(table))
    assert failures(table, frame) == {(column, "not_nullable", 0, None)}


def test_the_nullable_columns_are_the_documented_ones():
    """kW (missing rows) and the clean source line (added rows) may be null; the valid frame
    holds both nulls, and no other column of any schema is nullable."""
    nullable = {
        (table, name)
        for table, schema in schemas(DEFAULT).items()
        for name, column in schema.columns.items()
        if column.nullable
    }
    assert nullable == {("standardized_readings", "kw"), ("standardized_readings", "source_line")}
    assert valid("standardized_readings").null_count().row(0, named=True) == {
        **dict.fromkeys(valid("standardized_readings").columns, 0),
        "kw": 1,
        "source_line": 1,
    }


# Checks that judge a value by itself alone, whatever the other rows hold.
ONE_VALUE_CHECKS = {
    "_nonblank",
    "_trimmed",
    "isin",
    "in_range",
    "greater_than",
    "greater_than_or_equal_to",
}


def test_column_checks_judge_each_value_on_its_own():
    """Validation judges a dictionary-encoded column once per distinct value, which is right
    only while a column's checks look at one value at a time: a new kind of column check must
    be known to do so (added here) or go on the frame."""
    found = {
        check.name
        for schema in schemas(DEFAULT).values()
        for column in schema.columns.values()
        for check in column.checks
    }
    assert found <= ONE_VALUE_CHECKS


# --- validate_day on a real warehouse ---------------------------------------------------------


def test_a_raw_key_doubled_across_batches_is_named(con, monkeypatch):
    """Uniqueness spans the batches: line 2 of f1 landed twice, 20 rows apart, in batches of 7,
    is reported once with its key and count, and no batch reports anything else."""
    monkeypatch.setattr(validation, "BATCH_ROWS", 7)
    batches: list[set[tuple]] = []
    regrouped = validation._regrouped

    def spy(reader, rows):
        for table in regrouped(reader, rows):
            keys = zip(
                table["source_file"].to_pylist(), table["source_line"].to_pylist(), strict=True
            )
            batches.append(set(keys))
            yield table

    monkeypatch.setattr(validation, "_regrouped", spy)
    add_file(con, "f1", series("M1", "2026-11-20 00:00", [1.0] * 20), D)
    add_file(con, "f1", series("M1", "2026-11-20 00:00", [2.0]), D, first_line=2)
    rows, cases = validation.validate_day(con, "raw_readings", schemas(DEFAULT)["raw_readings"], D)
    assert rows == 21
    assert [i for i, keys in enumerate(batches) if ("f1", 2) in keys] == [0, len(batches) - 1]
    assert cases.to_dict("records") == [
        {
            "column": "['source_file', 'source_line']",
            "check": "multiple_fields_uniqueness",
            "failure_case": "f1,2,2",
        }
    ]


@pytest.mark.parametrize(
    ("table", "rows"),
    [
        ("raw_readings", 10),
        ("standardized_readings", 10),
        ("quarantine", 1),
        ("fault_flags", 0),
        ("meter_daily_peaks", 2),
        ("system_peaks", 1),
    ],
)
def test_a_clean_pipeline_day_passes(con, monkeypatch, table, rows):
    """A day the pipeline built itself (measured, filled, missing, a quarantined row, the
    peaks) passes every schema in batches of 4: (rows checked, None)."""
    monkeypatch.setattr(validation, "BATCH_ROWS", 4)
    values = [1.0, None, 2.0, "NULL", "NULL", "NULL", "NULL", "NULL", 3.0, "x"]
    add_file(
        con,
        "f1",
        [*series("M1", "2026-11-20 00:00", values), *series("M2", "2026-11-20 12:00", [0.5])],
        D,
    )
    run_day(con, D)
    assert validation.validate_day(con, table, schemas(DEFAULT)[table], D) == (rows, None)
