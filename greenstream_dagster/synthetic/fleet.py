"""The meters: who reports at which interval and unit, and their readings as the pipeline sees them.

Most meters report every ``interval_minutes``; a few report every 30 or 60 minutes whatever the
requested interval (older hardware), so the pipeline's per-meter interval detection has work to
do. About one meter in ten reports in W.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from greenstream_dagster.synthetic.layout import Collector, Timeline
from greenstream_dagster.synthetic.load_shapes import household_load

# Share of meters on a fixed coarse interval, regardless of the requested one.
FIXED_INTERVAL_SHARE = {30: 0.015, 60: 0.015}
WATT_SHARE = 0.10


def meter_intervals(rng: np.random.Generator, meters: int, interval: int) -> np.ndarray:
    out = np.full(meters, interval, dtype=np.int64)
    order = rng.permutation(meters)
    taken = 0
    for coarse, share in FIXED_INTERVAL_SHARE.items():
        count = max(1, round(share * meters)) if meters >= 10 else 0
        out[order[taken : taken + count]] = coarse
        taken += count
    return out


def watt_meters(rng: np.random.Generator, meters: int) -> np.ndarray:
    return rng.random(meters) < WATT_SHARE


@dataclass
class Block:
    """One collector's meters that share an interval, one row per meter, one column per slot.

    ``milli`` is each reading in milli-kW (a W meter writes it as whole watts), ``written`` says a
    row is in the export, ``ok`` says the reading reaches step 7 with that value (it passed steps
    1 to 6 and won step 4), which is what the trailing z-score window is made of.
    """

    collector: Collector
    interval: int
    meters: np.ndarray
    watts: np.ndarray
    milli: np.ndarray
    written: np.ndarray
    ok: np.ndarray

    def kw(self, row: int, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """One meter's step-7 series over slots [lo, hi): kW, NaN where no reading counts."""
        sl = slice(lo, hi)
        return np.where(self.ok[row, sl], self.milli[row, sl] / 1000.0, np.nan)


def build_blocks(
    collector: Collector,
    timeline: Timeline,
    intervals: np.ndarray,
    watts: np.ndarray,
    seed: int,
) -> list[Block]:
    meters = np.arange(collector.first_meter, collector.first_meter + collector.n_meters)
    cov_lo, cov_hi = collector.coverage(timeline)
    blocks = []
    for interval in sorted(set(intervals[meters].tolist())):
        mine = meters[intervals[meters] == interval]
        rng = np.random.default_rng([seed, 1, collector.index, interval])
        milli = household_load(rng, len(mine), interval, timeline)
        minute = np.arange(milli.shape[1]) * interval
        covered = (minute >= cov_lo) & (minute < cov_hi)
        written = np.broadcast_to(covered, milli.shape).copy()
        blocks.append(Block(collector, interval, mine, watts[mine], milli, written, written.copy()))
    return blocks
