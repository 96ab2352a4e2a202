"""Export files: a collector's plan for a day turned into bytes, and the line of each planned row.

Lines are built column-wise with Arrow string kernels and the file body is the concatenated
string buffer, so writing costs no Python work per reading.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from greenstream_dagster.synthetic.layout import (
    TS_NAIVE,
    TS_OFFSET,
    TS_ZULU,
    Timeline,
    format_timestamp,
    format_value,
    meter_id,
)
from greenstream_dagster.synthetic.plan import COPY, ORIGINAL, RESEND, Plan, RowRef, Truth

BOM = b"\xef\xbb\xbf"
GZIP_LEVEL = 6
# Unit spellings and how often each is used; all are valid (case-insensitive, trimmed).
KW_SPELLINGS = {"kW": 0.90, "kw": 0.05, " KW ": 0.03, "KW": 0.02}
W_SPELLINGS = {"W": 0.95, "w": 0.03, " W": 0.02}

# Largest milli-kW a normal row holds (spikes stop at 9.5 kW); defects bring their own text.
MAX_VALUE = 9500

OFFSET_TIMESTAMP = "offset_timestamp"
NORMALIZED = "normalized"


@dataclass
class DayOutput:
    files: list[Path] = field(default_factory=list)
    rows: int = 0
    lines: dict[RowRef, tuple[str, int]] = field(default_factory=dict)
    truths: list[Truth] = field(default_factory=list)
    days: set[int] = field(default_factory=set)


@dataclass(frozen=True)
class Texts:
    """Every text a normal field can take, built once so rows only need a lookup (``take``)."""

    step: int  # minutes between two entries of the timestamp tables
    timestamps: dict[str, pa.Array]  # per collector style
    values: pa.Array  # kW texts for 0..MAX_VALUE milli-kW, then the W texts

    @classmethod
    def build(cls, timeline: Timeline, step: int) -> Texts:
        minutes = range(0, timeline.total_minutes, step)
        timestamps = {
            style: pa.array([format_timestamp(timeline.utc(m), style) for m in minutes])
            for style in (TS_ZULU, TS_NAIVE, TS_OFFSET)
        }
        kw = [format_value(v, False) for v in range(MAX_VALUE + 1)]
        w = [format_value(v, True) for v in range(MAX_VALUE + 1)]
        return cls(step, timestamps, pa.array(kw + w))


def write_day(out_dir: Path, plan: Plan, day: int, seed: int, texts: Texts, submit) -> DayOutput:
    """Write the collector's export of ``day`` (and its resend, if any) through ``submit``.

    ``submit(function, *args)`` runs the compression and disk write, possibly on another
    thread, while the next file is being built.
    """
    out = DayOutput()
    collector, timeline = plan.collector, plan.timeline
    total = timeline.total_minutes
    meters, minutes, milli, watts = _rows(plan, day)
    keys = meters * total + minutes
    eol = "\r\n" if collector.crlf(day) else "\n"
    columns = _columns(plan, day, seed, meters, minutes, milli, watts, texts, eol)
    lines = pc.binary_join_element_wise(*columns, ",")
    order, place, copies = _order(plan, day, keys, total)
    changed = _changed_lines(plan, day, keys, total, columns, eol)
    if changed:
        lines = pa.concat_arrays([lines, pa.array([text for _, text in changed])])
        order[[place(pos) for pos, _ in changed]] = len(keys) + np.arange(len(changed))
    body = _buffer(pc.take(lines, pa.array(order)))

    name = collector.file_name(timeline, day)
    head = (BOM if collector.bom(day) else b"") + (collector.header + eol).encode()
    out.files.append(out_dir / name)
    submit(_write, out_dir / name, head + body, collector.gzip)
    out.rows += len(order)
    if len(minutes):
        out.days.update({timeline.day_of(minutes.min()), timeline.day_of(minutes.max())})
    wanted = sorted(
        {(r.meter, r.minute) for r in plan_refs(plan) if r.kind == ORIGINAL and r.day == day}
    )
    for (meter, minute), pos in zip(wanted, _positions(keys, wanted, total), strict=True):
        out.lines[RowRef(ORIGINAL, day, meter, minute)] = (name, place(pos) + 2)
    for (meter, minute), pos in copies.items():
        out.lines[RowRef(COPY, day, meter, minute)] = (name, pos + 2)
    if collector.ts_style == TS_OFFSET and len(keys):
        _offset_samples(out, plan, day, name, keys, place, texts)
    _write_resend(out_dir, plan, day, out, submit)
    return out


def plan_refs(plan: Plan) -> list[RowRef]:
    """Every row the plan's ground truth points at."""
    return [r for t in plan.truths for r in (t.row, t.survivor) if r is not None]


