"""A day's rows of a warehouse table against its Pandera schema: what the schema checks report.

The rows are validated in batches, so a 50,000-meter day never sits in memory as one frame,
either as DuckDB hands them over or as the step that wrote them still holds them (``held``):
a step's own Arrow table is checked without reading the day back (for the clean rows of a
50,000-meter day 0.63 to 0.76 s, against 0.81 to 0.99 s read back), and its dictionary columns
once per distinct value (then 0.26 to 0.29 s, against 0.55 to 0.68 s the same hour). Read
back, a text column with few values on the day is fetched coded, and judged the same way.

Imported only when a day is validated: pandas, Pandera and Polars take 0.6 s of a core to
import, which every ``greenstream process`` and every run's process paid before its first step.
``handover.warm_validation`` (in ``orchestration``) imports and warms them on a thread while
the raw rows' step waits on its DuckDB insert.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator

import pandas as pd
import pandera.polars as pa
import polars as pl
import pyarrow as pa_arrow
import pyarrow.compute as pc
from pandera.errors import SchemaErrors

from .rules import unique_keys
from .rules.schemas import schemas
from .settings import Settings

FAILURE_SAMPLE = 20
# Rows validated at a time: bounded memory however many meters a day has.
BATCH_ROWS = 1_000_000
# A text column read back with at most this many distinct values on the day comes coded.
CODED_MAX_VALUES = 256
# The held rows, as their doubled keys are asked of them (``_doubled_keys``).
HELD_ROWS = "validated_held_rows"

__all__ = ["BATCH_ROWS", "CODED_MAX_VALUES", "FAILURE_SAMPLE", "schemas", "validate_day", "warm"]


def _regrouped(batches: Iterable[pa_arrow.RecordBatch], rows: int) -> Iterator[pa_arrow.Table]:
    """The batches joined into tables of about ``rows`` rows. DuckDB hands out batches of its
    vector size (about 120,000 rows) whatever size is asked for, and each Pandera validation
    has a fixed cost: 39 batches for a 50,000-meter day cost a second more than 5."""
    pending: list[pa_arrow.RecordBatch] = []
    held = 0
    for batch in batches:
        pending.append(batch)
        held += batch.num_rows
        if held >= rows:
            yield pa_arrow.Table.from_batches(pending)
            pending, held = [], 0
    if pending:
        yield pa_arrow.Table.from_batches(pending)


def validate_day(
    con,
    table: str,
    schema: pa.DataFrameSchema,
    day: dt.date,
    held: pa_arrow.Table | None = None,
) -> tuple[int, pd.DataFrame | None]:
    """Validate the day's rows of ``table`` in batches: read from the warehouse, or ``held``,
    the same rows as the step that stores them holds them (its dictionary-encoded strings give
    the failure cases of the text the warehouse stores). Held rows are validated without
    reading the warehouse, so while the step still stores them. Uniqueness spans the batches:
    each batch leaves only the runs its keys come in (``unique_keys``), a few per meter or file.

    Returns (rows checked, failure cases or None).
    """
    unique = list(schema.unique or [])
    per_batch = pa.DataFrameSchema(
        schema.columns, checks=schema.checks, name=schema.name, unique=None
    )
    failures = []
    rows = 0
    runs: list[pl.DataFrame] = []
    con = con.cursor()  # its own result stream, whatever the caller left open
    # Only the columns the schema looks at: the others would be converted for nothing.
    wanted = list(dict.fromkeys([*schema.columns, *unique]))
    if held is None:
        batches, coded = _read_back(con, table, schema, wanted, day)
    else:
        batches = held.select(wanted).to_batches(BATCH_ROWS)
        coded = _judged_by_value(schema, held)
    by_value = per_batch.remove_columns(coded) if coded else per_batch
    values_schemas = {name: pa.DataFrameSchema({name: schema.columns[name]}) for name in coded}
    for batch in _regrouped(batches, BATCH_ROWS):
        # Arrow's buffers, not a copy. A dictionary column (the step's own table) stays coded
        # when its distinct values pass; otherwise it becomes text, and every row is judged.
        frame = pl.from_arrow(batch)
        rows += len(frame)
        if coded and _values_pass(values_schemas, batch):
            against = by_value
            frame = frame.with_columns(pl.col(pl.Categorical).exclude(coded).cast(pl.String))
        else:
            against = per_batch
            frame = frame.with_columns(pl.col(pl.Categorical).cast(pl.String))
        if unique:
            runs.append(
                unique_keys.key_runs(frame, unique).with_columns(
                    pl.col(pl.Categorical).cast(pl.String)
                )
            )
        try:
            against.validate(frame, lazy=True)
        except SchemaErrors as errors:
            failures.append(errors.failure_cases.to_pandas())
    # Only runs that may share a key (a doubled key, or a null in one) ask DuckDB for the keys
    # themselves, to name them. A second scan of the day for every check cost 0.6 s for the
    # raw rows, 0.5 s for the clean.
    if unique and unique_keys.runs_overlap(runs, unique):
        doubled = _doubled_keys(con, table, unique, day, held)
        if len(doubled):
            failures.append(
                pd.DataFrame(
                    {
                        "column": str(unique),
                        "check": "multiple_fields_uniqueness",
                        "failure_case": doubled.astype(str).agg(",".join, axis=1),
                    }
                )
            )
    return rows, (pd.concat(failures, ignore_index=True) if failures else None)


def _read_back(
    con, table: str, schema: pa.DataFrameSchema, wanted: list[str], day: dt.date
) -> tuple[Iterator[pa_arrow.RecordBatch], list[str]]:
    """The day's ``wanted`` columns of ``table`` from the warehouse, in batches, and those
    read coded: a text column with at most ``CODED_MAX_VALUES`` values on the day comes as a
    dictionary of them (each row as its value's position), so it is judged once per value as
    a step's own dictionary columns are (``_judged_by_value``). The raw rows of a
    50,000-meter day hold 25 file hashes: read and validated in 0.29 to 0.34 s instead of
    0.56 to 0.57 s."""
    coded = {}
    params: dict[str, object] = {"day": day}
    parts = []
    for name in wanted:
        values = _few_values(con, table, schema, name, day)
        if values is None:
            parts.append(f'"{name}"')
            continue
        coded[name] = pa_arrow.array(values, pa_arrow.string())
        params[f"values_{name}"] = values
        parts.append(f'CAST(list_position($values_{name}, "{name}") - 1 AS UINTEGER) AS "{name}"')
    columns = ", ".join(parts)
    reader = con.sql(
        f"SELECT {columns} FROM {table} WHERE partition_date = $day", params=params
    ).to_arrow_reader(BATCH_ROWS)

    def decoded(batch: pa_arrow.RecordBatch) -> pa_arrow.RecordBatch:
        arrays = [
            pa_arrow.DictionaryArray.from_arrays(column, coded[name]) if name in coded else column
            for name, column in zip(batch.schema.names, batch.columns, strict=True)
        ]
        return pa_arrow.RecordBatch.from_arrays(arrays, names=batch.schema.names)

    return (map(decoded, reader) if coded else reader), list(coded)


def _few_values(con, table: str, schema: pa.DataFrameSchema, name: str, day: dt.date):
    """The distinct values of text column ``name`` on the day when there are at most
    ``CODED_MAX_VALUES`` of them and its checks judge one value at a time; otherwise None."""
    column = schema.columns.get(name)
    if column is None or column.unique or column.dtype is None or column.dtype.type != pl.String:
        return None
    values = [
        value
        for (value,) in con.execute(
            f'SELECT DISTINCT "{name}" FROM {table} WHERE partition_date = $day '
            f'AND "{name}" IS NOT NULL LIMIT $limit',
            {"day": day, "limit": CODED_MAX_VALUES + 1},
        ).fetchall()
    ]
    return values if 0 < len(values) <= CODED_MAX_VALUES else None


def _judged_by_value(schema: pa.DataFrameSchema, held: pa_arrow.Table) -> list[str]:
    """The schema's columns that ``held`` has dictionary-encoded and that can be judged once
    per distinct value: a column check judges each value on its own (``rules.schemas``), a
    column declared unique cannot be."""
    return [
        name
        for name, column in schema.columns.items()
        if name in held.column_names
        and pa_arrow.types.is_dictionary(held.schema.field(name).type)
        and not column.unique
    ]


def _values_pass(values_schemas: dict[str, pa.DataFrameSchema], batch: pa_arrow.Table) -> bool:
    """Whether every distinct value the batch's rows hold in each column of ``values_schemas``
    passes that column's dtype and checks (its schema alone), none of them null. A day's 4.7
    million clean rows hold 50,000 meter ids and 3 qualities: judging those took 0.3 s as 4.7
    million strings. When a value fails, the caller judges every row, so the failure cases
    name rows as a read back does."""
    for name, values_schema in values_schemas.items():
        values = pa_arrow.chunked_array(
            [chunk.dictionary.take(pc.unique(chunk.indices)) for chunk in batch[name].chunks],
            batch.schema.field(name).type.value_type,
        )
        if values.null_count:
            return False
        try:
            values_schema.validate(pl.from_arrow(pa_arrow.table({name: values})), lazy=True)
        except SchemaErrors:
            return False
    return True


def _doubled_keys(
    con, table: str, unique: list[str], day: dt.date, held: pa_arrow.Table | None
) -> pd.DataFrame:
    """The first keys of the day that more than one row holds, with how many: in the
    warehouse, or in the ``held`` rows themselves. Those are the rows the step stores, and
    asked of them the validation needs nothing stored yet: it runs while they are stored."""
    keys = ", ".join(unique)
    if held is not None:
        con.register(HELD_ROWS, held)  # on ``validate_day``'s own cursor, gone with it
        table = HELD_ROWS
    doubled = con.sql(
        f"""SELECT {keys}, count(*) AS times FROM {table}
            WHERE partition_date = $day AND hash({keys}) IN (
                SELECT hash({keys}) FROM {table} WHERE partition_date = $day
                GROUP BY ALL HAVING count(*) > 1)
            GROUP BY ALL HAVING count(*) > 1 ORDER BY ALL LIMIT {FAILURE_SAMPLE}""",
        params={"day": day},
    )
    # through Arrow: DuckDB's own .df() calls a pandas API that pandas 3.1 deprecates
    return doubled.to_arrow_table().to_pandas()


def warm() -> None:
    """Validate one empty frame against every schema: Pandera registers its Polars backend and
    builds its checks on first use, 0.2 s that the first check of a run otherwise pays."""
    for schema in schemas(Settings()).values():
        empty = pl.DataFrame(
            schema={
                name: column.dtype.type if column.dtype else pl.Datetime("us", "UTC")
                for name, column in schema.columns.items()
            }
        )
        try:
            schema.validate(empty, lazy=True)
        except SchemaErrors:
            pass  # warming only: an empty frame's result says nothing
