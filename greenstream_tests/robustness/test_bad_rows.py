"""Issue 5, bad rows: every reason code of DESIGN.md section 2 and the odd values, timestamps and
meter ids that head-end exports contain, each with its exact outcome.

The single-line cases share one file (each on its own meter, so they cannot interact) that is
landed and run once; the cases that need other rows (duplicates, the z-score window, DST) get a
file of their own. Every file is landed through ``land_file`` and run through the pipeline's
per-asset functions, so the CSV reader, the day placement and the rules are all exercised.
"""

from __future__ import annotations

import contextlib
import datetime as dt

import pytest

from greenstream_dagster.rules import codes
from greenstream_dagster.settings import Settings
from greenstream_dagster.storage import warehouse
from greenstream_dagster.storage.warehouse import TABLES

from .helpers import ARRIVAL, DAY, assert_balanced, land_and_run, line_outcome, utc, write_lines

T0 = "2026-11-20T00:00:00Z"
NEXT_DAY = dt.date(2026, 11, 21)


def ok(meter: str, ts: str, kw: float | None, quality: str = "measured") -> tuple:
    return ("clean", meter, utc(ts), kw, quality)


def missing(meter: str, ts: str = T0) -> tuple:
    return ok(meter, ts, None, "missing")


def bad(reason: str, detail: str) -> tuple:
    return ("quarantine", reason, detail)


def not_a_number(text: str) -> tuple:
    return bad("invalid_value", f"energy_value '{text}' is not a finite decimal number")


