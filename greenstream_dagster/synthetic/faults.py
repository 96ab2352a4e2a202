"""Faulty meters (DESIGN.md section 3): stretches of near-zero readings and days stuck at zero.

A fault meter gets no other defect, and every reading of its fault stretch is clearly kept by
the z-score rule, so the run the pipeline sees is exactly the injected one. The days each flag
must be on are then computed with the section 3 rules and written to the ground truth.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from greenstream_dagster.rules import codes
from greenstream_dagster.synthetic.expectations import (
    CALM_MAX_Z,
    Z_THRESHOLD,
    near_zero_days,
    trailing_z,
    zero_total_days,
)
from greenstream_dagster.synthetic.fleet import Block
from greenstream_dagster.synthetic.layout import iso_utc
from greenstream_dagster.synthetic.plan import Plan, Truth

NEAR_ZERO_STRETCH = "near_zero_stretch"
STUCK_AT_ZERO = "stuck_at_zero"

# Default rates: share of meters with each fault (at least one each when the data is long
# enough: two days for a near-zero stretch, four for a meter stuck at zero).
NEAR_ZERO_METER_SHARE = 0.002
STUCK_AT_ZERO_METER_SHARE = 0.001
NEAR_ZERO_HOURS = (30.0, 60.0)
NEAR_ZERO_MILLI_KW = (1, 9)  # 0.001 .. 0.009 kW
STUCK_DAYS = (4, 6)
MIN_DAYS = {NEAR_ZERO_STRETCH: 2, STUCK_AT_ZERO: STUCK_DAYS[0]}
TRIES = 40


def inject_faults(plan: Plan, rng: np.random.Generator, counts: dict[str, int]) -> dict[str, int]:
    placed = {}
    for cls, wanted in counts.items():
        make = _near_zero if cls == NEAR_ZERO_STRETCH else _stuck_at_zero
        placed[cls] = sum(any(make(plan, rng) for _ in range(TRIES)) for _ in range(wanted))
    return placed


def _meter(plan: Plan, rng: np.random.Generator) -> tuple[Block, int] | None:
    if plan.n_meters == 0:
        return None
    block, row = plan.locate(int(rng.integers(plan.n_meters)))
    meter = int(block.meters[row])
    return None if meter in plan.faulty or meter in plan.busy else (block, row)


def _near_zero(plan: Plan, rng: np.random.Generator) -> bool:
    picked = _meter(plan, rng)
    if picked is None:
        return False
    block, row = picked
    i = block.interval
    lo, hi = plan.collector.coverage(plan.timeline)
    slots = round(rng.uniform(*NEAR_ZERO_HOURS) * 60 / i)
    first, last = (lo + 120) // i, hi // i - slots - 1  # normal readings before and after
    if last < first:
        return False
    start = int(rng.integers(first, last + 1))
    low, high = NEAR_ZERO_MILLI_KW
    return _inject(plan, block, row, start, rng.integers(low, high + 1, slots), NEAR_ZERO_STRETCH)


def _stuck_at_zero(plan: Plan, rng: np.random.Generator) -> bool:
    picked = _meter(plan, rng)
    days = plan.timeline.days
    if picked is None or days < STUCK_DAYS[0]:
        return False
    block, row = picked
    length = int(rng.integers(STUCK_DAYS[0], min(STUCK_DAYS[1], days) + 1))
    first_day = int(rng.integers(0, days - length + 1))
    start = plan.timeline.day_start(first_day) // block.interval
    stop = plan.timeline.day_start(first_day + length) // block.interval
    return _inject(plan, block, row, start, np.zeros(stop - start, dtype=np.int64), STUCK_AT_ZERO)


def _inject(plan: Plan, block: Block, row: int, start: int, values: np.ndarray, cls: str) -> bool:
    stretch = slice(start, start + len(values))
    before = block.milli[row, stretch].copy()
    block.milli[row, stretch] = values
    kw = block.kw(row)
    z = trailing_z(kw, block.interval)
    inside = z[stretch]
    if np.any(np.abs(inside[~np.isnan(inside)]) > CALM_MAX_Z):
        block.milli[row, stretch] = before
        return False
    meter = int(block.meters[row])
    plan.faulty.add(meter)
    measured = ~np.isnan(kw) & ~(np.abs(z) > Z_THRESHOLD)
    plan.truths.extend(_flags(plan, block, meter, kw, measured, cls))
    return True


def _flags(
    plan: Plan, block: Block, meter: int, kw: np.ndarray, measured: np.ndarray, cls: str
) -> list[Truth]:
    interval = dt.timedelta(minutes=block.interval)
    readings = [
        (plan.timeline.utc(j * block.interval), float(kw[j])) for j in np.flatnonzero(measured)
    ]
    energy: dict[dt.date, float] = {}
    for ts, value in readings:
        energy[ts.date()] = energy.get(ts.date(), 0.0) + value * block.interval / 60
    truths = []
    for day, (run_start, run_end) in sorted(near_zero_days(readings, interval).items()):
        detail = f"run_start={iso_utc(run_start)};run_end={iso_utc(run_end)}"
        truths.append(Truth(cls, codes.RULE_NEAR_ZERO, meter, None, _index(plan, day), detail))
    for day, streak_start in sorted(zero_total_days(energy).items()):
        detail = f"streak_start={streak_start.isoformat()}"
        truths.append(
            Truth(cls, codes.RULE_ZERO_DAILY_TOTAL, meter, None, _index(plan, day), detail)
        )
    return truths


def _index(plan: Plan, day: dt.date) -> int:
    return (day - plan.timeline.start).days
