"""The schema checks validate a day in batches, read from the warehouse or as the step that
stores them holds them, while it stores them; uniqueness across the day is asked of DuckDB."""

import datetime as dt
import threading
import time

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from pandera.polars import Check, Column, DataFrameSchema

from greenstream_dagster import pipeline, validation
from greenstream_dagster.orchestration import handover
from greenstream_dagster.rules.schemas import schemas
from greenstream_dagster.settings import Settings
from greenstream_tests.support import add_file, run_day, series

DAY = dt.date(2026, 11, 20)


def test_a_clean_day_passes_in_small_batches(con, monkeypatch):
    monkeypatch.setattr(validation, "BATCH_ROWS", 7)
    add_file(con, "f1", series("M1", "2026-11-20 00:00", [1.0] * 20), DAY)
    run_day(con, DAY)
    schema = schemas(Settings())["standardized_readings"]
    assert validation.validate_day(con, "standardized_readings", schema, DAY) == (20, None)


def test_a_doubled_clean_row_is_caught_across_batches(con, monkeypatch):
    monkeypatch.setattr(validation, "BATCH_ROWS", 7)
    add_file(con, "f1", series("M1", "2026-11-20 00:00", [1.0] * 20), DAY)
    run_day(con, DAY)
    # The same meter and timestamp twice, 19 rows apart: never in one batch of 7.
    con.execute(
        """INSERT INTO standardized_readings SELECT * FROM standardized_readings
           WHERE reading_ts = TIMESTAMPTZ '2026-11-20 00:00:00+00'"""
    )
    schema = schemas(Settings())["standardized_readings"]
    rows, cases = validation.validate_day(con, "standardized_readings", schema, DAY)
    assert rows == 21
    assert cases[["column", "check"]].values.tolist() == [
        ["['meter_id', 'reading_ts']", "multiple_fields_uniqueness"]
    ]
    assert cases["failure_case"].iloc[0].startswith("M1,2026-11-20 00:00:00")


# --- the rows as the standardize step holds them (``handover``) ------------------------------


def _staged_day(con, settings):
    """A day with measured, filled and missing rows and a quarantined one, standardized; the
    Arrow tables the step held, by table."""
    values = [1.0, None, 2.0, "NULL", "NULL", "NULL", "NULL", "NULL", 3.0, "x"]
    add_file(
        con,
        "f1",
        [*series("M1", "2026-11-20 00:00", values), *series("M2", "2026-11-20 12:00", [0.5])],
        DAY,
    )
    held = {}
    pipeline.build_standardized(
        con, settings, DAY, lambda table, rows: held.setdefault(table, rows)
    )
    return held


def _strict(settings):
    """Schemas the day fails: kW at most 0.5, and no reason but a duplicate."""
    found = schemas(settings)
    found["standardized_readings"] = found["standardized_readings"].update_column(
        "kw", checks=[Check.le(0.5)]
    )
    found["quarantine"] = found["quarantine"].update_column(
        "reason", checks=[Check.isin(["duplicate"])]
    )
    return found


@pytest.mark.parametrize("strict", [False, True])
def test_the_held_rows_validate_as_the_stored_rows(con, monkeypatch, strict):
    """The step's own Arrow tables (meter ids, files and qualities as dictionaries) give the
    check the result that reading the day back gives: rows, and every failure case."""
    monkeypatch.setattr(validation, "BATCH_ROWS", 4)
    settings = Settings()
    held = _staged_day(con, settings)
    assert sorted(held) == ["quarantine", "standardized_readings"]
    assert pa.types.is_dictionary(held["standardized_readings"]["meter_id"].type)
    found = (_strict if strict else schemas)(settings)
    for table, rows in held.items():
        from_step = validation.validate_day(con, table, found[table], DAY, held=rows)
        read_back = validation.validate_day(con, table, found[table], DAY)
        assert from_step[0] == read_back[0] == {"standardized_readings": 10, "quarantine": 1}[table]
        if not strict:
            assert from_step[1] is None and read_back[1] is None
        else:
            assert len(read_back[1]) > 0
            pd.testing.assert_frame_equal(from_step[1], read_back[1])


