"""DESIGN.md section 2, steps 4 to 8: duplicates, kW, range, z-score, missing values and gaps.

Every expected row is derived from the contract. Clean rows are written with ``at``:
(meter, 'YYYY-MM-DD HH:MM' UTC, kW, quality).
"""

from __future__ import annotations

import datetime as dt
from contextlib import ExitStack

import pytest

from greenstream_dagster.rules import standardize as standardize_module
from greenstream_dagster.rules.standardize import spacings_of_stored_day_sql
from greenstream_dagster.settings import Settings
from greenstream_dagster.storage import warehouse
from greenstream_tests.support import (
    Batch,
    add_file,
    clean_rows,
    quarantine_rows,
    run_day,
    series,
    utc,
)

D = dt.date(2026, 11, 20)
D_BEFORE = D - dt.timedelta(days=1)
FLAGS = (
    "meter_id, strftime(reading_ts, '%Y-%m-%d %H:%M'), kw, quality, missing_value, filled, "
    "unit_converted, had_duplicates"
)
BASE = [1.0, 2.0] * 6  # 12 readings: mean 1.5, sample sd 0.522; a 5.0 after them has z = 6.7


def at(hhmm: str, kw: float | None, quality: str = "measured", meter: str = "m1", day=D):
    return (meter, f"{day.isoformat()} {hhmm}", kw, quality)


def measured_from(start: str, values: list[float], minutes: int = 15, meter: str = "m1"):
    """Expected measured rows for ``series(meter, start, values, minutes)``."""
    first = utc(start)
    return [
        (
            meter,
            (first + dt.timedelta(minutes=minutes * i)).strftime("%Y-%m-%d %H:%M"),
            v,
            "measured",
        )
        for i, v in enumerate(values)
        if v is not None
    ]


def standardize(con, day=D, settings=None):
    run_day(con, day, settings, faults=False, peaks=False)


def reasons(con, day=D) -> list[tuple]:
    return quarantine_rows(con, day, "source_line, reason")


def case_id(request) -> str:
    """The id of the running case of a table (its pytest.param id): its key in the batch."""
    return request.node.callspec.id


def new_batch(stack: ExitStack) -> Batch:
    return Batch(stack.enter_context(warehouse.connect(":memory:")))


# --- step 4: duplicates ----------------------------------------------------------------------

# Versions of meter m1 at 2026-11-20 00:00 UTC: (file, arrival hour on the 21st, line, value,
# unit[, timestamp text, meter text]). Expected: the winner's (file, line, kW) and the
# (file, line) of the versions quarantined as duplicate.
DUPLICATE_CASES = [
    # "The latest version wins: latest file arrival, ..."
    pytest.param(
        [("a", 1, 2, "1.0"), ("b", 2, 2, "2.0")], ("b", 2, 2.0), [("a", 2)], id="later-arrival"
    ),
    pytest.param(
        [("b", 2, 2, "2.0"), ("a", 1, 9, "1.0")],
        ("b", 2, 2.0),
        [("a", 9)],
        id="arrival-before-line",
    ),
    # "... then latest line in the file"
    pytest.param(
        [("a", 1, 2, "1.0"), ("a", 1, 3, "2.0")], ("a", 3, 2.0), [("a", 2)], id="later-line"
    ),
    pytest.param(
        [("a", 1, 3, "2.0"), ("a", 1, 7, "3.0"), ("a", 1, 2, "1.0")],
        ("a", 7, 3.0),
        [("a", 2), ("a", 3)],
        id="three-lines",
    ),
    # "but a missing value never overrides a present one"
    pytest.param(
        [("a", 1, 2, "1.0"), ("b", 2, 2, "NULL")], ("a", 2, 1.0), [("b", 2)], id="null-resend"
    ),
    pytest.param(
        [("a", 1, 2, "1.0"), ("a", 1, 3, "")], ("a", 2, 1.0), [("a", 3)], id="empty-later-line"
    ),
    pytest.param(
        [("a", 1, 2, "1.0"), ("b", 2, 2, "2.0"), ("c", 3, 2, "NaN")],
        ("b", 2, 2.0),
        [("a", 2), ("c", 2)],
        id="latest-present-wins",
    ),
    pytest.param(
        [("a", 1, 2, "NULL"), ("b", 2, 2, "2.0")], ("b", 2, 2.0), [("a", 2)], id="null-first"
    ),
    # Same meter_id (trimmed) and same UTC timestamp, however written.
    pytest.param(
        [("a", 1, 2, "1.0"), ("a", 1, 3, "2.0", "kW", "2026-11-20T01:00:00+01:00", " m1 ")],
        ("a", 3, 2.0),
        [("a", 2)],
        id="same-utc-instant",
    ),
    # The winner is chosen before the unit is standardised (step 5 comes after step 4).
    pytest.param(
        [("a", 1, 2, "2.0", "kW"), ("b", 2, 2, "1500", "W")],
        ("b", 2, 1.5),
        [("a", 2)],
        id="latest-in-watts",
    ),
]


def _version_row(version: tuple) -> tuple:
    """(file, hour, line, value[, unit[, timestamp, meter]]) -> a raw row."""
    unit = version[4] if len(version) > 4 else "kW"
    ts, meter = version[5:7] if len(version) > 5 else ("2026-11-20T00:00:00Z", "m1")
    return (meter, ts, version[3], unit)


