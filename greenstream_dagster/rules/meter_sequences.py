"""Steps 4 to 6 and 8 of DESIGN.md section 2 over arrays: each meter's day as one sequence.

Once the day's valid rows are sorted by meter, time and version (best first), step 4 is a
comparison with the row before, the reading before a survivor is the survivor before it, the
missing intervals of step 8 sit between two survivors, and a run of them is the stretch after
its measured anchor. Each step is then a linear pass over arrays, where SQL needs a window sort,
a hash join for each step and an ASOF join; and the clean rows come out in meter and time order,
so the warehouse holds them in that order and the archive is written without sorting again.

Meters are integer codes numbered in the order of their ids (``meter_codes``); times are epoch
microseconds. Nothing here knows about DuckDB: ``standardize`` fetches and stores.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Threads that reorder the day's columns into meter, time and version order.
REORDER_THREADS = 2
# Step 6's reasons as small integers (``RANGE_REASONS[code]`` is the reason's name).
IN_RANGE, NEGATIVE, ABOVE_MAX = 0, 1, 2
# Quality of a clean row as a small integer, in the order of ``codes.QUALITIES`` below.
MEASURED, FILLED, MISSING = 0, 1, 2


def meter_codes(meter_ids: pa.ChunkedArray, keep: np.ndarray) -> tuple[np.ndarray, pa.Array]:
    """The meter of each row that ``keep`` marks, as an integer, and the ids of those rows in
    code order: codes follow the ids' order, so that sorting by code sorts by id."""
    encoded = pc.dictionary_encode(meter_ids.combine_chunks())
    indices = encoded.indices.fill_null(0).to_numpy()[keep]
    present = np.zeros(len(encoded.dictionary), dtype=bool)
    present[indices] = True
    ids = encoded.dictionary.filter(pa.array(present))
    by_id = pc.array_sort_indices(ids).to_numpy()
    code_of = np.full(len(present), -1, dtype=np.int32)
    code_of[np.flatnonzero(present)[by_id]] = np.arange(len(ids), dtype=np.int32)
    return code_of[indices], ids.take(pa.array(by_id))


@dataclass
class Versions:
    """The day's valid rows in meter, time and version order, after steps 4 to 6."""

    code: np.ndarray  # int32
    t: np.ndarray  # int64
    kw: np.ndarray  # float64, meaningful where has_kw
    has_kw: np.ndarray
    file_no: np.ndarray
    source_line: np.ndarray
    survives: np.ndarray  # the best version of its timestamp (step 4)
    had_duplicates: np.ndarray
    unit_converted: np.ndarray
    range_reason: np.ndarray  # int8: IN_RANGE, NEGATIVE or ABOVE_MAX (step 6)

    @classmethod
    def of_rows(
        cls,
        code: np.ndarray,
        t: np.ndarray,
        value: np.ndarray,
        has_value: np.ndarray,
        watt: np.ndarray,
        file_no: np.ndarray,
        source_line: np.ndarray,
        max_kw: float,
    ) -> Versions:
        """Steps 4 to 6 over the day's valid rows, in any order. The versions of a timestamp
        are ordered best first: a version with a value, then the latest arrival (``file_no``
        grows with arrival), then the latest line."""
        order, key = _version_order(code, t, has_value, file_no, source_line)
        # Reordered on two threads (numpy lets go of the GIL): writing the arrays' fresh pages
        # is most of it, and it took one core for 0.3 to 0.5 s of a 50,000-meter day.
        with ThreadPoolExecutor(REORDER_THREADS) as pool:
            code, t, value, has_value, watt, file_no, source_line = pool.map(
                lambda column: column[order],
                (code, t, value, has_value, watt, file_no, source_line),
            )
        n = len(t)
        survives = np.ones(n, dtype=bool)
        np.not_equal(key[1:], key[:-1], out=survives[1:])
        del key
        had_duplicates = np.zeros(n, dtype=bool)
        had_duplicates[:-1] = survives[:-1] & ~survives[1:]
        with np.errstate(invalid="ignore"):
            kw = np.where(watt, value / 1000, value)
            range_reason = np.where(
                has_value & (kw < 0), NEGATIVE, np.where(has_value & (kw > max_kw), ABOVE_MAX, 0)
            ).astype(np.int8)
        return cls(
            code=code,
            t=t,
            kw=kw,
            has_kw=has_value,
            file_no=file_no,
            source_line=source_line,
            survives=survives,
            had_duplicates=had_duplicates,
            unit_converted=has_value & watt,
            range_reason=range_reason,
        )

    def rows(self, start: int, stop: int) -> Versions:
        """The versions from ``start`` to ``stop`` (views, no copy)."""
        return Versions(
            **{name: getattr(self, name)[start:stop] for name in self.__dataclass_fields__}
        )


