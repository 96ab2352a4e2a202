"""Household curves look like households, and the fleet mixes intervals and units as documented."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from greenstream_dagster.synthetic.fleet import meter_intervals, watt_meters
from greenstream_dagster.synthetic.layout import Timeline
from greenstream_dagster.synthetic.load_shapes import household_load

# 2026-11-06 is a Friday: local days 0 and 1 are weekdays, 2 and 3 the weekend.
TIMELINE = Timeline(dt.date(2026, 11, 5), 4)


@pytest.fixture(scope="module")
def load() -> np.ndarray:
    return household_load(np.random.default_rng(0), 500, 15, TIMELINE) / 1000.0


def mean_at(load: np.ndarray, local_day: int, first_hour: int, last_hour: int) -> float:
    start = (local_day * 24 + first_hour) * 4
    return float(load[:, start : start + (last_hour - first_hour) * 4].mean())


def test_every_reading_is_positive_and_below_the_maximum(load):
    assert load.min() >= 0.05 and load.max() <= 9.0


def test_evenings_and_mornings_peak_above_the_night(load):
    night = mean_at(load, 1, 2, 5)
    assert mean_at(load, 1, 6, 9) > 1.5 * night
    assert mean_at(load, 1, 18, 21) > 2.5 * night


def test_weekends_run_later_and_stay_home_at_noon(load):
    weekday, weekend = 1, 3
    assert mean_at(load, weekend, 12, 15) > 1.2 * mean_at(load, weekday, 12, 15)
    assert mean_at(load, weekend, 6, 7) < mean_at(load, weekday, 6, 7)


def test_households_differ(load):
    base = np.percentile(load, 5, axis=1)
    assert base.max() > 3 * base.min()


@pytest.mark.parametrize(
    ("interval", "expected"), [(15, {15: 970, 30: 15, 60: 15}), (60, {60: 985, 30: 15})]
)
def test_a_few_meters_report_every_30_or_60_minutes_whatever_was_asked(interval, expected):
    got = meter_intervals(np.random.default_rng(1), 1000, interval)
    assert dict(zip(*np.unique(got, return_counts=True), strict=True)) == expected


def test_about_one_meter_in_ten_reports_in_watts():
    assert 900 <= watt_meters(np.random.default_rng(2), 10_000).sum() <= 1100
