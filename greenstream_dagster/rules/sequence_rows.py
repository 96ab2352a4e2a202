"""The arrays of ``meter_sequences`` as rows of the warehouse's tables (Arrow tables).

Strings are dictionary-encoded against the day's few distinct values (meter ids, files,
qualities, reasons), so a row costs its integers and nothing is copied per row.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from . import codes
from .meter_sequences import (
    ABOVE_MAX,
    FILLED,
    IN_RANGE,
    MEASURED,
    MISSING,
    NEGATIVE,
    Sequence,
    Survivors,
    Versions,
)

UTC_MICROS = pa.timestamp("us", tz="UTC")
# The quarantine reasons of steps 4 to 7, indexed by the small integers of ``rejected_rows``.
_DUPLICATE, _OUTLIER = 3, 4
_REASONS = {
    NEGATIVE: codes.NEGATIVE_VALUE,
    ABOVE_MAX: codes.ABOVE_MAX,
    _DUPLICATE: codes.DUPLICATE,
    _OUTLIER: codes.OUTLIER_ZSCORE,
}
_QUALITIES = {
    MEASURED: codes.QUALITY_MEASURED,
    FILLED: codes.QUALITY_FILLED,
    MISSING: codes.QUALITY_MISSING,
}


def _dictionary(names: dict[int, str]) -> pa.Array:
    """The names as an Arrow dictionary indexed by their integers."""
    return pa.array([names.get(i) for i in range(max(names) + 1)], pa.string())


def rejected_rows(
    versions: Versions, survivors: Survivors, figures: pa.Table, ids: pa.Array
) -> pa.Table:
    """The rows steps 4 to 7 send to quarantine, with what their detail needs: the version
    that wins a duplicate, the figures of an outlier's window (``figures``: ``survivor``,
    ``n``, ``mean``, ``sd``, ``z``)."""
    losers = np.flatnonzero(~versions.survives)
    ranged = survivors.position[versions.range_reason[survivors.position] != IN_RANGE]
    flagged = survivors.position[figures["survivor"].to_numpy()]
    position = np.concatenate((losers, ranged, flagged))
    reason = np.concatenate(
        (
            np.full(len(losers), _DUPLICATE, dtype=np.int8),
            versions.range_reason[ranged],
            np.full(len(flagged), _OUTLIER, dtype=np.int8),
        )
    )
    winner = survivors.winner_of(position)
    is_loser = np.arange(len(position)) < len(losers)
    no_figures = np.arange(len(position)) < len(losers) + len(ranged)

    def with_figures(column: str, dtype):
        values = np.zeros(len(position), dtype=dtype)
        values[len(losers) + len(ranged) :] = figures[column].to_numpy()
        return pa.array(values, mask=no_figures)

    return pa.table(
        {
            "file_no": versions.file_no[position],
            "source_line": versions.source_line[position],
            "reason": pa.DictionaryArray.from_arrays(pa.array(reason), _dictionary(_REASONS)),
            "meter_key": ids.take(pa.array(versions.code[position])),
            "reading_ts": pa.array(versions.t[position], UTC_MICROS),
            "kw": pa.array(versions.kw[position], mask=~versions.has_kw[position]),
            "winner_file_no": pa.array(versions.file_no[winner], mask=~is_loser),
            "winner_line": pa.array(versions.source_line[winner], mask=~is_loser),
            "n": with_figures("n", np.int64),
            "mean": with_figures("mean", np.float64),
            "sd": with_figures("sd", np.float64),
            "z": with_figures("z", np.float64),
        }
    )


def clean_rows(
    sequence: Sequence,
    versions: Versions,
    survivors: Survivors,
    rejected: np.ndarray,
    interval_minutes: np.ndarray,
    ids: pa.Array,
    file_names: pa.Array,
    day: dt.date,
) -> pa.Table:
    """The clean rows of ``day`` (every interval from midnight on) with the columns of
    ``standardized_readings``, in meter and time order. ``rejected`` marks the survivors that
    steps 6 and 7 rejected; ``file_names[file_no - 1]`` is a file's SHA-256."""
    in_day = sequence.t >= micros_since_epoch(day)
    code = sequence.code[in_day]
    survivor = sequence.survivor[in_day]
    measured = sequence.measured[in_day]
    kw = sequence.kw[in_day]
    # a reading's flags and lineage stay with its row unless steps 6 or 7 rejected it
    kept = survivor >= 0
    kept[kept] = ~rejected[survivor[kept]]
    position = survivors.position[survivor[kept]]
    size = len(code)
    unit_converted = np.zeros(size, dtype=bool)
    unit_converted[kept] = versions.unit_converted[position]
    had_duplicates = np.zeros(size, dtype=bool)
    had_duplicates[kept] = versions.had_duplicates[position]
    file_index = np.zeros(size, dtype=np.int32)
    file_index[kept] = versions.file_no[position] - 1
    source_line = np.zeros(size, dtype=np.int64)
    source_line[kept] = versions.source_line[position]
    filled = sequence.filled[in_day] & ~measured
    quality = np.where(measured, MEASURED, np.where(filled, FILLED, MISSING)).astype(np.int8)
    return pa.table(
        {
            "meter_id": pa.DictionaryArray.from_arrays(pa.array(code), ids),
            "reading_ts": pa.array(sequence.t[in_day], UTC_MICROS),
            "kw": pa.array(kw, mask=np.isnan(kw)),
            "quality": pa.DictionaryArray.from_arrays(pa.array(quality), _dictionary(_QUALITIES)),
            "missing_value": ~measured,
            "filled": filled,
            "unit_converted": unit_converted,
            "had_duplicates": had_duplicates,
            "interval_minutes": interval_minutes[code],
            "source_file": pa.DictionaryArray.from_arrays(
                pa.array(file_index, mask=~kept), file_names
            ),
            "source_line": pa.array(source_line, mask=~kept),
            "partition_date": pa.array(np.full(size, (day - _EPOCH).days, dtype=np.int32)).cast(
                pa.date32()
            ),
        }
    )


_EPOCH = dt.date(1970, 1, 1)


def micros_since_epoch(day: dt.date) -> int:
    """Midnight UTC of ``day`` in epoch microseconds."""
    return (day - _EPOCH).days * 86_400_000_000