def _rows(plan: Plan, day: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every written reading of the day's export, sorted by meter then time."""
    lo, hi = plan.collector.file_minutes(plan.timeline, day)
    parts = []
    for b in plan.blocks:
        j0, j1 = -(-lo // b.interval), -(-hi // b.interval)
        row, slot = np.nonzero(b.written[:, j0:j1])  # meter by meter, in time order
        slot += j0
        parts.append((b.meters[row], slot * b.interval, b.milli[row, slot], b.watts[row]))
    meters, minutes, milli, watts = (np.concatenate(p) for p in zip(*parts, strict=True))
    order = np.argsort(meters, kind="stable")  # each meter sits in one block: time order stays
    return (
        meters[order].astype(np.int64),
        minutes[order].astype(np.int64),
        milli[order],
        watts[order],
    )


def _columns(plan, day, seed, meters, minutes, milli, watts, texts: Texts, eol) -> list[pa.Array]:
    """meter_id, timestamp, energy_value and energy_unit (with the line end) of every row."""
    if len(milli) and (milli.min() < 0 or milli.max() > MAX_VALUE):
        raise AssertionError("a normal reading outside the text table")
    ids = pa.array([meter_id(m) for m in plan.collector.meters])
    rng = np.random.default_rng([seed, 2, plan.collector.index, day])
    draw = rng.random(len(meters))
    spellings = list(KW_SPELLINGS) + list(W_SPELLINGS)
    unit = np.where(
        watts,
        len(KW_SPELLINGS) + _draw(draw, W_SPELLINGS.values()),
        _draw(draw, KW_SPELLINGS.values()),
    )
    return [
        pc.take(ids, pa.array(meters - plan.collector.first_meter)),
        pc.take(texts.timestamps[plan.collector.ts_style], pa.array(minutes // texts.step)),
        pc.take(texts.values, pa.array(milli.astype(np.int64) + watts * (MAX_VALUE + 1))),
        pc.take(pa.array([s + eol for s in spellings]), pa.array(unit)),
    ]


def _draw(uniform: np.ndarray, weights) -> np.ndarray:
    cumulative = np.cumsum(list(weights))
    return np.minimum(
        np.searchsorted(cumulative / cumulative[-1], uniform, side="right"), len(cumulative) - 1
    )


def _positions(keys: np.ndarray, wanted, total: int) -> np.ndarray:
    """Index of each (meter, minute) among the sorted row keys."""
    want = np.asarray([m * total + t for m, t, *_ in wanted], dtype=np.int64)
    pos = np.searchsorted(keys, want)
    if len(want) and not np.array_equal(keys[np.minimum(pos, len(keys) - 1)], want):
        raise AssertionError("a planned row is not in its export")
    return pos


def _changed_lines(plan, day, keys, total, columns, eol) -> list[tuple[int, str]]:
    """The lines a defect rewrites, as (row index, full new line)."""
    overrides = plan.overrides.get(day, {})
    changed = []
    for (_, change), pos in zip(overrides.items(), _positions(keys, overrides, total), strict=True):
        if "line" in change:
            changed.append((int(pos), change["line"] + eol))
            continue
        fields = [c[int(pos)].as_py() for c in columns]
        fields[3] = fields[3][: -len(eol)]
        for k, name in enumerate(("meter", "ts", "value", "unit")):
            fields[k] = change.get(name, fields[k])
        changed.append((int(pos), ",".join(fields) + eol))
    return changed


def _order(plan: Plan, day: int, keys: np.ndarray, total: int):
    """Physical order of the lines once repeated rows are copied further down.

    Returns the order (row indices, one per physical line), a function from a row index to its
    physical position, and the physical position of each copy.
    """
    n = len(keys)
    repeats = plan.repeats.get(day, [])
    if not repeats:
        return np.arange(n), int, {}
    src = _positions(keys, repeats, total)
    ins = np.minimum(src + np.array([later for _, _, later in repeats]) + 1, n)
    by = np.lexsort((src, ins))
    src, ins = src[by], ins[by]
    order = np.insert(np.arange(n), ins, src)
    copies = {
        (int(keys[s] // total), int(keys[s] % total)): int(i) + k
        for k, (s, i) in enumerate(zip(src, ins, strict=True))
    }
    return order, lambda p: int(p) + int(np.searchsorted(ins, p, side="right")), copies


def _buffer(lines: pa.Array) -> bytes:
    """The concatenated text of a string array, straight from its data buffer."""
    if len(lines) == 0:
        return b""
    lines = lines.combine_chunks() if isinstance(lines, pa.ChunkedArray) else lines
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)
    start, end = int(offsets[lines.offset]), int(offsets[lines.offset + len(lines)])
    return memoryview(lines.buffers()[2])[start:end].tobytes()


def _write(path: Path, data: bytes, compress: bool) -> Path:
    path.write_bytes(gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0) if compress else data)
    return path


def _offset_samples(
    out: DayOutput, plan: Plan, day: int, name: str, keys, place, texts: Texts
) -> None:
    """Ground truth for the +01:00 export: its first row (still the previous UTC day) and the
    same meter's first row of the UTC day, both to be accepted and normalised to UTC."""
    total = plan.timeline.total_minutes
    meter = int(keys[0] // total)
    first_of_day = int(np.searchsorted(keys, meter * total + plan.timeline.day_start(day)))
    for pos in (0, first_of_day):
        if pos >= len(keys) or keys[pos] // total != meter:
            continue
        minute = int(keys[pos] % total)
        ref = RowRef(ORIGINAL, day, meter, minute)
        out.lines[ref] = (name, int(place(pos)) + 2)
        stamp = texts.timestamps[TS_OFFSET][minute // texts.step].as_py()
        detail = f"written={stamp}"
        out.truths.append(
            Truth(
                OFFSET_TIMESTAMP,
                NORMALIZED,
                meter,
                minute,
                plan.timeline.day_of(minute),
                detail,
                ref,
            )
        )


def _write_resend(out_dir: Path, plan: Plan, day: int, out: DayOutput, submit) -> None:
    """The collector's second delivery of the day: readings it re-sent, landing after the first."""
    rows = sorted(plan.resends.get(day, []))
    if not rows:
        return
    watts = {int(m): bool(w) for b in plan.blocks for m, w in zip(b.meters, b.watts, strict=True)}
    name = plan.collector.file_name(plan.timeline, day, resend=1)
    style = plan.collector.ts_style
    text = [plan.collector.header]
    for k, (meter, minute, value) in enumerate(rows):
        ts = format_timestamp(plan.timeline.utc(minute), style)
        text.append(f"{meter_id(meter)},{ts},{value},{'W' if watts[meter] else 'kW'}")
        out.lines[RowRef(RESEND, day, meter, minute)] = (name, k + 2)
    out.files.append(out_dir / name)
    submit(_write, out_dir / name, ("\n".join(text) + "\n").encode(), plan.collector.gzip)
    out.rows += len(rows)