@pytest.fixture(scope="module")
def duplicate_batch():
    with ExitStack() as stack:
        batch = new_batch(stack)
        for case in DUPLICATE_CASES:
            for version in case.values[0]:
                file, hour, line = version[:3]
                arrival = utc(f"2026-11-21 {hour:02d}:00")
                batch.add(case.id, [_version_row(version)], D, file, arrival, first_line=line)
        standardize(batch.con)
        yield batch


@pytest.mark.parametrize(("versions", "winner", "losers"), DUPLICATE_CASES)
def test_duplicates(duplicate_batch, request, versions, winner, losers):
    """Step 4: "Rows with the same meter_id and UTC timestamp are duplicates. The latest
    version wins ... Every other version goes to quarantine as duplicate; the survivor carries
    the flag had_duplicates"."""
    case = case_id(request)
    win_file, win_line, kw = winner
    in_watts = _version_row(next(v for v in versions if v[:3:2] == (win_file, win_line)))[3]
    rows = duplicate_batch.clean(case, D, f"{FLAGS}, source_file, source_line")
    assert rows == [
        (
            "m1",
            "2026-11-20 00:00",
            kw,
            "measured",
            False,
            False,
            in_watts == "W",
            True,
            f"{case}/{win_file}",
            win_line,
        )
    ]
    assert duplicate_batch.quarantine(case, D) == [(f, line, "duplicate") for f, line in losers]


def test_duplicates_only_missing_values(con):
    """Step 4: when every version is missing, the latest still wins; its interval is missing
    (step 8) and it carries had_duplicates."""
    add_file(con, "a", [("m1", "2026-11-20T00:00:00Z", "NULL", "kW")], D, utc("2026-11-21 01:00"))
    add_file(con, "b", [("m1", "2026-11-20T00:00:00Z", "None", "kW")], D, utc("2026-11-21 02:00"))
    standardize(con)
    assert clean_rows(con, D, columns=f"{FLAGS}, source_file") == [
        ("m1", "2026-11-20 00:00", None, "missing", True, False, False, True, "b")
    ]
    assert quarantine_rows(con, D) == [("a", 2, "duplicate")]


def test_rows_rejected_in_steps_1_to_3_are_not_versions(con):
    """Steps run in order and a rejected row leaves at its first rule: a later row with an
    invalid value or unit never takes part in step 4, so the earlier row survives alone."""
    add_file(
        con,
        "a",
        [
            ("m1", "2026-11-20T00:00:00Z", "1.0", "kW"),
            ("m1", "2026-11-20T00:00:00Z", "abc", "kW"),
            ("m1", "2026-11-20T00:00:00Z", "2.0", "MW"),
        ],
        D,
    )
    standardize(con)
    assert clean_rows(con, D, columns=f"{FLAGS}, source_line") == [
        ("m1", "2026-11-20 00:00", 1.0, "measured", False, False, False, False, 2)
    ]
    assert reasons(con) == [(3, "invalid_value"), (4, "unknown_unit")]


def test_latest_version_out_of_range_leaves_the_interval_missing(con):
    """Step 4 picks the latest present value; step 6 then rejects it (negative_value) and the
    interval becomes missing (step 8); the older version stays a duplicate."""
    add_file(con, "a", [("m1", "2026-11-20T00:00:00Z", "1.0", "kW")], D, utc("2026-11-21 01:00"))
    add_file(con, "b", [("m1", "2026-11-20T00:00:00Z", "-1.0", "kW")], D, utc("2026-11-21 02:00"))
    standardize(con)
    assert clean_rows(con, D) == [at("00:00", None, "missing")]
    assert quarantine_rows(con, D) == [("a", 2, "duplicate"), ("b", 2, "negative_value")]


# --- steps 5 and 6: kW and range -------------------------------------------------------------

_RANGE = [
    # Step 5: "W values are divided by 1000; flag unit_converted."
    ("1500", "W", Settings(), 1.5, None),
    ("250", "w", Settings(), 0.25, None),
    ("0", "W", Settings(), 0.0, None),
    ("1.5", "kW", Settings(), 1.5, None),
    # Step 6: "kW < 0: negative_value. kW > 10 (configurable): above_max."
    ("-0.001", "kW", Settings(), None, "negative_value"),
    ("-1", "W", Settings(), None, "negative_value"),
    ("0", "kW", Settings(), 0.0, None),
    ("10", "kW", Settings(), 10.0, None),
    ("10.001", "kW", Settings(), None, "above_max"),
    ("10000", "W", Settings(), 10.0, None),
    ("10001", "W", Settings(), None, "above_max"),
    ("5", "kW", Settings(max_kw=5), 5.0, None),
    ("5.001", "kW", Settings(max_kw=5), None, "above_max"),
    ("6000", "W", Settings(max_kw=5), None, "above_max"),
    ("15", "kW", Settings(max_kw=20), 15.0, None),
]
RANGE_CASES = [
    pytest.param(*c, id=f"{c[0]}{c[1]}-max{c[2].max_kw:g}".replace(" ", "")) for c in _RANGE
]


