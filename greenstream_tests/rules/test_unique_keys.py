"""Unique keys found from the runs rows come in: the runs themselves, and when two may meet."""

import datetime as dt

import polars as pl
import pytest

from greenstream_dagster.rules.unique_keys import FIRST, LAST, key_runs, runs_overlap

KEYS = ["source_file", "source_line"]


def frame(*rows: tuple) -> pl.DataFrame:
    return pl.DataFrame(
        rows, schema={"source_file": pl.String, "source_line": pl.Int64}, orient="row"
    )


def runs_of(*rows: tuple) -> list[tuple]:
    return key_runs(frame(*rows), KEYS).rows()


def test_sorted_rows_are_one_run_per_file():
    rows = [("a", 1), ("a", 2), ("a", 5), ("b", 1), ("b", 2)]
    assert runs_of(*rows) == [("a", 1, 5), ("b", 1, 2)]
    assert key_runs(frame(*rows), KEYS).columns == ["source_file", FIRST, LAST]


def test_a_file_cut_in_two_by_another_is_two_runs():
    """As DuckDB's insert stores a day's files: a's rows in two pieces, b's between them."""
    assert runs_of(("a", 1), ("a", 2), ("b", 1), ("a", 3), ("a", 4)) == [
        ("a", 1, 2),
        ("b", 1, 1),
        ("a", 3, 4),
    ]


def test_a_value_that_does_not_rise_starts_a_run():
    assert runs_of(("a", 3), ("a", 2), ("a", 2), ("a", 7)) == [
        ("a", 3, 3),
        ("a", 2, 2),
        ("a", 2, 7),
    ]


def test_a_null_key_is_a_run_of_its_own():
    assert runs_of(("a", 1), ("a", None), ("a", 2), (None, 3), (None, 4)) == [
        ("a", 1, 1),
        ("a", None, None),
        ("a", 2, 2),
        (None, 3, 3),
        (None, 4, 4),
    ]


def test_no_rows_no_runs():
    assert runs_of() == []
    assert runs_overlap([key_runs(frame(), KEYS)], KEYS) is False
    assert runs_overlap([], KEYS) is False


@pytest.mark.parametrize(
    ("batches", "overlap"),
    [
        # one file in order, cut into batches anywhere
        ([[("a", 1), ("a", 2)], [("a", 3)], [("a", 4), ("b", 1)]], False),
        # a file in two pieces with another between them
        ([[("a", 1), ("a", 2), ("b", 1)], [("b", 2), ("a", 3)]], False),
        # rows in falling order: one run each, all distinct
        ([[("a", 3), ("a", 2)], [("a", 1)]], False),
        # line 2 of a twice, in two batches
        ([[("a", 1), ("a", 2)], [("b", 1), ("a", 2)]], True),
        # line 3 of a inside the range of another run of a
        ([[("a", 1), ("a", 5)], [("a", 3)]], True),
        # ranges that only touch: line 5 twice
        ([[("a", 1), ("a", 5)], [("a", 5), ("a", 9)]], True),
        # the same lines of two files never meet
        ([[("a", 1), ("a", 5)], [("b", 1), ("b", 5)]], False),
        # a null: left to DuckDB to name or clear
        ([[("a", 1), (None, 2)]], True),
    ],
)
def test_runs_overlap_when_two_runs_may_share_a_key(batches, overlap):
    runs = [key_runs(frame(*rows), KEYS) for rows in batches]
    assert runs_overlap(runs, KEYS) is overlap


def test_the_last_key_column_may_be_text_or_time():
    flags = pl.DataFrame(
        {"meter_id": ["M1", "M1", "M2", "M1"], "rule": ["near_zero", "zero_daily_total"] * 2}
    )
    keys = ["meter_id", "rule"]
    assert key_runs(flags, keys).rows() == [
        ("M1", "near_zero", "zero_daily_total"),
        ("M2", "near_zero", "near_zero"),
        ("M1", "zero_daily_total", "zero_daily_total"),
    ]
    assert runs_overlap([key_runs(flags, keys)], keys) is True
    t = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
    clean = pl.DataFrame(
        {"meter_id": ["M1", "M1", "M2"], "reading_ts": [t, t + dt.timedelta(minutes=15), t]}
    )
    keys = ["meter_id", "reading_ts"]
    assert key_runs(clean, keys).rows() == [
        ("M1", t, t + dt.timedelta(minutes=15)),
        ("M2", t, t),
    ]
    assert runs_overlap([key_runs(clean, keys)], keys) is False
