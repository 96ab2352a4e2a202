"""DESIGN.md section 2, steps 1 to 3 (structure, timestamp, value and unit), and the day each
row is placed on. Every expectation comes from the contract; each case names its line.

Most tables are run as one batch per table (one file, one meter per case: the cases cannot
interact) so that the module stays fast; each case is still its own test.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

import pytest

from greenstream_dagster import landing
from greenstream_dagster.rules.meter_csv import read_meter_csv
from greenstream_dagster.settings import Settings
from greenstream_dagster.storage import warehouse
from greenstream_tests.support import (
    DEFAULT_ARRIVAL,
    HEADER,
    clean_rows,
    land_rows,
    raw_days,
    run_day,
    utc,
)

D = dt.date(2026, 11, 20)
D_BEFORE = D - dt.timedelta(days=1)
# Late on D, so that every row below on D is in the past and a file without valid rows is
# placed on D (its arrival day).
ARRIVAL_D = utc("2026-11-20 23:00")
AMSTERDAM = Settings(source_tz="Europe/Amsterdam")
TS_COLUMNS = "meter_id, strftime(reading_ts, '%Y-%m-%d %H:%M:%S.%f'), kw, quality, partition_date"


def land_batch(
    lines: list[tuple | str], arrival: dt.datetime = ARRIVAL_D, settings: Settings | None = None
) -> dict[tuple | str, tuple[str | None, list[tuple]]]:
    """Land the lines as one file and run every day it touches. Per line: (its quarantine
    reason or None, its clean rows as (meter, 'YYYY-MM-DD HH:MM:SS.ffffff', kw, quality, day)).

    Meter m1 of the i-th line is renamed c<i>, so no two cases share a meter: no duplicates,
    no shared interval or z-score window.
    """
    settings = settings or Settings()
    renamed = [_rename(line, i) for i, line in enumerate(lines)]
    with warehouse.connect(":memory:") as con:
        for day in land_rows(con, "f", renamed, arrival, settings):
            run_day(con, day, settings, faults=False, peaks=False)
        reasons = dict(con.execute("SELECT source_line, reason FROM quarantine").fetchall())
        clean = con.execute(f"SELECT {TS_COLUMNS} FROM standardized_readings").fetchall()
    return {
        line: (reasons.get(i + 2), [("m1", *row[1:]) for row in clean if row[0] == f"c{i}"])
        for i, line in enumerate(lines)
    }


def _rename(line: tuple | str, i: int) -> tuple | str:
    if isinstance(line, str):
        return f"c{i}," + line[3:] if line.startswith("m1,") else line
    return (f"c{i}", *line[1:]) if line[0] == "m1" else line


def short(rows: list[tuple]) -> list[tuple]:
    """Clean rows as (meter, 'YYYY-MM-DD HH:MM', kw, quality), as in most expectations."""
    return [(m, ts[:16], kw, quality) for m, ts, kw, quality, _ in rows]


def measured(kw: float, ts: str = "2026-11-20 00:00") -> list[tuple]:
    return [("m1", ts, kw, "measured")]


MISSING = [("m1", "2026-11-20 00:00", None, "missing")]
TS = "2026-11-20T00:00:00Z"


# (CSV line, quarantine reason or None, expected clean rows). Each line is its own case, on its
# own meter; all are landed together as one file (see land_batch).
ROW_CASES = [
    # Step 1: "A row with the wrong number of fields: malformed_row."
    pytest.param(f"m1,{TS},1.0", "malformed_row", [], id="three-fields"),
    pytest.param(f"m1,{TS},1.0,kW,extra", "malformed_row", [], id="five-fields"),
    # ... and it is the first rule, so it wins over an empty meter_id.
    pytest.param(f",{TS},1.0", "malformed_row", [], id="malformed-before-missing-id"),
    # Step 1: "Empty meter_id: missing_meter_id." (meter_id is trimmed, section 1)
    pytest.param(f",{TS},1.0,kW", "missing_meter_id", [], id="empty-meter-id"),
    pytest.param(f"   ,{TS},1.0,kW", "missing_meter_id", [], id="blank-meter-id"),
    # Step 2: "Unparseable: invalid_timestamp."
    pytest.param("m1,not a time,1.0,kW", "invalid_timestamp", [], id="words"),
    pytest.param("m1,,1.0,kW", "invalid_timestamp", [], id="empty-timestamp"),
    pytest.param("m1,2026-11-31T00:00:00Z,1.0,kW", "invalid_timestamp", [], id="november-31"),
    pytest.param("m1,2026-11-20T25:00:00Z,1.0,kW", "invalid_timestamp", [], id="hour-25"),
    pytest.param("m1,20/11/2026 00:00,1.0,kW", "invalid_timestamp", [], id="not-iso"),
    pytest.param("m1,not a time,abc,MW", "invalid_timestamp", [], id="timestamp-before-value"),
    # Step 3: "A value that is neither a number nor a missing marker: invalid_value."
    pytest.param(f"m1,{TS},abc,kW", "invalid_value", [], id="word"),
    # Only NaN is a marker (section 1); lower-case nan is neither a marker nor a number.
    pytest.param(f"m1,{TS},nan,kW", "invalid_value", [], id="nan-lower"),
    pytest.param(f"m1,{TS},inf,kW", "invalid_value", [], id="inf"),
    pytest.param(f"m1,{TS},-inf,kW", "invalid_value", [], id="minus-inf"),
    pytest.param(f"m1,{TS},Infinity,kW", "invalid_value", [], id="infinity"),
    # Ambiguity: 1e400 is not a finite decimal a kW column can hold; read as not a number.
    pytest.param(f"m1,{TS},1e400,kW", "invalid_value", [], id="1e400"),
    # A decimal comma (quoted so the line keeps four fields) is not a decimal number.
    pytest.param(f'm1,{TS},"1,5",kW', "invalid_value", [], id="decimal-comma"),
    pytest.param(f"m1,{TS},1.5kW,kW", "invalid_value", [], id="number-with-unit"),
    pytest.param(f"m1,{TS},1.2.3,kW", "invalid_value", [], id="two-points"),
    pytest.param(f"m1,{TS},abc,MW", "invalid_value", [], id="value-before-unit"),
    # Step 3: "A unit other than W or kW on a row that has a value: unknown_unit."
    pytest.param(f"m1,{TS},1.0,MW", "unknown_unit", [], id="MW"),
    pytest.param(f"m1,{TS},1.0,kWh", "unknown_unit", [], id="kWh"),
    pytest.param(f"m1,{TS},1.0,", "unknown_unit", [], id="empty-unit"),
    pytest.param(f"m1,{TS},1.0,Watt", "unknown_unit", [], id="Watt"),
    pytest.param(f"m1,{TS},1.0,k W", "unknown_unit", [], id="inner-space"),
    # Numbers that are fine: an explicit sign, minus zero (not below 0).
    pytest.param(f"m1,{TS},+1.5,kW", None, measured(1.5), id="plus-sign"),
    pytest.param(f"m1,{TS},-0,kW", None, measured(0.0), id="minus-zero"),
    # Section 1: "W or kW, case-insensitive, surrounding spaces ignored"; step 5: W / 1000.
    pytest.param(f"m1,{TS},1.5,kw", None, measured(1.5), id="kw"),
    pytest.param(f"m1,{TS},1.5,KW", None, measured(1.5), id="KW"),
    pytest.param(f"m1,{TS},1.5,Kw", None, measured(1.5), id="Kw"),
    pytest.param(f"m1,{TS},1.5,  kW ", None, measured(1.5), id="spaced-kW"),
    pytest.param(f"m1,{TS},1500,W", None, measured(1.5), id="W"),
    pytest.param(f"m1,{TS},1500,w", None, measured(1.5), id="w"),
    pytest.param(f"m1,{TS},1500, W ", None, measured(1.5), id="spaced-W"),
    # Section 1: "Empty, NULL, null, NaN, NA, None mean a missing reading": kept, missing.
    pytest.param(f"m1,{TS},,kW", None, MISSING, id="empty-value"),
    pytest.param(f"m1,{TS},NULL,kW", None, MISSING, id="NULL"),
    pytest.param(f"m1,{TS},null,kW", None, MISSING, id="null"),
    pytest.param(f"m1,{TS},NaN,kW", None, MISSING, id="NaN"),
    pytest.param(f"m1,{TS},NA,kW", None, MISSING, id="NA"),
    pytest.param(f"m1,{TS},None,kW", None, MISSING, id="None"),
    # Step 3: the unit only matters "on a row that has a value".
    pytest.param(f"m1,{TS},NULL,MWh", None, MISSING, id="null-value-unknown-unit"),
    pytest.param(f"m1,{TS},,", None, MISSING, id="empty-value-empty-unit"),
]


@pytest.fixture(scope="module")
def row_outcomes():
    return land_batch([case.values[0] for case in ROW_CASES])


@pytest.mark.parametrize(("line", "reason", "expected_clean"), ROW_CASES)
def test_row_outcome(row_outcomes, line, reason, expected_clean):
    """Steps 1-3: the first rule that rejects a row gives its reason; others pass on."""
    got_reason, got_clean = row_outcomes[line]
    assert got_reason == reason
    assert short(got_clean) == expected_clean


def test_missing_meter_id_wins_over_a_bad_timestamp(con):
    """Step 1 before step 2: "Empty meter_id: missing_meter_id", even when the timestamp is
    unparseable too; such a row has no day, so it goes to the file's first day."""
    days = land_rows(
        con, "f", [("m1", TS, "1.0", "kW"), ("", "not a time", "abc", "MW")], ARRIVAL_D
    )
    assert days == [D]
    assert raw_days(con, "f") == [(2, D), (3, D)]
    run_day(con, D, faults=False, peaks=False)
    assert con.execute("SELECT source_line, reason FROM quarantine").fetchall() == [
        (3, "missing_meter_id")
    ]


