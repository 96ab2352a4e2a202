"""Watching the landing folder, in plain Python so that every rule is testable without Dagster.

- ``scan``: which files are complete. A file is complete when its size and modification time
  have not changed for the settle period, seen across two looks. Hidden and temporary names,
  directories and links are ignored; a file that vanishes between two looks is simply gone.
- ``take_files``: lands the complete files in the raw zone, a batch at a time, within a time
  budget, removes each from landing/ only if it did not change meanwhile, and says what became
  of each (new, already landed, rejected, failed).
- ``plan_runs``: the days to run for what was landed, with their run keys.

The state between two looks (the sensor's cursor) holds only the files still in the folder, and
at most a bounded number of them, so it stays small however many files land: a burst of files
is looked at a batch at a time, oldest first.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISREG
from typing import Any

from .alerts import raise_alert
from .landing import Landed, land_each
from .settings import Settings
from .storage.raw_zone import REJECTED

# Names a writer uses while a file is still being written, or that are not data files.
TEMPORARY_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp", ".filepart", "~")
# A file whose landing failed (unreadable, disk full) is retried when it changes, or after this.
RETRY_FAILED_SECONDS = 3600.0
# How many files are tracked at once, per file taken per tick: the next batch is already
# settling while one is taken, and the cursor never holds more than this.
TRACKED_PER_TAKEN = 2


def is_data_name(name: str) -> bool:
    """Not hidden, not a name writers use while a file is still being written."""
    return not (name.startswith(".") or name.lower().endswith(TEMPORARY_SUFFIXES))


# ---------------------------------------------------------------------------------------------
# Looking at the folder
# ---------------------------------------------------------------------------------------------

# One cursor entry per file name: [size, mtime_ns, first seen with that size and mtime (epoch
# seconds), failed at (epoch seconds) or 0].
Entry = list


@dataclass(frozen=True)
class Scan:
    ready: list[Path]  # complete files, oldest first, at most the tick's limit
    waiting: int  # tracked files still settling, or complete beyond the tick's limit
    untracked: int  # files not looked at yet: beyond the tracking bound, taken later
    held: int  # files whose landing failed, left alone until they change or the retry time
    entries: dict[str, Entry] = field(repr=False)

    def cursor(
        self, taken: Iterable[Path] = (), failed: Iterable[Path] = (), now: float = 0.0
    ) -> str:
        """The new cursor: without the files taken, with the failed ones held."""
        entries = {name: list(entry) for name, entry in self.entries.items()}
        for path in taken:
            entries.pop(path.name, None)
        for path in failed:
            if path.name in entries:
                entries[path.name][3] = round(now, 3)
        return json.dumps(entries, separators=(",", ":"))

    def signatures(self) -> dict[str, list[int]]:
        """[size, mtime_ns] of each ready file when it was judged complete."""
        return {path.name: self.entries[path.name][:2] for path in self.ready}

    def describe(self) -> str:
        parts = [f"{self.waiting} settling"]
        if self.untracked:
            parts.append(f"{self.untracked} more waiting their turn")
        if self.held:
            parts.append(f"{self.held} held after a failed landing")
        return ", ".join(parts)


def _load(cursor: str | None) -> dict[str, Entry]:
    """The previous look; an unreadable cursor (an older format) only means looking again."""
    try:
        data = json.loads(cursor) if cursor else {}
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        name: [*entry, 0][:4]
        for name, entry in data.items()
        if isinstance(entry, list) and len(entry) >= 3
    }


def scan(
    landing_dir: Path,
    cursor: str | None,
    now: float,
    settle_seconds: float,
    limit: int,
    max_tracked: int | None = None,
) -> Scan:
    """Look at the landing folder once; return the complete files and the state to keep."""
    max_tracked = max_tracked or max(TRACKED_PER_TAKEN * limit, 1)
    before = _load(cursor)
    present: list[tuple[int, str, list[int]]] = []
    if landing_dir.is_dir():
        for path in landing_dir.iterdir():
            if not is_data_name(path.name):
                continue
            try:
                stat = path.lstat()  # a link is not a regular file: links are not followed
            except FileNotFoundError:  # vanished between two looks: not an error
                continue
            if not S_ISREG(stat.st_mode):  # directories, links, devices
                continue
            present.append((stat.st_mtime_ns, path.name, [stat.st_size, stat.st_mtime_ns]))
    present.sort()

    entries: dict[str, Entry] = {}
    held: dict[str, Entry] = {}
    complete: list[tuple[int, str]] = []
    untracked = 0
    # Files already tracked keep their place; others join, oldest first, while there is room.
    known = [item for item in present if item[1] in before]
    new = [item for item in present if item[1] not in before]
    for mtime_ns, name, signature in known + new:
        entry = before.get(name)
        unchanged = entry is not None and entry[:2] == signature
        settling = unchanged and not entry[3]
        if unchanged and entry[3] and now - entry[3] < RETRY_FAILED_SECONDS:
            held[name] = entry
            continue
        if not settling and len(entries) >= max_tracked:
            untracked += 1
            continue
        if settling and now - entry[2] >= settle_seconds:
            complete.append((mtime_ns, name))
        # Kept to the millisecond, rounded down: a settle period never looks shorter than it was.
        first_seen = entry[2] if settling else math.floor(now * 1000) / 1000
        entries[name] = [*signature, first_seen, 0]
    complete.sort()
    ready = [landing_dir / name for _, name in complete[:limit]]
    waiting = len(entries) - len(ready)
    # Failed files beyond the bound are forgotten, oldest failure first: they are looked at again.
    for name in sorted(held, key=lambda n: held[n][3], reverse=True)[:max_tracked]:
        entries[name] = held[name]
    return Scan(ready, waiting, untracked, len(held), entries)


# ---------------------------------------------------------------------------------------------
# Taking the complete files
# ---------------------------------------------------------------------------------------------


@dataclass
class Intake:
    """What became of the files of one tick."""

    taken: list[Path] = field(default_factory=list)  # left the landing folder (or vanished)
    failed: list[Path] = field(default_factory=list)  # could not be landed; left in place
    days: dict[dt.date, list[str]] = field(default_factory=dict)  # accepted: day -> SHA-256s
    names: dict[str, str] = field(default_factory=dict)  # SHA-256 -> original name
    notes: list[str] = field(default_factory=list)  # one line per file, for the tick and log
    rejected: int = 0
    already_landed: int = 0


def _signature(path: Path) -> list[int] | None:
    try:
        stat = path.lstat()
    except FileNotFoundError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def take_files(
    paths: Iterable[Path],
    settings: Settings,
    log: Any = None,
    budget_seconds: float | None = None,
    expected: Mapping[str, Sequence[int]] | None = None,
    clock=time.monotonic,
) -> Intake:
    """Land the files in the raw zone, then remove each from landing/; alert on rejected and
    failed ones. ``expected`` is each file's [size, mtime_ns] when it was judged complete: a
    file that changed since is left to settle again, and one that changed while it was being
    copied is kept (what was read is landed, the new version is taken when it settles), so no
    byte written to landing/ is ever deleted unread.

    The files land a batch at a time (``land_each``: a file that fails fails alone), and no new
    batch starts once ``budget_seconds`` are used; the rest stay for the next look.
    """
    intake = Intake()
    started = clock()
    for batch in _batches(list(paths)):
        if budget_seconds is not None and clock() - started > budget_seconds:
            intake.notes.append("tick time budget used; the other complete files wait")
            break
        ready = []
        for path in batch:
            settled = list(expected[path.name]) if expected and path.name in expected else None
            if settled is not None and _signature(path) not in (settled, None):
                intake.notes.append(f"{path.name}: changed again; taken once it settles")
            else:
                ready.append((path, settled))
        # not through a link: a name may have been swapped for one since it was looked at
        outcomes = land_each([path for path, _ in ready], settings, follow_symlinks=False)
        for (path, settled), outcome in zip(ready, outcomes, strict=True):
            _take(intake, path, settled, outcome, settings, log)
    return intake


# Files landed together by the sensor: at most this many, or this many bytes (a tick's time
# budget is looked at between two batches).
BATCH_FILES = 64
BATCH_BYTES = 96 << 20


def _batches(paths: list[Path]) -> list[list[Path]]:
    batches: list[list[Path]] = []
    held = 0
    for path in paths:
        size = (_signature(path) or [0])[0]
        if not batches or len(batches[-1]) >= BATCH_FILES or held + size > BATCH_BYTES:
            batches.append([])
            held = 0
        batches[-1].append(path)
        held += size
    return batches


def _take(
    intake: Intake,
    path: Path,
    settled: list[int] | None,
    outcome: Landed | Exception,
    settings: Settings,
    log: Any,
) -> None:
    """Record what became of one file, and let it go from landing/ when it was landed."""
    if isinstance(outcome, FileNotFoundError):
        intake.taken.append(path)  # vanished while being taken: nothing to do
        return
    if isinstance(outcome, Exception):  # unreadable, disk full...: keep the file, hold it, say so
        intake.failed.append(path)
        reason = f"{type(outcome).__name__}: {outcome}"
        intake.notes.append(f"{path.name}: could not be landed ({reason}); left in landing/")
        raise_alert(
            settings,
            "landing_failed",
            f"file {path.name} could not be landed: {reason}. It stays in landing/ and is "
            f"tried again when it changes or in {RETRY_FAILED_SECONDS / 3600:g} hour.",
            {"file": path.name, "error": reason},
            log=log,
        )
        return
    now_signature = _signature(path)
    if settled is None or now_signature in (settled, None):
        path.unlink(missing_ok=True)
    else:
        intake.notes.append(
            f"{path.name}: changed while being landed; the bytes read are kept in the raw "
            "zone and the file is taken again once it settles"
        )
    intake.taken.append(path)
    sidecar = outcome.sidecar
    sha = sidecar.source_file
    if outcome.already_landed:
        intake.already_landed += 1
        was = f"rejected: {sidecar.reason}" if sidecar.status == REJECTED else "accepted"
        intake.notes.append(
            f"{path.name}: same bytes already landed as {sidecar.original_name} "
            f"[{sha[:12]}] ({was}); nothing to run"
        )
    elif sidecar.status == REJECTED:
        intake.rejected += 1
        intake.notes.append(f"{path.name}: REJECTED [{sha[:12]}]: {sidecar.reason}")
        raise_alert(
            settings,
            "file_rejected",
            f"file {path.name} was rejected: {sidecar.reason}",
            {"file": path.name, "source_file": sha, "reason": sidecar.reason},
            log=log,
        )
    else:
        days = ", ".join(map(str, sidecar.days)) or "none"
        intake.notes.append(f"{path.name}: landed [{sha[:12]}], days {days}")
        intake.names[sha] = path.name
        for day in sidecar.days:
            intake.days.setdefault(day, []).append(sha)


# ---------------------------------------------------------------------------------------------
# The runs to ask for
# ---------------------------------------------------------------------------------------------


def follow_up_days(touched: set[dt.date], processed: set[dt.date], after: int) -> set[dt.date]:
    """Processed days within ``after`` days of a touched day, whose outputs may change.

    A day's clean rows depend on the day before (interval, fill, z-score window) and its fault
    flags on the days before (the zero-total streak), so late data for day D can change D+1..."""
    return {
        day + dt.timedelta(days=k)
        for day in touched
        for k in range(1, after + 1)
        if day + dt.timedelta(days=k) in processed
    } - touched


@dataclass(frozen=True)
class DayRun:
    day: dt.date
    files: tuple[str, ...]  # SHA-256s of the files that made this day run
    follow_up: bool  # run because late data arrived for a day before it

    @property
    def run_key(self) -> str:
        """The day and the files' hashes: the same files never run the same day twice."""
        digest = hashlib.sha256("".join(sorted(self.files)).encode()).hexdigest()[:16]
        return f"{self.day.isoformat()}:{'after:' if self.follow_up else ''}{digest}"


def plan_runs(days: dict[dt.date, list[str]], processed: set[dt.date], after: int) -> list[DayRun]:
    """One run per day the files touch, plus the processed days after them, in day order."""
    runs = {day: DayRun(day, tuple(sorted(set(shas))), False) for day, shas in days.items()}
    for day in follow_up_days(set(days), processed, after):
        earlier = {sha for d, shas in days.items() if d < day for sha in shas}
        runs[day] = DayRun(day, tuple(sorted(earlier)), True)
    return [runs[day] for day in sorted(runs)]