@pytest.fixture(scope="module")
def range_batches():
    """One batch per configuration."""
    with ExitStack() as stack:
        batches: dict[Settings, Batch] = {}
        for case in RANGE_CASES:
            value, unit, config = case.values[:3]
            batch = batches.get(config) or batches.setdefault(config, new_batch(stack))
            batch.add(case.id, [("m1", "2026-11-20T00:00:00Z", value, unit)], D)
        for config, batch in batches.items():
            standardize(batch.con, settings=config)
        yield batches


@pytest.mark.parametrize(("value", "unit", "config", "kw", "reason"), RANGE_CASES)
def test_unit_and_range(range_batches, request, value, unit, config, kw, reason):
    """Steps 5 and 6. A rejected reading leaves its interval missing (step 8): with no
    measured reading before it, it stays NULL."""
    batch, case = range_batches[config], case_id(request)
    if reason:
        assert batch.clean(case, D, FLAGS.split(", unit_converted")[0]) == [
            ("m1", "2026-11-20 00:00", None, "missing", True, False)
        ]
        assert batch.quarantine(case, D) == [("a", 2, reason)]
    else:
        assert batch.clean(case, D, FLAGS) == [
            ("m1", "2026-11-20 00:00", kw, "measured", False, False, unit.upper() == "W", False)
        ]
        assert batch.quarantine(case, D) == []


# --- step 7: z-score -------------------------------------------------------------------------


def hourly_before(hours: list[int]) -> list[tuple]:
    """BASE values at the given hours of the day before."""
    return [
        ("m1", f"2026-11-19T{h:02d}:00:00Z", str(v), "kW") for h, v in zip(hours, BASE, strict=True)
    ]


# 12 hours 00:00..11:00 of D between the day before's 23:00 and D's 12:00 (hourly meter):
# 720 minutes, so they stay missing (step 8).
HOURLY_GAP = [at(f"{h:02d}:00", None, "missing") for h in range(12)]

# (rows of the day before, rows of D, expected clean rows of D, expected quarantine of the day
# before and of D as (file, line, reason); the day before's file is "p", D's is "a").
ZSCORE_CASES = [
    # "With at least 12 such readings": 12 readings, then 5.0 (z = 6.7): outlier. Its interval
    # is then missing and filled from the reading before (step 8).
    pytest.param(
        [],
        series("m1", "2026-11-20 00:00", [*BASE, 5.0]),
        [*measured_from("2026-11-20 00:00", BASE), at("03:00", 2.0, "filled")],
        [],
        [("a", 14, "outlier_zscore")],
        id="12-trailing-readings",
    ),
    # 11 trailing readings: the rule does not apply (z would be 6.8).
    pytest.param(
        [],
        series("m1", "2026-11-20 00:00", [*BASE[:11], 5.0]),
        measured_from("2026-11-20 00:00", [*BASE[:11], 5.0]),
        [],
        [],
        id="11-trailing-readings",
    ),
    # A NULL value is no reading (it has no kW): 11 readings + 1 NULL are too few.
    pytest.param(
        [],
        series("m1", "2026-11-20 00:00", [*BASE[:11], "NULL", 5.0]),
        [
            *measured_from("2026-11-20 00:00", BASE[:11]),
            at("02:45", 1.0, "filled"),
            at("03:00", 5.0),
        ],
        [],
        [],
        id="missing-values-are-not-readings",
    ),
    # "and a sample standard deviation (n-1) above zero".
    pytest.param(
        [],
        series("m1", "2026-11-20 00:00", [1.0] * 12 + [5.0]),
        measured_from("2026-11-20 00:00", [1.0] * 12 + [5.0]),
        [],
        [],
        id="sd-zero",
    ),
    # |z| > 3: far below the window is an outlier too (z = -20).
    pytest.param(
        [],
        series("m1", "2026-11-20 00:00", [2.0, 2.2] * 6 + [0.0]),
        [*measured_from("2026-11-20 00:00", [2.0, 2.2] * 6), at("03:00", 2.2, "filled")],
        [],
        [("a", 14, "outlier_zscore")],
        id="absolute-z",
    ),
    # The trailing 24 hours of 00:00 are the day before's readings.
    pytest.param(
        series("m1", "2026-11-19 21:00", BASE),
        series("m1", "2026-11-20 00:00", [5.0]),
        [at("00:00", 2.0, "filled")],
        [],
        [("a", 2, "outlier_zscore")],
        id="window-reaches-into-the-day-before",
    ),
    # The window holds the readings "that passed step 6": an earlier outlier passed step 6,
    # so it counts. With it, a second 5.0 has z = 2.96: kept.
    pytest.param(
        [],
        series("m1", "2026-11-20 00:00", [*BASE, 5.0, 5.0]),
        [
            *measured_from("2026-11-20 00:00", BASE),
            at("03:00", 2.0, "filled"),
            at("03:15", 5.0),
        ],
        [],
        [("a", 14, "outlier_zscore")],
        id="previous-outlier-stays-in-the-window",
    ),
    # The same across midnight: the day before's outlier counts in D's window.
    pytest.param(
        series("m1", "2026-11-19 20:45", [*BASE, 5.0]),
        series("m1", "2026-11-20 00:00", [5.0]),
        [at("00:00", 5.0)],
        [("p", 14, "outlier_zscore")],
        [],
        id="outlier-of-the-day-before-stays-in-the-window",
    ),
    # A reading rejected in step 6 did not pass it: not in the window (with 50 kW in it, 5.0
    # would have z = 0). Both rejected intervals are then filled (step 8).
    pytest.param(
        [],
        series("m1", "2026-11-20 00:00", [*BASE, 50.0, 5.0]),
        [
            *measured_from("2026-11-20 00:00", BASE),
            at("03:00", 2.0, "filled"),
            at("03:15", 2.0, "filled"),
        ],
        [],
        [("a", 14, "above_max"), ("a", 15, "outlier_zscore")],
        id="range-rejects-not-in-the-window",
    ),
    # "t-24h <= ts < t": hourly readings 12:00..23:00 of the day before; 12:00 is exactly
    # t-24h for D's 12:00 and counts, making 12.
    pytest.param(
        hourly_before([12, *range(13, 24)]),
        [("m1", "2026-11-20T12:00:00Z", "5.0", "kW")],
        [*HOURLY_GAP, at("12:00", None, "missing")],
        [],
        [("a", 2, "outlier_zscore")],
        id="t-24h-included",
    ),
    # 11:00 instead of 12:00: before t-24h, 11 readings remain.
    pytest.param(
        hourly_before([11, *range(13, 24)]),
        [("m1", "2026-11-20T12:00:00Z", "5.0", "kW")],
        [*HOURLY_GAP, at("12:00", 5.0)],
        [],
        [],
        id="before-t-24h-excluded",
    ),
]