TIMESTAMP_CASES = [
    # Section 1: ISO-8601 with offset or without; step 2: "Parse and normalise to UTC".
    ("2026-11-20T00:15:00Z", "2026-11-20 00:15:00.000000", D),
    ("2026-11-20 00:15:00", "2026-11-20 00:15:00.000000", D),  # naive, source zone UTC
    ("2026-11-20T00:15:00", "2026-11-20 00:15:00.000000", D),
    ("2026-11-20T01:15:00+01:00", "2026-11-20 00:15:00.000000", D),
    # An offset moves the reading to the UTC day before.
    ("2026-11-20T00:30:00+01:00", "2026-11-19 23:30:00.000000", D_BEFORE),
    ("2026-11-20T05:44:59+05:45", "2026-11-19 23:59:59.000000", D_BEFORE),
    ("2026-11-20T05:45:00+05:45", "2026-11-20 00:00:00.000000", D),  # odd offset
    ("2026-11-19T23:30:00-01:00", "2026-11-20 00:30:00.000000", D),
    # Fractions of seconds are kept.
    ("2026-11-20T00:15:00.5Z", "2026-11-20 00:15:00.500000", D),
    ("2026-11-20T00:15:00.123456+01:00", "2026-11-19 23:15:00.123456", D_BEFORE),
    ("2026-11-19T23:59:59.999999Z", "2026-11-19 23:59:59.999999", D_BEFORE),
]


