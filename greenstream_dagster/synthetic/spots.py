"""Where a row-level defect may go, so that DESIGN.md leaves only one possible outcome.

An event sits on a normal meter between 02:00 and 22:00 UTC, inside one export and one UTC day,
at least 26 hours from any other event of that meter (``Plan.free``), and on readings that are
all present, with a measured reading right before and right after it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from greenstream_dagster.synthetic.expectations import is_calm, window_slots
from greenstream_dagster.synthetic.fleet import Block
from greenstream_dagster.synthetic.plan import ORIGINAL, Plan, RowRef, Truth

# Events stay between these UTC hours so a run and its neighbours sit in one export and one day.
FIRST_HOUR, LAST_HOUR = 2, 22


@dataclass(frozen=True)
class Spot:
    """Where an event goes: ``slots`` consecutive readings of one meter from ``slot`` on."""

    block: Block
    row: int
    meter: int
    day: int
    slot: int
    slots: int

    @property
    def interval(self) -> int:
        return self.block.interval

    def minute(self, k: int = 0) -> int:
        return (self.slot + k) * self.interval

    @property
    def span(self) -> tuple[int, int]:
        return self.minute(-1), self.minute(self.slots + 1)

    def ref(self, kind: str, k: int = 0) -> RowRef:
        return RowRef(kind, self.day, self.meter, self.minute(k))

    def truth(
        self,
        cls: str,
        expected: str,
        detail: str = "",
        k: int = 0,
        row: str | None = ORIGINAL,
        survivor: str | None = None,
    ) -> Truth:
        """The ground truth of the event's ``k``-th reading; ``row`` and ``survivor`` say in
        which file its row and the row that wins over it are (None: not in any file)."""
        return Truth(
            cls,
            expected,
            self.meter,
            self.minute(k),
            self.day,
            detail,
            self.ref(row, k) if row else None,
            self.ref(survivor, k) if survivor else None,
        )


def pick(plan: Plan, rng: np.random.Generator, slots: int | Callable[[int], int]) -> Spot | None:
    """A random free place for ``slots`` readings (or a function of the meter's interval)."""
    if plan.n_meters == 0:
        return None
    block, row = plan.locate(int(rng.integers(plan.n_meters)))
    meter = int(block.meters[row])
    day = int(rng.integers(plan.timeline.days))
    i = block.interval
    slots = slots(i) if callable(slots) else slots
    base = plan.timeline.day_start(day)
    first = -(-(base + FIRST_HOUR * 60) // i) + 1
    last = (base + LAST_HOUR * 60) // i - slots - 1
    if meter in plan.faulty or last < first:
        return None
    spot = Spot(block, row, meter, day, int(rng.integers(first, last + 1)), slots)
    if (
        not plan.free(meter, spot.span)
        or not block.ok[row, spot.slot - 1 : spot.slot + slots + 1].all()
    ):
        return None
    return spot


def calm_around(spot: Spot) -> bool:
    """With the event's readings lost, the readings before and after it stay measured, so the
    run of missing intervals is exactly the event and follows a measured reading."""
    i = spot.interval
    lo = max(0, spot.slot - 1 - window_slots(i))
    x = spot.block.kw(spot.row, lo, spot.slot + spot.slots + 1)
    k = spot.slot - lo
    x[k : k + spot.slots] = np.nan
    return is_calm(x, k - 1, i) and is_calm(x, k + spot.slots, i)


def lose(plan: Plan, spot: Spot, absent: bool = False) -> None:
    sl = slice(spot.slot, spot.slot + spot.slots)
    spot.block.ok[spot.row, sl] = False
    if absent:
        spot.block.written[spot.row, sl] = False
    plan.occupy(spot.meter, spot.span)
