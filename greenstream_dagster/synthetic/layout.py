"""How the synthetic head-end system is laid out: timeline, collectors, file names, text formats.

Every generated reading sits on one timeline counted in minutes from ``Timeline.origin``, an hour
before the first UTC day, because the collector that writes local ``+01:00`` time exports local
days, and its first local day starts at 23:00Z the evening before.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

MINUTES_PER_DAY = 1440
# The +01:00 collector's local day starts this many minutes before the UTC day.
LOCAL_OFFSET_MINUTES = 60

TS_ZULU = "zulu"  # 2026-11-01T00:15:00Z
TS_NAIVE = "naive"  # 2026-11-01 00:15:00 (UTC, the contract's default source time zone)
TS_OFFSET = "offset"  # 2026-11-01T01:15:00+01:00 (local time with its offset)

HEADER = "meter_id,timestamp,energy_value,energy_unit"
# The +01:00 collector is another vendor's system: its header is spelled differently, which the
# contract allows (header names match case-insensitively).
HEADER_OFFSET = "Meter_ID,Timestamp,Energy_Value,Energy_Unit"

MIN_COLLECTORS = 4
MAX_COLLECTORS = 16
METERS_PER_COLLECTOR = 4000
OFFSET_COLLECTOR = 2  # c03, when there are at least three collectors


@dataclass(frozen=True)
class Timeline:
    start: dt.date
    days: int

    @property
    def origin(self) -> dt.datetime:
        midnight = dt.datetime.combine(self.start, dt.time(), tzinfo=dt.UTC)
        return midnight - dt.timedelta(minutes=LOCAL_OFFSET_MINUTES)

    @property
    def total_minutes(self) -> int:
        return self.days * MINUTES_PER_DAY + LOCAL_OFFSET_MINUTES

    def day_start(self, day: int) -> int:
        """Minute of 00:00Z of UTC day ``day`` (0 = the start date)."""
        return LOCAL_OFFSET_MINUTES + day * MINUTES_PER_DAY

    def utc(self, minute: int) -> dt.datetime:
        return self.origin + dt.timedelta(minutes=int(minute))

    def date(self, day: int) -> dt.date:
        return self.start + dt.timedelta(days=day)

    def day_of(self, minute: int) -> int:
        """UTC day index of a minute; -1 is the evening before the start date."""
        return (int(minute) - LOCAL_OFFSET_MINUTES) // MINUTES_PER_DAY


@dataclass(frozen=True)
class Collector:
    """One head-end collector: a contiguous block of meters and the way its exports look."""

    index: int
    first_meter: int
    n_meters: int
    ts_style: str
    gzip: bool

    @property
    def name(self) -> str:
        return f"c{self.index + 1:02d}"

    @property
    def meters(self) -> range:
        return range(self.first_meter, self.first_meter + self.n_meters)

    @property
    def single_day_files(self) -> bool:
        """Its files hold one UTC day, so rows without a usable timestamp have an obvious day."""
        return self.ts_style != TS_OFFSET

    @property
    def header(self) -> str:
        return HEADER_OFFSET if self.ts_style == TS_OFFSET else HEADER

    def file_name(self, timeline: Timeline, day: int, resend: int = 0) -> str:
        # Day first, then collector, then resend number: sorted names are the landing order.
        stamp = timeline.date(day).strftime("%Y%m%d")
        suffix = f"_resend{resend}" if resend else ""
        ext = ".csv.gz" if self.gzip else ".csv"
        return f"headend_{stamp}_{self.name}{suffix}{ext}"

    def file_minutes(self, timeline: Timeline, day: int) -> tuple[int, int]:
        """Minutes [lo, hi) of the readings in this collector's export of ``day``."""
        lo = timeline.day_start(day)
        if self.ts_style == TS_OFFSET:
            lo -= LOCAL_OFFSET_MINUTES
        return lo, lo + MINUTES_PER_DAY

    def coverage(self, timeline: Timeline) -> tuple[int, int]:
        """Minutes [lo, hi) this collector reports at all."""
        return self.file_minutes(timeline, 0)[0], self.file_minutes(timeline, timeline.days - 1)[1]

    def crlf(self, day: int) -> bool:
        return (self.index + day) % 4 == 1

    def bom(self, day: int) -> bool:
        return (self.index + 3 * day) % 5 == 0


def collectors_for(meters: int) -> list[Collector]:
    count = min(
        meters, max(MIN_COLLECTORS, min(MAX_COLLECTORS, math.ceil(meters / METERS_PER_COLLECTOR)))
    )
    bounds = [round(k * meters / count) for k in range(count + 1)]
    out = []
    for k in range(count):
        if k == OFFSET_COLLECTOR:
            style = TS_OFFSET
        else:
            style = TS_ZULU if k % 2 == 0 else TS_NAIVE
        gzip = k % 3 == 1
        out.append(Collector(k, bounds[k], bounds[k + 1] - bounds[k], style, gzip))
    return out


def meter_id(index: int) -> str:
    return f"MTR{index + 1:06d}"


def format_timestamp(moment: dt.datetime, style: str) -> str:
    if style == TS_ZULU:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    if style == TS_NAIVE:
        return moment.strftime("%Y-%m-%d %H:%M:%S")
    local = moment + dt.timedelta(minutes=LOCAL_OFFSET_MINUTES)
    return local.strftime("%Y-%m-%dT%H:%M:%S") + "+01:00"


def iso_utc(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def format_value(milli_kw: int, watts: bool) -> str:
    """Exact decimal text of a reading: W meters write whole watts, kW meters three decimals."""
    if watts:
        return str(int(milli_kw))
    sign = "-" if milli_kw < 0 else ""
    whole, frac = divmod(abs(int(milli_kw)), 1000)
    return f"{sign}{whole}.{frac:03d}"
