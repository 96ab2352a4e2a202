"""DESIGN.md section 5, "Nothing is lost", and the day's quality rates, as plain queries.

For every day: raw rows = clean rows that came from a raw row + quarantine rows. The check goes
further than the counts: it compares the lines themselves, and on a difference it finds the raw
lines that are in neither table and the lines that are in both, so a failure names them.
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


# Each table's lines of the day and the sum of every line's 64-bit hash of (file, line), as a
# 128-bit integer (no overflow). Clean rows count only when they come from a raw line.
_FINGERPRINTS = """
    SELECT 'raw', count(*), coalesce(sum(hash(source_file, source_line)), 0) FROM raw_readings
    WHERE partition_date = $day
    UNION ALL
    SELECT 'clean', count(*), coalesce(sum(hash(source_file, source_line)), 0)
    FROM standardized_readings
    WHERE partition_date = $day AND source_line IS NOT NULL
    UNION ALL
    SELECT 'quarantine', count(*), coalesce(sum(hash(source_file, source_line)), 0)
    FROM quarantine
    WHERE partition_date = $day
"""


def account_day(con: duckdb.DuckDBPyConnection, day: dt.date) -> Accounting:
    """Compare the day's raw lines with their outcomes, and name the lines when they differ.

    First by fingerprint: the raw lines and the outcomes (clean rows from a raw line, plus
    quarantine rows) must agree in count and in the sum of every line's 64-bit hash. A lost
    line, a line in both tables or a stray one changes the count or the sum, unless the hashes
    of the lines concerned cancel out exactly: a chance of about 1 in 2**64. That is one scan
    of the three tables (0.06 s for a 50,000-meter day); only when the fingerprints differ are
    the lines matched one by one (``_lines_accounted``, 2 s), to name them.

    Two copies of one raw line with an outcome each agree by fingerprint: a raw line stored
    twice is the finding of the raw schema check (``source_file``, ``source_line`` unique).
    """
    parts = {
        part: (lines, sums)
        for part, lines, sums in con.execute(_FINGERPRINTS, {"day": day}).fetchall()
    }
    (raw, raw_sum), (clean, clean_sum), (quarantined, quarantined_sum) = (
        parts[part] for part in ("raw", "clean", "quarantine")
    )
    if raw == clean + quarantined and raw_sum == clean_sum + quarantined_sum:
        return Accounting(raw, clean, quarantined)
    return _lines_accounted(con, day)


def _lines_accounted(con: duckdb.DuckDBPyConnection, day: dt.date) -> Accounting:
    """Count every raw line of the day and its outcomes line by line, in one pass over the
    three tables, and name the lines lost or doubled.

    Lines are keyed by a small file number and the line number: grouping millions of rows by
    a 64-character hash costs several times more than by two integers.
    """
    con.execute(
        """CREATE OR REPLACE TEMP TABLE accounting_files AS
        SELECT source_file, CAST(row_number() OVER (ORDER BY source_file) AS INTEGER) AS file_no
        FROM raw_files"""
    )
    files = dict(con.execute("SELECT file_no, source_file FROM accounting_files").fetchall())
    [(raw, clean, quarantined, lost, doubled)] = con.execute(
        """WITH keyed AS (
            SELECT file_no, source_line, 1 AS raw, 0 AS clean, 0 AS quarantined
            FROM raw_readings JOIN accounting_files USING (source_file)
            WHERE partition_date = $day
            UNION ALL
            SELECT file_no, source_line, 0, 1, 0
            FROM standardized_readings LEFT JOIN accounting_files USING (source_file)
            WHERE partition_date = $day AND source_line IS NOT NULL
            UNION ALL
            SELECT file_no, source_line, 0, 0, 1
            FROM quarantine LEFT JOIN accounting_files USING (source_file)
            WHERE partition_date = $day
        ),
        per_line AS (
            SELECT file_no, source_line, sum(raw) AS raw,
                sum(clean) + sum(quarantined) AS outcomes,
                sum(clean) AS clean, sum(quarantined) AS quarantined
            FROM keyed GROUP BY file_no, source_line
        )
        SELECT coalesce(sum(raw), 0), coalesce(sum(clean), 0), coalesce(sum(quarantined), 0),
            min((file_no, source_line), $sample) FILTER (WHERE raw > outcomes),
            min((file_no, source_line), $sample) FILTER (WHERE outcomes > 1)
        FROM per_line""",
        {"day": day, "sample": SAMPLE},
    ).fetchall()

    def named(lines: list[tuple[int, int]] | None) -> list[tuple[str, int]]:
        # a clean or quarantined row from a file unknown to raw_files has no number
        return [(files.get(no, "unknown file"), line) for no, line in lines or []]

    return Accounting(int(raw), int(clean), int(quarantined), named(lost), named(doubled))


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