def _meter_time_key(code: np.ndarray, t: np.ndarray, t0: int, span: int) -> np.ndarray:
    """One integer that sorts by meter, then time: times run from ``t0`` over less than
    ``span`` microseconds, so each meter has a span of its own."""
    return code.astype(np.int64) * span + (t - t0)


def _version_order(code, t, has_value, file_no, source_line) -> tuple[np.ndarray, np.ndarray]:
    """Positions sorting rows by meter, time, then best version first, and the sorted key of
    meter and time. One integer key sorts by meter and time; the few timestamps with more than
    one version are ordered apart."""
    if len(t) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    key = _meter_time_key(code, t, int(t.min()), int(t.max()) - int(t.min()) + 1)
    order = np.argsort(key, kind="stable")
    key = key[order]
    tied = np.zeros(len(key), dtype=bool)
    same = key[1:] == key[:-1]
    tied[1:] |= same
    tied[:-1] |= same
    if tied.any():
        at = np.flatnonzero(tied)
        rows = order[at]
        best_first = np.lexsort((-source_line[rows], -file_no[rows], ~has_value[rows], key[at]))
        order[at] = rows[best_first]
    return order, key


@dataclass
class Survivors:
    """The readings that survived step 4, in meter and time order, with the reading before
    each (the survivor before it, or for a meter's first the day before's last reading)."""

    position: np.ndarray  # in Versions
    code: np.ndarray
    t: np.ndarray
    prev_t: np.ndarray  # meaningful where has_prev
    has_prev: np.ndarray

    @classmethod
    def of(cls, versions: Versions, last_before: np.ndarray, has_last_before: np.ndarray):
        """``last_before[code]``: the meter's last surviving reading of the day before."""
        position = np.flatnonzero(versions.survives)
        code, t = versions.code[position], versions.t[position]
        first = np.ones(len(t), dtype=bool)
        first[1:] = code[1:] != code[:-1]
        prev_t = np.empty_like(t)
        prev_t[1:] = t[:-1]
        prev_t[first] = last_before[code[first]]
        has_prev = ~first | has_last_before[code]
        return cls(position, code, t, prev_t, has_prev)

    def winner_of(self, positions: np.ndarray) -> np.ndarray:
        """The position (in Versions) of the version that survives at each position's
        timestamp: the survivor at or before it."""
        return self.position[np.searchsorted(self.position, positions, side="right") - 1]

    def find(self, code: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Positions of the survivors of these meters at these times (each one present)."""
        if len(code) == 0:
            return np.zeros(0, dtype=np.int64)
        t0 = int(self.t.min())
        span = int(self.t.max()) - t0 + 1
        key = _meter_time_key(self.code, self.t, t0, span)
        return np.searchsorted(key, _meter_time_key(code, t, t0, span))

    def last_of_meters(self) -> tuple[np.ndarray, np.ndarray]:
        """Each meter's code and its last surviving reading."""
        last = np.ones(len(self.t), dtype=bool)
        last[:-1] = self.code[:-1] != self.code[1:]
        return self.code[last], self.t[last]


@dataclass
class MeterGroup:
    """Whole meters of the day (a range of codes): their versions and their survivors, as views
    of the day's arrays. ``survivors.position`` counts within ``versions``; ``rows`` is where
    the group's survivors sit among the day's, for arrays indexed like them."""

    versions: Versions
    survivors: Survivors
    rows: slice


def meter_groups(versions: Versions, survivors: Survivors, groups: int) -> list[MeterGroup]:
    """The day cut into up to ``groups`` groups of whole meters, about equal in readings. Every
    step after step 4 looks at one meter at a time, so the groups can be worked on apart, on
    threads of their own (numpy lets go of the GIL in its array work)."""
    size = len(survivors.t)
    if size == 0:
        return [MeterGroup(versions, survivors, slice(0, 0))]
    # each cut moved back to the first survivor of its meter, so that no meter is split
    cuts = [size * g // groups for g in range(1, groups)]
    starts = np.searchsorted(survivors.code, survivors.code[cuts], side="left")
    bounds = sorted({0, *(int(b) for b in starts), size})
    found = []
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        first = int(np.searchsorted(versions.code, survivors.code[start], side="left"))
        stop = int(np.searchsorted(versions.code, survivors.code[end - 1], side="right"))
        found.append(
            MeterGroup(
                versions=versions.rows(first, stop),
                survivors=Survivors(
                    position=survivors.position[start:end] - first,
                    code=survivors.code[start:end],
                    t=survivors.t[start:end],
                    prev_t=survivors.prev_t[start:end],
                    has_prev=survivors.has_prev[start:end],
                ),
                rows=slice(start, end),
            )
        )
    return found


@dataclass
class Sequence:
    """Every interval of each meter's day in order (step 8): the survivors, and the missing
    intervals between two of them more than one interval apart, one interval apart. Intervals
    before midnight (after the day before's last reading) only count in run lengths."""

    code: np.ndarray
    t: np.ndarray
    survivor: np.ndarray  # index in Survivors, -1 for a generated interval
    measured: np.ndarray
    kw: np.ndarray  # the measured value, or the anchor's where filled
    filled: np.ndarray

    @classmethod
    def of(
        cls,
        survivors: Survivors,
        measured: np.ndarray,
        kw: np.ndarray,
        interval_minutes: np.ndarray,
        before: AnchorsBefore,
        fill_minutes: float,
    ) -> Sequence:
        """``measured``/``kw`` per survivor (steps 6 and 7 leave a rejected reading missing);
        ``interval_minutes[code]`` the meter's interval."""
        step = np.round(interval_minutes * 60e6).astype(np.int64)[survivors.code]
        gap = survivors.t - survivors.prev_t
        missing_before = np.where(survivors.has_prev & (gap > step), (gap - 1) // step, 0)
        rows = np.arange(len(gap)) + np.cumsum(missing_before)  # each survivor's place
        size = len(gap) + int(missing_before.sum())
        survivor = np.full(size, -1, dtype=np.int64)
        survivor[rows] = np.arange(len(gap))
        generated = survivor < 0
        code = np.repeat(survivors.code, missing_before + 1)
        t = np.empty(size, dtype=np.int64)
        t[rows] = survivors.t
        # the k-th missing interval before a survivor is k intervals after the reading before
        owner = np.repeat(np.arange(len(gap)), missing_before)
        t[generated] = survivors.prev_t[owner] + _rank_within(owner) * step[owner]
        is_measured = np.zeros(size, dtype=bool)
        is_measured[rows] = measured
        value = np.full(size, np.nan)
        value[rows] = np.where(measured, kw, np.nan)
        filled = _forward_fill(code, is_measured, value, interval_minutes, before, fill_minutes)
        return cls(code, t, survivor, is_measured, value, filled)


def _rank_within(owner: np.ndarray) -> np.ndarray:
    """1, 2, ... within each run of equal (sorted) ``owner``."""
    if len(owner) == 0:
        return np.zeros(0, dtype=np.int64)
    start = np.ones(len(owner), dtype=bool)
    start[1:] = owner[1:] != owner[:-1]
    first = np.flatnonzero(start)
    return np.arange(len(owner)) - np.repeat(first, np.diff(np.append(first, len(owner)))) + 1


@dataclass
class AnchorsBefore:
    """Per meter code, what the day before leaves to a run of missing intervals that opens the
    day: its last measured reading's kW (the anchor) and the missing rows after it."""

    has_anchor: np.ndarray
    kw: np.ndarray
    missing_after: np.ndarray  # int64


def _forward_fill(code, measured, value, interval_minutes, before, fill_minutes) -> np.ndarray:
    """Fill ``value`` in place where a run of missing intervals is shorter than the limit in
    total and follows a measured reading; returns which rows were filled. The run of a missing
    interval is every missing interval with the same latest measured reading before it (its
    anchor). Missing intervals are few, so only they are looked at: each one's anchor and the
    start of its meter are binary searches."""
    filled = np.zeros(len(code), dtype=bool)
    missing = np.flatnonzero(~measured)
    if len(missing) == 0:
        return filled
    readings = np.append(-1, np.flatnonzero(measured))  # -1: no measured reading before
    anchor = readings[np.searchsorted(readings, missing) - 1]
    meter = code[missing]
    today = anchor >= np.searchsorted(code, meter, side="left")  # the anchor is the meter's
    # today's runs: the missing intervals of one anchor
    _, run_of, run_size = np.unique(anchor[today], return_inverse=True, return_counts=True)
    run = np.empty(len(missing), dtype=np.int64)
    run[today] = run_size[run_of]
    # a run that opens the day: its meter's missing intervals before any measured reading of
    # the day, and the day before's after its anchor
    opening = ~today
    per_meter = np.bincount(meter[opening], minlength=len(interval_minutes))
    run[opening] = (per_meter + before.missing_after)[meter[opening]]
    anchored = today | before.has_anchor[meter]
    fill = anchored & (run * interval_minutes[meter] < fill_minutes)
    filled[missing[fill]] = True
    from_today = fill & today
    value[missing[from_today]] = value[anchor[from_today]]
    from_before = fill & opening
    value[missing[from_before]] = before.kw[meter[from_before]]
    return filled
