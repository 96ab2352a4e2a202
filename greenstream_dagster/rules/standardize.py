"""Steps 4 to 8 of DESIGN.md section 2 for one UTC day: the clean rows and the quarantine.

Input: the day's rows in ``raw_readings`` (and ``raw_files`` for each file's arrival), plus what
the rules need from the day before: its clean rows and its quarantined readings (the z-score's
trailing window, the forward fill across midnight) and its ``meter_spacings`` (the meter's
interval, the gap across midnight).

Steps 1 to 3 are SQL (``row_checks``); steps 4 to 8 are passes over arrays sorted by meter and
time (``meter_sequences``, step 7 in ``zscore``), which this module feeds from DuckDB and hands
back to it.

Output: ``staged_standardized`` and ``staged_quarantine`` (Arrow tables registered on the
connection, the clean rows in meter and time order) and ``staged_meter_spacings`` (a temp
table), with the columns of the warehouse tables of the same name, ready for
``warehouse.replace_days``;
``release_staged`` lets go of them. Every raw row of the day lands in exactly one of the first
two (quarantine, or a clean row that carries its source_line).
"""

from __future__ import annotations

import collections
import concurrent.futures
import datetime as dt
import functools
import math

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..settings import Settings
from . import codes
from .meter_sequences import (
    IN_RANGE,
    AnchorsBefore,
    MeterGroup,
    Sequence,
    Survivors,
    Versions,
    meter_codes,
    meter_groups,
)
from .row_checks import bind, checked_rows_sql, parameters, run, sql_list
from .sequence_rows import UTC_MICROS, clean_rows, micros_since_epoch, rejected_rows
from .zscore import trailing_outliers

STAGED_STANDARDIZED = "staged_standardized"
STAGED_QUARANTINE = "staged_quarantine"
STAGED_SPACINGS = "staged_meter_spacings"
# Readings of step 7's population in one group of meters (``_zscores``), and groups
# judged at once. numpy lets go of the GIL in its array work, so two groups keep both cores
# busy (1.65 s to 1.15 s for a 50,000-meter day); the arrays take about 80 bytes a reading,
# so two groups in flight stay near 0.2 GB.
ZSCORE_GROUP_READINGS = 1_250_000
ZSCORE_THREADS = 2
# Step 8 and the clean rows go a group of meters at a time, about this many readings a group,
# this many groups at once: two keep both cores busy, and groups of this size keep the arrays
# in flight small (a 50,000-meter day in 8 groups peaked 0.1 GB lower than in 2, as fast).
STEP_8_GROUP_READINGS = 600_000
GROUP_THREADS = 2


# Minutes between a reading and the one before it (``prev_ts``), from integer microseconds:
# epoch() of an interval costs several times more. The arrays of today's spacings divide the
# same way (``standardize_day``); this SQL derives a stored day's.
SPACING_MINUTES = "(epoch_us(reading_ts) - epoch_us(prev_ts)) / 1000000 / 60"


def release_staged(con: duckdb.DuckDBPyConnection) -> None:
    """Let go of the staged rows once the warehouse holds them."""
    con.unregister(STAGED_STANDARDIZED)
    con.unregister(STAGED_QUARANTINE)
    con.execute(f"DROP TABLE IF EXISTS {STAGED_SPACINGS}")


def _micros(hours: float) -> int:
    return int(round(hours * 3_600_000_000))