# (case id, CSV line exactly as written, expected outcome). Each case has its own meter.
SINGLE_LINE_CASES = [
    # step 1: structure
    (
        "too_few_fields",
        "s1,2026-11-20T00:00:00Z,1.5",
        bad("malformed_row", "expected the header's fields, found 3: s1,2026-11-20T00:00:00Z,1.5"),
    ),
    (
        "too_many_fields",
        "s2,2026-11-20T00:00:00Z,1.5,kW,surplus",
        bad(
            "malformed_row",
            "expected the header's fields, found 5: s2,2026-11-20T00:00:00Z,1.5,kW,surplus",
        ),
    ),
    ("one_field", "s3", bad("malformed_row", "expected the header's fields, found 1: s3")),
    (
        "empty_meter_id",
        ",2026-11-20T00:00:00Z,1.5,kW",
        bad("missing_meter_id", "meter_id is empty"),
    ),
    (
        "blank_meter_id",
        "   ,2026-11-20T00:00:00Z,1.5,kW",
        bad("missing_meter_id", "meter_id is empty"),
    ),
    (
        "quoted_empty_meter_id",
        '"",2026-11-20T00:00:00Z,1.5,kW',
        bad("missing_meter_id", "meter_id is empty"),
    ),
    # step 2: timestamps that cannot be read
    (
        "words_timestamp",
        "t1,yesterday,1.5,kW",
        bad("invalid_timestamp", "cannot read 'yesterday' as an ISO-8601 date and time"),
    ),
    (
        "empty_timestamp",
        "t2,,1.5,kW",
        bad("invalid_timestamp", "cannot read '' as an ISO-8601 date and time"),
    ),
    (
        "impossible_date",
        "t3,2026-02-30T00:00:00Z,1.5,kW",
        bad("invalid_timestamp", "cannot read '2026-02-30T00:00:00Z' as an ISO-8601 date and time"),
    ),
    (
        "offset_above_18_hours",
        "t4,2026-11-20T00:00:00+25:00,1.5,kW",
        bad(
            "invalid_timestamp",
            "cannot read '2026-11-20T00:00:00+25:00' as an ISO-8601 date and time",
        ),
    ),
    (
        "offset_minutes_60",
        "t5,2026-11-20T00:00:00+05:60,1.5,kW",
        bad(
            "invalid_timestamp",
            "cannot read '2026-11-20T00:00:00+05:60' as an ISO-8601 date and time",
        ),
    ),
    (
        "epoch_seconds",
        "t6,1795132800,1.5,kW",
        bad("invalid_timestamp", "cannot read '1795132800' as an ISO-8601 date and time"),
    ),
    (
        "before_start_date",
        "t7,2019-12-31T23:45:00Z,1.5,kW",
        bad(
            "invalid_timestamp",
            "2019-12-31T23:45:00Z is before the first day 2020-01-01 (GREENSTREAM_START_DATE)",
        ),
    ),
    # step 2: later than the arrival (2026-11-21T00:00Z) plus one hour; the limit itself is fine
    (
        "future_by_a_microsecond",
        "t8,2026-11-21T01:00:00.000001Z,1.5,kW",
        bad(
            "future_timestamp",
            "2026-11-21T01:00:00Z is after the file's arrival 2026-11-21T00:00:00Z "
            "plus 60.0 minutes",
        ),
    ),
    (
        "arrival_plus_one_hour",
        "t9,2026-11-21T01:00:00Z,1.5,kW",
        ok("t9", "2026-11-21T01:00:00Z", 1.5),
    ),
    # step 2: timestamps that are odd but valid
    (
        "fraction_of_seconds",
        "f1,2026-11-20T00:00:00.123456Z,1.5,kW",
        ok("f1", "2026-11-20T00:00:00.123456Z", 1.5),
    ),
    (
        "fraction_beyond_microseconds",
        "f2,2026-11-20T00:00:00.1234567Z,1.5,kW",
        ok("f2", "2026-11-20T00:00:00.123456Z", 1.5),
    ),
    (
        "fraction_with_short_offset",
        "f3,2026-11-20T01:00:00.5+01,1.5,kW",
        ok("f3", "2026-11-20T00:00:00.5Z", 1.5),
    ),
    ("nepal_offset", "f4,2026-11-20T05:45:00+05:45,1.5,kW", ok("f4", T0, 1.5)),
    ("offset_without_colon", "f5,2026-11-20T05:45:00+0545,1.5,kW", ok("f5", T0, 1.5)),
    ("negative_offset", "f6,2026-11-19T23:00:00-01:00,1.5,kW", ok("f6", T0, 1.5)),
    ("minus_zero_offset", "f7,2026-11-20T00:00:00-00:00,1.5,kW", ok("f7", T0, 1.5)),
    ("offset_plus_14", "f8,2026-11-20T14:00:00+14:00,1.5,kW", ok("f8", T0, 1.5)),
    ("offset_minus_12", "f9,2026-11-19T12:00:00-12:00,1.5,kW", ok("f9", T0, 1.5)),
    ("naive_is_utc", "f10,2026-11-20 00:15:00,1.5,kW", ok("f10", "2026-11-20T00:15:00Z", 1.5)),
    (
        "naive_without_seconds",
        "f11,2026-11-20 00:30,1.5,kW",
        ok("f11", "2026-11-20T00:30:00Z", 1.5),
    ),
    ("lower_case_t_and_z", "f12,2026-11-20t00:00:00z,1.5,kW", ok("f12", T0, 1.5)),
    ("space_before_offset", "f13,2026-11-20T01:00:00 +01:00,1.5,kW", ok("f13", T0, 1.5)),
    ("spaces_around_timestamp", "f14,  2026-11-20T00:00:00Z  ,1.5,kW", ok("f14", T0, 1.5)),
    # step 3: values
    ("overflowing_exponent", "v1,2026-11-20T00:00:00Z,1e400,kW", not_a_number("1e400")),
    ("inf", "v2,2026-11-20T00:00:00Z,inf,kW", not_a_number("inf")),
    ("minus_inf", "v3,2026-11-20T00:00:00Z,-inf,kW", not_a_number("-inf")),
    ("infinity_word", "v4,2026-11-20T00:00:00Z,Infinity,kW", not_a_number("Infinity")),
    ("lower_case_nan", "v5,2026-11-20T00:00:00Z,nan,kW", not_a_number("nan")),
    ("thousands_comma", 'v6,2026-11-20T00:00:00Z,"1,234",W', not_a_number("1,234")),
    ("thousands_space", "v7,2026-11-20T00:00:00Z,1 234,W", not_a_number("1 234")),
    ("thousands_underscore", "v8,2026-11-20T00:00:00Z,1_234,W", not_a_number("1_234")),
    ("thousands_dot_and_comma", 'v9,2026-11-20T00:00:00Z,"1.234,5",W', not_a_number("1.234,5")),
    ("hexadecimal", "v10,2026-11-20T00:00:00Z,0x10,kW", not_a_number("0x10")),
    ("value_with_unit", "v11,2026-11-20T00:00:00Z,1.5kW,kW", not_a_number("1.5kW")),
    ("not_applicable", "v12,2026-11-20T00:00:00Z,n/a,kW", not_a_number("n/a")),
    ("two_signs", "v13,2026-11-20T00:00:00Z,+-1,kW", not_a_number("+-1")),
    ("minus_zero", "v14,2026-11-20T00:00:00Z,-0,kW", ok("v14", T0, 0.0)),
    ("leading_plus", "v15,2026-11-20T00:00:00Z,+1.5,kW", ok("v15", T0, 1.5)),
    ("leading_plus_watts", "v16,2026-11-20T00:00:00Z,+1500,W", ok("v16", T0, 1.5)),
    ("small_exponent", "v17,2026-11-20T00:00:00Z,1.5e-3,kW", ok("v17", T0, 0.0015)),
    ("underflow_to_zero", "v18,2026-11-20T00:00:00Z,1e-400,kW", ok("v18", T0, 0.0)),
    ("leading_dot", "v19,2026-11-20T00:00:00Z,.5,kW", ok("v19", T0, 0.5)),
    ("trailing_dot", "v20,2026-11-20T00:00:00Z,5.,kW", ok("v20", T0, 5.0)),
    ("spaces_around_value", "v21,2026-11-20T00:00:00Z,  2.5  ,kW", ok("v21", T0, 2.5)),
    ("leading_zeros", "v22,2026-11-20T00:00:00Z,0002.50,kW", ok("v22", T0, 2.5)),
    # step 3: missing markers make a missing interval, never a quarantined row
    ("empty_value", "n1,2026-11-20T00:00:00Z,,kW", missing("n1")),
    ("NULL", "n2,2026-11-20T00:00:00Z,NULL,kW", missing("n2")),
    ("null", "n3,2026-11-20T00:00:00Z,null,kW", missing("n3")),
    ("NaN", "n4,2026-11-20T00:00:00Z,NaN,kW", missing("n4")),
    ("NA", "n5,2026-11-20T00:00:00Z,NA,kW", missing("n5")),
    ("None", "n6,2026-11-20T00:00:00Z,None,kW", missing("n6")),
    ("missing_value_unknown_unit", "n7,2026-11-20T00:00:00Z,NULL,MW", missing("n7")),
    # step 3: units
    (
        "megawatt",
        "u1,2026-11-20T00:00:00Z,1.5,MW",
        bad("unknown_unit", "energy_unit 'MW', expected W or kW"),
    ),
    (
        "energy_not_power",
        "u2,2026-11-20T00:00:00Z,1.5,kWh",
        bad("unknown_unit", "energy_unit 'kWh', expected W or kW"),
    ),
    (
        "empty_unit",
        "u3,2026-11-20T00:00:00Z,1.5,",
        bad("unknown_unit", "energy_unit '', expected W or kW"),
    ),
    ("lower_case_kw_with_spaces", "u4,2026-11-20T00:00:00Z,1.5, kw ", ok("u4", T0, 1.5)),
    ("upper_case_KW", "u5,2026-11-20T00:00:00Z,1.5,KW", ok("u5", T0, 1.5)),
    ("lower_case_w", "u6,2026-11-20T00:00:00Z,1500,w", ok("u6", T0, 1.5)),
    # step 6: range, after the unit is standardised
    ("negative_kw", "r1,2026-11-20T00:00:00Z,-0.5,kW", bad("negative_value", "kW -0.5 is below 0")),
    ("negative_w", "r2,2026-11-20T00:00:00Z,-1,W", bad("negative_value", "kW -0.001 is below 0")),
    (
        "above_max_kw",
        "r3,2026-11-20T00:00:00Z,10.001,kW",
        bad("above_max", "kW 10.001 is above the maximum 10.0"),
    ),
    (
        "above_max_w",
        "r4,2026-11-20T00:00:00Z,10001,W",
        bad("above_max", "kW 10.001 is above the maximum 10.0"),
    ),
    ("max_itself", "r5,2026-11-20T00:00:00Z,10,kW", ok("r5", T0, 10.0)),
    ("zero", "r6,2026-11-20T00:00:00Z,0,kW", ok("r6", T0, 0.0)),
    # meter ids: stored as text (trimmed), never interpreted
    ("spaces_inside_and_around", " m 1 ,2026-11-20T00:00:00Z,1.5,kW", ok("m 1", T0, 1.5)),
    ("escaped_double_quote", '"m""2",2026-11-20T00:00:00Z,1.5,kW', ok('m"2', T0, 1.5)),
    ("single_quotes", "'m3',2026-11-20T00:00:00Z,1.5,kW", ok("'m3'", T0, 1.5)),
    ("unicode", "zähler-ü-€-😀,2026-11-20T00:00:00Z,1.5,kW", ok("zähler-ü-€-😀", T0, 1.5)),
    ("zero_width_space", "m\u200b4,2026-11-20T00:00:00Z,1.5,kW", ok("m\u200b4", T0, 1.5)),
    (
        "sql_drop_table",
        "'; DROP TABLE raw_readings; --,2026-11-20T00:00:00Z,1.5,kW",
        ok("'; DROP TABLE raw_readings; --", T0, 1.5),
    ),
    (
        "sql_with_comma",
        "\"x'), ('y'); DELETE FROM quarantine; --\",2026-11-20T00:00:00Z,1.5,kW",
        ok("x'), ('y'); DELETE FROM quarantine; --", T0, 1.5),
    ),
    (
        "formula",
        "=cmd|' /C calc'!A0,2026-11-20T00:00:00Z,1.5,kW",
        ok("=cmd|' /C calc'!A0", T0, 1.5),
    ),
    ("formula_at_sign", "@SUM(1+1)*cmd,2026-11-20T00:00:00Z,1.5,kW", ok("@SUM(1+1)*cmd", T0, 1.5)),
    ("parameter_like", "$day,2026-11-20T00:00:00Z,1.5,kW", ok("$day", T0, 1.5)),
    ("positional_parameter_like", "?,2026-11-20T00:00:00Z,1.5,kW", ok("?", T0, 1.5)),
    ("word_null", "NULL,2026-11-20T00:00:00Z,1.5,kW", ok("NULL", T0, 1.5)),
    ("backslash", "m\\5,2026-11-20T00:00:00Z,1.5,kW", ok("m\\5", T0, 1.5)),
]

