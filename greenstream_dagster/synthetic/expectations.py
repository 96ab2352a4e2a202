"""The parts of DESIGN.md the generator must predict to write an exact ground truth.

Step 7 (trailing z-score), step 8 (fill or leave missing) and the section 3 fault rules, with
the contract's default settings. Injected defects keep a margin around the z threshold, so
floating-point differences between this code and the pipeline cannot flip an expectation.
"""

from __future__ import annotations

import datetime as dt
import warnings

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from greenstream_dagster.rules import codes
from greenstream_dagster.settings import Settings

# The ground truth assumes the contract's defaults, not whatever the environment says.
DEFAULTS = Settings()
Z_THRESHOLD = DEFAULTS.zscore_threshold
MIN_READINGS = DEFAULTS.zscore_min_readings
WINDOW_MINUTES = int(DEFAULTS.zscore_window_hours * 60)
FILL_MAX_MINUTES = DEFAULTS.fill_max_minutes
MAX_KW = DEFAULTS.max_kw
NEAR_ZERO_KW = DEFAULTS.near_zero_kw
NEAR_ZERO_SPAN = dt.timedelta(hours=DEFAULTS.near_zero_hours)
ZERO_DAYS = DEFAULTS.zero_days

# Safety margins: an injected spike is further out than this, and a reading that must stay
# "measured" (next to a gap, inside a fault run) is closer in than that.
SPIKE_MIN_Z = Z_THRESHOLD + 1.0
CALM_MAX_Z = Z_THRESHOLD - 0.2


def window_slots(interval: int) -> int:
    return WINDOW_MINUTES // interval


def zscore(kw: np.ndarray, j: int, interval: int) -> float | None:
    """z of ``kw[j]`` against its trailing window; None when step 7 does not test it.

    ``kw`` is one meter's regular series, one value per interval, NaN where no reading passed
    step 6 (absent, NULL, quarantined earlier).
    """
    window = kw[max(0, j - window_slots(interval)) : j]
    window = window[~np.isnan(window)]
    if len(window) < MIN_READINGS:
        return None
    sd = window.std(ddof=1)
    if sd == 0:
        return None
    return float((kw[j] - window.mean()) / sd)


def trailing_z(kw: np.ndarray, interval: int) -> np.ndarray:
    """``zscore`` for every slot at once; NaN where untested or no reading."""
    width = window_slots(interval)
    padded = np.concatenate([np.full(width, np.nan), kw])
    windows = sliding_window_view(padded, width)[: len(kw)]
    n = np.count_nonzero(~np.isnan(windows), axis=1)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(windows, axis=1)
        sd = np.nanstd(windows, axis=1, ddof=1)
    tested = (n >= MIN_READINGS) & (sd > 0) & ~np.isnan(kw)
    z = np.full(len(kw), np.nan)
    z[tested] = (kw[tested] - mean[tested]) / sd[tested]
    return z


def is_calm(kw: np.ndarray, j: int, interval: int) -> bool:
    """The reading at ``j`` exists and is clearly kept by step 7."""
    if np.isnan(kw[j]):
        return False
    z = zscore(kw, j, interval)
    return z is None or abs(z) <= CALM_MAX_Z


def gap_quality(slots: int, interval: int) -> str:
    """Step 8 for a run of missing intervals right after a measured reading."""
    return codes.QUALITY_FILLED if slots * interval < FILL_MAX_MINUTES else codes.QUALITY_MISSING


def near_zero_days(
    readings: list[tuple[dt.datetime, float]], interval: dt.timedelta
) -> dict[dt.date, tuple[dt.datetime, dt.datetime]]:
    """UTC days a meter is flagged ``near_zero``, with the run's start and end as of that day.

    ``readings`` are the meter's measured readings in time order (missing intervals simply do
    not appear, so they do not break a run). A day is flagged when a run has a reading on it and
    the run, counted up to that reading, spans more than the limit: the last run reading of the
    day gives the day's span, and later days never matter.
    """
    flagged: dict[dt.date, tuple[dt.datetime, dt.datetime]] = {}
    run_start = None
    for ts, kw in readings:
        if kw >= NEAR_ZERO_KW:
            run_start = None
            continue
        if run_start is None:
            run_start = ts
        end = ts + interval
        if end - run_start > NEAR_ZERO_SPAN:
            flagged[ts.date()] = (run_start, end)
    return flagged


def zero_total_days(day_energy: dict[dt.date, float]) -> dict[dt.date, dt.date]:
    """UTC days flagged ``zero_daily_total``, each with the first day of its zero streak.

    ``day_energy`` holds only days with measured readings, so a day without any breaks the
    streak by being absent.
    """
    flagged: dict[dt.date, dt.date] = {}
    streak: list[dt.date] = []
    for day in sorted(day_energy):
        if day_energy[day] != 0:
            streak = []
            continue
        if streak and streak[-1] != day - dt.timedelta(days=1):
            streak = []
        streak.append(day)
        if len(streak) > ZERO_DAYS:
            flagged[day] = streak[0]
    return flagged
