"""Household load curves: what each meter would read if nothing went wrong.

A household draws a steady base load (standby, fridge), a morning and an evening peak whose
timing drifts a little from day to day and moves later at weekends, some midday use (mostly at
weekends), and short appliance bursts (kettle, oven, washing machine). Routines follow local
time, one hour ahead of UTC, like the +01:00 collector.
"""

from __future__ import annotations

import numpy as np

from greenstream_dagster.synthetic.layout import MINUTES_PER_DAY, Timeline

# A normal reading is never "near zero" (DESIGN.md section 3 uses 0.01 kW) and never above_max.
MIN_KW = 0.05
MAX_KW = 9.0
BURSTS_PER_DAY = 2.0
HEATED_SHARE = 0.6


def household_load(
    rng: np.random.Generator, n: int, interval: int, timeline: Timeline
) -> np.ndarray:
    """Readings in milli-kW (int32, shape ``[n, slots]``) for ``n`` meters every ``interval`` min.

    Slot ``j`` starts at minute ``j * interval`` of the timeline; the timeline origin is local
    midnight of the start date, so the local clock is the timeline minute modulo one day.
    """
    slots = timeline.total_minutes // interval
    mid = np.arange(slots) * interval + interval / 2  # the curve is sampled mid-interval
    local_day = (mid // MINUTES_PER_DAY).astype(np.int64)
    hour = (mid % MINUTES_PER_DAY) / 60.0
    n_days = int(local_day[-1]) + 1
    weekend = ((timeline.start.weekday() + np.arange(n_days)) % 7 >= 5)[local_day]

    base = np.clip(rng.lognormal(np.log(0.18), 0.45, n), 0.06, 0.7)
    morning_amp = rng.uniform(0.2, 0.9, n)
    morning_at = rng.normal(7.2, 0.4, n)
    morning_width = rng.uniform(1.0, 1.6, n)
    evening_amp = rng.uniform(0.4, 1.6, n)
    evening_at = rng.normal(19.0, 0.6, n)
    evening_width = rng.uniform(2.0, 3.0, n)
    midday_amp = rng.uniform(0.2, 0.8, n)
    awake_amp = rng.uniform(0.1, 0.4, n)
    fridge_period = rng.uniform(40.0, 70.0, n)
    fridge_phase = rng.uniform(0.0, 1.0, n)
    drift = rng.normal(0.0, 0.3, (n, n_days))[:, local_day]  # hours, per meter and day

    late = np.where(weekend, 1.5, 0.0)
    load = base[:, None] + 0.03 * (
        1 + np.sin(2 * np.pi * (mid / fridge_period[:, None] + fridge_phase[:, None]))
    )
    load += _bump(hour, morning_at[:, None] + drift + late, morning_width[:, None]) * (
        morning_amp[:, None] * np.where(weekend, 1.2, 1.0)
    )
    load += _bump(hour, evening_at[:, None] + drift, evening_width[:, None]) * evening_amp[:, None]
    load += _bump(hour, 13.0 + drift, 2.5) * (midday_amp[:, None] * np.where(weekend, 1.0, 0.25))
    load += _awake(hour) * awake_amp[:, None]
    load += _heating(rng, n, mid, hour)
    load *= np.exp(rng.normal(0.0, 0.18, (n, slots)))
    _add_bursts(rng, load, interval, hour)
    return np.rint(np.clip(load, MIN_KW, MAX_KW) * 1000).astype(np.int32)


def _heating(rng: np.random.Generator, n: int, mid: np.ndarray, hour: np.ndarray) -> np.ndarray:
    """Heat pumps and electric heaters cycle on and off around the clock, harder at night."""
    # Homes heated otherwise still cycle a freezer, a boiler pump, a dehumidifier.
    power = np.where(
        rng.random(n) < HEATED_SHARE, rng.uniform(0.3, 1.5, n), rng.uniform(0.08, 0.25, n)
    )
    period = rng.uniform(50.0, 150.0, n)
    phase = rng.uniform(0.0, 1.0, n)
    duty = 0.35 + 0.25 * np.cos(2 * np.pi * (hour - 4.0) / 24.0)  # coldest before dawn
    cycle = (mid / period[:, None] + phase[:, None]) % 1.0
    on = cycle < duty
    return power[:, None] * on * rng.uniform(0.7, 1.0, (n, len(mid)))


def _awake(hour: np.ndarray) -> np.ndarray:
    """Lights, TV, computers: a soft plateau from about 7:00 to 23:00."""
    return 1 / (1 + np.exp(-(hour - 7.0) * 2)) / (1 + np.exp((hour - 23.0) * 2))


def _bump(hour: np.ndarray, center: np.ndarray, width) -> np.ndarray:
    return np.exp(-0.5 * ((hour - center) / width) ** 2)


def _add_bursts(
    rng: np.random.Generator, load: np.ndarray, interval: int, hour: np.ndarray
) -> None:
    n, slots = load.shape
    count = rng.poisson(BURSTS_PER_DAY * n * slots * interval / MINUTES_PER_DAY)
    meter = rng.integers(0, n, count)
    start = rng.integers(0, slots, count)
    amp = rng.uniform(0.3, 1.8, count)
    minutes = rng.uniform(15.0, 45.0, count)
    awake = (hour[start] >= 6.5) & (hour[start] < 23.0)  # nobody boils a kettle at 3 am
    meter, start, amp, minutes = meter[awake], start[awake], amp[awake], minutes[awake]
    # A burst shorter than the interval shows as its average over the interval.
    span = np.ceil(minutes / interval).astype(np.int64)
    level = amp * minutes / (span * interval)
    for k in range(int(span.max(initial=0))):
        hit = (k < span) & (start + k < slots)
        np.add.at(load, (meter[hit], start[hit] + k), level[hit])
