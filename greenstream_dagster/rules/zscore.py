"""Step 7 of DESIGN.md section 2: the trailing-window z-score, over arrays.

For each reading of the day, the window is the same meter's readings in t-24h <= ts < t. Once
the readings are sorted by meter and time, a window is a slice [begin, i) found by one binary
search, and its count, sum and sum of squares are differences of running sums. That is a few
linear passes over the day, where a SQL window with a RANGE frame builds and probes a segment
tree per meter (3.7 s for a 50,000-meter day in DuckDB).

Running sums are a screen, not the verdict:

- Each value is centred on its meter's mean (each square on its meter's mean square) before
  summing, so the running sums stay near zero instead of growing with the row count. Most
  windows' figures are then right to about 12 digits, and the screen knows a bound on its error
  for each one.
- Every reading whose |z| could exceed the threshold within that bound (the outliers, and the
  few windows too ill-conditioned to tell) is decided again from its window's own values, with
  the corrected two-pass formula. Those figures are the ones reported.
- A window whose readings are all equal has a standard deviation of exactly zero, and the rule
  does not apply. That is decided by counting value changes (integers), never by a variance
  that rounding leaves at 1e-17.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

OUTLIER_SCHEMA = pa.schema(
    [
        ("meter_key", pa.string()),
        ("reading_ts", pa.timestamp("us", tz="UTC")),
        ("n", pa.int64()),
        ("mean", pa.float64()),
        ("sd", pa.float64()),
        ("z", pa.float64()),
    ]
)

# Headroom on the screen's rounding-error bound: a reading is decided again from its window's
# values unless its |z| is clear of the threshold by this many bounds.
_ERROR_HEADROOM = 64.0
_EPS = float(np.finfo(np.float64).eps)
# Readings screened, or window values gathered, at once: bounds the arrays of a step to tens of
# MB whatever the day's size.
_SLICE_VALUES = 1_000_000


def trailing_outliers(
    population: pa.Table,
    window_us: int,
    min_readings: int,
    threshold: float,
) -> pa.Table:
    """The readings of the day that step 7 sends to quarantine, with their window's figures.

    ``population`` holds one row per meter and timestamp: ``meter_key`` (the meter's id, or any
    integer code standing for it), ``t`` (epoch microseconds), ``kw`` (not null) and
    ``is_today``. The readings of the days before are only the window of the day's readings;
    they are never judged themselves. The result's ``meter_key`` has the population's type.
    """
    schema = OUTLIER_SCHEMA.set(0, pa.field("meter_key", population.schema.field("meter_key").type))
    if population.num_rows == 0:
        return schema.empty_table()
    readings = _Readings.sorted_from(population, window_us)
    judged = np.flatnonzero(readings.today)
    begin, end = readings.windows(judged, window_us)
    # changes between two readings inside [begin, end): none means every value is equal
    varied = readings.run_changes[end] - readings.run_changes[np.minimum(begin + 1, end)] > 0
    eligible = (end - begin >= min_readings) & varied
    judged, begin, end = judged[eligible], begin[eligible], end[eligible]

    maybe = readings.may_exceed(judged, begin, end, threshold)
    judged, begin, end = judged[maybe], begin[maybe], end[maybe]
    n, mean, sd = _window_stats(readings.kw, begin, end)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (readings.kw[judged] - mean) / sd
        outlier = (sd > 0) & (np.abs(z) > threshold)

    picked = judged[outlier]
    return pa.table(
        {
            "meter_key": population["meter_key"].take(readings.order[picked]),
            "reading_ts": pa.array(readings.time_of(picked), pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            ),
            "n": pa.array(n[outlier], pa.int64()),
            "mean": pa.array(mean[outlier], pa.float64()),
            "sd": pa.array(sd[outlier], pa.float64()),
            "z": pa.array(z[outlier], pa.float64()),
        },
        schema=schema,
    )


@dataclass
class _Readings:
    """The population sorted by meter, then time, with the running sums of the screen."""

    order: np.ndarray  # position in the population of each sorted reading
    key: np.ndarray  # meter code * span + microseconds since the earliest reading
    t_min: int
    span: int
    kw: np.ndarray
    today: np.ndarray
    meter_start: np.ndarray  # the first reading of its meter
    run_changes: np.ndarray  # value changes within a meter before each position

    @classmethod
    def sorted_from(cls, population: pa.Table, window_us: int) -> _Readings:
        meter_code = pc.dictionary_encode(
            population["meter_key"].combine_chunks()
        ).indices.to_numpy()
        t = population["t"].to_numpy()
        t_min = int(t.min())
        # One integer sorts by meter, then time; meters are spaced wider than any window, so a
        # window's start never crosses into the meter before.
        span = int(t.max()) - t_min + window_us + 1
        if (int(meter_code.max()) + 1) * span >= 2**63:
            raise ValueError(f"{population.num_rows} readings span too long a time to be keyed")
        key = meter_code.astype(np.int64)
        key *= span
        key += t
        key -= t_min
        del t
        order = np.argsort(key, kind="stable")
        key = key[order]
        meter_code = meter_code[order]
        meter_start = np.empty(len(key), dtype=bool)
        meter_start[0] = True
        np.not_equal(meter_code[1:], meter_code[:-1], out=meter_start[1:])
        del meter_code
        kw = population["kw"].to_numpy()[order]
        changed = np.empty(len(kw), dtype=np.int32)
        changed[0] = 0
        np.not_equal(kw[1:], kw[:-1], out=changed[1:], casting="unsafe")
        changed[meter_start] = 0
        return cls(
            order=order,
            key=key,
            t_min=t_min,
            span=span,
            kw=kw,
            today=population["is_today"].to_numpy()[order],
            meter_start=meter_start,
            run_changes=_running_sum(changed),
        )

    def time_of(self, positions: np.ndarray) -> np.ndarray:
        """Epoch microseconds of the readings at ``positions``."""
        return self.key[positions] % self.span + self.t_min

    def windows(self, judged: np.ndarray, window_us: int) -> tuple[np.ndarray, np.ndarray]:
        """Each judged reading's window as positions [begin, end)."""
        # The window ends before the current reading; a reading timed like another of its
        # meter (the caller's rows are unique, so only in principle) would end it at the first.
        unique = not np.any(self.key[1:] == self.key[:-1])
        end = judged if unique else np.searchsorted(self.key, self.key[judged], side="left")
        begin = np.searchsorted(self.key, self.key[judged] - window_us, side="left")
        return begin, end

    def may_exceed(
        self, judged: np.ndarray, begin: np.ndarray, end: np.ndarray, threshold: float
    ) -> np.ndarray:
        """Which judged readings may have |z| above ``threshold``, from running sums: true
        unless |z| is below it by more than the sums' rounding error can explain."""
        starts = np.flatnonzero(self.meter_start)
        sizes = np.diff(np.append(starts, len(self.kw)))
        meter_mean = np.add.reduceat(self.kw, starts) / sizes
        x = np.repeat(meter_mean, sizes)
        np.subtract(self.kw, x, out=x)
        square = np.square(x)
        meter_square = np.add.reduceat(square, starts) / sizes
        square -= np.repeat(meter_square, sizes)
        run_x = _running_sum(x)
        del x
        run_square = _running_sum(square)
        del square
        # A difference of two running sums is off by about eps for every step between them,
        # times the size of the running sums: bounded here by their largest anywhere, which is
        # loose for most meters and only sends a few more readings to be decided again.
        bounds = (float(np.max(np.abs(run_x))), float(np.max(np.abs(run_square))))
        meter_of = np.cumsum(self.meter_start, dtype=np.int32) - 1
        maybe = np.empty(len(judged), dtype=bool)
        for part in range(0, len(judged), _SLICE_VALUES):
            rows = slice(part, part + _SLICE_VALUES)
            meter = meter_of[judged[rows]]
            maybe[rows] = _may_exceed(
                self.kw[judged[rows]] - meter_mean[meter],
                begin[rows],
                end[rows],
                (run_x, run_square),
                meter_square[meter],
                bounds,
                threshold,
            )
        return maybe


