"""Issue 2's acceptance test: a generated week for a few hundred meters, processed like an
operator would (``greenstream process``, every asset and check through Dagster). Every injected
defect is found with its reason, every injected faulty meter is flagged on exactly the right
days, no other meter is flagged, and the accounting holds on every day."""

import csv
import datetime as dt

import duckdb
import pytest

from greenstream_dagster.process import process_files
from greenstream_dagster.rules import accounting, codes
from greenstream_dagster.synthetic import generate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def week(tmp_path_factory):
    from greenstream_dagster.settings import Settings

    root = tmp_path_factory.mktemp("week")
    generated = generate(root / "files", meters=300, days=7, start=dt.date(2026, 11, 1), seed=11)
    settings = Settings(home=root / "home")
    outcome = process_files(generated.files, settings)
    with open(generated.ground_truth, newline="", encoding="utf-8") as f:
        truth = list(csv.DictReader(f))
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    yield outcome, truth, con
    con.close()


def test_every_day_runs_and_passes_its_blocking_checks(week):
    outcome, _, _ = week
    assert [d.day for d in outcome.days] == [
        dt.date(2026, 10, 31) + dt.timedelta(days=k) for k in range(8)
    ]
    assert outcome.ok, outcome.failure_message()


def test_every_injected_row_defect_is_quarantined_with_its_reason(week):
    _, truth, con = week
    expected = {
        (row["file"], int(row["line"])): (row["expected"], row["day"])
        for row in truth
        if row["expected"] in codes.REASONS
    }
    assert len(expected) > 100
    found = {
        (name, line): (reason, day.isoformat())
        for name, line, reason, day in con.execute(
            """SELECT f.original_name, q.source_line, q.reason, q.partition_date
               FROM quarantine q JOIN raw_files f USING (source_file)"""
        ).fetchall()
    }
    wrong = {k: (v, found.get(k)) for k, v in expected.items() if found.get(k) != v}
    assert wrong == {}


def test_missing_and_filled_intervals(week):
    _, truth, con = week
    expected = {
        (row["meter_id"], row["timestamp_utc"]): row["expected"]
        for row in truth
        if row["expected"] in (codes.QUALITY_FILLED, codes.QUALITY_MISSING)
    }
    assert len(expected) > 100
    found = dict(
        (((m, ts), q))
        for m, ts, q in con.execute(
            """SELECT meter_id, strftime(reading_ts, '%Y-%m-%dT%H:%M:%SZ'), quality
               FROM standardized_readings WHERE quality <> 'measured'"""
        ).fetchall()
    )
    wrong = {k: (v, found.get(k)) for k, v in expected.items() if found.get(k) != v}
    assert wrong == {}


def test_offset_timestamps_are_normalized_to_utc(week):
    _, truth, con = week
    normalized = [row for row in truth if row["expected"] == "normalized"]
    assert normalized
    for row in normalized:
        found = con.execute(
            """SELECT s.quality, s.partition_date FROM standardized_readings s
               JOIN raw_files f USING (source_file)
               WHERE f.original_name = ? AND s.source_line = ?""",
            [row["file"], int(row["line"])],
        ).fetchone()
        assert found is not None, row
        ts = con.execute(
            """SELECT strftime(s.reading_ts, '%Y-%m-%dT%H:%M:%SZ') FROM standardized_readings s
               JOIN raw_files f USING (source_file)
               WHERE f.original_name = ? AND s.source_line = ?""",
            [row["file"], int(row["line"])],
        ).fetchone()[0]
        assert (ts, found[1].isoformat()) == (row["timestamp_utc"], row["day"])


def test_faulty_meters_are_flagged_on_exactly_the_right_days(week):
    _, truth, con = week
    expected = {
        (row["meter_id"], row["expected"], row["day"])
        for row in truth
        if row["expected"] in codes.FAULT_RULES
    }
    assert {rule for _, rule, _ in expected} == set(codes.FAULT_RULES)
    flagged = {
        (m, rule, day.isoformat())
        for m, rule, day in con.execute(
            "SELECT meter_id, rule, partition_date FROM fault_flags"
        ).fetchall()
    }
    # Equality: no clean meter is flagged, and no flag is missing or on a wrong day.
    assert flagged == expected


def test_accounting_holds_on_every_day(week):
    outcome, _, con = week
    for day in outcome.days:
        result = accounting.account_day(con, day.day)
        assert result.balanced, (day.day, result)