def _recoded(table: pa.Table, column: str, values=None, null_row: int | None = None):
    """``table`` with ``column``'s dictionary values changed by ``values`` (old -> new), or
    the index of row ``null_row`` made null."""
    coded = table[column].combine_chunks()
    indices = coded.indices.to_pylist()
    if null_row is not None:
        indices[null_row] = None
    dictionary = [(values or {}).get(v, v) for v in coded.dictionary.to_pylist()]
    array = pa.DictionaryArray.from_arrays(
        pa.array(indices, coded.indices.type), pa.array(dictionary, pa.string())
    )
    return table.set_column(table.schema.get_field_index(column), column, array)


def _decoded(table: pa.Table) -> pa.Table:
    return pa.table(
        {
            name: column.cast(column.type.value_type)
            if pa.types.is_dictionary(column.type)
            else column
            for name, column in zip(table.column_names, table.columns, strict=True)
        }
    )


def _same_cases(by_value, as_text, rows: int) -> dict:
    """Both validations checked ``rows`` rows and found the same failure cases: how many of
    each (column, check)."""
    assert by_value[0] == as_text[0] == rows
    if by_value[1] is None or as_text[1] is None:
        assert by_value[1] is None and as_text[1] is None
        return {}
    pd.testing.assert_frame_equal(by_value[1], as_text[1])
    return by_value[1].groupby(["column", "check"]).size().to_dict()


@pytest.mark.parametrize(
    "column, change, expected",
    [
        ("meter_id", {"values": {"M1": " M1"}}, {("meter_id", "meter_id is not trimmed"): 9}),
        ("meter_id", {"values": {"M2": "  "}}, {("meter_id", "meter_id is empty"): 1}),
        ("meter_id", {"null_row": 5}, {("meter_id", "not_nullable"): 1}),
        (
            "quality",
            {"values": {"filled": "Filled"}},
            {("quality", "isin(('measured', 'filled', 'missing'))"): 1},
        ),
        ("quality", {"null_row": 0}, {("quality", "not_nullable"): 1}),
        # a dictionary value no row holds is not judged, as it is not stored
        ("meter_id", {"values": {"M1": "M1"}}, {}),
    ],
)
def test_a_held_dictionary_column_is_judged_as_its_text(con, monkeypatch, column, change, expected):
    """The step's dictionary columns are judged once per distinct value; when one fails, every
    row is, so the failure cases are those of the same rows as text (batches of 4 rows: the
    failing rows are in one batch or in several)."""
    monkeypatch.setattr(validation, "BATCH_ROWS", 4)
    settings = Settings()
    clean = _staged_day(con, settings)["standardized_readings"]
    coded = _recoded(clean, column, **change)
    schema = schemas(settings)["standardized_readings"]
    by_value = validation.validate_day(con, "standardized_readings", schema, DAY, held=coded)
    as_text = validation.validate_day(
        con, "standardized_readings", schema, DAY, held=_decoded(coded)
    )
    found = _same_cases(by_value, as_text, rows=10)
    # The cases named, and no case at all where none is expected (other checks of the same
    # rows may fail along: a changed quality breaks the frame's quality rules too).
    assert {key: found.get(key, 0) for key in expected} == expected
    assert bool(found) == bool(expected)