def standardized_zscore_cases(stack: ExitStack) -> Batch:
    """Every z-score case in one warehouse, the day before and D standardized."""
    batch = new_batch(stack)
    for case in ZSCORE_CASES:
        before, rows = case.values[:2]
        batch.add(case.id, before, D_BEFORE, "p")
        batch.add(case.id, rows, D)
    standardize(batch.con, D_BEFORE)
    standardize(batch.con, D)
    return batch


@pytest.fixture(scope="module")
def zscore_batch():
    with ExitStack() as stack:
        yield standardized_zscore_cases(stack)


@pytest.mark.parametrize(
    ("before", "rows", "expected", "quarantined_before", "quarantined"), ZSCORE_CASES
)
def test_zscore(zscore_batch, request, before, rows, expected, quarantined_before, quarantined):
    """Step 7: "take the same meter's readings that passed step 6 in the trailing 24 hours
    (t-24h <= ts < t, the current one excluded). With at least 12 such readings and a sample
    standard deviation (n-1) above zero, |z| > 3 (configurable) sends the reading to
    quarantine as outlier_zscore"."""
    case = case_id(request)
    assert zscore_batch.clean(case, D) == expected
    assert zscore_batch.quarantine(case, D_BEFORE) == quarantined_before
    assert zscore_batch.quarantine(case, D) == quarantined


def test_zscore_over_groups_of_meters_decides_the_same(zscore_batch, monkeypatch):
    """Step 7 takes its population a group of meters at a time (a range of their codes), to
    bound its memory: with groups of a few readings, every case ends as with one group."""
    monkeypatch.setattr(standardize_module, "ZSCORE_GROUP_READINGS", 7)
    with ExitStack() as stack:
        batch = standardized_zscore_cases(stack)
        for case in ZSCORE_CASES:
            assert batch.clean(case.id, D) == zscore_batch.clean(case.id, D)
            for day in (D_BEFORE, D):
                assert batch.quarantine(case.id, day) == zscore_batch.quarantine(case.id, day)
        [(outliers,)] = batch.con.execute(
            "SELECT count(*) FROM quarantine WHERE reason = 'outlier_zscore'"
        ).fetchall()
        assert outliers == 7  # the cases above: six on D, one on the day before


def test_zscore_threshold_is_configurable(con):
    """Step 7: "|z| > 3 (configurable)": with 10, z = 6.7 is kept."""
    add_file(con, "a", series("m1", "2026-11-20 00:00", [*BASE, 5.0]), D)
    standardize(con, settings=Settings(zscore_threshold=10))
    assert clean_rows(con, D) == measured_from("2026-11-20 00:00", [*BASE, 5.0])
    assert reasons(con) == []


# --- step 8: interval, gaps, forward fill ----------------------------------------------------

