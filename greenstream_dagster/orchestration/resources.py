"""Resources: the pipeline settings and the DuckDB warehouse, both from environment variables.

``GreenstreamSettings`` shows every setting in the web UI's resource view; its defaults are the
``GREENSTREAM_*`` variables read when the code location loads (see ``settings.py``).
"""

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource
from pydantic import PrivateAttr

from .. import malloc_policy
from ..settings import SETTINGS, Settings
from ..storage import warehouse

_ENV = Settings.from_env()


class GreenstreamSettings(dg.ConfigurableResource):
    """Where the data lives and the thresholds of the rules (DESIGN.md sections 2, 3, 6)."""

    home: str = str(_ENV.home)
    source_tz: str = _ENV.source_tz
    start_date: str = _ENV.start_date
    max_kw: float = _ENV.max_kw
    zscore_threshold: float = _ENV.zscore_threshold
    zscore_min_readings: int = _ENV.zscore_min_readings
    zscore_window_hours: float = _ENV.zscore_window_hours
    fill_max_minutes: float = _ENV.fill_max_minutes
    default_interval_minutes: float = _ENV.default_interval_minutes
    future_tolerance_minutes: float = _ENV.future_tolerance_minutes
    near_zero_kw: float = _ENV.near_zero_kw
    near_zero_hours: float = _ENV.near_zero_hours
    zero_days: int = _ENV.zero_days
    quarantine_rate_warn: float = _ENV.quarantine_rate_warn
    missing_rate_warn: float = _ENV.missing_rate_warn
    # A secret: its default is not the environment's value (the UI shows defaults); a
    # deployment passes dg.EnvVar, which the UI shows by name only.
    alert_webhook: str = ""
    settle_seconds: float = _ENV.settle_seconds
    max_files_per_tick: int = _ENV.max_files_per_tick
    reprocess_days_after: int = _ENV.reprocess_days_after
    duckdb_memory_limit: str = _ENV.duckdb_memory_limit
    max_inflated_mib: int = _ENV.max_inflated_mib

    @classmethod
    def from_settings(cls, settings: Settings) -> "GreenstreamSettings":
        values = {name: getattr(settings, name) for name in cls.model_fields}
        webhook_env = SETTINGS["alert_webhook"].env
        if settings.alert_webhook and settings.alert_webhook == os.environ.get(webhook_env):
            values["alert_webhook"] = dg.EnvVar(webhook_env)
        return cls(**{**values, "home": str(settings.home)})

    def settings(self) -> Settings:
        values = {name: getattr(self, name) for name in type(self).model_fields}
        return Settings(**{**values, "home": Path(self.home)})


class WarehouseResource(DuckDBResource):
    """The warehouse's DuckDB. In a run, its database is opened at the first step that asks
    and stays open until the run ends, each step working on a cursor of it; elsewhere (the
    command's summaries, a sensor) a connection is opened and closed per use, as
    ``DuckDBResource`` does.

    Opening the warehouse costs 20 to 45 ms and closing it 10 to 130 ms (a checkpoint, and
    freeing what DuckDB held): a one-day run's 8 steps paid both, 0.5 to 0.6 s a run, and a
    month's run once per day and step. What a day leaves cached is let go by
    ``release_memory`` instead, as closing did.
    """

    _root: duckdb.DuckDBPyConnection | None = PrivateAttr(default=None)
    _opened: ExitStack | None = PrivateAttr(default=None)
    _in_run: bool = PrivateAttr(default=False)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._in_run = True
        # This process runs a run's steps: its arrays' memory is kept (malloc_policy).
        malloc_policy.keep_freed_memory()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self._close()

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection set to UTC with every table in place (opened with backoff while
        another process holds the file)."""
        if not self._in_run:
            with self._opening() as con:
                yield con
            return
        if self._root is None:
            opened = ExitStack()
            self._root = opened.enter_context(self._opening())
            self._opened = opened
        try:
            with self._root.cursor() as cursor:
                cursor.execute("SET TimeZone = 'UTC'")  # a cursor starts with its own session
                yield cursor
        except BaseException:
            # A retry starts on a database opened afresh, whatever state the error left.
            self._close()
            raise

    @contextmanager
    def _opening(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The database opened (its folder made first) and configured, closed on exit."""
        if self.database != ":memory:":
            Path(self.database).parent.mkdir(parents=True, exist_ok=True)
        with super().get_connection() as con:
            warehouse.configure(con)
            yield con

    def release_memory(self) -> None:
        """Let go of what DuckDB holds cached, as closing the database would: lowering its
        memory limit makes it evict, and the limit is then put back. A step calls this before a
        day when its own days before it added much to the cache (``assets.each_day``), so the
        days of a month's run after a step's second start on an empty cache (with the cache
        kept, the days' peak climbed from 2.07 to 2.44 GB over a month)."""
        if self._root is None:
            return
        try:
            limit = self.connection_config.get("memory_limit")
            if limit is None:  # DuckDB's default, as it reports it
                [(limit,)] = self._root.execute("SELECT current_setting('memory_limit')").fetchall()
            self._root.execute(f"SET memory_limit = '{RELEASED_LIMIT}'")
            self._root.execute("SET memory_limit = ?", [limit])
        except duckdb.Error:
            self._close()  # whatever could not be evicted goes with the database

    def _close(self) -> None:
        opened, self._opened, self._root = self._opened, None, None
        if opened is not None:
            opened.close()


# What ``release_memory`` lowers DuckDB's memory limit to for a moment.
RELEASED_LIMIT = "16MB"


def resources_for(settings: Settings) -> dict[str, object]:
    """The resources of a deployment whose data lives under ``settings.home``."""
    return {
        "greenstream": GreenstreamSettings.from_settings(settings),
        "duckdb": WarehouseResource(
            database=str(settings.warehouse_path),
            # Without a limit DuckDB may take most of the machine's memory for one day.
            connection_config={"memory_limit": settings.duckdb_memory_limit},
        ),
    }
