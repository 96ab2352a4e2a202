"""Whether a day's keys are unique, found from the runs the rows are stored in.

The schema checks validate a day in batches, so a key doubled across two batches must still be
found. Rows come back in the order they were stored, which is nearly sorted: a meter's clean
rows in time order, a file's raw rows in line order (cut where DuckDB's insert split them).
So the rows are cut into runs: a run goes on while the leading key columns stay the same and
the last one rises. Within a run no key repeats; two runs can only share a key when they have
the same leading columns and their ranges of the last column meet. Each run is summed up by its
leading columns and the first and last value of the last column: a day has a few of them per
file or meter, whatever its rows.

Hashing every key and counting the distinct hashes cost 0.15 s for the raw rows of a
50,000-meter day and 0.11 s for its clean rows (4.7 million each); the runs cost 0.06 and
0.04 s. The answer is the same: rows in any order are cut into more runs (one per row at worst),
never into a wrong answer.
"""

from __future__ import annotations

import polars as pl

FIRST, LAST = "__first", "__last"


def key_runs(frame: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """The runs of ``frame``'s rows (see the module docstring): the leading key columns, then
    ``FIRST`` and ``LAST``, the range of the last key column. A row with a null key is a run
    of its own."""
    *leading, last = keys
    value = pl.col(last)
    goes_on = (value > value.shift(1)).fill_null(False)
    for column in leading:
        goes_on &= (pl.col(column) == pl.col(column).shift(1)).fill_null(False)
    starts = frame.select(~goes_on).to_series()  # once: as an expression, each filter redid it
    ends = starts.shift(-1).fill_null(True)
    first_rows = frame.filter(starts).select(*leading, value.alias(FIRST))
    last_rows = frame.filter(ends).select(value.alias(LAST))
    return pl.concat([first_rows, last_rows], how="horizontal")


def runs_overlap(runs: list[pl.DataFrame], keys: list[str]) -> bool:
    """Whether two of ``runs`` (from ``key_runs``, over any number of batches) may share a key:
    same leading columns and ranges that meet, or a null in a key (a null is compared with
    nothing, so it is left to whoever names the doubled keys)."""
    if not runs:
        return False
    *leading, _ = keys
    every = pl.concat(runs)
    if every.select(pl.any_horizontal(pl.all().is_null()).any()).item():
        return True
    ordered = every.sort([*leading, FIRST])
    same_leading = pl.lit(True)
    for column in leading:
        same_leading &= pl.col(column) == pl.col(column).shift(1)
    meets = same_leading & (pl.col(FIRST) <= pl.col(LAST).shift(1))
    return bool(ordered.select(meets.fill_null(False).any()).item())
