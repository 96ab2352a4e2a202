"""``landing.land_files``: a batch of files lands as ``land_file`` would land them one after the
other, in the order given, although they are hashed and read on several threads."""

import datetime as dt

import pytest

from greenstream_dagster import landing
from greenstream_dagster.landing import PROBE_SAMPLE_ROWS, Placement, land_file, land_files
from greenstream_dagster.rules.meter_csv import TABLE_SCHEMA, read_meter_csv
from greenstream_dagster.settings import Settings
from greenstream_dagster.storage.raw_zone import ACCEPTED, REJECTED, RawZone
from greenstream_tests.support import write_csv

D20, D21 = dt.date(2026, 11, 20), dt.date(2026, 11, 21)


def _files(folder):
    return [
        write_csv(folder / "a.csv", [("m1", "2026-11-20T10:00:00Z", "1.0", "kW")]),
        write_csv(
            folder / "b.csv",
            [("m1", "not a time", "1.0", "kW"), ("m1", "2026-11-21T10:00:00Z", "1.0", "kW")],
        ),
        write_csv(folder / "c.csv", [("m2", "2026-11-21T00:00:00Z", "2.0", "kW")]),
    ]


def test_a_batch_lands_in_the_order_given(settings, tmp_path):
    a, b, c = _files(tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"no,header,we,know\n1,2,3,4\n")
    landed = land_files([c, a, bad, b], settings, workers=3)

    assert [item.sidecar.original_name for item in landed] == ["c.csv", "a.csv", "bad.csv", "b.csv"]
    assert [item.already_landed for item in landed] == [False] * 4
    arrivals = [item.sidecar.arrival_time for item in landed]
    assert arrivals == sorted(arrivals) and len(set(arrivals)) == 4
    assert [(s.status, s.days, s.first_day) for s in (item.sidecar for item in landed)] == [
        (ACCEPTED, [D21], None),
        (ACCEPTED, [D20], None),
        (REJECTED, [], None),
        (ACCEPTED, [D21], D21),
    ]
    # what the raw zone holds is what was returned
    zone = RawZone(settings.raw_dir)
    assert [zone.sidecar(item.sidecar.source_file) for item in landed] == [
        item.sidecar for item in landed
    ]


def test_the_same_bytes_land_once_the_first_time_they_are_given(settings, tmp_path):
    a, b, _ = _files(tmp_path)
    copy = write_csv(tmp_path / "copy_of_a.csv", [("m1", "2026-11-20T10:00:00Z", "1.0", "kW")])
    before = land_file(b, settings)
    landed = land_files([a, b, copy], settings)
    assert [item.already_landed for item in landed] == [False, True, True]
    assert landed[1].sidecar == before.sidecar
    assert landed[2].sidecar == landed[0].sidecar  # the copy is a.csv's bytes, landed as a.csv
    assert len(RawZone(settings.raw_dir).sidecars()) == 2


@pytest.mark.parametrize("window_bytes", [1, landing.PLACE_WINDOW_BYTES])
def test_a_batch_records_what_one_by_one_landing_records(
    settings, tmp_path, monkeypatch, window_bytes
):
    """Whether a batch's files are placed a window of one file at a time or all together."""
    monkeypatch.setattr(landing, "PLACE_WINDOW_BYTES", window_bytes)
    files = _files(tmp_path)
    one_by_one = [land_file(path, settings).sidecar for path in files]
    settings_b = settings.replace(home=tmp_path / "home_b")
    batch = [item.sidecar for item in land_files(files, settings_b)]

    def recorded(sidecar):
        return (sidecar.source_file, sidecar.status, sidecar.days, sidecar.first_day)

    assert list(map(recorded, batch)) == list(map(recorded, one_by_one))


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [
        ([50, 50, 10, 200, 5], [["f0", "f1"], ["f2"], ["f3"], ["f4"]]),
        ([30, 30, 30], [["f0", "f1", "f2"]]),
        ([0, 100, 0], [["f0", "f1", "f2"]]),
        ([], []),
    ],
)
def test_files_are_placed_in_windows_of_a_limit_of_bytes(sizes, expected):
    """At most 100 bytes a window, in order; a file bigger than that is a window alone."""
    shas = [f"f{i}" for i in range(len(sizes))]
    assert landing._windows(shas, dict(zip(shas, sizes, strict=True)), 100) == expected


