"""DESIGN.md section 3: faulty meters (near_zero, zero_daily_total) and their alerts.

Multi-day scenarios: each day's rows go into raw_readings on that day, then the days run in
order (steps 1-8, then the fault rules). Fault rows are written
(day, meter, rule, run_start, run_end) with times as 'YYYY-MM-DD HH:MM' UTC.
"""

from __future__ import annotations

import datetime as dt
from contextlib import ExitStack

import pytest

from greenstream_dagster import pipeline
from greenstream_dagster.settings import Settings
from greenstream_dagster.storage import warehouse
from greenstream_tests.support import Batch, add_file, fault_rows, run_day, series

DAYS = [dt.date(2026, 11, 20) + dt.timedelta(days=i) for i in range(8)]
D1, D2, D3, D4, D5, D6, D7, D8 = DAYS
LOW = 0.005  # near zero, but a day of it has non-zero energy: zero_daily_total stays out
HIGH = 1.0


def quarter_hours(day: dt.date, values: list, start: str = "00:00", meter: str = "m1"):
    """15-minute readings of ``meter`` on ``day`` from ``start``; None skips a slot."""
    return series(meter, f"{day.isoformat()} {start}", values)


def full_day(day: dt.date, value, meter: str = "m1"):
    return quarter_hours(day, [value] * 96, meter=meter)


def hours(day: dt.date, values: list, start: str = "00:00", meter: str = "m1"):
    return series(meter, f"{day.isoformat()} {start}", values, minutes=60)


def flag(day: dt.date, rule: str, start: str, end: str, meter: str = "m1") -> tuple:
    return (day, meter, rule, start, end)


def near_zero(day: dt.date, start: str, end: str) -> tuple:
    return flag(day, "near_zero", start, end)


def zero_total(day: dt.date, first_day: dt.date) -> tuple:
    # Reading: for zero_daily_total the "run" is the streak of zero days, from the start of
    # its first day to the end of day D (the contract names no other bounds).
    return flag(day, "zero_daily_total", f"{first_day} 00:00", f"{day + dt.timedelta(1)} 00:00")


def run_days(con, days=DAYS, settings: Settings | None = None) -> None:
    for day in days:
        run_day(con, day, settings, peaks=False)


def case_id(request) -> str:
    return request.node.callspec.id


# --- near_zero -------------------------------------------------------------------------------

