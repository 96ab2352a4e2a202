"""Row-level defects: what each looks like, how often it is injected, what DESIGN.md makes of it.

Each event is placed by ``spots.pick`` where its outcome under DESIGN.md section 2 is certain,
and records that outcome in the plan's ground truth.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from greenstream_dagster.rules import codes
from greenstream_dagster.synthetic.expectations import (
    MIN_READINGS,
    SPIKE_MIN_Z,
    gap_quality,
    is_calm,
    window_slots,
    zscore,
)
from greenstream_dagster.synthetic.layout import format_timestamp, format_value
from greenstream_dagster.synthetic.load_shapes import MAX_KW, MIN_KW
from greenstream_dagster.synthetic.plan import COPY, ORIGINAL, RESEND, Plan
from greenstream_dagster.synthetic.spots import calm_around, lose, pick

# Defect classes, as the ground truth's `defect` column names them.
TOO_MANY_FIELDS = "too_many_fields"
TOO_FEW_FIELDS = "too_few_fields"
EMPTY_METER_ID = "empty_meter_id"
BAD_TIMESTAMP = "bad_timestamp"
FAR_FUTURE = "far_future_timestamp"
BAD_VALUE = "bad_value"
BAD_UNIT = "bad_unit"
REPEATED_ROW = "repeated_row"
RESEND_DUPLICATE = "resend_duplicate"
NULL_RESEND = "null_resend"
NEGATIVE = "negative_reading"
OVER_RANGE = "over_range"
SPIKE = "spike"
NULL_VALUE = "null_value"
OUTAGE_GAP = "outage_gap"

# Default rates: events per reading written. An event is one row, or one run for resends, NULL
# runs and gaps. With defects on, every class gets at least one event.
RATES = {
    TOO_MANY_FIELDS: 0.00005,
    TOO_FEW_FIELDS: 0.00005,
    EMPTY_METER_ID: 0.00005,
    BAD_TIMESTAMP: 0.00005,
    FAR_FUTURE: 0.00003,
    BAD_VALUE: 0.00005,
    BAD_UNIT: 0.00005,
    REPEATED_ROW: 0.0001,
    RESEND_DUPLICATE: 0.0001,
    NULL_RESEND: 0.00005,
    NEGATIVE: 0.00005,
    OVER_RANGE: 0.00005,
    SPIKE: 0.0001,
    NULL_VALUE: 0.0002,
    OUTAGE_GAP: 0.0001,
}

# Rows rejected before they have a trusted day belong to their file's first UTC day, and resends
# need a later file of the same day: both only go to exports that hold exactly one UTC day.
SINGLE_DAY_ONLY = frozenset(
    {
        TOO_MANY_FIELDS,
        TOO_FEW_FIELDS,
        EMPTY_METER_ID,
        BAD_TIMESTAMP,
        FAR_FUTURE,
        BAD_VALUE,
        BAD_UNIT,
        RESEND_DUPLICATE,
        NULL_RESEND,
    }
)

INVALID_TIMESTAMPS = (
    "2026-13-45 25:61:00",
    "yesterday",
    "not-a-date",
    "2026-11-31T10:00:00Z",
    "31/11/2026 10:00",
    "2026-02-30 12:00:00",
    "25:00",
)
INVALID_VALUES = ("abc", "12..5", "1.2.3", "#VALUE!", "x42", "0.5kW")
UNKNOWN_UNITS = ("MW", "kWh", "J", "Wh", "kVA", "mA")
FUTURE_YEAR = 2099
NULL_RUN_MINUTES = (15, 30, 45, 60, 90, 120)
GAP_MINUTES = (15, 30, 45, 60, 90, 120, 180, 240, 360)
RESEND_MAX_ROWS = 4
NULL_RESEND_MAX_ROWS = 2
REPEAT_MAX_ROWS_LATER = 50
SPIKE_MAX_KW = 9.5
TRIES = 100


def inject_defects(plan: Plan, rng: np.random.Generator, counts: dict[str, int]) -> dict[str, int]:
    """Place ``counts[cls]`` events of each class; returns how many found a place."""
    placed = {}
    for cls, wanted in counts.items():
        placed[cls] = 0
        for _ in range(wanted):
            if any(_PLACE[cls](plan, rng) for _ in range(TRIES)):
                placed[cls] += 1
    return placed


def _corrupt_row(
    cls: str, expected: str, corrupt: Callable
) -> Callable[[Plan, np.random.Generator], bool]:
    """A reading written so badly that steps 1 to 3 reject it: its interval is lost too."""

    def place(plan: Plan, rng: np.random.Generator) -> bool:
        spot = pick(plan, rng, 1)
        if spot is None or not calm_around(spot):
            return False
        fields = plan.fields(spot.block, spot.row, spot.slot)
        change, detail = corrupt(rng, fields, plan, spot)
        lose(plan, spot)
        plan.override(spot.day, spot.meter, spot.minute(), **change)
        quality = gap_quality(1, spot.interval)
        plan.truths.append(spot.truth(cls, expected, f"{detail};interval={quality}"))
        return True

    return place


def _choice(rng: np.random.Generator, options) -> str:
    return options[int(rng.integers(len(options)))]


def _too_many(rng, f, plan, spot):
    m, ts, v, u = f["meter"], f["ts"], f["value"], f["unit"]
    parts = _choice(rng, ([m, ts, v, u, "1"], [m, ts, v, u, ""], [m, ts, v, v, u]))
    return {"line": ",".join(parts)}, f"fields={len(parts)}"


def _too_few(rng, f, plan, spot):
    m, ts, v, u = f["meter"], f["ts"], f["value"], f["unit"]
    line = _choice(rng, (f"{m},{ts},{v}", f"{m},{ts}", f"{m};{ts};{v};{u}"))
    return {"line": line}, f"fields={line.count(',') + 1}"


def _empty_meter(rng, f, plan, spot):
    text = _choice(rng, ("", "  "))
    return {"meter": text}, f"written='{text}'"


def _bad_timestamp(rng, f, plan, spot):
    text = _choice(rng, INVALID_TIMESTAMPS)
    return {"ts": text}, f"written={text}"


def _far_future(rng, f, plan, spot):
    moment = plan.timeline.utc(spot.minute())
    try:
        moment = moment.replace(year=FUTURE_YEAR)
    except ValueError:  # 29 February
        moment = moment.replace(year=FUTURE_YEAR, day=28)
    text = format_timestamp(moment, plan.collector.ts_style)
    return {"ts": text}, f"written={text}"


def _bad_value(rng, f, plan, spot):
    text = _choice(rng, INVALID_VALUES)
    return {"value": text}, f"written={text}"


def _bad_unit(rng, f, plan, spot):
    text = _choice(rng, UNKNOWN_UNITS)
    return {"unit": text}, f"written={text}"


def _bad_reading(
    cls: str, expected: str, low: int, high: int
) -> Callable[[Plan, np.random.Generator], bool]:
    """A number step 6 rejects: negative, or above the maximum (milli-kW in [low, high])."""

    def place(plan: Plan, rng: np.random.Generator) -> bool:
        spot = pick(plan, rng, 1)
        if spot is None or not calm_around(spot):
            return False
        milli = int(rng.integers(low, high + 1))
        lose(plan, spot)
        text = format_value(milli, bool(spot.block.watts[spot.row]))
        plan.override(spot.day, spot.meter, spot.minute(), value=text)
        detail = f"kw={milli / 1000:.3f};interval={gap_quality(1, spot.interval)}"
        plan.truths.append(spot.truth(cls, expected, detail))
        return True

    return place


def _spike(plan: Plan, rng: np.random.Generator) -> bool:
    """A plausible value (at most 9.5 kW, so step 6 keeps it) far outside the meter's last day."""
    spot = pick(plan, rng, 1)
    if spot is None:
        return False
    i, row, j = spot.interval, spot.row, spot.slot
    lo = max(0, j - 1 - window_slots(i))
    x = spot.block.kw(row, lo, j + 2)
    k = j - lo
    window = x[max(0, k - window_slots(i)) : k]
    window = window[~np.isnan(window)]
    if len(window) < MIN_READINGS or window.std(ddof=1) == 0:
        return False
    target = window.mean() + rng.uniform(5.0, 8.0) * window.std(ddof=1)
    milli = int(round(min(target, SPIKE_MAX_KW) * 1000))
    x[k] = milli / 1000
    z = zscore(x, k, i)
    if z is None or z <= SPIKE_MIN_Z or not (is_calm(x, k - 1, i) and is_calm(x, k + 1, i)):
        return False
    spot.block.milli[row, j] = milli
    plan.occupy(spot.meter, spot.span)
    detail = f"z={z:.2f};n={len(window)};kw={milli / 1000:.3f};interval={gap_quality(1, i)}"
    plan.truths.append(spot.truth(SPIKE, codes.OUTLIER_ZSCORE, detail))
    return True


