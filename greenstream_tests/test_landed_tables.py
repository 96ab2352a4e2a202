"""``landed_tables``: a file landing read is not read again for its raw rows in the same
process, the rows are the same as from a second read, and nothing is held past its last day
or the budget."""

import datetime as dt

import pyarrow as pa

from greenstream_dagster import landed_tables, pipeline
from greenstream_dagster.landing import land_files
from greenstream_dagster.process import process_files
from greenstream_dagster.storage import warehouse
from greenstream_dagster.storage.raw_zone import REJECTED
from greenstream_tests.support import write_csv

D20, D21 = dt.date(2026, 11, 20), dt.date(2026, 11, 21)
RAW = """SELECT meter_id, "timestamp", energy_value, energy_unit, source_line, partition_date
         FROM raw_readings ORDER BY source_line"""


def _two_day_file(folder):
    return write_csv(
        folder / "two_days.csv",
        [
            ("m1", "2026-11-20T23:45:00Z", "1.0", "kW"),
            ("m1", "not a time", "2.0", "kW"),
            ("m1", "2026-11-21T00:00:00Z", "3.0", "kW"),
        ],
    )


def _no_second_read(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the file was read again")

    monkeypatch.setattr(pipeline, "read_meter_csv", refuse)


def _raw_rows(settings, days):
    with warehouse.connect(settings.warehouse_path) as con:
        for day in days:
            pipeline.build_raw_readings(con, settings, day)
        return con.execute(RAW).fetchall()


EXPECTED = [
    ("m1", "2026-11-20T23:45:00Z", "1.0", "kW", 2, D20),
    ("m1", "not a time", "2.0", "kW", 3, D20),  # no day of its own: the file's first day
    ("m1", "2026-11-21T00:00:00Z", "3.0", "kW", 4, D21),
]


def test_outside_keeping_nothing_is_kept():
    landed_tables.keep("sha", pa.table({"a": [1]}), [D20])
    assert landed_tables.take("sha", D20) is None
    assert landed_tables.held_bytes() == 0


def test_a_table_is_let_go_once_its_last_day_took_it():
    table = pa.table({"a": [1, 2, 3]})
    with landed_tables.keeping():
        landed_tables.keep("sha", table, [D21, D20])
        assert landed_tables.held_bytes() == table.nbytes
        assert landed_tables.take("sha", D20) is table
        assert landed_tables.held_bytes() == table.nbytes  # D21 still needs it
        assert landed_tables.take("sha", D21) is table
        assert landed_tables.held_bytes() == 0
        assert landed_tables.take("sha", D21) is None
        landed_tables.keep("other", table, [D20])
    assert landed_tables.held_bytes() == 0  # the block's end lets go of the rest
    assert landed_tables.take("other", D20) is None


def test_nothing_beyond_the_budget_is_kept(monkeypatch):
    table = pa.table({"a": list(range(100))})
    monkeypatch.setattr(landed_tables, "BUDGET_BYTES", table.nbytes * 2 - 1)
    with landed_tables.keeping():
        landed_tables.keep("first", table, [D20])
        landed_tables.keep("second", table, [D20])
        assert landed_tables.held_bytes() == table.nbytes
        assert landed_tables.take("second", D20) is None
        assert landed_tables.take("first", D20) is table


def test_the_raw_rows_from_the_kept_table_are_those_of_a_second_read(
    settings, tmp_path, monkeypatch
):
    path = _two_day_file(tmp_path)
    with landed_tables.keeping():
        land_files([path], settings)
        with monkeypatch.context() as patch:
            _no_second_read(patch)
            kept = _raw_rows(settings, [D20, D21])
        assert landed_tables.held_bytes() == 0
    assert kept == EXPECTED
    # Read again from the raw zone (nothing is kept any more): the same rows.
    assert _raw_rows(settings, [D20, D21]) == EXPECTED


def test_process_reads_each_landed_file_once(settings, tmp_path, monkeypatch):
    _no_second_read(monkeypatch)
    outcome = process_files([_two_day_file(tmp_path)], settings)
    assert outcome.ok, outcome.failure_message()
    assert [d.summary["raw"] for d in outcome.days] == [2, 1]
    assert landed_tables.held_bytes() == 0


def test_a_rejected_file_keeps_nothing(settings, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"no,header,we,know\n1,2,3,4\n")
    with landed_tables.keeping():
        [landed] = land_files([bad], settings)
        assert landed.sidecar.status == REJECTED
        assert landed_tables.held_bytes() == 0