def standardize_day(
    con: duckdb.DuckDBPyConnection, day: dt.date, settings: Settings
) -> dict[str, pa.Table]:
    """Stage the clean rows and the quarantine of ``day`` (see the module docstring). Returns
    the two Arrow tables staged, by the warehouse table they are for."""
    lookback_days = max(1, math.ceil(settings.zscore_window_hours / 24))
    p = {
        **parameters(settings),
        "day": day,
        "prev_day": day - dt.timedelta(days=1),
        "window_start_day": day - dt.timedelta(days=lookback_days),
        "max_kw": settings.max_kw,
    }

    # Each file as a small number ordered by arrival (then hash), so that the steps below carry
    # four bytes per row instead of a 64-character hash, and "latest arrival" is a comparison.
    run(
        con,
        """CREATE OR REPLACE TEMP TABLE day_files AS
        SELECT source_file, arrival_time,
            CAST(row_number() OVER (ORDER BY arrival_time, source_file) AS INTEGER) AS file_no
        FROM raw_files""",
    )
    # Steps 1-3 on the day's raw rows (same SQL as when the file landed). Only what the later
    # steps need is kept; the raw text is fetched again for the few rows quarantined.
    raw_day = """(SELECT r.meter_id, r."timestamp", r.energy_value, r.energy_unit, r.field_count,
                         r.raw_line, r.source_line, f.file_no, f.arrival_time
                  FROM raw_readings r JOIN day_files f USING (source_file)
                  WHERE r.partition_date = $day)"""
    checked_sql = f"""SELECT meter_key, epoch_us(reading_ts) AS t, value,
            coalesce(unit = '{codes.UNIT_WATT}', FALSE) AS watt, file_no, source_line,
            early_reason, detail, reading_day, reading_ts
        FROM ({checked_rows_sql(raw_day, settings)})"""
    checked = con.sql(checked_sql, params=bind(checked_sql, p)).to_arrow_table()
    # The rows steps 1 to 3 reject are all the quarantine needs of them: few, kept apart. The
    # others go on as arrays, straight from the query: staging them as a table first cost
    # 0.3 s for a 50,000-meter day, and filtering the Arrow table as much again.
    early = pc.is_valid(checked["early_reason"])
    early_rejects = checked.select(
        ["file_no", "source_line", "early_reason", "detail", "reading_day", "reading_ts"]
    ).filter(early)
    valid = ~early.to_numpy()
    del early
    # Steps 4 to 8 over arrays (``meter_sequences``): the day's valid rows, each meter as an
    # integer code numbered in the order of the ids.
    # The codes (one dictionary encoding of millions of ids, on one core) are found on a
    # thread while the other columns become arrays here.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        coding = pool.submit(meter_codes, checked["meter_key"], valid)
        columns = (
            _kept(checked["t"], 0, valid),
            _kept(checked["value"], 0.0, valid),
            checked["value"].is_valid().to_numpy()[valid],
            _kept(checked["watt"], False, valid),
            _kept(checked["file_no"], 0, valid),
            _kept(checked["source_line"], 0, valid),
        )
        code, ids = coding.result()
    con.register(
        "day_meters",
        pa.table({"meter_key": ids, "meter_code": np.arange(len(ids), dtype=np.int32)}),
    )
    versions = Versions.of_rows(code, *columns, settings.max_kw)
    del checked, valid, code, columns
    _stage_prev_spacings(con, p)
    last_before, has_last_before = _by_code(
        con,
        len(ids),
        """SELECT DISTINCT m.meter_code, epoch_us(s.last_ts) AS last_ts
        FROM prev_spacings s JOIN day_meters m USING (meter_key)""",
    )
    survivors = Survivors.of(versions, last_before["last_ts"], has_last_before)
    position = survivors.position
    in_range = versions.has_kw[position] & (versions.range_reason[position] == IN_RANGE)

    # Step 7 (``_zscores``): the survivors it rejects, and the figures of their windows.
    outliers, figures = _zscores(con, p, settings, survivors, versions.kw[position], in_range)
    measured = in_range & ~outliers
    rejected = (versions.range_reason[position] != IN_RANGE) | outliers

    # The quarantine is complete once the z-scores are known. Its SQL runs on a cursor of its
    # own while step 8 goes on, so that neither waits on the other's single-threaded parts
    # (step 8 alone once held one core while the other was idle).
    rejected_table = rejected_rows(versions, survivors, figures, ids)
    # The day's files, read once: the quarantine's cursor needs them, and the clean rows name
    # each file by its hash (``file_no`` numbers them from 1, in this order).
    day_files = con.sql("SELECT * FROM day_files ORDER BY file_no").to_arrow_table()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        quarantine = pool.submit(_quarantine_rows, con, p, rejected_table, early_rejects, day_files)
        clean = _step_8(
            con,
            p,
            settings,
            day,
            versions,
            survivors,
            measured,
            rejected,
            ids,
            day_files["source_file"].combine_chunks(),
        )
        staged_quarantine = quarantine.result()
    con.unregister("day_meters")
    con.register(STAGED_QUARANTINE, staged_quarantine)
    # The clean rows are handed to the warehouse insert as they are, in meter and time order.
    con.register(STAGED_STANDARDIZED, clean)
    return {"standardized_readings": clean, "quarantine": staged_quarantine}


