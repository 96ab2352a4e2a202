"""The rule predictions the ground truth rests on, on hand-built cases with exact answers."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from greenstream_dagster.rules import codes
from greenstream_dagster.synthetic.expectations import (
    gap_quality,
    near_zero_days,
    trailing_z,
    zero_total_days,
    zscore,
)

QUARTER = dt.timedelta(minutes=15)
T0 = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)


def at(minutes: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def run(
    start: int, count: int, kw: float = 0.005, step: int = 15
) -> list[tuple[dt.datetime, float]]:
    """``count`` readings of ``kw`` every ``step`` minutes from minute ``start``."""
    return [(at(start + k * step), kw) for k in range(count)]


# (case, readings, interval, {day: (run_start, run_end)})
NEAR_ZERO_CASES = [
    ("exactly 24 h is not more than 24 h", run(0, 96), QUARTER, {}),
    (
        "one reading more spans 24 h 15 min: flagged on the day of that reading only",
        run(0, 97),
        QUARTER,
        {dt.date(2026, 11, 3): (at(0), at(97 * 15))},
    ),
    (
        "counted up to the end of each day: 30 h from noon is flagged on the second day",
        run(12 * 60, 120),
        QUARTER,
        {dt.date(2026, 11, 3): (at(12 * 60), at(12 * 60 + 120 * 15))},
    ),
    (
        "missing intervals do not break a run",
        run(0, 50) + run(50 * 15 + 60, 50),
        QUARTER,
        {dt.date(2026, 11, 3): (at(0), at(100 * 15 + 60))},
    ),
    (
        "a reading at 0.01 kW breaks it",
        run(0, 50) + run(50 * 15, 1, kw=0.01) + run(51 * 15, 50),
        QUARTER,
        {},
    ),
    (
        "hourly readings: 25 of them span 25 h",
        run(0, 25, step=60),
        dt.timedelta(hours=1),
        {dt.date(2026, 11, 3): (at(0), at(25 * 60))},
    ),
    (
        "zero counts as near zero; flagged every day from the second on",
        run(0, 3 * 96, kw=0.0),
        QUARTER,
        {
            dt.date(2026, 11, 3): (at(0), at(2 * 1440)),
            dt.date(2026, 11, 4): (at(0), at(3 * 1440)),
        },
    ),
]


@pytest.mark.parametrize(
    ("case", "readings", "interval", "expected"),
    NEAR_ZERO_CASES,
    ids=[c[0] for c in NEAR_ZERO_CASES],
)
def test_near_zero_flag_days(case, readings, interval, expected):
    assert near_zero_days(readings, interval) == expected


def days(*energies: float | None) -> dict[dt.date, float]:
    """Daily energy from 2 Nov on; None is a day without measured readings."""
    return {T0.date() + dt.timedelta(days=k): e for k, e in enumerate(energies) if e is not None}


def day(k: int) -> dt.date:
    return T0.date() + dt.timedelta(days=k)


ZERO_TOTAL_CASES = [
    ("three zero days are not enough", days(0, 0, 0, 1.2), {}),
    ("the fourth zero day is the first flagged", days(1.0, 0, 0, 0, 0), {day(4): day(1)}),
    (
        "every further zero day stays flagged",
        days(0, 0, 0, 0, 0, 0),
        {day(3): day(0), day(4): day(0), day(5): day(0)},
    ),
    ("a day without readings breaks the streak", days(0, 0, None, 0, 0, 0), {}),
    ("a day with energy breaks it", days(0, 0, 0, 0.001, 0, 0, 0), {}),
]


@pytest.mark.parametrize(
    ("case", "energy", "expected"), ZERO_TOTAL_CASES, ids=[c[0] for c in ZERO_TOTAL_CASES]
)
def test_zero_daily_total_flag_days(case, energy, expected):
    assert zero_total_days(energy) == expected


@pytest.mark.parametrize(
    ("slots", "interval", "expected"),
    [
        (1, 15, codes.QUALITY_FILLED),
        (3, 15, codes.QUALITY_FILLED),
        (4, 15, codes.QUALITY_MISSING),
        (1, 30, codes.QUALITY_FILLED),
        (2, 30, codes.QUALITY_MISSING),
        (1, 60, codes.QUALITY_MISSING),
        (11, 5, codes.QUALITY_FILLED),
        (12, 5, codes.QUALITY_MISSING),
    ],
)
def test_gap_quality(slots, interval, expected):
    assert gap_quality(slots, interval) == expected


def test_zscore_needs_twelve_readings_and_spread():
    eleven = np.array([1.0, 2.0] * 5 + [1.0, 9.0])
    assert zscore(eleven, 11, 15) is None
    twelve = np.array([1.0, 2.0] * 6 + [9.0])
    assert zscore(twelve, 12, 15) == pytest.approx((9.0 - 1.5) / np.std([1.0, 2.0] * 6, ddof=1))
    flat = np.array([0.5] * 20 + [3.0])
    assert zscore(flat, 20, 15) is None


def test_zscore_window_is_the_trailing_24_hours_without_gaps():
    kw = np.full(200, 1.0)
    kw[::2] = 2.0
    kw[50] = np.nan
    kw[199] = 8.0
    window = kw[199 - 96 : 199]
    window = window[~np.isnan(window)]
    expected = (8.0 - window.mean()) / window.std(ddof=1)
    assert zscore(kw, 199, 15) == pytest.approx(expected)
    assert trailing_z(kw, 15)[199] == pytest.approx(expected)
    assert np.isnan(trailing_z(kw, 15)[50])