IDS = [case_id for case_id, _, _ in SINGLE_LINE_CASES]
assert len(set(IDS)) == len(IDS)
# The reasons only a file of several rows can show, each tested below.
CONTEXT_REASONS = {codes.DUPLICATE, codes.OUTLIER_ZSCORE, codes.AMBIGUOUS_TIMESTAMP}


def test_every_reason_code_is_exercised():
    single = {expected[1] for _, _, expected in SINGLE_LINE_CASES if expected[0] == "quarantine"}
    assert single | CONTEXT_REASONS == set(codes.REASONS)


@pytest.fixture(scope="module")
def single_line_run(tmp_path_factory):
    """All single-line cases in one file, landed and run once."""
    home = tmp_path_factory.mktemp("bad_rows")
    settings = Settings(home=home / "home")
    path = write_lines(home / "rows.csv", [line for _, line, _ in SINGLE_LINE_CASES])
    with warehouse.connect(":memory:") as con:
        (landed,) = land_and_run(con, settings, [path])
        yield con, landed.sidecar


@pytest.mark.parametrize(
    ("line", "expected"),
    [(i + 2, expected) for i, (_, _, expected) in enumerate(SINGLE_LINE_CASES)],
    ids=IDS,
)
def test_single_line_outcome(single_line_run, line, expected):
    con, sidecar = single_line_run
    assert line_outcome(con, sidecar.source_file, line) == expected