def test_a_doubled_key_in_the_held_rows_is_named_from_them(con, monkeypatch):
    """Uniqueness over the held rows: their runs overlap, and the keys are named from the held
    rows themselves (the warehouse, still storing them, holds the day once). A warehouse
    holding the same double names it alike."""
    monkeypatch.setattr(validation, "BATCH_ROWS", 7)
    settings = Settings()
    schema = schemas(settings)["standardized_readings"]
    held = _staged_day(con, settings)
    clean = held["standardized_readings"]
    doubled = pa.concat_tables([clean, clean.slice(0, 1)])
    rows, cases = validation.validate_day(con, "standardized_readings", schema, DAY, held=doubled)
    assert rows == 11
    assert cases.values.tolist() == [
        [
            "['meter_id', 'reading_ts']",
            "multiple_fields_uniqueness",
            "M1,2026-11-20 00:00:00+00:00,2",
        ]
    ]
    assert validation.validate_day(con, "standardized_readings", schema, DAY) == (10, None)
    con.execute(
        """INSERT INTO standardized_readings SELECT * FROM standardized_readings
           WHERE meter_id = 'M1' AND reading_ts = TIMESTAMPTZ '2026-11-20 00:00:00+00'"""
    )
    read_back = validation.validate_day(con, "standardized_readings", schema, DAY)
    assert read_back[0] == 11
    pd.testing.assert_frame_equal(read_back[1], cases)


def test_the_staged_rows_are_handed_over_while_they_are_stored(con, monkeypatch):
    """The hook gets each staged table on a thread of its own, before the warehouse has them:
    the insert waits here until the hook has started, which it could not if the hook came
    after. The step returns once both are done."""
    started, seen = threading.Event(), {}
    replace_days = pipeline.replace_days

    def storing(*args, **kwargs):
        assert started.wait(10), "the hook did not start while the rows were being stored"
        [(stored,)] = con.execute(
            "SELECT count(*) FROM standardized_readings WHERE partition_date = ?", [DAY]
        ).fetchall()
        seen["stored before"] = stored
        return replace_days(*args, **kwargs)

    def hook(table, rows):
        started.set()
        seen[table] = (rows.num_rows, threading.get_ident() != threading.main_thread().ident)

    monkeypatch.setattr(pipeline, "replace_days", storing)
    add_file(con, "f1", series("M1", "2026-11-20 00:00", [1.0, 2.0, "x"]), DAY)
    report = pipeline.build_standardized(con, Settings(), DAY, hook)
    assert seen == {
        "stored before": 0,
        "standardized_readings": (2, True),  # 00:00 and 00:15; "x" is quarantined
        "quarantine": (1, True),
    }
    assert report.counts["rows"] == 2 and report.counts["quarantined"] == 1


def test_an_error_storing_the_rows_is_raised_once_the_hook_is_done(con, monkeypatch):
    """The store fails while the hook still works: the step raises the store's error, after
    the hook ended, and the day keeps no new row."""
    ended = threading.Event()

    def failing(*args, **kwargs):
        raise duckdb.IOException("disk full")

    def slow_hook(table, rows):
        time.sleep(0.2)
        ended.set()

    monkeypatch.setattr(pipeline, "replace_days", failing)
    add_file(con, "f1", series("M1", "2026-11-20 00:00", [1.0, 2.0]), DAY)
    with pytest.raises(duckdb.IOException, match="disk full"):
        pipeline.build_standardized(con, Settings(), DAY, slow_hook)
    assert ended.is_set()
    assert con.execute("SELECT count(*) FROM standardized_readings").fetchall() == [(0,)]


def test_a_handed_over_result_is_taken_once_by_its_own_run(con):
    settings = Settings()
    staged = _staged_day(con, settings)
    hook = handover.validating("run-1", settings, con, DAY, {"standardized_readings"})
    for table, rows in staged.items():
        hook(table, rows)
    # only the tables asked for are validated
    assert handover.take("run-1", "quarantine", DAY) is None
    assert handover.take("run-2", "standardized_readings", DAY) is None
    assert handover.take("run-1", "standardized_readings", DAY + dt.timedelta(1)) is None
    assert handover.take("run-1", "standardized_readings", DAY) == (10, None)
    assert handover.take("run-1", "standardized_readings", DAY) is None
    # what a run left and never took goes when the next run leaves its own
    hook("standardized_readings", staged["standardized_readings"])
    handover.validating("run-2", settings, con, DAY, {"quarantine"})(
        "quarantine", staged["quarantine"]
    )
    assert handover.take("run-1", "standardized_readings", DAY) is None
    assert handover.take("run-2", "quarantine", DAY) == (1, None)


