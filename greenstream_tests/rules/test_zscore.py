"""Step 7's window arithmetic (``rules.zscore``) against the rule computed reading by reading.

The rule's cases through the whole pipeline are in ``test_standardize.py``; these check that the
running sums give each window's count, mean and standard deviation as a direct computation
does, on data where running sums are easily wrong: meters interleaved, irregular times, windows
whose values are all equal, near-zero meters and large values with a tiny spread.
"""

from __future__ import annotations

import datetime as dt
import statistics

import numpy as np
import pyarrow as pa
import pytest

from greenstream_dagster.rules.zscore import OUTLIER_SCHEMA, trailing_outliers

HOUR = 3_600_000_000
DAY = 24 * HOUR
MINUTE = 60_000_000
T0 = 1_795_046_400_000_000  # 2026-11-19T00:00:00Z, the day before; today starts at T0 + DAY


def population(rows: list[tuple[str, int, float, bool]]) -> pa.Table:
    meter, t, kw, today = zip(*rows, strict=True) if rows else ([], [], [], [])
    return pa.table(
        {
            "meter_key": pa.array(meter, pa.string()),
            "t": pa.array(t, pa.int64()),
            "kw": pa.array(kw, pa.float64()),
            "is_today": pa.array(today, pa.bool_()),
        }
    )


def by_hand(rows, window_us=DAY, min_readings=12, threshold=3.0):
    """The rule as DESIGN.md words it, one reading at a time."""
    found = []
    for meter, t, kw, today in rows:
        if not today:
            continue
        window = [v for m, s, v, _ in rows if m == meter and t - window_us <= s < t]
        if len(window) < min_readings:
            continue
        sd = statistics.stdev(window)
        if sd == 0:
            continue
        mean = statistics.fmean(window)
        z = (kw - mean) / sd
        if abs(z) > threshold:
            found.append((meter, t, len(window), mean, sd, z))
    return sorted(found)


def outliers(table: pa.Table):
    return sorted(
        (
            r["meter_key"],
            int(r["reading_ts"].timestamp() * 1_000_000),
            r["n"],
            r["mean"],
            r["sd"],
            r["z"],
        )
        for r in table.to_pylist()
    )


def assert_same(got, expected):
    assert [g[:3] for g in got] == [e[:3] for e in expected]
    for g, e in zip(got, expected, strict=True):
        assert g[3:] == pytest.approx(e[3:], rel=1e-12, abs=1e-12)


def quarter_hours(meter, start, values, today=True):
    return [(meter, start + i * 15 * MINUTE, v, today) for i, v in enumerate(values)]


BASE = [1.0, 1.1] * 6


def test_spike_after_twelve_readings():
    """12 readings of 1.0 and 1.1, then 5.0: n = 12, mean 1.05, z = 75.6."""
    rows = quarter_hours("m1", T0 + DAY, [*BASE, 5.0])
    got = outliers(trailing_outliers(population(rows), DAY, 12, 3.0))
    assert [g[:3] for g in got] == [("m1", T0 + DAY + 12 * 15 * MINUTE, 12)]
    assert got[0][3] == pytest.approx(1.05)
    assert got[0][4] == pytest.approx(statistics.stdev(BASE))
    assert got[0][5] == pytest.approx((5.0 - 1.05) / statistics.stdev(BASE))


@pytest.mark.parametrize(
    ("values", "min_readings", "threshold", "expected_outliers"),
    [
        pytest.param([*BASE, 5.0], 12, 3.0, 1, id="twelve-readings"),
        pytest.param([*BASE[:11], 5.0], 12, 3.0, 0, id="eleven-readings"),
        pytest.param([*BASE[:11], 5.0], 11, 3.0, 1, id="min-readings-configurable"),
        pytest.param([*BASE, 5.0], 12, 80.0, 0, id="threshold-configurable"),
        pytest.param([1.0] * 12 + [5.0], 12, 3.0, 0, id="equal-values-sd-zero"),
        pytest.param([0.003] * 12 + [0.5], 12, 3.0, 0, id="equal-near-zero-values"),
        pytest.param([2.0, 2.2] * 6 + [0.0], 12, 3.0, 1, id="far-below"),
    ],
)
def test_rule_thresholds(values, min_readings, threshold, expected_outliers):
    rows = quarter_hours("m1", T0 + DAY, values)
    got = trailing_outliers(population(rows), DAY, min_readings, threshold)
    assert got.num_rows == expected_outliers
    assert_same(outliers(got), by_hand(rows, DAY, min_readings, threshold))