def _repeated_row(plan: Plan, rng: np.random.Generator) -> bool:
    """The same line again a little further down the file: the later copy wins step 4."""
    spot = pick(plan, rng, 1)
    if spot is None:
        return False
    later = int(rng.integers(1, REPEAT_MAX_ROWS_LATER + 1))
    plan.repeats.setdefault(spot.day, []).append((spot.meter, spot.minute(), later))
    plan.occupy(spot.meter, spot.span)
    plan.truths.append(spot.truth(REPEATED_ROW, codes.DUPLICATE, survivor=COPY))
    return True


def _resend_duplicate(plan: Plan, rng: np.random.Generator) -> bool:
    """The collector re-sends a few readings, slightly corrected: the later file wins step 4."""
    spot = pick(plan, rng, int(rng.integers(1, RESEND_MAX_ROWS + 1)))
    if spot is None:
        return False
    watts = bool(spot.block.watts[spot.row])
    for k in range(spot.slots):
        j = spot.slot + k
        old = int(spot.block.milli[spot.row, j])
        step = int(rng.integers(1, 31)) * (1 if rng.random() < 0.5 else -1)
        new = int(np.clip(old + step, MIN_KW * 1000, MAX_KW * 1000))
        new = new if new != old else old + 1
        spot.block.milli[spot.row, j] = new  # what the pipeline keeps
        plan.override(spot.day, spot.meter, spot.minute(k), value=format_value(old, watts))
        plan.resends.setdefault(spot.day, []).append(
            (spot.meter, spot.minute(k), format_value(new, watts))
        )
        detail = f"kw={old / 1000:.3f};survivor_kw={new / 1000:.3f}"
        plan.truths.append(
            spot.truth(RESEND_DUPLICATE, codes.DUPLICATE, detail, k, survivor=RESEND)
        )
    plan.occupy(spot.meter, spot.span)
    return True


