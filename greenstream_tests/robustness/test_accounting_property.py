"""Issue 5, property: over random mixes of good and bad rows (several meters, days and files,
duplicates, NULLs, W and kW, bad timestamps, values and units, gaps), every day balances
(raw = clean from raw + quarantine) and filling never alters a measured value.

Rows reach the warehouse the way a landed file's rows do (``landing.placed_file_rows``: steps
1-3 and the day placement), then each day is standardized in order on an in-memory warehouse.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import hypothesis
import hypothesis.strategies as st
import pyarrow as pa

from greenstream_dagster import landing, pipeline
from greenstream_dagster.rules.accounting import account_day
from greenstream_dagster.rules.meter_csv import TABLE_SCHEMA
from greenstream_dagster.settings import Settings
from greenstream_dagster.storage import warehouse

FIRST_DAY = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
DAYS = 3
SLOTS_PER_DAY = 96  # 15-minute intervals
# Every file arrives after the last generated day, except for the future timestamps below.
ARRIVAL = FIRST_DAY + dt.timedelta(days=DAYS, hours=1)
METERS = ["a", "b", " c ", "d"]
MISSING_MARKERS = ["", "NULL", "null", "NaN", "NA", "None", "  "]
BAD_VALUES = ["abc", "1,5", "inf", "-inf", "1e400", "0x1", "1 000"]
BAD_TIMESTAMPS = ["", "yesterday", "2026-13-01T00:00:00Z", "2026-11-20T25:00:00Z", "1795132800"]
BAD_UNITS = ["MW", "kWh", "", "watt"]


@dataclass(frozen=True)
class Row:
    meter_id: str
    timestamp: str
    energy_value: str
    energy_unit: str
    kw: float | None  # the kW this row must have if it ends up as a measured clean row
    fields: int = 4


def _stamp(slot: int, style: str) -> str:
    """The interval ``slot`` (15 minutes each from FIRST_DAY) written in one of the styles."""
    ts = FIRST_DAY + dt.timedelta(minutes=15 * slot)
    if style == "offset":
        return (ts + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S+01:00")
    if style == "naive":
        return ts.strftime("%Y-%m-%d %H:%M:%S")
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


@st.composite
def good_rows(draw, slot=None, meter=None) -> Row:
    meter = meter if meter is not None else draw(st.sampled_from(METERS))
    slot = slot if slot is not None else draw(st.integers(0, DAYS * SLOTS_PER_DAY - 1))
    stamp = _stamp(slot, draw(st.sampled_from(["z", "z", "offset", "naive"])))
    kind = draw(st.sampled_from(["kw", "kw", "kw", "w", "missing", "negative", "big"]))
    if kind == "missing":
        unit = draw(st.sampled_from(["kW", "W", "MW"]))
        return Row(meter, stamp, draw(st.sampled_from(MISSING_MARKERS)), unit, None)
    if kind == "w":
        watts = draw(st.integers(0, 12_000))
        return Row(meter, stamp, str(watts), draw(st.sampled_from(["W", "w", " W "])), watts / 1000)
    if kind == "negative":
        value = -draw(st.integers(1, 5_000)) / 1000
    elif kind == "big":
        value = draw(st.integers(10_001, 50_000)) / 1000
    else:
        # A few distinct levels, so that the z-score window sometimes has a spread of zero.
        value = draw(st.sampled_from([0, 0.005, 0.5, 1.25, 2, 3.5, 7.125]))
    text = draw(st.sampled_from([repr(float(value)), f"{value:+.3f}", f"{value:.3e}"]))
    return Row(meter, stamp, text, draw(st.sampled_from(["kW", "kw", " KW "])), float(text))


@st.composite
def bad_rows(draw) -> Row:
    meter = draw(st.sampled_from(METERS))
    slot = draw(st.integers(0, DAYS * SLOTS_PER_DAY - 1))
    stamp = _stamp(slot, "z")
    kind = draw(st.sampled_from(["timestamp", "value", "unit", "meter", "future", "malformed"]))
    if kind == "timestamp":
        return Row(meter, draw(st.sampled_from(BAD_TIMESTAMPS)), "1.5", "kW", None)
    if kind == "value":
        return Row(meter, stamp, draw(st.sampled_from(BAD_VALUES)), "kW", None)
    if kind == "unit":
        return Row(meter, stamp, "1.5", draw(st.sampled_from(BAD_UNITS)), None)
    if kind == "meter":
        return Row(draw(st.sampled_from(["", "   "])), stamp, "1.5", "kW", None)
    if kind == "future":
        later = ARRIVAL + dt.timedelta(hours=draw(st.integers(2, 30)))
        return Row(meter, later.strftime("%Y-%m-%dT%H:%M:%SZ"), "1.5", "kW", None)
    return Row(meter, stamp, "1.5", "", None, fields=draw(st.sampled_from([3, 5])))


@st.composite
def runs(draw) -> list[Row]:
    """Consecutive readings of one meter: the material of gaps, fills and z-scores."""
    meter = draw(st.sampled_from(METERS))
    start = draw(st.integers(0, DAYS * SLOTS_PER_DAY - 20))
    slots = draw(st.lists(st.integers(0, 19), min_size=3, max_size=18, unique=True))
    return [draw(good_rows(slot=start + s, meter=meter)) for s in sorted(slots)]


@st.composite
def files(draw) -> list[list[Row]]:
    """One to three files of rows; some rows repeat an earlier (meter, time) as a duplicate."""
    rows: list[Row] = []
    for chunk in draw(
        st.lists(
            st.one_of(runs(), st.lists(good_rows(), max_size=3), st.lists(bad_rows(), max_size=3)),
            min_size=1,
            max_size=8,
        )
    ):
        rows.extend(chunk)
    for _ in range(draw(st.integers(0, 4)) if rows else 0):
        original = draw(st.sampled_from(rows))
        copy = draw(good_rows(meter=original.meter_id))
        rows.append(
            Row(original.meter_id, original.timestamp, copy.energy_value, copy.energy_unit, copy.kw)
        )
    rows = draw(st.permutations(rows))
    cuts = sorted(draw(st.lists(st.integers(0, len(rows)), max_size=2)))
    bounds = [0, *cuts, len(rows)]
    return [rows[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def _table(rows: list[Row]) -> pa.Table:
    """The rows as ``read_meter_csv`` gives them (a malformed row keeps its raw line)."""
    columns = {name: [] for name in TABLE_SCHEMA.names}
    for line, row in enumerate(rows, start=2):
        fields = [row.meter_id, row.timestamp, row.energy_value, row.energy_unit]
        if row.fields != 4:
            fields = (fields + ["extra"])[: row.fields]
        for name, value in zip(TABLE_SCHEMA.names[:4], fields + [None] * 4, strict=False):
            columns[name].append(value)
        columns["extra_fields"].append(None)
        columns["source_line"].append(line)
        columns["field_count"].append(row.fields)
        columns["raw_line"].append(",".join(fields) if row.fields != 4 else None)
    return pa.Table.from_pydict(columns, schema=TABLE_SCHEMA)


def _land(con, settings: Settings, name: str, rows: list[Row], arrival: dt.datetime) -> None:
    placed = landing.placed_file_rows(con, _table(rows), name, arrival, settings)
    placed.insert_into("raw_readings")
    con.unregister("file_rows")
    days = [
        d
        for (d,) in con.execute(
            "SELECT DISTINCT partition_date FROM raw_readings WHERE source_file = ?", [name]
        ).fetchall()
    ]
    con.execute(
        "INSERT INTO raw_files VALUES (?, ?, 0, ?, ?, 'accepted', NULL)",
        [name, name, arrival, days],
    )


@hypothesis.settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.too_slow, hypothesis.HealthCheck.data_too_large],
)
@hypothesis.given(batches=files(), arrival_hours=st.lists(st.integers(-30, 0), min_size=3))
def test_every_day_balances_and_fills_never_alter_measured_values(batches, arrival_hours):
    settings = Settings()
    expected_kw: dict[tuple[str, int], float | None] = {}
    with warehouse.connect(":memory:") as con:
        for number, (rows, hours) in enumerate(zip(batches, arrival_hours, strict=False)):
            name = f"file{number}"
            _land(con, settings, name, rows, ARRIVAL + dt.timedelta(hours=hours))
            expected_kw.update({(name, line): r.kw for line, r in enumerate(rows, start=2)})
        days = [
            d
            for (d,) in con.execute(
                "SELECT DISTINCT partition_date FROM raw_readings ORDER BY 1"
            ).fetchall()
        ]
        for day in days:
            pipeline.build_standardized(con, settings, day)

        # Nothing lost on the way in: every generated row is a raw row of exactly one day.
        (raw_rows,) = con.execute("SELECT count(*) FROM raw_readings").fetchone()
        assert raw_rows == sum(len(rows) for rows in batches)
        # Nothing lost on the way through: each day balances, line by line.
        for day in days:
            result = account_day(con, day)
            assert result.balanced, f"{day}: {result}"

        # One clean row per meter and interval, over all days.
        assert (
            con.execute(
                """SELECT meter_id, reading_ts, count(*) FROM standardized_readings
               GROUP BY ALL HAVING count(*) > 1"""
            ).fetchall()
            == []
        )

        # A measured row is its source row's value in kW, exactly.
        measured = con.execute(
            """SELECT source_file, source_line, kw FROM standardized_readings
               WHERE quality = 'measured'"""
        ).fetchall()
        for source_file, source_line, kw in measured:
            assert kw == expected_kw[(source_file, source_line)], (source_file, source_line)

        # A filled or missing row comes from no raw row, or from one whose value was missing;
        # a filled row repeats the kW of the meter's latest measured reading before it, a
        # missing row has none.
        assert (
            con.execute(
                """SELECT s.source_file, s.source_line, r.energy_value
               FROM standardized_readings s JOIN raw_readings r USING (source_file, source_line)
               WHERE s.quality <> 'measured' AND NOT list_contains(?, trim(r.energy_value))""",
                [sorted({m.strip() for m in MISSING_MARKERS})],
            ).fetchall()
            == []
        )
        assert con.execute(
            """SELECT count(*) FROM standardized_readings
               WHERE (quality <> 'measured' AND NOT missing_value)
                  OR (quality = 'missing' AND kw IS NOT NULL)"""
        ).fetchone() == (0,)
        wrong_fills = con.execute(
            """SELECT f.meter_id, f.reading_ts, f.kw, m.kw FROM standardized_readings f
               ASOF JOIN (SELECT * FROM standardized_readings WHERE quality = 'measured') m
                 ON f.meter_id = m.meter_id AND f.reading_ts > m.reading_ts
               WHERE f.quality = 'filled' AND f.kw IS DISTINCT FROM m.kw"""
        ).fetchall()
        assert wrong_fills == []
