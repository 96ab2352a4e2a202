"""DESIGN.md section 5, "Nothing is lost", and the day's quality rates, as plain queries.

For every day: raw rows = clean rows that came from a raw row + quarantine rows. The check goes
further than the counts: it finds raw rows that are in neither table and rows that are in both,
so a failure names the lines concerned.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import duckdb

from . import codes

SAMPLE = 20


@dataclass(frozen=True)
class Accounting:
    raw: int
    clean_from_raw: int
    quarantined: int
    lost: list[tuple] = field(default_factory=list)  # (source_file, source_line) in neither
    doubled: list[tuple] = field(default_factory=list)  # in both, or twice in one

    @property
    def balanced(self) -> bool:
        return (
            self.raw == self.clean_from_raw + self.quarantined
            and not self.lost
            and not self.doubled
        )


def account_day(con: duckdb.DuckDBPyConnection, day: dt.date) -> Accounting:
    con.execute(
        """CREATE OR REPLACE TEMP TABLE day_outcomes AS
        SELECT source_file, source_line FROM standardized_readings
        WHERE partition_date = $day AND source_line IS NOT NULL
        UNION ALL
        SELECT source_file, source_line FROM quarantine WHERE partition_date = $day""",
        {"day": day},
    )
    raw, clean, quarantined = con.execute(
        """SELECT
            (SELECT count(*) FROM raw_readings WHERE partition_date = $day),
            (SELECT count(*) FROM standardized_readings
             WHERE partition_date = $day AND source_line IS NOT NULL),
            (SELECT count(*) FROM quarantine WHERE partition_date = $day)""",
        {"day": day},
    ).fetchone()
    lost = con.execute(
        """SELECT source_file, source_line FROM raw_readings r WHERE partition_date = $day
           AND NOT EXISTS (SELECT 1 FROM day_outcomes o WHERE o.source_file = r.source_file
                           AND o.source_line = r.source_line)
           ORDER BY ALL LIMIT $sample""",
        {"day": day, "sample": SAMPLE},
    ).fetchall()
    doubled = con.execute(
        """SELECT source_file, source_line FROM day_outcomes GROUP BY ALL
           HAVING count(*) > 1 ORDER BY ALL LIMIT $sample""",
        {"sample": SAMPLE},
    ).fetchall()
    return Accounting(raw, clean, quarantined, lost, doubled)


def quarantine_rate(con: duckdb.DuckDBPyConnection, day: dt.date) -> tuple[float, int, int]:
    """(quarantined / raw rows, quarantined, raw) of the day; 0 for a day without rows."""
    quarantined, raw = con.execute(
        """SELECT (SELECT count(*) FROM quarantine WHERE partition_date = $day),
                  (SELECT count(*) FROM raw_readings WHERE partition_date = $day)""",
        {"day": day},
    ).fetchone()
    return (quarantined / raw if raw else 0.0), quarantined, raw


def missing_rate(con: duckdb.DuckDBPyConnection, day: dt.date) -> tuple[float, int, int]:
    """(intervals without a measured reading / clean rows, missing, clean) of the day."""
    missing, clean = con.execute(
        f"""SELECT count(*) FILTER (WHERE quality <> '{codes.QUALITY_MEASURED}'), count(*)
            FROM standardized_readings WHERE partition_date = $day""",
        {"day": day},
    ).fetchone()
    return (missing / clean if clean else 0.0), missing, clean