# (rows as (HH:MM, value) of meter m1 on D, expected clean rows). "NULL" is a missing value.
GAP_CASES = [
    # 30-minute meter: spacings 30, 30, 60 -> interval 30; 01:30 is filled (30 < 60 minutes).
    pytest.param(
        [("00:00", "1.0"), ("00:30", "2.0"), ("01:00", "3.0"), ("02:00", "4.0")],
        [
            at("00:00", 1.0),
            at("00:30", 2.0),
            at("01:00", 3.0),
            at("01:30", 3.0, "filled"),
            at("02:00", 4.0),
        ],
        id="30-minute-meter",
    ),
    # 30-minute meter: two missing intervals are 2 x 30 = 60 minutes: stay NULL.
    pytest.param(
        [("00:00", "1.0"), ("00:30", "2.0"), ("01:00", "3.0"), ("02:30", "4.0"), ("03:00", "5.0")],
        [
            at("00:00", 1.0),
            at("00:30", 2.0),
            at("01:00", 3.0),
            at("01:30", None, "missing"),
            at("02:00", None, "missing"),
            at("02:30", 4.0),
            at("03:00", 5.0),
        ],
        id="30-minute-meter-60-minute-run",
    ),
    # Hourly meter: one missing hour is a run of exactly 60 minutes: not shorter, stays NULL.
    pytest.param(
        [("00:00", "1.0"), ("01:00", "2.0"), ("02:00", "3.0"), ("04:00", "4.0")],
        [
            at("00:00", 1.0),
            at("01:00", 2.0),
            at("02:00", 3.0),
            at("03:00", None, "missing"),
            at("04:00", 4.0),
        ],
        id="hourly-meter-60-minute-run",
    ),
    # 15-minute meter: 3 missing (45 minutes) are filled; 4 missing (60 minutes) stay NULL.
    pytest.param(
        [
            ("00:00", "1.0"),
            ("00:15", "1.1"),
            ("00:30", "1.2"),
            ("00:45", "1.3"),
            ("01:00", "1.4"),
            ("02:00", "2.0"),
            ("02:15", "2.1"),
            ("03:30", "3.0"),
            ("03:45", "3.1"),
        ],
        [
            at("00:00", 1.0),
            at("00:15", 1.1),
            at("00:30", 1.2),
            at("00:45", 1.3),
            at("01:00", 1.4),
            at("01:15", 1.4, "filled"),
            at("01:30", 1.4, "filled"),
            at("01:45", 1.4, "filled"),
            at("02:00", 2.0),
            at("02:15", 2.1),
            at("02:30", None, "missing"),
            at("02:45", None, "missing"),
            at("03:00", None, "missing"),
            at("03:15", None, "missing"),
            at("03:30", 3.0),
            at("03:45", 3.1),
        ],
        id="45-filled-60-not",
    ),
    # Tie: spacings 15, 15, 60, 60 -> "the shorter spacing on a tie": 15.
    pytest.param(
        [("00:00", "1.0"), ("00:15", "1.1"), ("00:30", "1.2"), ("01:30", "2.0"), ("02:30", "3.0")],
        [
            at("00:00", 1.0),
            at("00:15", 1.1),
            at("00:30", 1.2),
            at("00:45", 1.2, "filled"),
            at("01:00", 1.2, "filled"),
            at("01:15", 1.2, "filled"),
            at("01:30", 2.0),
            at("01:45", 2.0, "filled"),
            at("02:00", 2.0, "filled"),
            at("02:15", 2.0, "filled"),
            at("02:30", 3.0),
        ],
        id="tie-15-vs-60",
    ),
    # Tie: spacings 30, 30, 60, 60 -> 30.
    pytest.param(
        [("00:00", "1.0"), ("00:30", "1.1"), ("01:00", "1.2"), ("02:00", "2.0"), ("03:00", "3.0")],
        [
            at("00:00", 1.0),
            at("00:30", 1.1),
            at("01:00", 1.2),
            at("01:30", 1.2, "filled"),
            at("02:00", 2.0),
            at("02:30", 2.0, "filled"),
            at("03:00", 3.0),
        ],
        id="tie-30-vs-60",
    ),
    # Rows with a NULL value survived step 4: they count for the interval (15, not 30) and are
    # missing intervals themselves.
    pytest.param(
        [
            ("00:00", "1.0"),
            ("00:15", "NULL"),
            ("00:30", "2.0"),
            ("00:45", "NULL"),
            ("01:00", "3.0"),
            ("02:00", "4.0"),
        ],
        [
            at("00:00", 1.0),
            at("00:15", 1.0, "filled"),
            at("00:30", 2.0),
            at("00:45", 2.0, "filled"),
            at("01:00", 3.0),
            at("01:15", 3.0, "filled"),
            at("01:30", 3.0, "filled"),
            at("01:45", 3.0, "filled"),
            at("02:00", 4.0),
        ],
        id="null-values-count-for-interval",
    ),
    # Rows quarantined in steps 1-3 did not survive step 4: they do not count (interval 60).
    pytest.param(
        [
            ("00:00", "1.0"),
            ("00:15", "abc"),
            ("00:30", "abc"),
            ("00:45", "abc"),
            ("01:00", "2.0"),
            ("02:00", "3.0"),
            ("03:00", "4.0"),
        ],
        [at("00:00", 1.0), at("01:00", 2.0), at("02:00", 3.0), at("03:00", 4.0)],
        id="early-rejects-do-not-count",
    ),
    # "Longer runs stay NULL": the whole run, not its first 45 minutes.
    pytest.param(
        [("00:00", "1.0"), ("00:15", "1.1"), ("00:30", "1.2"), ("02:00", "2.0")],
        [
            at("00:00", 1.0),
            at("00:15", 1.1),
            at("00:30", 1.2),
            *[at(t, None, "missing") for t in ("00:45", "01:00", "01:15", "01:30", "01:45")],
            at("02:00", 2.0),
        ],
        id="long-run-all-null",
    ),
    # "A run ... right after a measured reading": a run at the start has none.
    pytest.param(
        [("00:00", "NULL"), ("00:15", "NULL"), ("00:30", "1.0"), ("00:45", "1.1")],
        [
            at("00:00", None, "missing"),
            at("00:15", None, "missing"),
            at("00:30", 1.0),
            at("00:45", 1.1),
        ],
        id="run-without-measured-reading-before",
    ),
    # Readings quarantined in steps 5-7 are missing intervals; NULL, absent and rejected
    # intervals make one run (3 x 15 = 45 minutes: filled).
    pytest.param(
        [("00:00", "1.0"), ("00:15", "NULL"), ("00:45", "-5"), ("01:00", "2.0")],
        [
            at("00:00", 1.0),
            at("00:15", 1.0, "filled"),
            at("00:30", 1.0, "filled"),
            at("00:45", 1.0, "filled"),
            at("01:00", 2.0),
        ],
        id="mixed-run-45",
    ),
    pytest.param(
        [("00:00", "1.0"), ("00:15", "NULL"), ("00:45", "-5"), ("01:00", "11"), ("01:15", "2.0")],
        [
            at("00:00", 1.0),
            at("00:15", None, "missing"),
            at("00:30", None, "missing"),
            at("00:45", None, "missing"),
            at("01:00", None, "missing"),
            at("01:15", 2.0),
        ],
        id="mixed-run-60",
    ),
    # A rejected first reading has no measured reading before it: missing.
    pytest.param(
        [("00:00", "-1"), ("00:15", "1.0"), ("00:30", "1.1")],
        [at("00:00", None, "missing"), at("00:15", 1.0), at("00:30", 1.1)],
        id="rejected-first-reading",
    ),
]