@pytest.fixture(scope="module")
def timestamp_outcomes():
    return land_batch([("m1", text, "1.0", "kW") for text, _, _ in TIMESTAMP_CASES])


@pytest.mark.parametrize(("text", "expected_ts", "expected_day"), TIMESTAMP_CASES)
def test_timestamp_normalised_to_utc_day(timestamp_outcomes, text, expected_ts, expected_day):
    """Step 2: "Parse and normalise to UTC"; "Readings are processed per UTC day"."""
    assert timestamp_outcomes[("m1", text, "1.0", "kW")] == (
        None,
        [("m1", expected_ts, 1.0, "measured", expected_day)],
    )


AMSTERDAM_CASES = [
    # Ordinary winter and summer time.
    ("2026-11-20 00:15:00", "2026-11-19 23:15", None),
    ("2026-03-29 01:59:00", "2026-03-29 00:59", None),
    ("2026-03-29 03:00:00", "2026-03-29 01:00", None),
    ("2026-10-25 01:59:00", "2026-10-24 23:59", None),
    ("2026-10-25 03:00:00", "2026-10-25 02:00", None),
    # Spring forward, 2026-03-29 02:00 -> 03:00: these local times do not exist.
    ("2026-03-29 02:00:00", None, "ambiguous_timestamp"),
    ("2026-03-29 02:30:00", None, "ambiguous_timestamp"),
    ("2026-03-29 02:59:59", None, "ambiguous_timestamp"),
    # Fall back, 2026-10-25 03:00 -> 02:00: these local times happen twice.
    ("2026-10-25 02:00:00", None, "ambiguous_timestamp"),
    ("2026-10-25 02:30:00", None, "ambiguous_timestamp"),
    ("2026-10-25 02:59:00", None, "ambiguous_timestamp"),
    # A time with an offset is not local time: the source zone does not apply.
    ("2026-03-29T02:30:00+01:00", "2026-03-29 01:30", None),
    ("2026-10-25T02:30:00+02:00", "2026-10-25 00:30", None),
    ("2026-10-25T02:30:00Z", "2026-10-25 02:30", None),
]