# (rows per day, expected flags). All meters read every 15 minutes unless said otherwise.
NEAR_ZERO_CASES = [
    # "spanning more than 24 hours from the start of its first reading to the end of its last":
    # 00:00 .. 23:45 + 15 minutes is exactly 24 hours: not more.
    pytest.param({D1: full_day(D1, LOW)}, [], id="exactly-24h"),
    # One more reading: 24h15m, flagged on the day that reading is on.
    pytest.param(
        {D1: full_day(D1, LOW), D2: quarter_hours(D2, [LOW])},
        [near_zero(D2, "2026-11-20 00:00", "2026-11-21 00:15")],
        id="just-over-24h",
    ),
    # Hourly meter: its last reading ends one hour after it starts.
    pytest.param(
        {D1: hours(D1, [LOW] * 24), D2: hours(D2, [LOW])},
        [near_zero(D2, "2026-11-20 00:00", "2026-11-21 01:00")],
        id="hourly-meter",
    ),
    # "counting readings up to the end of D only": on D2 the run ends at the end of D2,
    # whatever D3 brings; D1 alone (12 hours) is not flagged. On D3 a 1 kW reading at 00:00
    # ends the run before any reading of D3: D3 is not flagged; the new run is 23h45m.
    pytest.param(
        {
            D1: quarter_hours(D1, [LOW] * 48, start="12:00"),
            D2: full_day(D2, LOW),
            D3: quarter_hours(D3, [HIGH] + [LOW] * 95),
        },
        [near_zero(D2, "2026-11-20 12:00", "2026-11-22 00:00")],
        id="flag-uses-readings-up-to-end-of-day",
    ),
    # A run with readings on D that is broken later on D is still flagged on D.
    pytest.param(
        {D1: full_day(D1, LOW), D2: quarter_hours(D2, [LOW] * 48 + [HIGH] * 48)},
        [near_zero(D2, "2026-11-20 00:00", "2026-11-21 12:00")],
        id="run-broken-later-on-the-day",
    ),
    # The flag goes on every day the run has a reading; the run's start stays the same.
    pytest.param(
        {D1: full_day(D1, LOW), D2: full_day(D2, LOW), D3: full_day(D3, LOW)},
        [
            near_zero(D2, "2026-11-20 00:00", "2026-11-22 00:00"),
            near_zero(D3, "2026-11-20 00:00", "2026-11-23 00:00"),
        ],
        id="flag-every-day-of-the-run",
    ),
    # A day without readings has no reading of the run: not flagged.
    pytest.param(
        {D1: full_day(D1, LOW), D2: full_day(D2, LOW), D4: quarter_hours(D4, [HIGH])},
        [near_zero(D2, "2026-11-20 00:00", "2026-11-22 00:00")],
        id="no-readings-no-flag",
    ),
    # "missing intervals do not break it": absent (06:00-08:45), NULL (09:00-11:45) and a
    # filled interval (15:00) inside the run.
    pytest.param(
        {
            D1: quarter_hours(
                D1, [LOW] * 24 + [None] * 12 + ["NULL"] * 12 + [LOW] * 12 + [None] + [LOW] * 35
            ),
            D2: quarter_hours(D2, [LOW]),
        },
        [near_zero(D2, "2026-11-20 00:00", "2026-11-21 00:15")],
        id="missing-intervals-do-not-break",
    ),
    # "with no measured reading at or above 0.01 kW between them": exactly 0.01 breaks.
    pytest.param(
        {D1: full_day(D1, LOW), D2: quarter_hours(D2, [0.01] + [LOW] * 4)},
        [],
        id="reading-of-0.01-breaks",
    ),
    pytest.param(
        {D1: full_day(D1, LOW), D2: quarter_hours(D2, [0.0099] + [LOW] * 4)},
        [near_zero(D2, "2026-11-20 00:00", "2026-11-21 01:15")],
        id="reading-below-0.01-continues",
    ),
    # Readings quarantined in steps 5-7 are missing intervals, not measured readings: a
    # negative or an above-max reading does not break the run.
    pytest.param(
        {D1: full_day(D1, LOW), D2: quarter_hours(D2, [-1.0, 50.0, LOW])},
        [near_zero(D2, "2026-11-20 00:00", "2026-11-21 00:45")],
        id="rejected-readings-do-not-break",
    ),
]


@pytest.fixture(scope="module")
def near_zero_batch():
    with ExitStack() as stack:
        batch = Batch(stack.enter_context(warehouse.connect(":memory:")))
        for case in NEAR_ZERO_CASES:
            for day, rows in case.values[0].items():
                batch.add(case.id, rows, day, file=f"{day}")
        run_days(batch.con, sorted({day for case in NEAR_ZERO_CASES for day in case.values[0]}))
        yield batch


@pytest.mark.parametrize(("rows", "expected"), NEAR_ZERO_CASES)
def test_near_zero(near_zero_batch, request, rows, expected):
    """Section 3, near_zero: "The meter is flagged on day D when such a run has a reading on D
    and, counting readings up to the end of D only, already spans more than 24 hours"."""
    assert near_zero_batch.faults(case_id(request)) == expected


# --- zero_daily_total ------------------------------------------------------------------------


def zero_days(*days: dt.date) -> dict[dt.date, list[tuple]]:
    return {day: hours(day, [0.0] * 24) for day in days}


# (rows per day, expected zero_daily_total flags).
ZERO_TOTAL_CASES = [
    # "exactly zero on more than three consecutive days, so the flag first comes on the
    # fourth day" (and not on the third).
    pytest.param(zero_days(D1, D2, D3), [], id="three-days"),
    pytest.param(zero_days(D1, D2, D3, D4), [zero_total(D4, D1)], id="fourth-day"),
    pytest.param(
        zero_days(D1, D2, D3, D4, D5),
        [zero_total(D4, D1), zero_total(D5, D1)],
        id="fifth-day",
    ),
    # "A day without measured readings breaks the streak": only missing values on D4 ...
    pytest.param(
        {**zero_days(D1, D2, D3, D5, D6, D7), D4: hours(D4, ["NULL"] * 24)},
        [],
        id="null-day-breaks",
    ),
    pytest.param(
        {**zero_days(D1, D2, D3, D5, D6, D7, D8), D4: hours(D4, ["NULL"] * 24)},
        [zero_total(D8, D5)],
        id="streak-restarts-after-null-day",
    ),
    # ... or no rows at all on D4.
    pytest.param(zero_days(D1, D2, D3, D5, D6, D7), [], id="empty-day-breaks"),
    pytest.param(
        zero_days(D1, D2, D3, D5, D6, D7, D8), [zero_total(D8, D5)], id="empty-day-restarts"
    ),
    # Energy above zero breaks it, however small.
    pytest.param(
        {**zero_days(D1, D2, D3, D5), D4: hours(D4, [0.0] * 23 + [0.0001])},
        [],
        id="tiny-energy-breaks",
    ),
    # A day with one measured reading of 0 and the rest missing has zero energy: it counts.
    pytest.param(
        {**zero_days(D1, D2, D3), D4: hours(D4, [0.0], start="12:00")},
        [zero_total(D4, D1)],
        id="sparse-zero-day-counts",
    ),
]


