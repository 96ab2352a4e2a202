"""The schema checks validate a day in batches; uniqueness across the day is asked of DuckDB."""

import datetime as dt

from greenstream_dagster.orchestration import checks
from greenstream_dagster.rules.schemas import schemas
from greenstream_dagster.settings import Settings
from greenstream_tests.support import add_file, run_day, series

DAY = dt.date(2026, 11, 20)


def test_a_clean_day_passes_in_small_batches(con, monkeypatch):
    monkeypatch.setattr(checks, "BATCH_ROWS", 7)
    add_file(con, "f1", series("M1", "2026-11-20 00:00", [1.0] * 20), DAY)
    run_day(con, DAY)
    schema = schemas(Settings())["standardized_readings"]
    assert checks.validate_day(con, "standardized_readings", schema, DAY) == (20, None)


def test_a_doubled_clean_row_is_caught_across_batches(con, monkeypatch):
    monkeypatch.setattr(checks, "BATCH_ROWS", 7)
    add_file(con, "f1", series("M1", "2026-11-20 00:00", [1.0] * 20), DAY)
    run_day(con, DAY)
    # The same meter and timestamp twice, 19 rows apart: never in one batch of 7.
    con.execute(
        """INSERT INTO standardized_readings SELECT * FROM standardized_readings
           WHERE reading_ts = TIMESTAMPTZ '2026-11-20 00:00:00+00'"""
    )
    schema = schemas(Settings())["standardized_readings"]
    rows, cases = checks.validate_day(con, "standardized_readings", schema, DAY)
    assert rows == 21
    assert cases[["column", "check"]].values.tolist() == [
        ["['meter_id', 'reading_ts']", "multiple_fields_uniqueness"]
    ]
    assert cases["failure_case"].iloc[0].startswith("M1,2026-11-20 00:00:00")
