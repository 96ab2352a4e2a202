"""``pipeline.sync_raw_files``: the raw_files table is the raw zone's sidecars, exactly."""

import datetime as dt

from greenstream_dagster import pipeline
from greenstream_dagster.storage import warehouse
from greenstream_dagster.storage.raw_zone import ACCEPTED, REJECTED, Sidecar

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