@pytest.fixture(scope="module")
def zero_total_batch():
    with ExitStack() as stack:
        batch = Batch(stack.enter_context(warehouse.connect(":memory:")))
        for case in ZERO_TOTAL_CASES:
            for day, rows in case.values[0].items():
                batch.add(case.id, rows, day, file=f"{day}")
        run_days(batch.con)
        yield batch


@pytest.mark.parametrize(("rows", "expected"), ZERO_TOTAL_CASES)
def test_zero_daily_total(zero_total_batch, request, rows, expected):
    """Section 3, zero_daily_total: "the day's energy (sum of measured kW x interval hours over
    the UTC day) is exactly zero on more than three consecutive days"."""
    flags = zero_total_batch.faults(case_id(request))
    assert [f for f in flags if f[2] == "zero_daily_total"] == expected


def test_zero_meter_has_both_flags(con):
    """Section 3: a meter reading 0 kW all day is near zero too: near_zero from the second
    day (the run passes 24 hours), zero_daily_total from the fourth."""
    for day in (D1, D2, D3, D4):
        add_file(con, f"{day}", hours(day, [0.0] * 24), day)
    run_days(con, [D1, D2, D3, D4])
    assert fault_rows(con) == [
        near_zero(D2, "2026-11-20 00:00", "2026-11-22 00:00"),
        near_zero(D3, "2026-11-20 00:00", "2026-11-23 00:00"),
        near_zero(D4, "2026-11-20 00:00", "2026-11-24 00:00"),
        zero_total(D4, D1),
    ]


# --- alerts ----------------------------------------------------------------------------------


def test_alert_once_per_episode(con, settings):
    """Section 3: "The first time a meter is flagged for a rule, an alert is raised ...; a flag
    that goes on day after day is not re-alerted." Re-running a day raises nothing new.
    Reading: a new episode (a new run after the old one ended) is a new first time."""
    days = {
        D1: full_day(D1, LOW) + hours(D1, [0.0] * 24, meter="m2"),
        D2: full_day(D2, LOW) + hours(D2, [0.0] * 24, meter="m2"),
        D3: full_day(D3, LOW) + hours(D3, [0.0] * 24, meter="m2"),
        D4: quarter_hours(D4, [HIGH] + [LOW] * 95) + hours(D4, [0.0] * 24, meter="m2"),
        D5: full_day(D5, LOW) + hours(D5, [0.0] * 24, meter="m2"),
    }
    alerts = {}
    for day, rows in days.items():
        add_file(con, f"{day}", rows, day)
        run_day(con, day, settings, faults=False, peaks=False)
        report = pipeline.build_fault_flags(con, settings, day)
        alerts[day] = sorted((m, rule, d) for m, rule, _, d in report.counts["new_alerts"])
    assert alerts == {
        D1: [],
        D2: [("m1", "near_zero", D2), ("m2", "near_zero", D2)],
        D3: [],
        D4: [("m2", "zero_daily_total", D4)],
        # m1's run restarted at D4 00:15 and passes 24 hours on D5: a new episode.
        D5: [("m1", "near_zero", D5)],
    }
    again = pipeline.build_fault_flags(con, settings, D5)
    assert again.counts["new_alerts"] == []
    assert con.execute(
        """SELECT meter_id, rule, strftime(run_start, '%Y-%m-%d %H:%M'), partition_date
           FROM fault_alerts ORDER BY ALL"""
    ).fetchall() == [
        ("m1", "near_zero", "2026-11-20 00:00", D2),
        ("m1", "near_zero", "2026-11-23 00:15", D5),
        ("m2", "near_zero", "2026-11-20 00:00", D2),
        ("m2", "zero_daily_total", "2026-11-20 00:00", D4),
    ]