def _step_8(
    con: duckdb.DuckDBPyConnection,
    p: dict[str, object],
    settings: Settings,
    day: dt.date,
    versions: Versions,
    survivors: Survivors,
    measured: np.ndarray,
    rejected: np.ndarray,
    ids: pa.Array,
    source_files: pa.Array,
) -> pa.Table:
    """Step 8 on the survivors: each meter's interval, what the next day needs of this one
    (``staged_meter_spacings``), then every interval of the day with the forward fill, as the
    clean rows (``source_files``: the day's file hashes in ``file_no`` order)."""
    position = survivors.position

    # Step 8, first the interval: each meter's most common spacing between consecutive distinct
    # timestamps of rows that survived step 4, the day before included (shorter on a tie). The
    # day before's spacings come from ``meter_spacings``: it is not sorted again.
    day_start = micros_since_epoch(day)
    spaced = survivors.has_prev
    con.register(
        "day_spacing_rows",
        pa.table(
            {
                "meter_code": survivors.code[spaced],
                # the division of SPACING_MINUTES, in the same order, so that a day's
                # spacings equal those derived in SQL from a stored day
                "minutes": (survivors.t[spaced] - survivors.prev_t[spaced]) / 1_000_000 / 60,
                "within_day": survivors.prev_t[spaced] >= day_start,
            }
        ),
    )
    run(
        con,
        """CREATE OR REPLACE TEMP TABLE day_spacings AS
        SELECT meter_code, minutes, within_day, count(*) AS times
        FROM day_spacing_rows GROUP BY ALL""",
    )
    con.unregister("day_spacing_rows")
    by_meter, _ = _by_code(
        con,
        len(ids),
        """WITH counted AS (
            SELECT meter_code, minutes, sum(times) AS times
            FROM (SELECT meter_code, minutes, times FROM day_spacings
                  UNION ALL
                  SELECT m.meter_code, s.minutes, s.times FROM prev_spacings s
                  JOIN day_meters m USING (meter_key) WHERE s.minutes IS NOT NULL)
            GROUP BY ALL
        )
        SELECT meter_code, arg_min(minutes, (-times, minutes)) AS interval_minutes
        FROM counted GROUP BY ALL""",
        missing={"interval_minutes": float(settings.default_interval_minutes)},
    )
    intervals = by_meter["interval_minutes"]
    # What the next day needs of this one: the spacings within the day, and the last reading.
    last_code, last_t = survivors.last_of_meters()
    con.register(
        "day_last_readings",
        pa.table({"meter_code": last_code, "last_ts": pa.array(last_t, UTC_MICROS)}),
    )
    run(
        con,
        f"""CREATE OR REPLACE TEMP TABLE {STAGED_SPACINGS} AS
        SELECT m.meter_key AS meter_id, within.minutes, coalesce(within.times, 0) AS times,
            last.last_ts, CAST($day AS DATE) AS partition_date
        FROM day_last_readings last
        JOIN day_meters m USING (meter_code)
        LEFT JOIN (SELECT meter_code, minutes, times FROM day_spacings WHERE within_day) within
            USING (meter_code)""",
        p,
    )
    con.unregister("day_last_readings")
    con.execute("DROP TABLE day_spacings")

    # Every interval of the day in order, and the forward fill: a run of missing intervals
    # shorter than the limit in total, right after a measured reading (the day before's clean
    # rows count), takes that reading's kW.
    # Groups of meters on two threads: for a 50,000-meter day this part took 0.75 to 0.96 s
    # on one core, 0.50 to 0.53 s in 8 groups.
    anchors = _anchors_before(con, p, len(ids))
    kw = versions.kw[position]

    def group_rows(group: MeterGroup) -> pa.Table:
        rows = group.rows
        sequence = Sequence.of(
            group.survivors,
            measured[rows],
            kw[rows],
            intervals,
            anchors,
            float(settings.fill_max_minutes),
        )
        return clean_rows(
            sequence,
            group.versions,
            group.survivors,
            rejected[rows],
            intervals,
            ids,
            source_files,
            day,
        )

    groups = meter_groups(
        versions, survivors, max(1, math.ceil(len(survivors.t) / STEP_8_GROUP_READINGS))
    )
    with concurrent.futures.ThreadPoolExecutor(GROUP_THREADS) as pool:
        return pa.concat_tables(pool.map(group_rows, groups))


