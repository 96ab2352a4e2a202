"""``pipeline``'s raw rows: ``raw_files`` mirrors the raw zone's sidecars exactly, and rows are
placed on the days their sidecar recorded; the archive keeps the clean rows' meter and time
order."""

import datetime as dt
import json
import random

import pyarrow.parquet as pq

from greenstream_dagster import pipeline
from greenstream_dagster.landing import land_file
from greenstream_dagster.storage import warehouse
from greenstream_dagster.storage.raw_zone import ACCEPTED, REJECTED, RawZone, Sidecar
from greenstream_tests.support import write_csv

ARRIVAL = dt.datetime(2026, 11, 20, 6, 0, tzinfo=dt.UTC)
D1, D2 = dt.date(2026, 11, 19), dt.date(2026, 11, 20)


def test_raw_files_mirror_the_sidecars_and_drop_what_is_gone():
    accepted = Sidecar("a" * 64, "day.csv", 120, ARRIVAL, ACCEPTED, [D1, D2])
    rejected = Sidecar("b" * 64, "bad.csv", 7, ARRIVAL, REJECTED, [], "not UTF-8")
    with warehouse.connect(":memory:") as con:
        con.execute(
            "INSERT INTO raw_files VALUES (?, 'stale.csv', 1, ?, [], 'accepted', NULL)",
            ["c" * 64, ARRIVAL],
        )
        # a result left unfetched by an earlier step must not stop the mirror
        con.execute("SELECT * FROM raw_files")
        pipeline.sync_raw_files(con, [accepted, rejected])
        rows = con.execute("SELECT * FROM raw_files ORDER BY source_file").fetchall()
    assert rows == [
        ("a" * 64, "day.csv", 120, ARRIVAL, [D1, D2], ACCEPTED, None),
        ("b" * 64, "bad.csv", 7, ARRIVAL, [], REJECTED, "not UTF-8"),
    ]


def _raw_rows(settings, days):
    with warehouse.connect(settings.warehouse_path) as con:
        for day in days:
            pipeline.build_raw_readings(con, settings, day)
        return con.execute(
            "SELECT source_line, partition_date FROM raw_readings ORDER BY 1"
        ).fetchall()


def test_rows_without_a_day_go_to_the_first_day_the_sidecar_recorded(settings, tmp_path):
    """Landing records the file's first day; loading its rows uses it, and a sidecar written
    before first days were recorded has it found again, with the same rows as the result."""
    d20, d21 = dt.date(2026, 11, 20), dt.date(2026, 11, 21)
    path = write_csv(
        tmp_path / "f.csv",
        [
            ("m1", "2026-11-20T10:00:00Z", "abc", "kW"),  # line 2: no valid value on the 20th
            ("m1", "not a time", "1.0", "kW"),  # line 3: no day of its own
            ("m1", "2026-11-21T10:00:00Z", "1.0", "kW"),  # line 4: the first valid row
        ],
    )
    sidecar = land_file(path, settings, arrival=dt.datetime(2026, 11, 22, tzinfo=dt.UTC)).sidecar
    assert (sidecar.days, sidecar.first_day, sidecar.first_day_recorded) == ([d20, d21], d21, True)
    expected = [(2, d20), (3, d21), (4, d21)]
    assert _raw_rows(settings, sidecar.days) == expected

    # the same sidecar as an earlier version wrote it: no first_day key
    sidecar_path = RawZone(settings.raw_dir).sidecar_path(sidecar.source_file)
    data = json.loads(sidecar_path.read_text())
    del data["first_day"]
    sidecar_path.chmod(0o644)
    sidecar_path.write_text(json.dumps(data))
    old = RawZone(settings.raw_dir).sidecar(sidecar.source_file)
    assert (old.first_day, old.first_day_recorded) == (None, False)
    assert _raw_rows(settings, sidecar.days) == expected


def test_a_sidecar_records_no_first_day_when_every_row_has_a_day(settings, tmp_path):
    path = write_csv(tmp_path / "f.csv", [("m1", "2026-11-20T10:00:00Z", "1.0", "kW")])
    sidecar = land_file(path, settings, arrival=dt.datetime(2026, 11, 22, tzinfo=dt.UTC)).sidecar
    stored = RawZone(settings.raw_dir).sidecar(sidecar.source_file)
    assert (stored.first_day, stored.first_day_recorded) == (None, True)
    assert (
        json.loads(RawZone(settings.raw_dir).sidecar_path(sidecar.source_file).read_text())[
            "first_day"
        ]
        is None
    )


def test_archive_rows_are_in_meter_and_time_order(settings, tmp_path):
    """The archive is written by meter, then time, whatever order the file had (a reader of
    one meter then skips the other row groups): gaps filled in between, a reading quarantined
    (its interval then filled) and 139,500 rows shuffled across 1,500 meters: more than one
    of DuckDB's row groups, so more than one thread inserts and writes them."""
    rng = random.Random(7)
    start = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
    rows = []
    for m in range(1500):
        for i in range(96):  # the whole day
            if i in (30, 31, 32):  # a gap of three intervals, filled in as rows of their own
                continue
            value = "50" if i == 60 else f"{1 + (i % 7) / 10:.1f}"  # 50 kW: above_max
            ts = (start + dt.timedelta(minutes=15 * i)).strftime("%Y-%m-%dT%H:%M:%SZ")
            rows.append((f"meter-{m:04d}", ts, value, "kW"))
    rng.shuffle(rows)
    path = write_csv(tmp_path / "shuffled.csv", rows)
    land_file(path, settings, arrival=dt.datetime(2026, 11, 21, tzinfo=dt.UTC))
    with warehouse.connect(settings.warehouse_path) as con:
        pipeline.build_raw_readings(con, settings, D2)
        pipeline.build_standardized(con, settings, D2)
        written = pipeline.build_archive(con, settings, D2)
    table = pq.read_table(written.counts["path"], columns=["meter_id", "reading_ts", "quality"])
    keys = list(zip(table["meter_id"].to_pylist(), table["reading_ts"].to_pylist(), strict=True))
    assert len(keys) == 1500 * 96
    assert keys == sorted(keys)
    assert table["quality"].to_pylist().count("filled") == 1500 * 4  # under an hour: filled