# Files placed together (``landing.file_placements``), each with its expected days and first day.
D19, D22 = dt.date(2026, 11, 19), dt.date(2026, 11, 22)
PLACED_TOGETHER = [
    pytest.param(
        [
            ("m1", "2026-11-19T10:00:00Z", "abc", "kW"),
            ("m1", "2026-11-20T10:00:00Z", "1.0", "kW"),
            ("m1", "", "1.0", "kW"),
        ],
        Placement([D19, D20], D20),
        id="the earliest day has no valid row",
    ),
    pytest.param(
        [("m1", "2026-11-20T10:00:00Z", "1.0", "kW"), ("m2", "not a time", "1.0", "kW")],
        Placement([D20], D20),
        id="a valid row on the earliest day, first in the file",
    ),
    pytest.param(
        [
            ("m1", "2026-11-21T10:00:00Z", "1.0", "kW"),
            ("m1", "2026-11-20T10:00:00Z", "1.0", "kW"),
            ("m1", "x", "1.0", "kW"),
        ],
        Placement([D20, D21], D20),
        id="a later day's valid row comes first",
    ),
    pytest.param(
        [("m1", "2026-11-20T10:00:00Z", "1.0", "kW"), ("m2", "2026-11-21T10:00:00Z", "", "W")],
        Placement([D20, D21], None),
        id="every row has a day of its own",
    ),
    pytest.param([("m1", "not a time", "1.0", "kW")], Placement([D22], D22), id="no valid row"),
    pytest.param([], Placement([], None), id="no rows"),
]


def _table(path, rows):
    # Landing rejects a file without rows before placing it; an empty table still has a place.
    return read_meter_csv(write_csv(path, rows)).table if rows else TABLE_SCHEMA.empty_table()


@pytest.mark.parametrize("sample_rows", [1, PROBE_SAMPLE_ROWS])
def test_files_placed_together_are_placed_as_each_alone(tmp_path, monkeypatch, sample_rows):
    """Landing places a batch's files in one query, and proves most first days from the head of
    each file: a file whose earliest day is not proven there (with a one-row head, any file
    whose first row is not a valid row of its earliest day) is asked day by day, so every file
    gets the days and first day it gets alone."""
    monkeypatch.setattr(landing, "PROBE_SAMPLE_ROWS", sample_rows)
    arrival = dt.datetime(2026, 11, 22, 10, tzinfo=dt.UTC)
    tables = [
        (_table(tmp_path / f"{i}.csv", case.values[0]), arrival)
        for i, case in enumerate(PLACED_TOGETHER)
    ]
    expected = [case.values[1] for case in PLACED_TOGETHER]
    assert landing.file_placements(tables, Settings()) == expected
    assert [landing.file_placements([file], Settings())[0] for file in tables] == expected


# --- land_each: what the sensor lands, one failure per file ------------------------------------


def test_land_each_gives_a_failing_file_its_error_and_lands_the_others(settings, tmp_path):
    """A file gone before it is read fails alone: the others land in the order given, and
    ``land_files`` would have raised before writing any sidecar."""
    a, b, c = _files(tmp_path)
    gone = tmp_path / "gone.csv"
    outcomes = landing.land_each([c, gone, a], settings)
    assert isinstance(outcomes[1], FileNotFoundError)
    assert [item.sidecar.original_name for item in (outcomes[0], outcomes[2])] == ["c.csv", "a.csv"]
    assert outcomes[0].sidecar.arrival_time < outcomes[2].sidecar.arrival_time
    assert len(RawZone(settings.raw_dir).sidecars()) == 2
    other = settings.replace(home=tmp_path / "home_b")
    with pytest.raises(FileNotFoundError):
        land_files([b, gone], other)
    assert not other.raw_dir.exists() or RawZone(other.raw_dir).sidecars() == []


def test_land_each_keeps_a_file_whose_sidecar_failed_new(settings, tmp_path, monkeypatch):
    """The disk full while one sidecar is written: that file fails, the others are landed, and
    the file lands as new (its days to run) when it is tried again."""
    a, b, c = _files(tmp_path)
    real_write = RawZone.write_sidecar

    def write_sidecar(self, sidecar):
        if sidecar.original_name == "b.csv":
            raise OSError(28, "No space left on device")
        return real_write(self, sidecar)

    monkeypatch.setattr(RawZone, "write_sidecar", write_sidecar)
    outcomes = landing.land_each([a, b, c], settings)
    assert isinstance(outcomes[1], OSError)
    assert [o.sidecar.original_name for o in (outcomes[0], outcomes[2])] == ["a.csv", "c.csv"]
    monkeypatch.setattr(RawZone, "write_sidecar", real_write)
    [again] = landing.land_each([b], settings)
    assert not again.already_landed and again.sidecar.days == [D21]


def test_land_each_places_a_failing_window_a_file_at_a_time(settings, tmp_path, monkeypatch):
    """A window whose placement query fails is placed again file by file: only the file at
    fault fails, the others get the placement they get alone."""
    a, b, c = _files(tmp_path)
    real_placements = landing.file_placements
    b_rows = read_meter_csv(b).table.num_rows

    def file_placements(files, settings):
        if any(table.num_rows == b_rows for table, _ in files):
            raise RuntimeError("placement failed")
        return real_placements(files, settings)

    monkeypatch.setattr(landing, "file_placements", file_placements)
    outcomes = landing.land_each([a, b, c], settings)
    assert isinstance(outcomes[1], RuntimeError)
    assert [(o.sidecar.status, o.sidecar.days) for o in (outcomes[0], outcomes[2])] == [
        (ACCEPTED, [D20]),
        (ACCEPTED, [D21]),
    ]