def _null_resend(plan: Plan, rng: np.random.Generator) -> bool:
    """A resend with the value missing: a missing value never overrides a present one."""
    spot = pick(plan, rng, int(rng.integers(1, NULL_RESEND_MAX_ROWS + 1)))
    if spot is None:
        return False
    for k in range(spot.slots):
        marker = _choice(rng, codes.MISSING_MARKERS)
        plan.resends.setdefault(spot.day, []).append((spot.meter, spot.minute(k), marker))
        plan.truths.append(
            spot.truth(NULL_RESEND, codes.DUPLICATE, f"marker={marker}", k, RESEND, ORIGINAL)
        )
    plan.occupy(spot.meter, spot.span)
    return True


def _run_of(rng: np.random.Generator, options) -> Callable[[int], int]:
    """A run length drawn in minutes, counted in the meter's own intervals."""
    minutes = int(_choice(rng, options))
    return lambda interval: max(1, minutes // interval)


def _null_run(plan: Plan, rng: np.random.Generator) -> bool:
    """Readings written with a missing-value marker."""
    spot = pick(plan, rng, _run_of(rng, NULL_RUN_MINUTES))
    if spot is None or not calm_around(spot):
        return False
    marker = _choice(rng, codes.MISSING_MARKERS)
    quality = gap_quality(spot.slots, spot.interval)
    lose(plan, spot)
    for k in range(spot.slots):
        plan.override(spot.day, spot.meter, spot.minute(k), value=marker)
        detail = f"run={spot.slots};marker={marker}"
        plan.truths.append(spot.truth(NULL_VALUE, quality, detail, k))
    return True


def _outage_gap(plan: Plan, rng: np.random.Generator) -> bool:
    """Readings the meter never delivered: the rows are absent."""
    spot = pick(plan, rng, _run_of(rng, GAP_MINUTES))
    if spot is None or not calm_around(spot):
        return False
    quality = gap_quality(spot.slots, spot.interval)
    lose(plan, spot, absent=True)
    for k in range(spot.slots):
        plan.truths.append(spot.truth(OUTAGE_GAP, quality, f"run={spot.slots}", k, row=None))
    return True


_PLACE: dict[str, Callable[[Plan, np.random.Generator], bool]] = {
    TOO_MANY_FIELDS: _corrupt_row(TOO_MANY_FIELDS, codes.MALFORMED_ROW, _too_many),
    TOO_FEW_FIELDS: _corrupt_row(TOO_FEW_FIELDS, codes.MALFORMED_ROW, _too_few),
    EMPTY_METER_ID: _corrupt_row(EMPTY_METER_ID, codes.MISSING_METER_ID, _empty_meter),
    BAD_TIMESTAMP: _corrupt_row(BAD_TIMESTAMP, codes.INVALID_TIMESTAMP, _bad_timestamp),
    FAR_FUTURE: _corrupt_row(FAR_FUTURE, codes.FUTURE_TIMESTAMP, _far_future),
    BAD_VALUE: _corrupt_row(BAD_VALUE, codes.INVALID_VALUE, _bad_value),
    BAD_UNIT: _corrupt_row(BAD_UNIT, codes.UNKNOWN_UNIT, _bad_unit),
    REPEATED_ROW: _repeated_row,
    RESEND_DUPLICATE: _resend_duplicate,
    NULL_RESEND: _null_resend,
    NEGATIVE: _bad_reading(NEGATIVE, codes.NEGATIVE_VALUE, -2000, -50),
    OVER_RANGE: _bad_reading(OVER_RANGE, codes.ABOVE_MAX, 12000, 40000),
    SPIKE: _spike,
    NULL_VALUE: _null_run,
    OUTAGE_GAP: _outage_gap,
}
assert set(_PLACE) == set(RATES)