def test_a_validation_that_breaks_leaves_nothing_and_the_step_goes_on(con, monkeypatch):
    """An error inside the step's validation is not the step's: nothing is handed over, so the
    check reads the day back and shows the error there."""
    settings = Settings()

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(validation, "validate_day", broken)
    add_file(con, "f1", series("M1", "2026-11-20 00:00", [1.0] * 4), DAY)
    hook = handover.validating("run-3", settings, con, DAY, {"standardized_readings"})
    report = pipeline.build_standardized(con, settings, DAY, hook)
    assert report.counts["rows"] == 4
    assert handover.take("run-3", "standardized_readings", DAY) is None


# --- read back: a text column with few values comes coded ------------------------------------


def _checked_table(con, codes):
    """A scratch table (no constraints) of ``codes`` on DAY and one row on the day after."""
    con.execute("CREATE TABLE checked (code VARCHAR, n INTEGER, partition_date DATE)")
    con.executemany(
        "INSERT INTO checked VALUES (?, ?, ?)",
        [(code, i, DAY) for i, code in enumerate(codes)]
        + [("other day", 0, DAY + dt.timedelta(1))],
    )


CODE_SCHEMA = DataFrameSchema(
    {
        "code": Column(pl.String, Check.isin(["a", "b"]), nullable=False),
        "n": Column(pl.Int32, Check.ge(0), nullable=False),
    }
)


@pytest.mark.parametrize(
    "codes, expected",
    [
        (["a", "b", "a", "a", "b", "b", "a", "b", "a"], {}),
        (["a", "b", "a", "a", "x", "b", "a", "x", "a"], {("code", "isin(['a', 'b'])"): 2}),
        (["a", "b", "a", "a", None, "b", "a", "b", "a"], {("code", "not_nullable"): 1}),
    ],
)
def test_a_text_column_with_few_values_is_read_coded_and_judged_as_its_text(
    con, monkeypatch, codes, expected
):
    """Read back, the column comes as a dictionary of the day's values (the other day's is not
    among them) and is judged once per value; when one fails or is null, every row is, so the
    failure cases are those of the rows read as text (batches of 4 rows)."""
    monkeypatch.setattr(validation, "BATCH_ROWS", 4)
    _checked_table(con, codes)
    batches, coded = validation._read_back(con, "checked", CODE_SCHEMA, ["code", "n"], DAY)
    assert coded == ["code"]
    column = pa.Table.from_batches(list(batches))["code"]
    assert pa.types.is_dictionary(column.type)
    assert column.cast(pa.string()).to_pylist() == codes
    by_value = validation.validate_day(con, "checked", CODE_SCHEMA, DAY)
    monkeypatch.setattr(validation, "CODED_MAX_VALUES", 0)
    as_text = validation.validate_day(con, "checked", CODE_SCHEMA, DAY)
    assert _same_cases(by_value, as_text, rows=9) == expected


def test_a_text_column_with_many_values_is_read_as_text(con, monkeypatch):
    monkeypatch.setattr(validation, "CODED_MAX_VALUES", 2)
    _checked_table(con, ["a", "b", "a"])
    assert validation._read_back(con, "checked", CODE_SCHEMA, ["code", "n"], DAY)[1] == ["code"]
    con.execute("INSERT INTO checked VALUES ('c', 1, ?)", [DAY])
    batches, coded = validation._read_back(con, "checked", CODE_SCHEMA, ["code", "n"], DAY)
    assert coded == []
    assert pa.Table.from_batches(list(batches))["code"].type == pa.string()