@pytest.fixture(scope="module")
def amsterdam_outcomes():
    return land_batch(
        [("m1", text, "1.0", "kW") for text, _, _ in AMSTERDAM_CASES], settings=AMSTERDAM
    )


@pytest.mark.parametrize(("text", "expected_ts", "reason"), AMSTERDAM_CASES)
def test_naive_local_time_in_source_zone(amsterdam_outcomes, text, expected_ts, reason):
    """Section 1: "a naive time is local time in the configured source time zone". Step 2:
    "A naive local time that does not exist or is ambiguous (DST change):
    ambiguous_timestamp"."""
    got_reason, got_clean = amsterdam_outcomes[("m1", text, "1.0", "kW")]
    assert got_reason == reason
    assert short(got_clean) == ([] if reason else [("m1", expected_ts, 1.0, "measured")])


ARRIVAL = utc("2026-11-20 10:00")
FUTURE_CASES = [
    # "later than the file's arrival time plus one hour": exactly +1h is not later.
    ("2026-11-20T11:00:00Z", Settings(), False),
    ("2026-11-20T11:00:00.000001Z", Settings(), True),
    ("2026-11-20T11:00:01Z", Settings(), True),
    ("2026-11-20T10:59:59.999999Z", Settings(), False),
    ("2026-11-20T12:00:00+01:00", Settings(), False),
    ("2026-11-20T12:00:01+01:00", Settings(), True),
    ("2026-11-20 11:00:00", Settings(), False),
    # Compared in UTC after the local time is converted (Amsterdam is UTC+1 in November).
    ("2026-11-20 12:00:00", AMSTERDAM, False),
    ("2026-11-20 12:00:01", AMSTERDAM, True),
]


@pytest.fixture(scope="module")
def future_outcomes():
    outcomes = {}
    for settings in (Settings(), AMSTERDAM):
        lines = [("m1", text, "1.0", "kW") for text, s, _ in FUTURE_CASES if s == settings]
        for line, result in land_batch(lines, ARRIVAL, settings).items():
            outcomes[(line[1], settings)] = result
    return outcomes


@pytest.mark.parametrize(("text", "settings", "future"), FUTURE_CASES)
def test_future_timestamp_boundary(future_outcomes, text, settings, future):
    """Step 2: "A timestamp later than the file's arrival time plus one hour:
    future_timestamp"."""
    reason, clean = future_outcomes[(text, settings)]
    assert reason == ("future_timestamp" if future else None)
    assert len(clean) == (0 if future else 1)


