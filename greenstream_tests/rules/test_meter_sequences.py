"""Steps 4 to 6 and 8 over arrays (``rules.meter_sequences``), without DuckDB.

The rules' cases through the whole pipeline are in ``test_standardize.py``; these pin the array
passes themselves on rows given out of order: which version of a timestamp survives and which
reading comes before each survivor, where the missing intervals go, and which runs the forward
fill takes, the day before's anchor included.
"""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa

from greenstream_dagster.rules.meter_sequences import (
    ABOVE_MAX,
    IN_RANGE,
    NEGATIVE,
    AnchorsBefore,
    Sequence,
    Survivors,
    Versions,
    meter_codes,
    meter_groups,
)

MINUTE = 60_000_000
DAY = 24 * 60 * MINUTE
T0 = 1_795_132_800_000_000  # 2026-11-20T00:00:00Z


def versions(rows, max_kw=50.0):
    """rows: (meter code, minutes after T0, value or None, unit, file_no, line)."""
    code, minutes, value, unit, file_no, line = (np.array(c) for c in zip(*rows, strict=True))
    has_value = np.array([v is not None for v in value])
    return Versions.of_rows(
        code.astype(np.int32),
        T0 + minutes.astype(np.int64) * MINUTE,
        np.array([0.0 if v is None else v for v in value]),
        has_value,
        unit == "W",
        file_no.astype(np.int32),
        line.astype(np.int64),
        max_kw,
    )


def test_meter_codes_follow_the_ids_of_the_kept_rows():
    """Codes number the kept rows' meters in the order of their ids; a meter only a row left
    out names (here "c", and a row without a meter) gets no code."""
    ids = pa.chunked_array([["m2", None, "m1"], ["c", "m2"]])
    code, names = meter_codes(ids, np.array([True, False, True, False, True]))
    assert code.tolist() == [1, 0, 1]
    assert names.to_pylist() == ["m1", "m2"]


