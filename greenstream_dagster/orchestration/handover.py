"""Schema validation shared by a run's steps in one process: the results a step hands to the
checks of its own run, and the warm-up of the validation itself.

The standardize step holds the day's clean rows and quarantine as Arrow tables until the
warehouse has them. Validated there, while they are stored, the checks need not read them
back: for a 50,000-meter day the clean rows' validation took 0.81 to 0.99 s reading them back,
0.63 to 0.76 s on the held table. A result is taken only by a check of the run that left it,
for the same table and day, so it is always of the rows that run stored; a check run alone
reads the warehouse.
"""

import datetime as dt
import threading
from collections.abc import Callable

import pyarrow as pa

from ..settings import Settings

_lock = threading.Lock()
_warming: threading.Thread | None = None
# (run id, table, day) -> (rows checked, failure cases or None), as ``validate_day`` returns.
_results: dict[tuple[str, str, dt.date], tuple] = {}


def schema_check_name(table: str) -> str:
    """The name of the check that validates ``table`` against its schema."""
    return f"{table}_schema"


def validating(
    run_id: str, settings: Settings, con, day: dt.date, tables: set[str]
) -> Callable[[str, pa.Table], None]:
    """A ``build_standardized`` hook: validates the rows of each of ``tables`` as the step
    holds them, while it stores them, and leaves the result for this run's check of that table
    and day. If storing them fails, the step fails: no check of its run takes the result, and
    a retry of the step leaves its own."""
    # Made here, on the step's thread: the hook runs on another while the step's connection
    # stores the rows, and a connection serves one thread at a time.
    cursor = con.cursor() if tables else None

    def validate(table: str, rows: pa.Table) -> None:
        if table not in tables:
            return
        from .. import validation  # deferred: see validation's docstring

        try:
            result = validation.validate_day(
                cursor, table, validation.schemas(settings)[table], day, held=rows
            )
        except Exception:
            # Nothing is left: the check reads the day back, and any error shows on the check,
            # not on the step that stored the rows.
            return
        with _lock:
            # One run at a time per process: what an earlier run left, its checks never took.
            for key in [key for key in _results if key[0] != run_id]:
                del _results[key]
            _results[(run_id, table, day)] = result

    return validate


def take(run_id: str | None, table: str, day: dt.date) -> tuple | None:
    """The result this run's step left for ``table`` and ``day``, once; None when none did."""
    with _lock:
        return _results.pop((run_id, table, day), None)


def warm_validation() -> None:
    """Import and warm ``validation`` on a thread of its own, once per process, so that the
    first check does not wait for it (1.0 s of imports on this machine, 0.2 s of Pandera's
    first use). Called where this process would otherwise wait: ``greenstream process`` once
    Dagster is loaded and the landing child is still at work, and the raw rows' step, whose
    DuckDB insert leaves the interpreter free. Not before Dagster is loaded: the two imports
    share one interpreter, and the thread took the CPU from the child too (the first run
    started 0.6 to 0.8 s later). Left to the raw rows' step alone, it made that step 0.5 s
    longer for a 50,000-meter day (four runs each way, taken in turn)."""
    global _warming
    with _lock:
        if _warming is not None:
            return
        _warming = threading.Thread(target=_warm, name="greenstream-warm-validation", daemon=True)
    _warming.start()


def _warm() -> None:
    from .. import validation

    validation.warm()