@pytest.fixture(scope="module")
def gap_batch():
    with ExitStack() as stack:
        batch = new_batch(stack)
        for case in GAP_CASES:
            rows = [("m1", f"2026-11-20T{t}:00Z", v, "kW") for t, v in case.values[0]]
            batch.add(case.id, rows, D)
        standardize(batch.con)
        yield batch


@pytest.mark.parametrize(("rows", "expected"), GAP_CASES)
def test_gaps_and_forward_fill(gap_batch, request, rows, expected):
    """Step 8: interval = most common spacing (shorter on a tie); missing intervals filled in
    as rows; runs shorter than 60 minutes after a measured reading forward-filled."""
    assert gap_batch.clean(case_id(request), D) == expected


def test_quality_flags(con):
    """Step 8: every clean row has a quality; a missing interval "is flagged missing_value";
    a forward-filled one is flagged "filled"; a measured W reading keeps unit_converted."""
    add_file(
        con,
        "a",
        [
            ("m1", "2026-11-20T00:00:00Z", "1000", "W"),
            ("m1", "2026-11-20T00:15:00Z", "1.5", "kW"),
            ("m1", "2026-11-20T00:30:00Z", "2.0", "kW"),
            ("m1", "2026-11-20T00:45:00Z", "2.5", "kW"),
            ("m1", "2026-11-20T01:45:00Z", "3.0", "kW"),  # 01:00..01:30 absent: filled
            ("m1", "2026-11-20T03:00:00Z", "4.0", "kW"),  # 02:00..02:45 absent: missing
        ],
        D,
    )
    standardize(con)

    def row(t, kw, quality, missing_value=False, filled=False, unit_converted=False):
        return ("m1", f"2026-11-20 {t}", kw, quality, missing_value, filled, unit_converted, False)

    assert clean_rows(con, D, columns=FLAGS) == [
        row("00:00", 1.0, "measured", unit_converted=True),
        row("00:15", 1.5, "measured"),
        row("00:30", 2.0, "measured"),
        row("00:45", 2.5, "measured"),
        *[row(t, 2.5, "filled", True, True) for t in ("01:00", "01:15", "01:30")],
        row("01:45", 3.0, "measured"),
        *[row(t, None, "missing", True) for t in ("02:00", "02:15", "02:30", "02:45")],
        row("03:00", 4.0, "measured"),
    ]


def test_rejected_readings_are_missing_intervals(con):
    """Step 8: "An interval is missing when ... its reading was quarantined in steps 5 to 7";
    the reading itself is in quarantine with its reason."""
    add_file(
        con,
        "a",
        series("m1", "2026-11-20 00:00", ["1.0", "-1", "50", "2.0"]),
        D,
    )
    standardize(con)
    assert clean_rows(con, D) == [
        at("00:00", 1.0),
        at("00:15", 1.0, "filled"),
        at("00:30", 1.0, "filled"),
        at("00:45", 2.0),
    ]
    assert reasons(con) == [(3, "negative_value"), (4, "above_max")]


@pytest.mark.parametrize("carried", [True, False], ids=["carried", "derived"])
def test_interval_counts_the_day_before(con, carried):
    """Step 8: the interval is taken "(the day before included)": hourly the day before, so a
    2-hour step on D leaves one missing hour (60 minutes: NULL). D alone would say 120.
    The same when the day before was stored without its spacings (an earlier version): they
    are then derived from its clean rows."""
    add_file(con, "prev", series("m1", "2026-11-19 20:00", [1.0] * 4, minutes=60), D_BEFORE)
    add_file(con, "a", series("m1", "2026-11-20 00:00", [1.0, None, 2.0], minutes=60), D)
    standardize(con, D_BEFORE)
    if not carried:
        con.execute("DELETE FROM meter_spacings")
    standardize(con, D)
    assert clean_rows(con, D) == [at("00:00", 1.0), at("01:00", None, "missing"), at("02:00", 2.0)]


