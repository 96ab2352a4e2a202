"""Every setting of the pipeline, read from environment variables with the contract's defaults.

One frozen dataclass, no Dagster import: the rules take it as a plain argument, the Dagster
resource (``orchestration/resources.py``) builds it, and the README documents each variable.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


@dataclass(frozen=True)
class Setting:
    """One environment variable, its default and meaning; the README table lists the same."""

    env: str
    default: str
    help: str


SETTINGS = {
    "home": Setting(
        "GREENSTREAM_HOME",
        "./greenstream_data",
        "data home: landing/, raw/, warehouse, archive, alerts",
    ),
    "source_tz": Setting(
        "GREENSTREAM_SOURCE_TZ", "UTC", "IANA time zone of timestamps written without an offset"
    ),
    "start_date": Setting(
        "GREENSTREAM_START_DATE",
        "2020-01-01",
        "first UTC day the pipeline has partitions for; older readings are invalid_timestamp",
    ),
    "max_kw": Setting(
        "GREENSTREAM_MAX_KW", "10", "step 6: readings above this many kW are above_max"
    ),
    "zscore_threshold": Setting(
        "GREENSTREAM_ZSCORE_THRESHOLD", "3", "step 7: |z| above this is outlier_zscore"
    ),
    "zscore_min_readings": Setting(
        "GREENSTREAM_ZSCORE_MIN_READINGS",
        "12",
        "step 7: fewest trailing readings before the z-score applies",
    ),
    "zscore_window_hours": Setting(
        "GREENSTREAM_ZSCORE_WINDOW_HOURS", "24", "step 7: length of the trailing window"
    ),
    "fill_max_minutes": Setting(
        "GREENSTREAM_FILL_MAX_MINUTES",
        "60",
        "step 8: missing runs shorter than this are forward-filled",
    ),
    "default_interval_minutes": Setting(
        "GREENSTREAM_DEFAULT_INTERVAL_MINUTES",
        "15",
        "step 8: a meter's interval when it cannot be told",
    ),
    "future_tolerance_minutes": Setting(
        "GREENSTREAM_FUTURE_TOLERANCE_MINUTES",
        "60",
        "step 2: how far past the file's arrival a timestamp may be",
    ),
    "near_zero_kw": Setting(
        "GREENSTREAM_NEAR_ZERO_KW", "0.01", "faults: readings below this many kW are near zero"
    ),
    "near_zero_hours": Setting(
        "GREENSTREAM_NEAR_ZERO_HOURS",
        "24",
        "faults: a near-zero run longer than this flags the meter",
    ),
    "zero_days": Setting(
        "GREENSTREAM_ZERO_DAYS",
        "3",
        "faults: more than this many consecutive zero-energy days flags the meter",
    ),
    "quarantine_rate_warn": Setting(
        "GREENSTREAM_QUARANTINE_RATE_WARN",
        "0.05",
        "check: warn when a day's quarantined share of raw rows is above this",
    ),
    "missing_rate_warn": Setting(
        "GREENSTREAM_MISSING_RATE_WARN",
        "0.10",
        "check: warn when a day's missing share of clean rows is above this",
    ),
    "alert_webhook": Setting(
        "GREENSTREAM_ALERT_WEBHOOK",
        "",
        "URL that receives alerts as Slack-compatible JSON; empty: none",
    ),
    "settle_seconds": Setting(
        "GREENSTREAM_SETTLE_SECONDS",
        "5",
        "sensor: a landed file must be unchanged this long before it is taken",
    ),
    "max_files_per_tick": Setting(
        "GREENSTREAM_MAX_FILES_PER_TICK",
        "50",
        "sensor: files taken per tick; the rest wait for the next one",
    ),
    "duckdb_memory_limit": Setting(
        "GREENSTREAM_DUCKDB_MEMORY_LIMIT",
        "1500MB",
        "DuckDB's memory limit for the pipeline; larger work spills to disk",
    ),
    "max_inflated_mib": Setting(
        "GREENSTREAM_MAX_INFLATED_MIB",
        "2048",
        "a gzip file that inflates beyond this many MiB is rejected (a gzip bomb)",
    ),
    "reprocess_days_after": Setting(
        "GREENSTREAM_REPROCESS_DAYS_AFTER",
        "3",
        "late data for day D also re-runs up to this many processed days after D",
    ),
}


class SettingsError(ValueError):
    """A setting has a value the pipeline cannot use; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """The values in force. Build with ``Settings.from_env()``; tests use ``replace``."""

    home: Path = Path("./greenstream_data")
    source_tz: str = "UTC"
    start_date: str = "2020-01-01"
    max_kw: float = 10.0
    zscore_threshold: float = 3.0
    zscore_min_readings: int = 12
    zscore_window_hours: float = 24.0
    fill_max_minutes: float = 60.0
    default_interval_minutes: float = 15.0
    future_tolerance_minutes: float = 60.0
    near_zero_kw: float = 0.01
    near_zero_hours: float = 24.0
    zero_days: int = 3
    quarantine_rate_warn: float = 0.05
    missing_rate_warn: float = 0.10
    alert_webhook: str = ""
    settle_seconds: float = 5.0
    max_files_per_tick: int = 50
    reprocess_days_after: int = 3
    duckdb_memory_limit: str = "1500MB"
    max_inflated_mib: int = 2048

    @property
    def max_inflated_bytes(self) -> int:
        return self.max_inflated_mib * 1024 * 1024

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.source_tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise SettingsError(
                f"GREENSTREAM_SOURCE_TZ={self.source_tz!r} is not an IANA time zone "
                "(for example UTC or Europe/Amsterdam)"
            ) from exc
        # Step 8 steps through time by it, in whole microseconds.
        minutes = self.default_interval_minutes
        if not (math.isfinite(minutes) and minutes * 60e6 >= 0.5):
            raise SettingsError(
                "GREENSTREAM_DEFAULT_INTERVAL_MINUTES="
                f"{minutes!r} is not a finite number of minutes of at least a microsecond"
            )

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            spec = SETTINGS[field.name]
            raw = env.get(spec.env, "").strip() or spec.default
            values[field.name] = _convert(field.type, raw, spec.env)
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes) -> Settings:
        return dataclasses.replace(self, **changes)

    # Paths under the data home (DESIGN.md section 5).
    @property
    def landing_dir(self) -> Path:
        return self.home / "landing"

    @property
    def raw_dir(self) -> Path:
        return self.home / "raw"

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def archive_dir(self) -> Path:
        return self.home / "archive" / "readings"

    @property
    def alerts_path(self) -> Path:
        return self.home / "alerts.jsonl"


def _convert(type_name: str, raw: str, env_name: str) -> object:
    try:
        if type_name == "Path":
            return Path(raw)
        if type_name == "float":
            return float(raw)
        if type_name == "int":
            return int(raw)
        return raw
    except ValueError as exc:
        raise SettingsError(f"{env_name}={raw!r} is not a valid {type_name}") from exc
