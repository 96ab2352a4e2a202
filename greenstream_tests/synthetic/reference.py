"""A slow, row-by-row reading of DESIGN.md, independent of the generator, to check its ground truth.

Only what generated files need: steps 1 to 8 with the source time zone UTC and every file
arriving long after its data, in the order given; then the section 3 fault rules over each
meter's measured readings (the rule functions themselves are tested on hand-built cases).
"""

from __future__ import annotations

import bisect
import datetime as dt
import gzip
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from greenstream_dagster.rules import codes
from greenstream_dagster.synthetic.expectations import near_zero_days, zero_total_days

ARRIVAL = dt.datetime(2090, 1, 1, tzinfo=dt.UTC)
EARLY = (
    codes.MALFORMED_ROW,
    codes.MISSING_METER_ID,
    codes.INVALID_TIMESTAMP,
    codes.FUTURE_TIMESTAMP,
    codes.INVALID_VALUE,
    codes.UNKNOWN_UNIT,
)


@dataclass
class Row:
    file: str
    line: int
    arrival: int
    meter: str
    ts: dt.datetime
    kw: float | None


@dataclass
class Outcome:
    quarantine: dict[tuple[str, int], str] = field(default_factory=dict)
    survivors: dict[tuple[str, int], Row] = field(default_factory=dict)
    quality: dict[tuple[str, dt.datetime], str] = field(default_factory=dict)
    zscores: dict[tuple[str, int], tuple[float, int]] = field(default_factory=dict)
    flags: set[tuple[str, str, dt.date]] = field(default_factory=set)
    first_day: dict[str, dt.date] = field(default_factory=dict)


def read_lines(path: Path) -> list[str]:
    """Physical lines of a file, header first, without BOM and line ends."""
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    text = data.decode("utf-8-sig")
    return [line.removesuffix("\r") for line in text.split("\n")[:-1]]


def parse_timestamp(text: str) -> dt.datetime | None:
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def run(files: list[Path]) -> Outcome:
    out = Outcome()
    versions: dict[tuple[str, dt.datetime], list[Row]] = defaultdict(list)
    for arrival, path in enumerate(files):
        early = []
        for line, text in enumerate(read_lines(path)[1:], start=2):
            row, reason = _steps_1_to_3(path.name, line, arrival, text)
            if reason:
                early.append((line, reason))
            else:
                versions[(row.meter, row.ts)].append(row)
                day = row.ts.date()
                out.first_day[path.name] = min(out.first_day.get(path.name, day), day)
        for line, reason in early:
            out.quarantine[(path.name, line)] = reason
    by_meter: dict[str, list[Row]] = defaultdict(list)
    for rows in versions.values():  # step 4
        present = [r for r in rows if r.kw is not None]
        winner = max(present or rows, key=lambda r: (r.arrival, r.line))
        for r in rows:
            if r is not winner:
                out.quarantine[(r.file, r.line)] = codes.DUPLICATE
        out.survivors[(winner.file, winner.line)] = winner
        by_meter[winner.meter].append(winner)
    for meter, rows in by_meter.items():
        _meter(out, meter, sorted(rows, key=lambda r: r.ts))
    return out


def _steps_1_to_3(name: str, line: int, arrival: int, text: str) -> tuple[Row | None, str]:
    fields = text.split(",")
    if len(fields) != 4:
        return None, codes.MALFORMED_ROW
    meter, stamp, value, unit = fields
    if not meter.strip():
        return None, codes.MISSING_METER_ID
    ts = parse_timestamp(stamp)
    if ts is None:
        return None, codes.INVALID_TIMESTAMP
    if ts > ARRIVAL:
        return None, codes.FUTURE_TIMESTAMP
    value = value.strip()
    kw = None if value in codes.MISSING_MARKERS else number(value)
    if kw is None and value not in codes.MISSING_MARKERS:
        return None, codes.INVALID_VALUE
    unit = unit.strip().upper()
    if kw is not None and unit not in (codes.UNIT_WATT, codes.UNIT_KILOWATT):
        return None, codes.UNKNOWN_UNIT
    if kw is not None and unit == codes.UNIT_WATT:
        kw = kw / 1000
    return Row(name, line, arrival, meter.strip(), ts, kw), ""


def _meter(out: Outcome, meter: str, rows: list[Row]) -> None:
    """Steps 6 to 8 and the fault rules for one meter's surviving rows, in time order."""
    spacing = Counter(
        int((b.ts - a.ts).total_seconds() // 60) for a, b in zip(rows, rows[1:], strict=False)
    )
    interval = min(spacing, key=lambda m: (-spacing[m], m)) if spacing else 15
    passed = [r for r in rows if r.kw is not None and 0 <= r.kw <= 10]
    for r in rows:
        if r.kw is not None and r.kw < 0:
            out.quarantine[(r.file, r.line)] = codes.NEGATIVE_VALUE
        elif r.kw is not None and r.kw > 10:
            out.quarantine[(r.file, r.line)] = codes.ABOVE_MAX
    times = [r.ts for r in passed]
    values = np.array([r.kw for r in passed])
    measured = {}
    for k, r in enumerate(passed):  # step 7
        lo = bisect.bisect_left(times, r.ts - dt.timedelta(hours=24))
        window = values[lo:k]
        if len(window) >= 12 and window.std(ddof=1) > 0:
            z = (r.kw - window.mean()) / window.std(ddof=1)
            out.zscores[(r.file, r.line)] = (float(z), len(window))
            if abs(z) > 3:
                out.quarantine[(r.file, r.line)] = codes.OUTLIER_ZSCORE
                continue
        measured[r.ts] = r.kw
    step = dt.timedelta(minutes=interval)
    previous, run = None, []
    slot = rows[0].ts
    while slot <= rows[-1].ts + step:  # step 8, one slot past the end closes the last run
        if slot in measured or slot > rows[-1].ts:
            after_measured = previous is not None
            quality = (
                codes.QUALITY_FILLED
                if after_measured and len(run) * interval < 60
                else codes.QUALITY_MISSING
            )
            for missing in run:
                out.quality[(meter, missing)] = quality
            previous, run = slot, []
        else:
            run.append(slot)
        slot += step
    readings = sorted(measured.items())
    for day in near_zero_days(readings, step):
        out.flags.add((meter, codes.RULE_NEAR_ZERO, day))
    energy: dict[dt.date, float] = defaultdict(float)
    for ts, kw in readings:
        energy[ts.date()] += kw * interval / 60
    for day in zero_total_days(dict(energy)):
        out.flags.add((meter, codes.RULE_ZERO_DAILY_TOTAL, day))