def test_day_stores_the_spacings_the_next_day_counts(con):
    """Step 8's spacings are among readings that survived step 4: readings quarantined in steps
    5 to 7 count, rows quarantined in steps 1 to 3 do not. Each day stores its own spacings
    and last surviving reading; they equal what its stored outputs give."""
    rows = series("m1", "2026-11-19 20:00", ["1.0", "-1", "abc", "1.0"], minutes=60)
    add_file(con, "prev", [*rows, ("m2", "2026-11-19T22:30:00Z", "2.0", "kW")], D_BEFORE)
    standardize(con, D_BEFORE)
    stored = con.execute(
        "SELECT meter_id, minutes, times, strftime(last_ts, '%H:%M') FROM meter_spacings "
        "WHERE partition_date = ? ORDER BY ALL",
        [D_BEFORE],
    ).fetchall()
    # m1 survivors 20:00, 21:00 (negative), 23:00; 22:00 (invalid value) never survived.
    assert stored == [("m1", 60.0, 1, "23:00"), ("m1", 120.0, 1, "23:00"), ("m2", None, 0, "22:30")]
    derived = con.execute(
        f"SELECT meter_key, minutes, times, strftime(last_ts, '%H:%M') "
        f"FROM ({spacings_of_stored_day_sql()}) ORDER BY ALL",
        {"prev_day": D_BEFORE},
    ).fetchall()
    assert derived == stored


def test_duplicates_do_not_make_a_zero_spacing(con):
    """Step 8: spacing "between consecutive distinct timestamps": a resent 30-minute file
    keeps the interval at 30, so 01:30 is filled."""
    rows = series("m1", "2026-11-20 00:00", [1.0, 2.0, 3.0, None, 4.0], minutes=30)
    add_file(con, "a", rows, D, utc("2026-11-21 01:00"))
    add_file(con, "b", rows, D, utc("2026-11-21 02:00"))
    standardize(con)
    assert clean_rows(con, D) == [
        at("00:00", 1.0),
        at("00:30", 2.0),
        at("01:00", 3.0),
        at("01:30", 3.0, "filled"),
        at("02:00", 4.0),
    ]


# (rows of the day before as (HH:MM, value), rows of D, expected clean rows of D). 15 minutes.
MIDNIGHT_CASES = [
    # Last measured 23:45; 00:00, 00:15 absent: 30 minutes after a measured reading: filled.
    pytest.param(
        [("23:00", "1.0"), ("23:15", "1.5"), ("23:30", "1.8"), ("23:45", "2.0")],
        [("00:30", "3.0"), ("00:45", "3.5")],
        [
            at("00:00", 2.0, "filled"),
            at("00:15", 2.0, "filled"),
            at("00:30", 3.0),
            at("00:45", 3.5),
        ],
        id="filled-from-day-before",
    ),
    # Last measured 23:15; 23:30, 23:45, 00:00 absent = 45 minutes: filled.
    pytest.param(
        [("22:30", "1.0"), ("22:45", "1.5"), ("23:00", "1.8"), ("23:15", "2.0")],
        [("00:15", "3.0"), ("00:30", "3.5")],
        [at("00:00", 2.0, "filled"), at("00:15", 3.0), at("00:30", 3.5)],
        id="run-of-45-across-midnight",
    ),
    # Last measured 23:00; 23:15..00:00 absent = 60 minutes across midnight: stays NULL.
    pytest.param(
        [("22:15", "1.0"), ("22:30", "1.5"), ("22:45", "1.8"), ("23:00", "2.0")],
        [("00:15", "3.0"), ("00:30", "3.5")],
        [at("00:00", None, "missing"), at("00:15", 3.0), at("00:30", 3.5)],
        id="run-of-60-across-midnight",
    ),
    # The day before ends on a NULL value (23:45, missing); the run 23:45 + 00:00 follows the
    # measured 23:30: 30 minutes, filled with 23:30's kW.
    pytest.param(
        [("23:00", "1.0"), ("23:15", "1.5"), ("23:30", "1.8"), ("23:45", "NULL")],
        [("00:15", "3.0"), ("00:30", "3.5")],
        [at("00:00", 1.8, "filled"), at("00:15", 3.0), at("00:30", 3.5)],
        id="run-starting-the-day-before",
    ),
    # The day before ends on NULLs 23:15..23:45 after the measured 23:00 (filled there, 45
    # minutes); with 00:00 absent the run is 60 minutes: 00:00 stays NULL. Reading: D's rows
    # follow the whole run; the day before's rows are not revisited.
    pytest.param(
        [("22:30", "1.0"), ("22:45", "1.5"), ("23:00", "2.0")]
        + [("23:15", "NULL"), ("23:30", "NULL"), ("23:45", "NULL")],
        [("00:15", "3.0"), ("00:30", "3.5")],
        [at("00:00", None, "missing"), at("00:15", 3.0), at("00:30", 3.5)],
        id="null-run-grows-past-60-at-midnight",
    ),
    # The day before ends on a rejected reading (23:45, negative): a missing interval; the run
    # 23:45 + 00:00 follows the measured 23:30 and is filled with its kW.
    pytest.param(
        [("23:00", "1.0"), ("23:15", "1.5"), ("23:30", "1.8"), ("23:45", "-1")],
        [("00:15", "3.0"), ("00:30", "3.5")],
        [at("00:00", 1.8, "filled"), at("00:15", 3.0), at("00:30", 3.5)],
        id="day-before-ends-on-rejected-reading",
    ),
    # The day before has no measured reading before the run: it stays missing.
    pytest.param(
        [("23:00", "NULL"), ("23:15", "NULL"), ("23:30", "NULL"), ("23:45", "NULL")],
        [("00:00", "NULL"), ("00:15", "3.0"), ("00:30", "3.5")],
        [at("00:00", None, "missing"), at("00:15", 3.0), at("00:30", 3.5)],
        id="no-measured-reading-before",
    ),
]


