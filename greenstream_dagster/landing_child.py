"""``greenstream process`` lands big batches of files in a child process while it loads Dagster.

Before its first run the command spends about 2.4 s of one core importing Dagster and opening its
instance, and landing a 50,000-meter day (hashing, copying and reading 25 files) takes 1.3 s.
Neither needs the other, and the machine has two cores: the child lands the files while this
process loads Dagster.

The child is forked once this process has imported what landing needs (DuckDB, Arrow, numpy)
and nothing of Dagster: it starts at once, with those modules loaded. A new interpreter spent
0.5 s of wall time and 0.7 s of a core starting Python and importing them again, on the path the
first run waits for. The child runs ``land_files`` itself, so files land exactly as they would
here: same order, arrival times, sidecars and rejections. The tables it read are handed back as
Arrow IPC files, mapped here without a copy and kept for the raw rows (``landed_tables``), so
each file is still read once.
"""

from __future__ import annotations

import datetime as dt
import os
import pickle
import shutil
import signal
import sys
import tempfile
import traceback
from pathlib import Path
from typing import NoReturn

import pyarrow as pa

from . import landed_tables, landing, startup_gc
from .landing import Landed, land_files, on_readers
from .settings import Settings

# Below this much input a child costs more (a fork, the copies of the pages both processes
# write, a second DuckDB) than landing here would take.
MIN_BYTES = 16 << 20
# Kept tables go to RAM when there is room for as many as a process may keep.
SHARED_MEMORY = Path("/dev/shm")
# What the child hands back, and what it printed (read only when it failed), in its folder.
RESULT = "result.pickle"
OUTPUT = "output.txt"
# The child yields the CPU to this process: the two want three cores (this one's imports, the
# child's two readers) of the two there are, and shared evenly this process got two thirds of
# a core; its imports and instance, not the landing, were what the first run waited for.
CHILD_NICENESS = 10


class LandingFailed(RuntimeError):
    """The child process did not land the files (it crashed, or was killed)."""


def worth_a_child(files: list[Path]) -> bool:
    """A big batch, where this system can fork (elsewhere the files land in this process)."""
    return hasattr(os, "fork") and sum(f.stat().st_size for f in files) >= MIN_BYTES


class LandingInChild:
    """Files being landed by a forked child process; ``result()`` waits for them. What the
    child hands back and prints, and the tables it writes, are in ``work_dir``, removed once
    the result is taken."""

    def __init__(self, files: list[Path], settings: Settings) -> None:
        self.work_dir = tempfile.mkdtemp(prefix="greenstream-landing-", dir=_scratch_dir())
        self._exit_code: int | None = None
        # Nothing buffered here may be written twice, once by each process.
        sys.stdout.flush()
        sys.stderr.flush()
        self._pid = os.fork()
        if self._pid == 0:
            _child([Path(f) for f in files], settings, self.work_dir)

    def result(self) -> list[Landed]:
        """What ``land_files`` returned in the child; the tables it kept are kept here too
        (inside ``landed_tables.keeping()``, else they are let go)."""
        try:
            code = self._wait()
            if code != 0:
                output = Path(self.work_dir, OUTPUT)
                printed = output.read_text(errors="replace") if output.exists() else ""
                raise LandingFailed(
                    f"landing the files in a child process failed (exit {code}): {printed[-2000:]}"
                )
            landed, handed = pickle.loads(Path(self.work_dir, RESULT).read_bytes())
            for sha, (path, last_day) in handed.items():
                # Mapped, not read: the table's buffers are the file's pages, which stay
                # until the table is let go, even once the file is removed.
                table = pa.ipc.open_file(pa.memory_map(path)).read_all()
                landed_tables.keep(sha, table, [last_day])
            return landed
        finally:
            self.discard()

    def discard(self) -> None:
        """Stop the child if it still runs and remove ``work_dir``: in shared memory, the
        tables would hold RAM until the machine restarts."""
        if self._exit_code is None:
            try:
                os.kill(self._pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._wait()
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def _wait(self) -> int:
        if self._exit_code is None:
            _, status = os.waitpid(self._pid, 0)
            self._exit_code = os.waitstatus_to_exitcode(status)
        return self._exit_code

    def __enter__(self) -> LandingInChild:
        return self

    def __exit__(self, *exc_info) -> None:
        self.discard()


def _scratch_dir() -> str | None:
    """Shared memory when it has room for every table the child may keep (its files' size
    says little: a gzip file inflates several times), else the system's temporary folder."""
    if (
        SHARED_MEMORY.is_dir()
        and shutil.disk_usage(SHARED_MEMORY).free > landed_tables.BUDGET_BYTES
    ):
        return str(SHARED_MEMORY)
    return None


def _land(files: list[Path], settings: Settings, out_dir: str):
    """The child's work: land the files, then write each kept table to ``out_dir``. A table
    that cannot be written (the folder full, say) is not handed back: the files are landed
    all the same, and the raw rows read that file again from the raw zone. The tables are
    written on landing's readers: the parent waits for them, and a 50,000-meter day's 25 took
    0.20 s on one thread, 0.12 s on two."""
    with landed_tables.keeping():
        landed = land_files(files, settings)
        kept = list(landed_tables.kept().items())
        written = on_readers(lambda item: _write_table(out_dir, *item), kept)
        handed = {sha: found for (sha, _), found in zip(kept, written, strict=True) if found}
    return landed, handed


def _write_table(out_dir: str, sha: str, kept: tuple[pa.Table, dt.date]):
    """``(path, last day)`` of the kept table written to ``out_dir``, or None if it could not
    be."""
    table, last_day = kept
    path = os.path.join(out_dir, f"{sha}.arrow")
    try:
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as out:
            out.write_table(table)
    except OSError:
        Path(path).unlink(missing_ok=True)
        return None
    return path, last_day


class _WithoutPandas:
    """An import hook that refuses pandas. pyarrow imports pandas the first time it converts
    anything, only to ask whether it was handed pandas objects: 0.25 s of a core, on the path the
    first run waits for (the child ended 0.15 s sooner without it). Refused, pyarrow goes on
    without it, and nothing the child runs uses pandas."""

    def find_spec(self, name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"the landing child does without {name}", name=name)
        return None


def _child(files: list[Path], settings: Settings, work_dir: str) -> NoReturn:
    """The forked child: land the files, leave the result in ``work_dir``, and end without
    returning into the caller's code (``os._exit``: no exit handler of this process runs
    twice). What it prints goes to a file, read back only if it fails."""
    code = 1
    try:
        printed = os.open(os.path.join(work_dir, OUTPUT), os.O_WRONLY | os.O_CREAT, 0o600)
        os.dup2(printed, sys.stdout.fileno())
        os.dup2(printed, sys.stderr.fileno())
        sys.meta_path.insert(0, _WithoutPandas())
        os.nice(CHILD_NICENESS)
        # A DuckDB landing opened in this process before the fork has no worker threads here.
        landing.forget_scratch_connection()
        startup_gc.resume()  # the objects inherited are frozen, the files' are collected
        result = _land(files, settings, work_dir)
        Path(work_dir, RESULT).write_bytes(pickle.dumps(result))
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
