"""Turning day reports and warehouse tables into the metadata the web UI shows."""

import datetime as dt
from collections.abc import Sequence

import dagster as dg
import duckdb

from ..pipeline import DayReport
from ..storage.warehouse import TABLES, TYPES

PREVIEW_ROWS = 10
LIST_LIMIT = 10


def table_schema(table: str) -> dg.TableSchema:
    """The column schema of a warehouse table, read from its DDL (a type of its own is shown as
    its definition)."""
    columns = []
    for line in TABLES[table].strip().splitlines():
        parts = line.strip().rstrip(",").split()
        if parts and parts[0] != "PRIMARY":
            name = parts[0].strip('"')
            columns.append(
                dg.TableColumn(
                    name,
                    TYPES.get(parts[1], parts[1]),
                    constraints=dg.TableColumnConstraints(nullable="NOT" not in parts[2:3]),
                )
            )
    return dg.TableSchema(columns=columns)


def _value(value: object) -> object:
    if isinstance(value, bool) or value is None:
        return dg.MetadataValue.text(str(value))
    if isinstance(value, int):
        return dg.MetadataValue.int(value)
    if isinstance(value, float):
        return dg.MetadataValue.float(round(value, 6))
    if isinstance(value, dict):
        return dg.MetadataValue.json({str(k): v for k, v in value.items()})
    if isinstance(value, list):
        shown = value[:LIST_LIMIT]
        more = f" (+{len(value) - LIST_LIMIT} more)" if len(value) > LIST_LIMIT else ""
        return dg.MetadataValue.text(", ".join(map(str, shown)) + more)
    if isinstance(value, dt.datetime):
        return dg.MetadataValue.text(value.isoformat())
    return dg.MetadataValue.text(str(value))


def report_metadata(report: DayReport, keys: Sequence[str] | None = None) -> dict[str, object]:
    """The counts of one day's report (``keys`` of them, or all)."""
    chosen = keys or list(report.counts)
    metadata = {key: _value(report.counts.get(key)) for key in chosen}
    metadata["partition_date"] = dg.MetadataValue.text(report.day.isoformat())
    return metadata


def day_preview(con: duckdb.DuckDBPyConnection, table: str, day: dt.date) -> dg.MetadataValue:
    """The first rows of the day as a markdown table."""
    cursor = con.execute(
        f"SELECT * EXCLUDE (partition_date) FROM {table} WHERE partition_date = ? LIMIT ?",
        [day, PREVIEW_ROWS],
    )
    header = [d[0] for d in cursor.description]
    rows = cursor.fetchall()
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = ["" if v is None else str(v).replace("|", "\\|")[:60] for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return dg.MetadataValue.md("\n".join(lines))