def _may_exceed(
    x: np.ndarray,
    begin: np.ndarray,
    end: np.ndarray,
    running: tuple[np.ndarray, np.ndarray],
    meter_square: np.ndarray,
    bounds: tuple[float, float],
    threshold: float,
) -> np.ndarray:
    """``may_exceed`` for a slice of the judged readings (``x`` centred as in the sums)."""
    run_x, run_square = running
    top_x, top_square = bounds
    n = (end - begin).astype(np.float64)
    sum_x = run_x[end] - run_x[begin]
    sum_square = run_square[end] - run_square[begin] + n * meter_square
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_x = sum_x / n
        spread = sum_square - sum_x * mean_x  # (n - 1) * variance
        spread_error = _EPS * (n * (top_square + meter_square) + 2 * np.abs(sum_x) * top_x)
        sd = np.sqrt(np.maximum(spread, 0.0) / (n - 1))
        deviation = np.abs(x - mean_x)
        z = deviation / sd
        z_error = z * spread_error / np.maximum(spread, 0.0) + _EPS * (top_x + deviation) / sd
        clear = z + _ERROR_HEADROOM * z_error <= threshold
    return ~clear  # NaN (a spread rounded to zero or below) is never clear


def _window_stats(
    kw: np.ndarray, begin: np.ndarray, end: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count, mean and sample standard deviation of each window ``kw[begin:end]``, from its
    values, with the corrected two-pass formula (accurate to a few ulps however large the
    values are against their spread). Windows go in slices of a few million values, so that
    a low threshold, which makes most readings candidates, does not multiply the memory."""
    n = end - begin
    mean = np.empty(len(n), dtype=np.float64)
    sd = np.empty(len(n), dtype=np.float64)
    done = 0
    while done < len(n):
        upto = done + max(1, int(np.searchsorted(np.cumsum(n[done:]), _SLICE_VALUES)))
        window = slice(done, upto)
        counts = n[window]
        offsets = np.concatenate(([0], np.cumsum(counts)[:-1]))
        positions = np.repeat(begin[window] - offsets, counts) + np.arange(int(counts.sum()))
        values = kw[positions]
        mean[window] = np.add.reduceat(values, offsets) / counts
        deviation = values - np.repeat(mean[window], counts)
        sum_deviation = np.add.reduceat(deviation, offsets)
        spread = np.add.reduceat(deviation * deviation, offsets) - sum_deviation**2 / counts
        with np.errstate(invalid="ignore", divide="ignore"):
            sd[window] = np.sqrt(np.maximum(spread, 0.0) / (counts - 1))
        done = upto
    return n, mean, sd


def _running_sum(values: np.ndarray) -> np.ndarray:
    """Sums of ``values`` before each position: ``out[i] = values[:i].sum()``, one longer."""
    out = np.empty(len(values) + 1, dtype=values.dtype)
    out[0] = 0
    np.cumsum(values, out=out[1:])
    return out
