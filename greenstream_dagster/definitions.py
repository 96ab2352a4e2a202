"""The Dagster code location: what ``dagster dev`` and the web UI load."""

import dagster as dg

from .orchestration.assets import ASSETS
from .orchestration.checks import CHECKS
from .orchestration.resources import resources_for
from .orchestration.sensors import daily_job, landing_sensor, run_failure_alert
from .settings import Settings

defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=CHECKS,
    jobs=[daily_job],
    sensors=[landing_sensor, run_failure_alert],
    resources=resources_for(Settings.from_env()),
    # Steps share one DuckDB writer anyway; one process per run avoids a process per step.
    executor=dg.in_process_executor,
)