def standardized_midnight_cases(stack: ExitStack) -> Batch:
    """Every midnight case in one warehouse, the day before and D standardized."""
    batch = new_batch(stack)
    for case in MIDNIGHT_CASES:
        before, rows = case.values[:2]
        batch.add(
            case.id, [("m1", f"2026-11-19T{t}:00Z", v, "kW") for t, v in before], D_BEFORE, "p"
        )
        batch.add(case.id, [("m1", f"2026-11-20T{t}:00Z", v, "kW") for t, v in rows], D)
    standardize(batch.con, D_BEFORE)
    standardize(batch.con, D)
    return batch


@pytest.fixture(scope="module")
def midnight_batch():
    with ExitStack() as stack:
        yield standardized_midnight_cases(stack)


@pytest.mark.parametrize(("before", "rows", "expected"), MIDNIGHT_CASES)
def test_runs_across_midnight(midnight_batch, request, before, rows, expected):
    """Step 8: a run "right after a measured reading (the day before counts)"; the run's length
    counts the missing intervals on both sides of midnight."""
    assert midnight_batch.clean(case_id(request), D) == expected


@pytest.mark.parametrize(("readings", "threads"), [(1, 2), (7, 3), (10**9, 1)])
def test_step_8_over_groups_of_meters_gives_the_same_rows(
    midnight_batch, monkeypatch, readings, threads
):
    """Step 8 and the clean rows are worked out a group of meters at a time
    (``meter_groups``): with a group per meter, a few meters a group or one group, on one
    thread or more, every case of midnight ends exactly as with the default, rows in the
    same order."""
    monkeypatch.setattr(standardize_module, "STEP_8_GROUP_READINGS", readings)
    monkeypatch.setattr(standardize_module, "GROUP_THREADS", threads)
    with ExitStack() as stack:
        batch = standardized_midnight_cases(stack)
        for case in MIDNIGHT_CASES:
            assert batch.clean(case.id, D) == midnight_batch.clean(case.id, D)
        every_row = "SELECT * FROM standardized_readings ORDER BY rowid"
        assert batch.con.execute(every_row).fetchall() == (
            midnight_batch.con.execute(every_row).fetchall()
        )


def test_one_row_per_meter_and_timestamp(con):
    """Section 5: standardized_readings has "one row per (meter_id, reading_ts)", and a day's
    rows are that UTC day's intervals, whatever the day before filled in."""
    add_file(con, "prev", series("m1", "2026-11-19 23:00", [1.0, 1.0, 1.0]), D_BEFORE)
    day_rows = [
        *series("m1", "2026-11-20 00:15", [1.0, 1.0, None, 2.0, "NULL", 3.0]),
        *series("m1", "2026-11-20 00:15", [1.5, None, 2.5]),  # resent on later lines
        ("m2", "2026-11-20T00:00:00Z", "1.0", "kW"),
        ("m2", "2026-11-20T01:00:00Z", "1.0", "kW"),
        ("m2", "2026-11-20T02:00:00Z", "1.0", "kW"),
        ("m2", "2026-11-20T05:00:00Z", "2.0", "kW"),
        ("m2", "2026-11-20T02:00:00+01:00", "1.5", "kW"),  # 01:00 UTC again, later line
    ]
    add_file(con, "a", day_rows, D)
    standardize(con, D_BEFORE)
    standardize(con, D)
    counts = con.execute(
        """SELECT count(*), count(DISTINCT (meter_id, reading_ts)),
                  count(*) FILTER (WHERE CAST(reading_ts AS DATE) <> partition_date)
           FROM standardized_readings WHERE partition_date = ?""",
        [D],
    ).fetchone()
    assert counts[0] == counts[1]
    assert counts[2] == 0
    assert clean_rows(con, D, "m1") == [
        at("00:00", 1.0, "filled"),
        at("00:15", 1.5),
        at("00:30", 1.0),
        at("00:45", 2.5),
        at("01:00", 2.0),
        at("01:15", 2.0, "filled"),
        at("01:30", 3.0),
    ]
    assert clean_rows(con, D, "m2") == [
        at("00:00", 1.0, meter="m2"),
        at("01:00", 1.5, meter="m2"),
        at("02:00", 1.0, meter="m2"),
        at("03:00", None, "missing", meter="m2"),
        at("04:00", None, "missing", meter="m2"),
        at("05:00", 2.0, meter="m2"),
    ]
