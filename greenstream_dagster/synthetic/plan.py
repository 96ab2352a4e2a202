"""What one collector will export: its readings, the text changes defects make, the ground truth.

Defects are planned on the readings first and written afterwards, so the writer only has to
turn the plan into bytes and tell which physical line each planned row landed on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from greenstream_dagster.synthetic.fleet import Block
from greenstream_dagster.synthetic.layout import (
    Collector,
    Timeline,
    format_timestamp,
    format_value,
    meter_id,
)

# Where a planned row lands: the day's export, the copy of a repeated row in it, or its resend.
ORIGINAL = "original"
COPY = "copy"
RESEND = "resend"

# Two row-level defects of one meter are at least this far apart (end of one to start of the
# next), more than the 24 h z-score window, so they never change each other's expectation.
MIN_SPACING_MINUTES = 26 * 60


@dataclass(frozen=True)
class RowRef:
    kind: str
    day: int
    meter: int
    minute: int


@dataclass
class Truth:
    """One ground-truth line before file names and line numbers are known."""

    defect: str
    expected: str
    meter: int | None
    minute: int | None
    day: int
    detail: str = ""
    row: RowRef | None = None
    survivor: RowRef | None = None


@dataclass
class Plan:
    timeline: Timeline
    collector: Collector
    blocks: list[Block]
    # day -> (meter, minute) -> field -> replacement text; field "line" replaces the whole line
    overrides: dict[int, dict[tuple[int, int], dict[str, str]]] = field(default_factory=dict)
    # day -> (meter, minute, rows later): the row is written again that many rows further on
    repeats: dict[int, list[tuple[int, int, int]]] = field(default_factory=dict)
    # day -> (meter, minute, value text): rows of the day's resend file
    resends: dict[int, list[tuple[int, int, str]]] = field(default_factory=dict)
    truths: list[Truth] = field(default_factory=list)
    faulty: set[int] = field(default_factory=set)
    busy: dict[int, list[tuple[int, int]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._ends = np.cumsum([len(b.meters) for b in self.blocks])

    @property
    def n_meters(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def locate(self, k: int) -> tuple[Block, int]:
        """The ``k``-th meter of the collector, as (block, row)."""
        b = int(np.searchsorted(self._ends, k, side="right"))
        start = int(self._ends[b - 1]) if b else 0
        return self.blocks[b], k - start

    def free(self, meter: int, span: tuple[int, int]) -> bool:
        lo, hi = span
        return all(
            lo - end >= MIN_SPACING_MINUTES or start - hi >= MIN_SPACING_MINUTES
            for start, end in self.busy.get(meter, [])
        )

    def occupy(self, meter: int, span: tuple[int, int]) -> None:
        self.busy.setdefault(meter, []).append(span)

    def fields(self, block: Block, row: int, slot: int) -> dict[str, str]:
        """The text a reading would be written with, before any defect touches it."""
        watts = bool(block.watts[row])
        minute = slot * block.interval
        return {
            "meter": meter_id(int(block.meters[row])),
            "ts": format_timestamp(self.timeline.utc(minute), self.collector.ts_style),
            "value": format_value(int(block.milli[row, slot]), watts),
            "unit": "W" if watts else "kW",
        }

    def override(self, day: int, meter: int, minute: int, /, **changes: str) -> None:
        self.overrides.setdefault(day, {}).setdefault((meter, minute), {}).update(changes)
