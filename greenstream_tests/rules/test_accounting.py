"""DESIGN.md section 5, "Nothing is lost": for every day, raw rows = clean rows that came from a
raw row + quarantine rows. Checked both on our own (sets of (file, line)) and through
``accounting.account_day``, which must also catch a lost and a doubled row."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest

from greenstream_dagster.rules.accounting import _lines_accounted, account_day
from greenstream_tests.support import add_file, land_rows, run_day, series, utc

D20, D21 = dt.date(2026, 11, 20), dt.date(2026, 11, 21)
BASE = [1.0, 2.0] * 6


def mixed_files(con) -> list[dt.date]:
    """Two files over two days with every outcome: measured, missing, filled, duplicates,
    reasons of steps 1-3 and 5-7. Returns the days they touch."""
    f1 = [
        ("m1", "2026-11-20T00:00:00Z", "1.0", "kW"),  # 2: duplicate (f2 line 2 is later)
        ("m1", "2026-11-20T00:15:00Z", "NULL", "kW"),  # 3: duplicate (f2 line 3 is later)
        ("m1", "2026-11-20T00:30:00Z", "-1", "kW"),  # 4: negative_value
        ("m1", "2026-11-20T00:45:00Z", "50", "kW"),  # 5: above_max
        ("m1", "2026-11-20T01:00:00Z", "2.0", "kW"),  # 6: measured
        "m1,bad",  # 7: malformed_row
        ("", "2026-11-20T01:15:00Z", "1.0", "kW"),  # 8: missing_meter_id
        ("m1", "not a time", "1.0", "kW"),  # 9: invalid_timestamp
        ("m1", "2026-11-20T01:15:00Z", "abc", "kW"),  # 10: invalid_value
        ("m1", "2026-11-20T01:15:00Z", "1.0", "MW"),  # 11: unknown_unit
        ("m1", "2026-11-20T01:30:00Z", "1.5", "kW"),  # 12: duplicate (line 13 is later)
        ("m1", "2026-11-20T01:30:00Z", "1.6", "kW"),  # 13: measured
        ("m2", "2026-11-20T00:00:00Z", "1500", "W"),  # 14: measured
        ("m2", "2026-11-20T03:00:00Z", "1.0", "kW"),  # 15: measured (gap before it)
        ("m1", "2026-11-21T00:00:00Z", "1.0", "kW"),  # 16: measured on the 21st
        ("m1", "2026-11-21T00:30:00Z", "1.0", "kW"),  # 17: measured (00:15 filled)
        ("m1", "2026-11-21T00:00:00+01:00", "1.0", "kW"),  # 18: 2026-11-20 23:00 UTC
    ]
    f2 = [
        ("m1", "2026-11-20T00:00:00Z", "1.1", "kW"),  # 2: wins
        ("m1", "2026-11-20T00:15:00Z", "NULL", "kW"),  # 3: wins (both missing, later)
        ("m1", "2026-11-21T00:00:00Z", "NULL", "kW"),  # 4: duplicate (f1 line 16 has a value)
        *series("m3", "2026-11-20 04:00", [*BASE, 5.0]),  # 5-16 measured, 17: outlier_zscore
    ]
    days = land_rows(con, "f1", f1, arrival=utc("2026-11-22 00:00"))
    days += land_rows(con, "f2", f2, arrival=utc("2026-11-22 01:00"))
    days = sorted(set(days))
    for day in days:
        run_day(con, day)
    return days


def outcomes(con, day: dt.date) -> tuple[list, list, list]:
    """(raw, clean-from-raw, quarantine) lists of (file, line) of the day."""

    def pairs(sql: str) -> list:
        return con.execute(sql + " ORDER BY ALL", [day]).fetchall()

    return (
        pairs("SELECT source_file, source_line FROM raw_readings WHERE partition_date = ?"),
        pairs(
            "SELECT source_file, source_line FROM standardized_readings "
            "WHERE partition_date = ? AND source_line IS NOT NULL"
        ),
        pairs("SELECT source_file, source_line FROM quarantine WHERE partition_date = ?"),
    )


def test_every_raw_row_is_clean_or_quarantined_once(con):
    """Section 5: "raw rows = clean rows that came from a raw row + quarantine rows", and not
    just in count: each raw row is in exactly one of them. Filled and missing rows made for
    gaps, and intervals whose reading was quarantined, do not count as coming from a raw row."""
    days = mixed_files(con)
    assert days == [D20, D21]
    for day in days:
        raw, clean, quarantine = outcomes(con, day)
        assert len(raw) == len(clean) + len(quarantine)
        assert sorted(clean + quarantine) == raw
        result = account_day(con, day)
        assert (result.raw, result.clean_from_raw, result.quarantined) == (
            len(raw),
            len(clean),
            len(quarantine),
        )
        assert result.lost == [] and result.doubled == []
        assert result.balanced
    reasons = con.execute(
        "SELECT partition_date, source_file, source_line, reason FROM quarantine ORDER BY ALL"
    ).fetchall()
    assert reasons == [
        (D20, "f1", 2, "duplicate"),
        (D20, "f1", 3, "duplicate"),
        (D20, "f1", 4, "negative_value"),
        (D20, "f1", 5, "above_max"),
        (D20, "f1", 7, "malformed_row"),
        (D20, "f1", 8, "missing_meter_id"),
        (D20, "f1", 9, "invalid_timestamp"),
        (D20, "f1", 10, "invalid_value"),
        (D20, "f1", 11, "unknown_unit"),
        (D20, "f1", 12, "duplicate"),
        (D20, "f2", 17, "outlier_zscore"),
        (D21, "f2", 4, "duplicate"),
    ]
    # Intervals whose reading was quarantined are in the clean data without a source line
    # (a run of 3 x 15 minutes after 00:00: filled).
    assert con.execute(
        """SELECT strftime(reading_ts, '%H:%M'), kw, quality, source_file, source_line
           FROM standardized_readings WHERE meter_id = 'm1' AND partition_date = ?
           AND reading_ts < '2026-11-20 01:00:00+00' ORDER BY reading_ts""",
        [D20],
    ).fetchall() == [
        ("00:00", 1.1, "measured", "f2", 2),
        ("00:15", 1.1, "filled", "f2", 3),  # a NULL reading: the row comes from f2 line 3
        ("00:30", 1.1, "filled", None, None),  # its reading is in quarantine (negative)
        ("00:45", 1.1, "filled", None, None),  # its reading is in quarantine (above_max)
    ]


def test_reprocessing_a_day_doubles_nothing(con):
    """Section 5: "Re-processing a day ... replaces that day's outputs exactly: no row is
    doubled"."""
    days = mixed_files(con)
    before = {day: outcomes(con, day) for day in days}
    tables = ("standardized_readings", "quarantine", "fault_flags", "meter_daily_peaks")
    counts = [con.execute(f"SELECT count(*) FROM {t}").fetchone() for t in tables]
    for day in days:
        run_day(con, day)
    assert {day: outcomes(con, day) for day in days} == before
    assert [con.execute(f"SELECT count(*) FROM {t}").fetchone() for t in tables] == counts
    assert all(account_day(con, day).balanced for day in days)