def _kept(column: pa.ChunkedArray, missing, keep: np.ndarray) -> np.ndarray:
    """The values of ``column`` at the rows ``keep`` marks, as a numpy array (``missing`` for
    a null, which only rows left out have)."""
    return column.fill_null(missing).to_numpy()[keep]


def _zscores(
    con: duckdb.DuckDBPyConnection,
    p: dict[str, object],
    settings: Settings,
    survivors: Survivors,
    kw: np.ndarray,
    in_range: np.ndarray,
) -> tuple[np.ndarray, pa.Table]:
    """Which survivors step 7 rejects, and a table of their window's figures (``survivor``,
    ``n``, ``mean``, ``sd``, ``z``).

    The trailing window holds readings that passed step 6, the day before included: there, the
    clean measured readings and the readings that step 7 itself rejected. The window sums are
    running sums over arrays (``zscore``), taken over groups of meters (ranges of their codes)
    so that the arrays stay small however many meters there are; numpy lets go of the GIL in
    its array work, so two groups are judged at once on the two cores.
    """
    run(
        con,
        f"""CREATE OR REPLACE TEMP TABLE zscore_before AS
        SELECT m.meter_code, r.t, r.kw FROM ({_WINDOW_BEFORE_SQL}) r
        JOIN day_meters m USING (meter_key)""",
        p,
    )
    [(before,)] = con.execute("SELECT count(*) FROM zscore_before").fetchall()
    judged = np.flatnonzero(in_range)  # in meter and time order
    judged_code = survivors.code[judged]
    meters = int(survivors.code.max()) + 1 if len(survivors.code) else 0
    groups = max(1, min(meters, math.ceil((len(judged) + before) / ZSCORE_GROUP_READINGS)))
    judge = functools.partial(
        trailing_outliers,
        window_us=_micros(settings.zscore_window_hours),
        min_readings=settings.zscore_min_readings,
        threshold=settings.zscore_threshold,
    )
    found = []
    with concurrent.futures.ThreadPoolExecutor(ZSCORE_THREADS) as pool:
        pending = collections.deque()
        for group in range(groups):
            # Two integers computed here, never input text.
            first_code = meters * group // groups
            end_code = meters * (group + 1) // groups
            prior = con.execute(
                f"""SELECT meter_code, t, kw FROM zscore_before
                WHERE meter_code >= {first_code:d} AND meter_code < {end_code:d}"""
            ).fetchnumpy()
            lo, hi = np.searchsorted(judged_code, [first_code, end_code])
            today = judged[lo:hi]
            population = pa.table(
                {
                    "meter_key": np.concatenate((judged_code[lo:hi], prior["meter_code"])),
                    "t": np.concatenate((survivors.t[today], prior["t"])),
                    "kw": np.concatenate((kw[today], prior["kw"])),
                    "is_today": np.arange(len(today) + len(prior["t"])) < len(today),
                }
            )
            if len(pending) == ZSCORE_THREADS:
                found.append(pending.popleft().result())
            pending.append(pool.submit(judge, population))
            del population, prior
        found.extend(done.result() for done in pending)
    con.execute("DROP TABLE zscore_before")
    outliers = pa.concat_tables(found)
    survivor = survivors.find(
        outliers["meter_key"].to_numpy(), outliers["reading_ts"].cast(pa.int64()).to_numpy()
    )
    rejected = np.zeros(len(survivors.t), dtype=bool)
    rejected[survivor] = True
    figures = outliers.drop_columns(["meter_key", "reading_ts"]).append_column(
        "survivor", pa.array(survivor, pa.int64())
    )
    return rejected, figures


