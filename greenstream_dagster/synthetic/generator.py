"""``greenstream generate``: head-end exports for N meters and D days, plus their ground truth.

What the ground truth promises holds under these assumptions, which the pipeline's tests must
share:

- files land in sorted name order (that is the order of ``GenerationResult.files``), each one
  arriving after the last reading it holds, so only the year-2099 rows are future_timestamp;
- the contract's default settings (source time zone UTC, z threshold 3 over 24 h with at least
  12 readings, 10 kW maximum, 60 minutes of filling, near-zero 0.01 kW over 24 h, 3 zero days).

``ground_truth.csv`` has one line per expected effect, sorted by day, file and line:

- ``defect``: the injected class (``spike``, ``null_value``, ``outage_gap``, ...; see
  ``defects.py``, ``faults.py``, and ``offset_timestamp`` for +01:00 rows that must be accepted);
- ``expected``: a reason code for a quarantined row, ``filled`` / ``missing`` for an interval of
  a NULL run or a gap, a fault rule on a flagged day, ``normalized`` for the offset samples;
- ``meter_id``, ``timestamp_utc``: the reading concerned (also for a row whose own text has lost
  them, such as an empty meter_id, a malformed line or an unparseable timestamp; a year-2099 row
  gives the reading's real time and the written one in ``detail``); empty for fault flags;
- ``file``, ``line``: the physical line (header = 1) of the row concerned; empty for absent rows
  and fault flags;
- ``day``: the UTC day of the effect: a quarantined row's partition day (its file's day for rows
  rejected by steps 1 to 3), a flag's day (one line per flagged day);
- ``detail``: ``key=value`` pairs: the survivor of a duplicate (``survivor=file:line``), the z of a
  spike, the run length of a gap, and for a reading lost to steps 1 to 7 the quality its interval
  gets in the clean data (``interval=filled``).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from greenstream_dagster.synthetic import defects as row_defects
from greenstream_dagster.synthetic import faults
from greenstream_dagster.synthetic.fleet import build_blocks, meter_intervals, watt_meters
from greenstream_dagster.synthetic.layout import (
    MINUTES_PER_DAY,
    Collector,
    Timeline,
    collectors_for,
    iso_utc,
    meter_id,
)
from greenstream_dagster.synthetic.plan import Plan, Truth
from greenstream_dagster.synthetic.writer import NORMALIZED, Texts, write_day

GROUND_TRUTH = "ground_truth.csv"
WRITER_THREADS = 2
SUMMARY = "generation.json"
GROUND_TRUTH_COLUMNS = (
    "defect",
    "expected",
    "meter_id",
    "timestamp_utc",
    "file",
    "line",
    "day",
    "detail",
)


@dataclass(frozen=True)
class GenerationResult:
    files: list[Path]  # in landing order (= sorted by name)
    ground_truth: Path
    summary: Path
    rows: int  # data lines written, over all files
    defects: int  # ground-truth lines that describe an injected defect (not the offset samples)
    counts: dict[str, int] = field(default_factory=dict)  # ground-truth lines per defect class
    days: list[dt.date] = field(default_factory=list)  # UTC days the files touch


def generate(
    out_dir: Path,
    meters: int,
    days: int,
    start: dt.date,
    interval_minutes: int = 15,
    seed: int = 0,
    defects: bool = True,
) -> GenerationResult:
    """Write the exports, ``ground_truth.csv`` and ``generation.json`` into ``out_dir``.

    Same arguments, same bytes: every random draw comes from a generator seeded by ``seed`` and
    the collector, day or meter group it is for.
    """
    _validate(meters, days, interval_minutes)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    timeline = Timeline(start, days)
    collectors = collectors_for(meters)
    rng = np.random.default_rng([seed, 0])
    intervals = meter_intervals(rng, meters, interval_minutes)
    watts = watt_meters(rng, meters)
    readings = [int((days * MINUTES_PER_DAY // intervals[c.meters]).sum()) for c in collectors]
    events = _event_counts(collectors, readings, meters, days) if defects else {}
    texts = Texts.build(timeline, math.gcd(interval_minutes, 30))

    files, rows, touched, truth_rows = [], 0, set(), []
    placed: Counter[str] = Counter()
    # Compressing and writing a file overlaps with building the next one (zlib and file writes
    # release the GIL); a file's bytes do not depend on when it is written.
    with ThreadPoolExecutor(max_workers=WRITER_THREADS) as pool:
        pending = []

        def submit(fn, *args):
            pending.append(pool.submit(fn, *args))

        for c in collectors:
            plan = Plan(timeline, c, build_blocks(c, timeline, intervals, watts, seed))
            if defects:
                rng = np.random.default_rng([seed, 3, c.index])
                placed.update(faults.inject_faults(plan, rng, events[c.index][0]))
                placed.update(row_defects.inject_defects(plan, rng, events[c.index][1]))
            lines, extra = {}, []
            for day in range(days):
                out = write_day(out_dir, plan, day, seed, texts, submit)
                files += out.files
                rows += out.rows
                touched |= out.days
                lines.update(out.lines)
                extra += out.truths
            truth_rows += [_resolve(t, timeline, lines) for t in plan.truths + extra]
        for future in pending:
            future.result()

    truth_rows.sort(
        key=lambda r: (
            r["day"],
            r["file"],
            int(r["line"] or 0),
            r["meter_id"],
            r["timestamp_utc"],
            r["defect"],
            r["expected"],
        )
    )
    counts = dict(sorted(Counter(r["defect"] for r in truth_rows).items()))
    n_defects = sum(1 for r in truth_rows if r["expected"] != NORMALIZED)
    truth_path = _write_truth(out_dir / GROUND_TRUTH, truth_rows)
    files = sorted(files, key=lambda p: p.name)
    day_list = sorted(timeline.date(d) for d in touched)
    summary = {
        "parameters": {
            "meters": meters,
            "days": days,
            "start": start.isoformat(),
            "interval_minutes": interval_minutes,
            "seed": seed,
            "defects": defects,
        },
        "files": [p.name for p in files],
        "rows": rows,
        "days_touched": [d.isoformat() for d in day_list],
        "defects": n_defects,
        "ground_truth_rows": counts,
        "events_placed": dict(sorted(placed.items())),
        "events_requested": _requested(events),
        "rates": {
            "events_per_reading": row_defects.RATES,
            "fault_meter_share": {
                faults.NEAR_ZERO_STRETCH: faults.NEAR_ZERO_METER_SHARE,
                faults.STUCK_AT_ZERO: faults.STUCK_AT_ZERO_METER_SHARE,
            },
        },
        "meters_by_interval": {
            str(k): int(v) for k, v in sorted(Counter(intervals.tolist()).items())
        },
        "watt_meters": int(watts.sum()),
        "collectors": [
            {"name": c.name, "meters": c.n_meters, "timestamps": c.ts_style, "gzip": c.gzip}
            for c in collectors
        ],
    }
    summary_path = out_dir / SUMMARY
    summary_path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return GenerationResult(files, truth_path, summary_path, rows, n_defects, counts, day_list)


def _validate(meters: int, days: int, interval_minutes: int) -> None:
    if meters < 1:
        raise ValueError(f"meters must be at least 1, got {meters}")
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    if interval_minutes < 1 or 60 % interval_minutes:
        raise ValueError(
            f"interval_minutes must divide 60 (5, 10, 15, 20, 30, 60, ...), got {interval_minutes}"
        )


def _event_counts(collectors: list[Collector], readings: list[int], meters: int, days: int):
    """Per collector: (fault meters per fault, events per row-level class), from the rates."""
    single = [c.single_day_files for c in collectors]
    wanted, weights = {}, {}
    for cls, share in (
        (faults.NEAR_ZERO_STRETCH, faults.NEAR_ZERO_METER_SHARE),
        (faults.STUCK_AT_ZERO, faults.STUCK_AT_ZERO_METER_SHARE),
    ):
        wanted[cls] = max(1, round(share * meters)) if days >= faults.MIN_DAYS[cls] else 0
        weights[cls] = [c.n_meters if s else 0 for c, s in zip(collectors, single, strict=True)]
    total = sum(readings)
    for cls, rate in row_defects.RATES.items():
        wanted[cls] = max(1, round(rate * total))
        weights[cls] = [
            r if (s or cls not in row_defects.SINGLE_DAY_ONLY) else 0
            for r, s in zip(readings, single, strict=True)
        ]
    shares = _split(wanted, weights)
    fault_classes = (faults.NEAR_ZERO_STRETCH, faults.STUCK_AT_ZERO)
    return {
        c.index: (
            {k: shares[k][i] for k in fault_classes},
            {k: shares[k][i] for k in row_defects.RATES},
        )
        for i, c in enumerate(collectors)
    }


def _split(wanted: dict[str, int], weights: dict[str, list[int]]) -> dict[str, list[int]]:
    """Each class's count shared in proportion to its weights.

    Whole parts first; the odd ones left go to whichever collector is furthest behind its fair
    share over all classes so far, so small data sets spread their few defects over collectors
    instead of piling them on the first.
    """
    behind = [0.0] * len(next(iter(weights.values()), []))
    shares = {}
    for cls, count in wanted.items():
        w = weights[cls]
        total = sum(w)
        if total == 0:
            shares[cls] = [0] * len(w)
            continue
        exact = [count * x / total for x in w]
        out = [math.floor(x) for x in exact]
        behind = [b + e - o for b, e, o in zip(behind, exact, out, strict=True)]
        eligible = [k for k in range(len(w)) if w[k] > 0]
        for _ in range(count - sum(out)):
            k = max(eligible, key=lambda k: (behind[k], -k))
            out[k] += 1
            behind[k] -= 1
        shares[cls] = out
    return shares


def _requested(events) -> dict[str, int]:
    total: Counter[str] = Counter()
    for fault_counts, class_counts in events.values():
        total.update(fault_counts)
        total.update(class_counts)
    return dict(sorted(total.items()))


def _resolve(t: Truth, timeline: Timeline, lines: dict) -> dict[str, str]:
    file, line = lines[t.row] if t.row is not None else ("", "")
    detail = t.detail
    if t.survivor is not None:
        s_file, s_line = lines[t.survivor]
        detail = ";".join(p for p in (detail, f"survivor={s_file}:{s_line}") if p)
    return {
        "defect": t.defect,
        "expected": t.expected,
        "meter_id": meter_id(t.meter) if t.meter is not None else "",
        "timestamp_utc": iso_utc(timeline.utc(t.minute)) if t.minute is not None else "",
        "file": file,
        "line": str(line),
        "day": timeline.date(t.day).isoformat(),
        "detail": detail,
    }


def _write_truth(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=GROUND_TRUTH_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path
