"""Resources: the pipeline settings and the DuckDB warehouse, both from environment variables.

``GreenstreamSettings`` shows every setting in the web UI's resource view; its defaults are the
``GREENSTREAM_*`` variables read when the code location loads (see ``settings.py``).
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource

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


@contextmanager
def warehouse_connection(duckdb_resource: DuckDBResource) -> Iterator[duckdb.DuckDBPyConnection]:
    """A warehouse connection (opened with backoff while another process holds the file),
    set to UTC and with every table in place."""
    if duckdb_resource.database != ":memory:":
        Path(duckdb_resource.database).parent.mkdir(parents=True, exist_ok=True)
    with duckdb_resource.get_connection() as con:
        warehouse.configure(con)
        yield con


def resources_for(settings: Settings) -> dict[str, object]:
    """The resources of a deployment whose data lives under ``settings.home``."""
    return {
        "greenstream": GreenstreamSettings.from_settings(settings),
        "duckdb": DuckDBResource(
            database=str(settings.warehouse_path),
            # Without a limit DuckDB may take most of the machine's memory for one day.
            connection_config={"memory_limit": settings.duckdb_memory_limit},
        ),
    }