def small_day(con) -> None:
    """A day with clean rows (f, 2..4), a gap row and quarantine (f, 5) and (f, 6)."""
    add_file(
        con,
        "f",
        [
            ("m1", "2026-11-20T00:00:00Z", "1.0", "kW"),
            ("m1", "2026-11-20T00:15:00Z", "1.0", "kW"),
            ("m1", "2026-11-20T00:45:00Z", "1.0", "kW"),
            ("m1", "2026-11-20T01:00:00Z", "-1", "kW"),
            ("m1", "not a time", "1.0", "kW"),
        ],
        D20,
    )
    run_day(con, D20)


TAMPERING = [
    pytest.param(
        "DELETE FROM quarantine WHERE source_line = 6", [("f", 6)], [], id="quarantine-row-lost"
    ),
    pytest.param(
        "DELETE FROM standardized_readings WHERE source_line = 3",
        [("f", 3)],
        [],
        id="clean-row-lost",
    ),
    pytest.param(
        "INSERT INTO quarantine SELECT meter_id, NULL, NULL, NULL, 'duplicate', 'x', reading_ts,"
        " kw, source_file, source_line, partition_date FROM standardized_readings"
        " WHERE source_line = 2",
        [],
        [("f", 2)],
        id="clean-and-quarantined",
    ),
    pytest.param(
        "INSERT INTO standardized_readings SELECT * FROM standardized_readings"
        " WHERE source_line = 4",
        [],
        [("f", 4)],
        id="clean-row-twice",
    ),
    pytest.param(
        "INSERT INTO quarantine SELECT * FROM quarantine WHERE source_line = 5",
        [],
        [("f", 5)],
        id="quarantine-row-twice",
    ),
    pytest.param(
        "DELETE FROM quarantine WHERE source_line = 6; INSERT INTO standardized_readings"
        " SELECT * FROM standardized_readings WHERE source_line = 4",
        [("f", 6)],
        [("f", 4)],
        id="one-lost-one-doubled-same-count",
    ),
    pytest.param(
        "UPDATE quarantine SET source_line = 99 WHERE source_line = 6",
        [("f", 6)],
        [],
        id="quarantine-row-names-a-line-never-read",
    ),
]


@pytest.mark.parametrize(("tamper", "lost", "doubled"), TAMPERING)
def test_account_day_finds_lost_and_doubled_rows(con, tamper, lost, doubled):
    """Section 5, "Nothing is lost": the check must fail, naming the line, when a row is in
    neither table or is counted twice."""
    small_day(con)
    assert account_day(con, D20).balanced
    con.execute(tamper)
    result = account_day(con, D20)
    assert not result.balanced
    assert (result.lost, result.doubled) == (lost, doubled)
    raw, clean, quarantine = outcomes(con, D20)
    assert Counter(clean + quarantine) != Counter(raw)


def test_fingerprint_counts_equal_line_by_line_counts(con):
    """A balanced day is decided by fingerprint alone; its counts are the line-by-line ones."""
    days = mixed_files(con)
    for day in days:
        fast, exact = account_day(con, day), _lines_accounted(con, day)
        assert fast.balanced and exact.balanced
        assert (fast.raw, fast.clean_from_raw, fast.quarantined) == (
            exact.raw,
            exact.clean_from_raw,
            exact.quarantined,
        )
    assert [account_day(con, day).raw for day in days] == [
        con.execute("SELECT count(*) FROM raw_readings WHERE partition_date = ?", [day]).fetchone()[
            0
        ]
        for day in days
    ]
