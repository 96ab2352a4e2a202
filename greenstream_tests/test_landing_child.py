"""``landing_child``: files landed by a child process land as ``land_files`` lands them here,
their tables come back to be kept, the command then reads no file again, and a failed child
is a clear error, not a crash."""

import datetime as dt
import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest

from greenstream_dagster import landed_tables, landing, landing_child, pipeline
from greenstream_dagster.landing_child import LandingFailed, LandingInChild, worth_a_child
from greenstream_dagster.orchestration import handover
from greenstream_dagster.process import process_files
from greenstream_dagster.rules.meter_csv import read_meter_csv
from greenstream_dagster.storage.raw_zone import ACCEPTED, REJECTED
from greenstream_tests.support import write_csv

D20, D21 = dt.date(2026, 11, 20), dt.date(2026, 11, 21)


def _files(folder: Path) -> list[Path]:
    two_days = write_csv(
        folder / "two_days.csv",
        [
            ("m1", "2026-11-20T23:45:00Z", "1.0", "kW"),
            ("m1", "not a time", "2.0", "kW"),
            ("m1", "2026-11-21T00:00:00Z", "3.0", "kW"),
        ],
    )
    one_day = write_csv(folder / "one_day.csv", [("m2", "2026-11-21T00:15:00Z", "500", "W")])
    bad = folder / "bad.csv"
    bad.write_bytes(b"no,header,we,know\n1,2,3,4\n")
    again = folder / "again.csv"
    again.write_bytes(one_day.read_bytes())  # the same bytes: landed once
    return [two_days, one_day, bad, again]


def _refuse_reads(monkeypatch):
    """Reading a meter file in this process fails (the child is another process, forked
    before this is patched)."""

    def refuse(*args, **kwargs):
        raise AssertionError("a file was read in the parent process")

    monkeypatch.setattr(pipeline, "read_meter_csv", refuse)
    monkeypatch.setattr(landing, "read_meter_csv", refuse)


def test_the_child_lands_as_land_files_does_and_hands_its_tables_back(
    settings, tmp_path, monkeypatch
):
    files = _files(tmp_path)
    expected_tables = {name: read_meter_csv(files[i]).table for i, name in ((0, "two"), (1, "one"))}
    child = LandingInChild(files, settings)
    _refuse_reads(monkeypatch)  # here, once the child is forked
    with landed_tables.keeping():
        landed = child.result()
        statuses = [(item.sidecar.original_name, item.sidecar.status) for item in landed]
        assert statuses == [
            ("two_days.csv", ACCEPTED),
            ("one_day.csv", ACCEPTED),
            ("bad.csv", REJECTED),
            ("one_day.csv", ACCEPTED),  # the same bytes: its sidecar is the first one's
        ]
        assert [item.already_landed for item in landed] == [False, False, False, True]
        assert [item.sidecar.days for item in landed[:2]] == [[D20, D21], [D21]]
        assert "header" in landed[2].sidecar.reason
        # What was handed back is what a read of the file gives, kept till its last day.
        two, one = landed[0].sidecar.source_file, landed[1].sidecar.source_file
        assert landed_tables.take(two, D20).equals(expected_tables["two"])
        assert landed_tables.take(one, D21).equals(expected_tables["one"])
        assert landed_tables.take(two, D21).equals(expected_tables["two"])
        assert landed_tables.held_bytes() == 0
    assert not Path(child.work_dir).exists()  # the request and the tables are gone


def test_process_with_a_landing_child_reads_no_file_itself(settings, tmp_path, monkeypatch):
    files = _files(tmp_path)
    child = LandingInChild(files, settings)
    _refuse_reads(monkeypatch)  # here, once the child is forked
    outcome = process_files(files, settings, landing=child)
    assert outcome.error is None
    assert [(d.day, d.summary["raw"]) for d in outcome.days] == [(D20, 2), (D21, 2)]
    assert [item.already_landed for item in outcome.landed] == [False, False, False, True]


def test_the_validation_warms_up_while_the_child_is_still_landing(settings, tmp_path, monkeypatch):
    """Once Dagster is loaded the command waits on the child: the validation's imports take
    that wait, not the run's first step."""
    files = _files(tmp_path)
    calls = []
    monkeypatch.setattr(handover, "warm_validation", lambda: calls.append("warm"))
    child = LandingInChild(files, settings)
    take_result = child.result
    monkeypatch.setattr(child, "result", lambda: calls.append("result") or take_result())
    outcome = process_files(files, settings, landing=child)
    assert outcome.error is None
    # then the raw rows' step asks again (a no-op once warm): it also runs without a child
    assert calls == ["warm", "result", "warm"]


def test_a_failed_child_is_a_clear_error(settings, tmp_path):
    files = _files(tmp_path)
    files[1] = tmp_path / "a_folder.csv"
    files[1].mkdir()  # not a file: the child fails on it
    child = LandingInChild(files, settings)
    with pytest.raises(LandingFailed, match="IsADirectoryError"):
        child.result()
    outcome = process_files(files, settings, landing=LandingInChild(files, settings))
    assert outcome.error is not None and "child process failed" in outcome.error
    assert not outcome.ok and outcome.days == []