def test_best_version_survives_in_meter_and_time_order():
    """Step 4: a version with a value first, then the latest arrival, then the latest line;
    the rows come back sorted by meter, then time, then version."""
    v = versions(
        [
            (1, 15, 2.0, "kW", 1, 1),
            (0, 15, None, "kW", 3, 4),  # latest file but no value: loses
            (0, 15, 1.5, "kW", 1, 9),  # loses to the later file
            (0, 15, 1500.0, "W", 2, 2),  # wins: a value, the latest file with one
            (0, 0, 1.0, "kW", 1, 1),
            (0, 30, 1.0, "kW", 2, 5),
            (0, 30, 1.2, "kW", 2, 7),  # same file, later line: wins
        ]
    )
    assert v.code.tolist() == [0, 0, 0, 0, 0, 0, 1]
    assert ((v.t - T0) // MINUTE).tolist() == [0, 15, 15, 15, 30, 30, 15]
    assert v.file_no.tolist() == [1, 2, 1, 3, 2, 2, 1]
    assert v.source_line.tolist() == [1, 2, 9, 4, 7, 5, 1]
    assert v.survives.tolist() == [True, True, False, False, True, False, True]
    survivors = Survivors.of(v, np.zeros(2, dtype=np.int64), np.zeros(2, dtype=bool))
    assert survivors.winner_of(np.arange(7)).tolist() == [0, 1, 1, 1, 4, 4, 6]
    assert v.had_duplicates.tolist() == [False, True, False, False, True, False, False]
    assert v.kw[1] == 1.5 and v.unit_converted.tolist()[1] is True


def test_range_reasons():
    """Step 6 on kW after step 5: below 0, above the maximum; a missing value has none."""
    v = versions(
        [
            (0, 0, -0.1, "kW", 1, 1),
            (0, 15, 51000.0, "W", 1, 2),
            (0, 30, 50.0, "kW", 1, 3),
            (0, 45, None, "kW", 1, 4),
        ]
    )
    assert v.range_reason.tolist() == [NEGATIVE, ABOVE_MAX, IN_RANGE, IN_RANGE]


def test_reading_before_each_survivor():
    """The reading before a survivor is the survivor before it, a losing version never; a
    meter's first takes the day before's last reading, when there is one."""
    v = versions(
        [
            (0, 0, 1.0, "kW", 1, 1),
            (0, 15, 1.0, "kW", 1, 2),
            (0, 15, 1.1, "kW", 2, 2),
            (0, 30, 1.0, "kW", 1, 3),
            (1, 0, 1.0, "kW", 1, 4),
        ]
    )
    last_before = np.array([T0 - 15 * MINUTE, 0])
    s = Survivors.of(v, last_before, np.array([True, False]))
    assert ((s.t - T0) // MINUTE).tolist() == [0, 15, 30, 0]
    assert s.has_prev.tolist() == [True, True, True, False]
    assert ((s.prev_t[:3] - T0) // MINUTE).tolist() == [-15, 0, 15]
    assert s.find(np.array([1, 0]), np.array([T0, T0 + 30 * MINUTE])).tolist() == [3, 2]


def sequence(minutes, measured, kw, last_before=None, anchor=None, fill_minutes=60):
    """One meter (code 0) on a 15-minute interval."""
    v = versions([(0, m, 1.0, "kW", 1, i) for i, m in enumerate(minutes)])
    has_before = last_before is not None
    s = Survivors.of(v, np.array([last_before or 0]), np.array([has_before]))
    before = AnchorsBefore(
        has_anchor=np.array([anchor is not None]),
        kw=np.array([anchor[0] if anchor else 0.0]),
        missing_after=np.array([anchor[1] if anchor else 0]),
    )
    return Sequence.of(s, np.array(measured), np.array(kw), np.array([15.0]), before, fill_minutes)


def test_missing_intervals_one_interval_apart_and_filled_under_the_limit():
    """Step 8: 00:00, 00:30 and 01:45 on a 15-minute meter: 00:15 is missing (one interval,
    filled from 00:00); 00:45 to 01:30 are four (60 minutes, not under the limit: missing)."""
    seq = sequence([0, 30, 105], [True, True, True], [1.0, 2.0, 3.0])
    assert ((seq.t - T0) // MINUTE).tolist() == [0, 15, 30, 45, 60, 75, 90, 105]
    assert seq.survivor.tolist() == [0, -1, 1, -1, -1, -1, -1, 2]
    assert seq.measured.tolist() == [True, False, True, False, False, False, False, True]
    assert seq.filled.tolist() == [False, True, False, False, False, False, False, False]
    assert seq.kw[1] == 1.0 and np.isnan(seq.kw[3:7]).all()


def test_rejected_reading_is_a_missing_interval_of_its_run():
    """A survivor that step 6 or 7 rejected is missing, and counts in the run after the
    measured reading before it: 00:15 (rejected) and 00:30 (a gap) are 30 minutes: filled."""
    seq = sequence([0, 15, 45], [True, False, True], [1.0, 9.0, 2.0])
    assert seq.survivor.tolist() == [0, 1, -1, 2]
    assert seq.filled.tolist() == [False, True, True, False]
    assert seq.kw.tolist() == [1.0, 1.0, 1.0, 2.0]


def test_run_opened_by_the_day_before():
    """The day before's last reading at 23:30 (so 23:45 is missing, before midnight), its last
    measured reading earlier with one missing row after it: today's 00:00 and 00:15 are
    missing, so the run is 4 intervals (60 minutes) and is not filled; with nothing missing
    after the anchor it is 3 (45 minutes), filled with the anchor's kW."""
    args = ([0, 15, 30], [False, False, True], [0.0, 0.0, 5.0], T0 - 30 * MINUTE)
    seq = sequence(*args, anchor=(4.0, 1))
    assert ((seq.t - T0) // MINUTE).tolist() == [-15, 0, 15, 30]
    assert seq.filled.tolist() == [False, False, False, False]
    seq = sequence(*args, anchor=(4.0, 0))
    assert seq.filled.tolist() == [True, True, True, False]
    assert seq.kw.tolist() == [4.0, 4.0, 4.0, 5.0]
    seq = sequence(*args, anchor=None)  # no measured reading before: nothing to fill from
    assert seq.filled.tolist() == [False, False, False, False]


def test_meters_do_not_share_runs():
    """A meter's missing intervals never take the kW of the meter before it."""
    v = versions([(0, 0, 1.0, "kW", 1, 1), (1, 15, 1.0, "kW", 1, 2), (1, 30, 1.0, "kW", 1, 3)])
    s = Survivors.of(v, np.array([0, 0]), np.array([False, False]))
    none = AnchorsBefore(np.zeros(2, dtype=bool), np.zeros(2), np.zeros(2, dtype=np.int64))
    seq = Sequence.of(
        s,
        np.array([True, False, True]),
        np.array([1.0, 0.0, 2.0]),
        np.array([15.0, 15.0]),
        none,
        60,
    )
    assert seq.filled.tolist() == [False, False, False]


def test_meter_groups_cut_between_meters_and_count_within_the_group():
    """Groups hold whole meters with all their versions (the losers of a duplicate too), and a
    survivor's position counts within its group's versions."""
    v = versions(
        [
            (0, 0, 1.0, "kW", 1, 1),
            (0, 15, 1.0, "kW", 1, 2),
            (1, 0, 2.0, "kW", 1, 3),
            (1, 0, 2.5, "kW", 2, 1),  # wins over the line above: a later file
            (1, 15, 2.0, "kW", 1, 4),
            (2, 0, 3.0, "kW", 1, 5),
            (2, 15, 3.0, "kW", 1, 6),
            (2, 30, 3.0, "kW", 1, 7),
        ]
    )
    s = Survivors.of(v, np.zeros(3, dtype=np.int64), np.zeros(3, dtype=bool))
    groups = meter_groups(v, s, 2)
    # the middle survivor (index 3 of 7) is meter 1's second: the cut moves back to meter 1
    assert [g.rows for g in groups] == [slice(0, 2), slice(2, 7)]
    assert [g.versions.code.tolist() for g in groups] == [[0, 0], [1, 1, 1, 2, 2, 2]]
    assert [g.survivors.position.tolist() for g in groups] == [[0, 1], [0, 2, 3, 4, 5]]
    second = groups[1]
    assert second.versions.source_line[second.survivors.position].tolist() == [1, 4, 5, 6, 7]
    assert second.survivors.t.tolist() == s.t[2:7].tolist()


def test_meter_groups_never_split_a_meter_and_cover_the_day():
    """However many groups are asked for, each meter is in one group, in order; one meter or
    an empty day is one group."""
    v = versions([(m, 15 * i, 1.0, "kW", 1, 10 * m + i) for m in range(4) for i in range(3)])
    s = Survivors.of(v, np.zeros(4, dtype=np.int64), np.zeros(4, dtype=bool))
    for asked in (1, 2, 3, 4, 12):
        groups = meter_groups(v, s, asked)
        codes = [g.survivors.code for g in groups]
        assert np.concatenate(codes).tolist() == s.code.tolist()
        assert len({int(c) for g in codes for c in set(g.tolist())}) == 4
        assert all(set(a.tolist()).isdisjoint(b.tolist()) for a, b in itertools.pairwise(codes))
        assert len(groups) == min(asked, 4)
    one = versions([(0, 15 * i, 1.0, "kW", 1, i) for i in range(5)])
    s_one = Survivors.of(one, np.zeros(1, dtype=np.int64), np.zeros(1, dtype=bool))
    assert [g.rows for g in meter_groups(one, s_one, 2)] == [slice(0, 5)]
    empty = versions([(0, 0, 1.0, "kW", 1, 1)])
    empty = empty.rows(0, 0)
    s_empty = Survivors.of(empty, np.zeros(1, dtype=np.int64), np.zeros(1, dtype=bool))
    assert [g.rows for g in meter_groups(empty, s_empty, 2)] == [slice(0, 0)]
