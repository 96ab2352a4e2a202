"""``landing.land_files``: a batch of files lands as ``land_file`` would land them one after the
other, in the order given, although they are hashed and read on several threads."""

import datetime as dt

from greenstream_dagster.landing import land_file, land_files
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


def test_a_batch_records_what_one_by_one_landing_records(settings, tmp_path):
    files = _files(tmp_path)
    one_by_one = [land_file(path, settings).sidecar for path in files]
    settings_b = settings.replace(home=tmp_path / "home_b")
    batch = [item.sidecar for item in land_files(files, settings_b)]

    def recorded(sidecar):
        return (sidecar.source_file, sidecar.status, sidecar.days, sidecar.first_day)

    assert list(map(recorded, batch)) == list(map(recorded, one_by_one))