def test_window_bounds_are_t_minus_window_included_and_t_excluded():
    """Hourly readings of the day before at 12:00..23:00 (12 readings): for today's 12:00,
    the 12:00 reading is exactly t-24h and counts; one microsecond earlier it would not."""
    before = [("m1", T0 + h * HOUR, 1.0 + (h % 2) / 10, False) for h in range(12, 24)]
    at_noon = [("m1", T0 + DAY + 12 * HOUR, 5.0, True)]
    assert trailing_outliers(population(before + at_noon), DAY, 12, 3.0).num_rows == 1
    early = [("m1", T0 + 12 * HOUR - 1, 1.0, False), *before[1:]]
    assert trailing_outliers(population(early + at_noon), DAY, 12, 3.0).num_rows == 0


def test_window_length_is_configurable():
    """A 2-hour window holds 8 quarter hours: never 12."""
    rows = quarter_hours("m1", T0 + DAY, [*BASE, 5.0])
    assert trailing_outliers(population(rows), 2 * HOUR, 12, 3.0).num_rows == 0
    assert trailing_outliers(population(rows), 2 * HOUR, 8, 3.0).num_rows == 1


def test_days_before_are_window_only():
    """A spike on the day before is never judged, and meters do not share windows."""
    rows = [
        *quarter_hours("m1", T0, [*BASE, 5.0], today=False),
        *quarter_hours("m2", T0 + DAY - 12 * 15 * MINUTE, BASE, today=False),
        *quarter_hours("m2", T0 + DAY, [5.0]),
        *quarter_hours("m3", T0 + DAY, [5.0]),  # no window: the other meters' do not count
    ]
    got = outliers(trailing_outliers(population(rows), DAY, 12, 3.0))
    assert [g[:3] for g in got] == [("m2", T0 + DAY, 12)]


def test_rows_in_any_order():
    rows = quarter_hours("m1", T0 + DAY, [*BASE, 5.0]) + quarter_hours("m2", T0, BASE, False)
    shuffled = [rows[i] for i in np.random.default_rng(3).permutation(len(rows))]
    assert_same(outliers(trailing_outliers(population(shuffled), DAY, 12, 3.0)), by_hand(rows))


def test_no_rows():
    got = trailing_outliers(population([]), DAY, 12, 3.0)
    assert got.schema == OUTLIER_SCHEMA
    assert got.num_rows == 0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_matches_the_rule_reading_by_reading(seed):
    """Many meters over two days at irregular times, with the cases running sums get wrong:
    large values with a spread of 1e-6 kW, near-zero meters, stretches of equal values, and
    spikes. Every figure agrees with the direct computation to 12 significant digits."""
    rng = np.random.default_rng(seed)
    rows = []
    for m in range(60):
        kind = m % 4
        t = T0 + int(rng.integers(0, HOUR))
        while t < T0 + 2 * DAY:
            if kind == 0:
                kw = float(np.round(rng.gamma(2.0, 0.5), 3))
            elif kind == 1:
                kw = 9.5 + float(rng.integers(0, 3)) * 1e-6  # large, tiny spread
            elif kind == 2:
                kw = float(rng.choice([0.001, 0.002, 0.0015]))  # near zero
            else:
                kw = 2.0 if rng.random() < 0.9 else float(np.round(rng.uniform(0, 9), 3))
            if rng.random() < 0.03:
                kw = float(np.round(kw * 8 + 3, 3))  # a spike
            rows.append((f"meter-{m:03d}", t, kw, t >= T0 + DAY))
            t += int(rng.choice([5, 15, 15, 15, 30, 60, 240])) * MINUTE
    expected = by_hand(rows)
    assert len(expected) > 20  # the data has outliers of every kind of meter to compare
    got = outliers(trailing_outliers(population(rows), DAY, 12, 3.0))
    assert_same(got, expected)


def test_result_timestamps_are_utc():
    rows = quarter_hours("m1", T0 + DAY, [*BASE, 5.0])
    [row] = trailing_outliers(population(rows), DAY, 12, 3.0).to_pylist()
    assert row["reading_ts"] == dt.datetime(2026, 11, 20, 3, 0, tzinfo=dt.UTC)


def test_integer_codes_stand_for_meters():
    """The pipeline passes each meter as an integer code: the same readings are found, and the
    result names them by the code."""
    rows = quarter_hours("m1", T0 + DAY, [*BASE, 5.0]) + quarter_hours("m2", T0 + DAY, BASE)
    table = population(rows)
    coded = table.set_column(0, "meter_key", pa.array([7 if r[0] == "m1" else 3 for r in rows]))
    got = trailing_outliers(coded, DAY, 12, 3.0)
    assert got.schema.field("meter_key").type == pa.int64()
    by_id = outliers(trailing_outliers(table, DAY, 12, 3.0))
    assert [("m1", *row[1:]) for row in outliers(got)] == by_id
    assert [row[0] for row in outliers(got)] == [7]