def test_a_forked_child_lands_on_a_duckdb_of_its_own(settings, tmp_path):
    """This process's scratch DuckDB has no worker threads in a forked child: the child stops
    using it (without closing it) and opens its own."""
    landing.file_placement(
        read_meter_csv(_files(tmp_path)[0]).table, dt.datetime.now(dt.UTC), settings
    )
    ours = landing._scratch_connection()
    landing.forget_scratch_connection()
    theirs = landing._scratch_connection()
    assert theirs is not ours
    theirs.execute("CREATE TABLE only_here AS SELECT 1 AS x")
    assert ours.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'only_here'"
    ).fetchall() == [(0,)]
    assert ours.execute("SELECT 42").fetchall() == [(42,)]  # left open, still usable here


def test_only_a_big_batch_is_worth_a_child(tmp_path, monkeypatch):
    small = write_csv(tmp_path / "small.csv", [("m1", "2026-11-20T00:00:00Z", "1", "kW")])
    big = tmp_path / "big.csv"
    with open(big, "wb") as out:
        out.truncate(landing_child.MIN_BYTES)  # sparse: its size without writing it
    assert not worth_a_child([small])
    assert worth_a_child([small, big])
    assert os.path.getsize(big) == landing_child.MIN_BYTES
    monkeypatch.delattr(os, "fork")  # a system that cannot fork lands every batch itself
    assert not worth_a_child([small, big])


def test_a_child_whose_result_is_never_taken_leaves_nothing_behind(settings, tmp_path):
    with LandingInChild(_files(tmp_path), settings) as child:
        assert Path(child.work_dir).is_dir()
    assert not Path(child.work_dir).exists()


def test_a_table_the_child_cannot_write_is_read_again_not_lost(settings, tmp_path):
    files = _files(tmp_path)[:2]
    landed, handed = landing_child._land(files, settings, str(tmp_path / "no such folder"))
    assert handed == {}  # nothing handed back...
    assert [item.sidecar.status for item in landed] == [ACCEPTED, ACCEPTED]  # ...all landed
    outcome = process_files(files, settings)  # already landed: read from the raw zone
    assert [(d.day, d.summary["raw"]) for d in outcome.days] == [(D20, 2), (D21, 2)]


def _unusual_files(folder: Path) -> list[Path]:
    """Files that take the reader's rarer paths: gzip, an extra column with quoted text (its
    JSON), a malformed row, a semicolon file with a BOM."""
    zipped = folder / "zipped.csv.gz"
    zipped.write_bytes(
        gzip.compress(
            b"meter_id,timestamp,energy_value,energy_unit\nz1,2026-11-20T00:00:00Z,1,kW\n"
        )
    )
    extra = folder / "extra.csv"
    extra.write_text(
        "meter_id,timestamp,energy_value,energy_unit,note\n"
        'x1,2026-11-20T00:15:00Z,2,kW,"said ""hi"", then left"\n'
        "x1,2026-11-20T00:30:00Z,3,kW\n",  # a field short: malformed
        encoding="utf-8",
    )
    semicolons = folder / "semicolons.csv"
    semicolons.write_bytes(
        "\ufeffmeter_id;timestamp;energy_value;energy_unit\r\n"
        "s1;2026-11-21 00:00:00;4;W\r\n".encode()
    )
    return [zipped, extra, semicolons]


def test_the_child_lands_unusual_files_as_this_process_does(settings, tmp_path):
    """The child refuses to import pandas (pyarrow would, for nothing): every kind of file
    still lands as it lands here, with the same tables."""
    files = _unusual_files(tmp_path)
    here = settings.replace(home=tmp_path / "here")
    with landed_tables.keeping():
        expected = landing.land_files(files, here)
        expected_tables = {
            i.sidecar.source_file: landed_tables.take(i.sidecar.source_file, D21) for i in expected
        }
    with landed_tables.keeping():
        landed = LandingInChild(files, settings).result()
        tables = {
            i.sidecar.source_file: landed_tables.take(i.sidecar.source_file, D21) for i in landed
        }

    def recorded(item):
        s = item.sidecar
        return (s.source_file, s.status, s.days, s.first_day, s.reason)

    assert [recorded(i) for i in landed] == [recorded(i) for i in expected]
    assert [i.sidecar.status for i in landed] == [ACCEPTED] * 3
    assert all(tables[sha].equals(expected_tables[sha]) for sha in tables)
    assert tables.keys() == expected_tables.keys() and len(tables) == 3


def test_pyarrow_goes_on_without_pandas_in_the_child():
    """What the child's import hook relies on: refused pandas, pyarrow converts without it."""
    code = (
        "import sys\n"
        "from greenstream_dagster.landing_child import _WithoutPandas\n"
        "sys.meta_path.insert(0, _WithoutPandas())\n"
        "import numpy as np, pyarrow as pa\n"
        "assert pa.array(np.arange(3)).to_pylist() == [0, 1, 2]\n"
        "assert pa.table({'a': [1, None]}).num_rows == 2\n"
        "print('pandas' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