# The readings of the days before that count in step 7's windows: the clean measured readings,
# and the readings that step 7 itself rejected.
_WINDOW_BEFORE_SQL = f"""
    SELECT meter_id AS meter_key, epoch_us(reading_ts) AS t, kw FROM standardized_readings
    WHERE partition_date BETWEEN $window_start_day AND $prev_day
      AND quality = '{codes.QUALITY_MEASURED}'
    UNION ALL
    SELECT trim(meter_id), epoch_us(reading_ts), kw FROM quarantine
    WHERE partition_date BETWEEN $window_start_day AND $prev_day
      AND reason = '{codes.OUTLIER_ZSCORE}'"""


def _by_code(
    con, size: int, sql: str, p: dict[str, object] | None = None, missing: dict | None = None
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Arrays indexed by meter code from ``sql``'s rows: its first column is the code, and each
    other column becomes an array of ``size`` (``missing[column]``, else 0, for a code without
    a row). Also returns which codes had a row."""
    rows = run(con, sql, p).fetchnumpy()
    code, *columns = rows
    present = np.zeros(size, dtype=bool)
    present[rows[code]] = True
    values = {}
    for column in columns:
        values[column] = np.full(size, (missing or {}).get(column, 0), dtype=rows[column].dtype)
        values[column][rows[code]] = rows[column]
    return values, present


def _anchors_before(con, p: dict[str, object], meters: int) -> AnchorsBefore:
    """The day before's last measured reading of each meter, and its clean rows after it."""
    sql = f"""WITH last AS (
            SELECT meter_id, max(reading_ts) AS last_measured FROM standardized_readings
            WHERE partition_date = $prev_day AND quality = '{codes.QUALITY_MEASURED}'
            GROUP BY meter_id
        )
        SELECT m.meter_code, arg_min(s.kw, s.reading_ts) AS kw, count(*) - 1 AS missing_after
        FROM standardized_readings s
        JOIN last l USING (meter_id)
        JOIN day_meters m ON m.meter_key = s.meter_id
        WHERE s.partition_date = $prev_day AND s.reading_ts >= l.last_measured
        GROUP BY ALL"""
    before, has_anchor = _by_code(con, meters, sql, p)
    return AnchorsBefore(has_anchor, before["kw"], before["missing_after"])


def _stage_prev_spacings(con: duckdb.DuckDBPyConnection, p: dict[str, object]) -> None:
    """``prev_spacings``: the day before's ``meter_spacings``, or, for a day stored without
    them (by an earlier version), the same rows derived from its clean rows and quarantine."""
    [(stored,)] = run(
        con, "SELECT count(*) FROM meter_spacings WHERE partition_date = $prev_day", p
    ).fetchall()
    if stored:
        run(
            con,
            """CREATE OR REPLACE TEMP TABLE prev_spacings AS
            SELECT meter_id AS meter_key, minutes, times, last_ts FROM meter_spacings
            WHERE partition_date = $prev_day""",
            p,
        )
        return
    run(con, f"CREATE OR REPLACE TEMP TABLE prev_spacings AS {spacings_of_stored_day_sql()}", p)


def spacings_of_stored_day_sql() -> str:
    """SQL deriving the ``meter_spacings`` of ``$prev_day`` (as ``meter_key``, ``minutes``,
    ``times``, ``last_ts``) from its stored outputs: the readings that survived step 4 are the
    clean rows from a raw row and the readings quarantined in steps 5 to 7."""
    return f"""
    WITH survivors AS (
        SELECT meter_id AS meter_key, reading_ts FROM standardized_readings
        WHERE partition_date = $prev_day AND source_line IS NOT NULL
        UNION ALL
        SELECT trim(meter_id), reading_ts FROM quarantine
        WHERE partition_date = $prev_day
          AND reason IN {sql_list(codes.READING_REJECTED_REASONS)}
    ),
    spaced AS (
        SELECT *, lag(reading_ts) OVER (PARTITION BY meter_key ORDER BY reading_ts) AS prev_ts
        FROM survivors
    ),
    within AS (
        SELECT meter_key, {SPACING_MINUTES} AS minutes, count(*) AS times
        FROM spaced WHERE prev_ts IS NOT NULL GROUP BY ALL
    )
    SELECT last.meter_key, within.minutes, coalesce(within.times, 0) AS times, last.last_ts
    FROM (SELECT meter_key, max(reading_ts) AS last_ts FROM survivors GROUP BY ALL) last
    LEFT JOIN within USING (meter_key)
    """


def _quarantine_rows(
    con: duckdb.DuckDBPyConnection,
    p: dict[str, object],
    rejected: pa.Table,
    early_rejects: pa.Table,
    files: pa.Table,
) -> pa.Table:
    """Every raw row of the day that no clean row carries, with the first reason that hit it,
    and its raw text fetched back from raw_readings: the rows steps 1 to 3 rejected
    (``early_rejects``) and those steps 4 to 7 did (``rejected``).

    On a cursor of its own, so that it can run beside the caller's work on ``con``; a cursor
    sees none of ``con``'s temp tables and registrations, so it is handed what it reads."""
    with con.cursor() as cursor:
        cursor.execute("SET TimeZone = 'UTC'")  # a session setting: a cursor starts without it
        cursor.register("day_rejected", rejected)
        cursor.register("day_early_rejects", early_rejects)
        cursor.register("day_files", files)
        return cursor.sql(_QUARANTINE_SQL, params=bind(_QUARANTINE_SQL, p)).to_arrow_table()


_QUARANTINE_SQL = f"""
        WITH rejected AS (
            SELECT file_no, source_line, early_reason AS reason, detail,
                CASE WHEN reading_day IS NOT NULL THEN reading_ts END AS reading_ts,
                NULL::DOUBLE AS kw
            FROM day_early_rejects
            UNION ALL
            SELECT r.file_no, r.source_line, r.reason,
                CASE r.reason
                    WHEN '{codes.DUPLICATE}' THEN 'meter ' || r.meter_key || ' at '
                        || strftime(r.reading_ts, '%Y-%m-%dT%H:%M:%SZ')
                        || ' has a version that wins: file ' || wf.source_file
                        || ' line ' || r.winner_line
                    WHEN '{codes.NEGATIVE_VALUE}' THEN 'kW ' || r.kw || ' is below 0'
                    WHEN '{codes.ABOVE_MAX}' THEN 'kW ' || r.kw || ' is above the maximum '
                        || $max_kw
                    ELSE 'z = ' || round(r.z, 2) || ' from ' || r.n
                        || ' readings of the trailing window (mean ' || round(r.mean, 4)
                        || ' kW, sd ' || round(r.sd, 4) || ' kW)'
                END,
                r.reading_ts, r.kw
            FROM day_rejected r LEFT JOIN day_files wf ON wf.file_no = r.winner_file_no
        )
        SELECT r.meter_id, r."timestamp", r.energy_value, r.energy_unit, q.reason, q.detail,
            q.reading_ts, q.kw, f.source_file, q.source_line, CAST($day AS DATE) AS partition_date
        FROM rejected q
        JOIN day_files f USING (file_no)
        JOIN raw_readings r ON r.partition_date = $day AND r.source_file = f.source_file
            AND r.source_line = q.source_line
        """