def test_rows_without_a_day_go_to_the_files_first_day(con):
    """Section 2: "A row whose timestamp places it on no day (steps 1 to 3) belongs to the
    first UTC day of its file (the earliest day among the file's valid rows ...)"."""
    days = land_rows(
        con,
        "f",
        [
            ("m1", "2026-11-21T00:00:00Z", "1.0", "kW"),  # 2: day 21
            ("m1", "2026-11-20T00:30:00+01:00", "1.0", "kW"),  # 3: 19 23:30Z, the first day
            "m1,2026-11-21T00:15:00Z,1.0",  # 4: malformed_row: no day of its own
            ("m1", "not a time", "1.0", "kW"),  # 5: invalid_timestamp: no day
            # 6: its timestamp does place it on a day (21) although meter_id is empty:
            # reading of the contract, "places it on no day" is about the timestamp.
            ("", "2026-11-21T00:15:00Z", "1.0", "kW"),
            ("m1", "2026-11-20T00:00:00Z", "abc", "kW"),  # 7: invalid_value, on its day 20
        ],
        arrival=utc("2026-11-25 00:00"),
    )
    d19, d20, d21 = (dt.date(2026, 11, d) for d in (19, 20, 21))
    assert days == [d19, d20, d21]
    assert raw_days(con, "f") == [(2, d21), (3, d19), (4, d19), (5, d19), (6, d21), (7, d20)]
    for day in days:
        run_day(con, day, faults=False, peaks=False)
    quarantine = con.execute(
        "SELECT partition_date, source_line, reason FROM quarantine ORDER BY ALL"
    ).fetchall()
    assert quarantine == [
        (d19, 4, "malformed_row"),
        (d19, 5, "invalid_timestamp"),
        (d20, 7, "invalid_value"),
        (d21, 6, "missing_meter_id"),
    ]
    assert clean_rows(con, d19) == [("m1", "2026-11-19 23:30", 1.0, "measured")]
    assert clean_rows(con, d21) == [("m1", "2026-11-21 00:00", 1.0, "measured")]


def test_dst_rows_have_no_day_of_their_own(con):
    """Section 2: an ambiguous naive time places the row on no day: the file's first day."""
    days = land_rows(
        con,
        "f",
        [
            ("m1", "2026-10-26 12:00:00", "1.0", "kW"),  # 11:00Z on the 26th
            ("m1", "2026-10-25 02:30:00", "1.0", "kW"),  # ambiguous
            ("m1", "2026-03-29 02:30:00", "1.0", "kW"),  # does not exist
        ],
        settings=AMSTERDAM,
    )
    assert days == [dt.date(2026, 10, 26)]
    assert raw_days(con, "f") == [(2, days[0]), (3, days[0]), (4, days[0])]


def test_file_without_valid_rows_goes_to_its_arrival_day(con):
    """Section 2: "... or the arrival day if there is none". A row rejected in step 3 is not
    a valid row (reading of "valid": passed steps 1 to 3), but its timestamp gives it a day."""
    days = land_rows(
        con,
        "f",
        [
            ("m1", "not a time", "1.0", "kW"),
            "only,two",
            ("m1", "2026-11-21T00:00:00Z", "abc", "kW"),
        ],
        arrival=utc("2026-11-22 10:00"),
    )
    d21, d22 = dt.date(2026, 11, 21), dt.date(2026, 11, 22)
    assert days == [d21, d22]
    assert raw_days(con, "f") == [(2, d22), (3, d22), (4, d21)]
    for day in days:
        run_day(con, day, faults=False, peaks=False)
    reasons = con.execute("SELECT source_line, reason FROM quarantine ORDER BY 1").fetchall()
    assert reasons == [(2, "invalid_timestamp"), (3, "malformed_row"), (4, "invalid_value")]


