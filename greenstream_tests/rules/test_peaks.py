"""DESIGN.md section 4: each meter's daily peak and the system peak, from measured readings
only; ties go to the earliest timestamp.

Meter peaks are written (meter, peak_kw, 'YYYY-MM-DD HH:MM'), the system peak
('YYYY-MM-DD HH:MM', total_kw, meters_reporting). Values are exact in binary, so sums compare
exactly.
"""

from __future__ import annotations

import datetime as dt

from greenstream_tests.support import (
    add_file,
    clean_rows,
    meter_peaks,
    run_day,
    series,
    system_peaks,
)

D = dt.date(2026, 11, 20)
D_BEFORE = D - dt.timedelta(days=1)


def quarter_hours(meter: str, values: list, start: str = "00:00", unit: str = "kW"):
    return series(meter, f"2026-11-20 {start}", values, unit=unit)


def test_meter_peak_from_measured_readings_only(con):
    """Section 4: "from measured readings only": a quarantined reading (its interval filled),
    a NULL value and a meter with no measured reading at all give no peak; W are converted."""
    add_file(
        con,
        "a",
        [
            *quarter_hours("m1", ["1000", "3000", "50000", "2000", "NULL"], unit="W"),
            *quarter_hours("m2", ["NULL", "NULL", "NULL"]),
        ],
        D,
    )
    run_day(con, D)
    assert clean_rows(con, D, "m1") == [
        ("m1", "2026-11-20 00:00", 1.0, "measured"),
        ("m1", "2026-11-20 00:15", 3.0, "measured"),
        ("m1", "2026-11-20 00:30", 3.0, "filled"),  # 50 kW is above_max
        ("m1", "2026-11-20 00:45", 2.0, "measured"),
        ("m1", "2026-11-20 01:00", 2.0, "filled"),
    ]
    assert meter_peaks(con, D) == [("m1", 3.0, "2026-11-20 00:15")]
    assert system_peaks(con, D) == [("2026-11-20 00:15", 3.0, 1)]


def test_filled_from_the_day_before_is_not_a_peak(con):
    """Section 2, step 8: filled rows "are excluded from every peak", also when they carry the
    day before's reading (9 kW at 23:45, filled into 00:00)."""
    add_file(con, "prev", series("m1", "2026-11-19 23:00", [1.0, 1.0, 1.0, 9.0]), D_BEFORE)
    add_file(con, "a", quarter_hours("m1", [None, 1.0, 2.0]), D)
    run_day(con, D_BEFORE)
    run_day(con, D)
    assert clean_rows(con, D) == [
        ("m1", "2026-11-20 00:00", 9.0, "filled"),
        ("m1", "2026-11-20 00:15", 1.0, "measured"),
        ("m1", "2026-11-20 00:30", 2.0, "measured"),
    ]
    assert meter_peaks(con, D) == [("m1", 2.0, "2026-11-20 00:30")]
    assert system_peaks(con, D) == [("2026-11-20 00:30", 2.0, 1)]


def test_system_peak_leaves_out_filled_rows(con):
    """Section 4: the system peak is "the timestamp with the highest sum of kW over all
    meters" of measured readings, and "how many meters reported then". m1's 00:15 is filled:
    it neither adds to the sum nor counts as reporting."""
    add_file(
        con,
        "a",
        [
            *quarter_hours("m1", [1.0, None, 1.0, 1.0, 1.0]),
            *quarter_hours("m2", [0.5, 2.0, 0.25, 0.25, 0.25]),
            ("m3", "2026-11-20T00:00:00Z", "0.5", "kW"),
        ],
        D,
    )
    run_day(con, D)
    assert clean_rows(con, D, "m1")[1] == ("m1", "2026-11-20 00:15", 1.0, "filled")
    # Sums of measured kW: 00:00 2.0 (3 meters), 00:15 2.0 (1), 00:30 1.25 (2) ...
    # 00:00 and 00:15 tie: the earliest wins.
    assert system_peaks(con, D) == [("2026-11-20 00:00", 2.0, 3)]
    assert meter_peaks(con, D) == [
        ("m1", 1.0, "2026-11-20 00:00"),
        ("m2", 2.0, "2026-11-20 00:15"),
        ("m3", 0.5, "2026-11-20 00:00"),
    ]


def test_peak_counts_meters_reporting(con):
    """Section 4: meters_reporting is the number of meters with a measured reading at the
    peak timestamp (m3 has a missing interval then)."""
    add_file(
        con,
        "a",
        [
            *quarter_hours("m1", [1.0, 4.0, 1.0]),
            *quarter_hours("m2", [1.0, 2.5, 1.0]),
            ("m3", "2026-11-20T00:00:00Z", "0.5", "kW"),
            ("m3", "2026-11-20T00:15:00Z", "NA", "kW"),
            ("m3", "2026-11-20T00:30:00Z", "0.5", "kW"),
        ],
        D,
    )
    run_day(con, D)
    assert clean_rows(con, D, "m3")[1] == ("m3", "2026-11-20 00:15", 0.5, "filled")
    assert system_peaks(con, D) == [("2026-11-20 00:15", 6.5, 2)]


def test_ties_go_to_the_earliest_timestamp(con):
    """Section 4: "Ties go to the earliest timestamp", for the meter and the system peak. The
    rows are written latest first so that file order cannot decide."""
    m1 = quarter_hours("m1", [0.5, 2.0, 1.0, 2.0])
    m2 = quarter_hours("m2", [0.5, 1.0, 2.0, 1.0])
    add_file(con, "a", [*reversed(m1), *reversed(m2)], D)
    run_day(con, D)
    # Sums: 00:00 1.0, 00:15 3.0, 00:30 3.0, 00:45 3.0.
    assert meter_peaks(con, D) == [
        ("m1", 2.0, "2026-11-20 00:15"),
        ("m2", 2.0, "2026-11-20 00:30"),
    ]
    assert system_peaks(con, D) == [("2026-11-20 00:15", 3.0, 2)]


def test_peaks_are_per_day(con):
    """Section 4: "Per day": the day before's readings take no part in the day's peaks."""
    add_file(con, "prev", series("m1", "2026-11-19 23:00", [9.0, 9.0, 9.0, 9.0]), D_BEFORE)
    add_file(con, "a", quarter_hours("m1", [1.0, 1.5]), D)
    run_day(con, D_BEFORE)
    run_day(con, D)
    assert meter_peaks(con, D_BEFORE) == [("m1", 9.0, "2026-11-19 23:00")]
    assert meter_peaks(con, D) == [("m1", 1.5, "2026-11-20 00:15")]
    assert system_peaks(con, D) == [("2026-11-20 00:15", 1.5, 1)]