def test_rows_without_a_day_go_to_the_files_first_day(single_line_run):
    con, sidecar = single_line_run
    assert sidecar.days == [DAY, NEXT_DAY]
    no_day = con.execute(
        """SELECT DISTINCT partition_date FROM quarantine
           WHERE reason IN ('malformed_row', 'invalid_timestamp', 'future_timestamp')"""
    ).fetchall()
    assert no_day == [(DAY,)]


def test_nothing_lost_and_tables_intact(single_line_run):
    con, sidecar = single_line_run
    assert_balanced(con, sidecar.days)
    (raw,) = con.execute("SELECT count(*) FROM raw_readings").fetchone()
    assert raw == len(SINGLE_LINE_CASES)
    tables = {name for (name,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert set(TABLES) <= tables


def test_raw_text_is_kept_verbatim(single_line_run):
    """raw_readings and quarantine hold the fields exactly as the file had them."""
    con, sidecar = single_line_run
    raw = dict(
        con.execute(
            "SELECT source_line, meter_id FROM raw_readings WHERE source_file = ?",
            [sidecar.source_file],
        ).fetchall()
    )
    assert raw[IDS.index("spaces_inside_and_around") + 2] == " m 1 "
    assert raw[IDS.index("sql_drop_table") + 2] == "'; DROP TABLE raw_readings; --"
    assert raw[IDS.index("formula") + 2] == "=cmd|' /C calc'!A0"
    held = dict(
        con.execute(
            """SELECT source_line, (meter_id, "timestamp", energy_value, energy_unit)
               FROM quarantine WHERE source_file = ?""",
            [sidecar.source_file],
        ).fetchall()
    )
    assert held[IDS.index("thousands_comma") + 2] == ("v6", "2026-11-20T00:00:00Z", "1,234", "W")
    assert held[IDS.index("blank_meter_id") + 2] == ("   ", "2026-11-20T00:00:00Z", "1.5", "kW")
    assert held[IDS.index("empty_unit") + 2] == ("u3", "2026-11-20T00:00:00Z", "1.5", "")


# --- cases that need other rows ---------------------------------------------------------------


@pytest.fixture
def run(tmp_path):
    """Land one file of ``lines`` and run its days; returns (connection, file SHA-256)."""
    with contextlib.ExitStack() as stack:

        def _run(lines, settings=None):
            settings = settings or Settings(home=tmp_path / "home")
            path = write_lines(tmp_path / "file.csv", lines)
            con = stack.enter_context(warehouse.connect(":memory:"))
            (landed,) = land_and_run(con, settings, [path])
            assert_balanced(con, landed.sidecar.days)
            return con, landed.sidecar.source_file

        yield _run


def test_duplicate_latest_line_wins(run):
    con, sha = run(["d1,2026-11-20T00:00:00Z,1.0,kW", "d1,2026-11-20T00:00:00Z,2.0,kW"])
    assert line_outcome(con, sha, 2) == bad(
        "duplicate",
        f"meter d1 at 2026-11-20T00:00:00Z has a version that wins: file {sha} line 3",
    )
    assert line_outcome(con, sha, 3) == ok("d1", T0, 2.0)
    assert con.execute("SELECT had_duplicates FROM standardized_readings").fetchall() == [(True,)]


def test_duplicate_missing_value_never_overrides_a_present_one(run):
    con, sha = run(["d1,2026-11-20T00:00:00Z,1.0,kW", "d1,2026-11-20T00:00:00Z,NULL,kW"])
    assert line_outcome(con, sha, 2) == ok("d1", T0, 1.0)
    assert line_outcome(con, sha, 3)[:2] == ("quarantine", "duplicate")


def test_duplicate_is_the_same_utc_instant_and_trimmed_meter(run):
    """Different offsets for one instant, and ids that differ by spaces only, are duplicates."""
    con, sha = run(["d1,2026-11-20T00:00:00Z,1.0,kW", " d1 ,2026-11-20T01:00:00+01:00,2000,W"])
    assert line_outcome(con, sha, 2)[:2] == ("quarantine", "duplicate")
    assert line_outcome(con, sha, 3) == ok("d1", T0, 2.0)


def test_duplicate_across_files_latest_arrival_wins(tmp_path):
    settings = Settings(home=tmp_path / "home")
    late = write_lines(tmp_path / "late.csv", ["d1,2026-11-20T00:00:00Z,1.0,kW"])
    early = write_lines(tmp_path / "early.csv", ["d1,2026-11-20T00:00:00Z,2.0,kW", "x,y"])
    with warehouse.connect(":memory:") as con:
        # Landed in this order but the second one arrived first: arrival time decides.
        landed = land_and_run(
            con, settings, [late, early], [ARRIVAL, ARRIVAL - dt.timedelta(hours=1)]
        )
        late_sha, early_sha = (item.sidecar.source_file for item in landed)
        assert line_outcome(con, late_sha, 2) == ok("d1", T0, 1.0)
        assert line_outcome(con, early_sha, 2) == bad(
            "duplicate",
            f"meter d1 at 2026-11-20T00:00:00Z has a version that wins: file {late_sha} line 2",
        )
        assert_balanced(con, [DAY])


def _steady(meter: str, count: int) -> list[str]:
    """``count`` readings 15 minutes apart from midnight, alternating 1.0 and 1.2 kW."""
    start = utc(T0)
    return [
        f"{meter},{(start + dt.timedelta(minutes=15 * i)):%Y-%m-%dT%H:%M:%SZ},"
        f"{1.0 if i % 2 == 0 else 1.2},kW"
        for i in range(count)
    ]


def test_outlier_zscore(run):
    con, sha = run([*_steady("z1", 16), "z1,2026-11-20T04:00:00Z,9.0,kW"])
    assert line_outcome(con, sha, 18) == bad(
        "outlier_zscore",
        "z = 76.49 from 16 readings of the trailing window (mean 1.1 kW, sd 0.1033 kW)",
    )
    # The rejected reading's interval is missing, and filled from the reading before it.
    assert con.execute(
        """SELECT kw, quality, source_line FROM standardized_readings
           WHERE reading_ts = '2026-11-20 04:00:00+00'"""
    ).fetchall() == [(1.2, "filled", None)]


def test_no_outlier_with_fewer_than_12_readings(run):
    con, sha = run([*_steady("z1", 11), "z1,2026-11-20T02:45:00Z,9.0,kW"])
    assert line_outcome(con, sha, 13) == ok("z1", "2026-11-20T02:45:00Z", 9.0)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "a1,2026-03-29 02:30:00,1.5,kW",
            bad(
                "ambiguous_timestamp",
                "local time '2026-03-29 02:30:00' does not exist in Europe/Amsterdam (DST change)",
            ),
        ),
        (
            "a1,2026-10-25 02:30:00,1.5,kW",
            bad(
                "ambiguous_timestamp",
                "local time '2026-10-25 02:30:00' is ambiguous in Europe/Amsterdam (DST change)",
            ),
        ),
        # With an offset there is nothing to guess.
        ("a1,2026-10-25T02:30:00+01:00,1.5,kW", ok("a1", "2026-10-25T01:30:00Z", 1.5)),
        ("a1,2026-10-25 03:30:00,1.5,kW", ok("a1", "2026-10-25T02:30:00Z", 1.5)),
    ],
    ids=["does_not_exist", "ambiguous", "with_offset", "after_the_change"],
)
def test_dst_in_the_source_time_zone(run, tmp_path, line, expected):
    settings = Settings(home=tmp_path / "home", source_tz="Europe/Amsterdam")
    con, sha = run(["anchor,2026-10-25T00:00:00Z,1,kW", line], settings=settings)
    assert line_outcome(con, sha, 3) == expected