def landing_days(lines: list, arrival: dt.datetime, settings: Settings) -> list[dt.date]:
    """The days a file's sidecar records when it lands (``landing.file_placement``)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "f.csv"
        text = [line if isinstance(line, str) else ",".join(line) for line in lines]
        path.write_text("\n".join([HEADER, *text]) + "\n", encoding="utf-8")
        return landing.file_placement(read_meter_csv(path).table, arrival, settings).days


@pytest.mark.parametrize(
    ("lines", "arrival", "settings", "expected"),
    [
        pytest.param(
            [
                ("m1", "2026-11-21T00:00:00Z", "1.0", "kW"),
                ("m1", "2026-11-20T00:30:00+01:00", "1.0", "kW"),
                "m1,2026-11-21T00:15:00Z,1.0",
                ("m1", "not a time", "1.0", "kW"),
                ("", "2026-11-21T00:15:00Z", "1.0", "kW"),
                ("m1", "2026-11-20T00:00:00Z", "abc", "kW"),
            ],
            utc("2026-11-25 00:00"),
            Settings(),
            [dt.date(2026, 11, 19), dt.date(2026, 11, 20), dt.date(2026, 11, 21)],
            id="rows without a day join the first valid day",
        ),
        pytest.param(
            [
                ("m1", "2026-10-26 12:00:00", "1.0", "kW"),
                ("m1", "2026-10-25 02:30:00", "1.0", "kW"),
                ("m1", "2026-03-29 02:30:00", "1.0", "kW"),
            ],
            DEFAULT_ARRIVAL,
            AMSTERDAM,
            [dt.date(2026, 10, 26)],
            id="dst rows",
        ),
        pytest.param(
            [
                ("m1", "not a time", "1.0", "kW"),
                "only,two",
                ("m1", "2026-11-21T00:00:00Z", "abc", "kW"),
            ],
            utc("2026-11-22 10:00"),
            Settings(),
            [dt.date(2026, 11, 21), dt.date(2026, 11, 22)],
            id="no valid row: the arrival day",
        ),
        pytest.param(
            [
                ("m1", "2026-11-19T10:00:00Z", "abc", "kW"),
                ("m1", "2026-11-19T11:00:00Z", "1.0", "VA"),
                ("m1", "2026-11-20T10:00:00Z", "1.0", "kW"),
                ("m1", "", "1.0", "kW"),
                ("m1", "2026-11-21T10:00:00Z", "2.0", "kW"),
            ],
            utc("2026-11-22 10:00"),
            Settings(),
            [dt.date(2026, 11, 19), dt.date(2026, 11, 20), dt.date(2026, 11, 21)],
            id="the earliest day has no valid row: the first valid day is later",
        ),
        pytest.param(
            [("m1", "2026-11-20T10:00:00Z", "1.0", "kW"), ("m2", "2026-11-21T10:00:00Z", "", "W")],
            utc("2026-11-22 10:00"),
            Settings(),
            [dt.date(2026, 11, 20), dt.date(2026, 11, 21)],
            id="every row has a day of its own",
        ),
        pytest.param(
            [("m1", "2026-11-20T00:00:00Z", "1.0", "kW"), ("m1", "2026-11-21T05:00:00Z", "1", "W")],
            utc("2026-11-21 03:00"),
            Settings(),
            [dt.date(2026, 11, 20)],
            id="a future row joins the first day",
        ),
        pytest.param(
            [("m1", "2020-01-01T00:00:00Z", "1.0", "kW"), ("m1", "2026-11-20T00:00:00Z", "1", "W")],
            utc("2026-11-21 03:00"),
            Settings(start_date="2026-01-01"),
            [dt.date(2026, 11, 20)],
            id="a row before the first day joins the file's first day",
        ),
    ],
)
def test_landing_days_are_the_days_rows_are_placed_on(lines, arrival, settings, expected):
    """Landing learns a file's days with one aggregate, not by placing every row: both must
    name the same days (section 2's placement), or a run would miss rows or start for none."""
    with warehouse.connect(":memory:") as con:
        placed = land_rows(con, "f", lines, arrival, settings)
    assert placed == expected
    assert landing_days(lines, arrival, settings) == expected
