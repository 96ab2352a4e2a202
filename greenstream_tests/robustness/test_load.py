"""Issue 5, load: 200 files landing at once are all taken by the sensor, none twice, none lost,
at most GREENSTREAM_MAX_FILES_PER_TICK per tick, with run requests bounded by the days touched.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import pytest
import yaml

import greenstream_dagster
from greenstream_dagster.orchestration.assets import ASSETS, POOL
from greenstream_dagster.orchestration.resources import GreenstreamSettings
from greenstream_dagster.orchestration.sensors import landing_sensor
from greenstream_dagster.settings import Settings
from greenstream_dagster.storage.raw_zone import RawZone

from .helpers import DAY, write_lines

FILES = 200
REUPLOADS = 10  # of the 200, this many repeat the bytes of an earlier file under a new name
DAYS = 10
PER_TICK = 50


def land_200(landing: Path) -> dict[str, dt.date]:
    """200 files over 10 days; returns each distinct file's name and day."""
    days: dict[str, dt.date] = {}
    for i in range(FILES - REUPLOADS):
        day = DAY - dt.timedelta(days=i % DAYS)
        name = f"export_{i:03d}.csv"
        write_lines(
            landing / name,
            [f"m{i:03d}-{k},{day}T{k:02d}:00:00Z,{k / 10},kW" for k in range(4)],
        )
        days[name] = day
    for i in range(REUPLOADS):
        (landing / f"again_{i:03d}.csv").write_bytes((landing / f"export_{i:03d}.csv").read_bytes())
    return days


@pytest.mark.slow  # about 20 s: each file is read once to learn its days
def test_200_files_at_once(tmp_path):
    settings = Settings(home=tmp_path / "home", settle_seconds=0, max_files_per_tick=PER_TICK)
    expected = land_200(settings.landing_dir)
    zone = RawZone(settings.raw_dir)
    resources = {"greenstream": GreenstreamSettings.from_settings(settings)}

    taken_per_tick, requests_per_tick, run_keys = [], [], []
    cursor = None
    with dg.instance_for_test() as instance:
        for _ in range(FILES // PER_TICK + 3):
            landed_before = len(zone.sidecars())
            left_before = len(list(settings.landing_dir.iterdir()))
            context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
            result = landing_sensor(context)
            cursor = result.cursor
            requests = result.run_requests or []
            taken_per_tick.append(left_before - len(list(settings.landing_dir.iterdir())))
            requests_per_tick.append(len(requests))
            run_keys += [(r.run_key, r.partition_key) for r in requests]
            assert len(zone.sidecars()) - landed_before <= PER_TICK

    # All taken, at most PER_TICK a tick, none left in landing/.
    assert list(settings.landing_dir.iterdir()) == []
    assert sum(taken_per_tick) == FILES
    assert max(taken_per_tick) <= PER_TICK
    # Every distinct file landed once, under its first name; the re-uploads added nothing.
    sidecars = zone.sidecars()
    assert sorted(s.original_name for s in sidecars) == sorted(expected)
    assert {s.original_name: s.days for s in sidecars} == {n: [d] for n, d in expected.items()}
    # Runs: no run key twice, each tick at most one run per day, and every day touched is run.
    assert len({key for key, _ in run_keys}) == len(run_keys)
    assert max(requests_per_tick) <= DAYS
    assert {day for _, day in run_keys} == {d.isoformat() for d in expected.values()}


def test_runs_are_serialised_on_the_warehouse():
    """The instance runs one run at a time, and one run holding the warehouse's pool at a
    time (claimed per run: ``greenstream process`` waits for the runs in progress); every asset
    is in the pool."""
    deploy = Path(greenstream_dagster.__file__).parents[1] / "deploy" / "dagster.yaml"
    config = yaml.safe_load(deploy.read_text())
    assert config["concurrency"]["runs"]["max_concurrent_runs"] == 1
    assert config["concurrency"]["pools"] == {"default_limit": 1, "granularity": "run"}
    for asset in ASSETS:
        for spec in asset.specs:
            assert asset.get_op_def_for_asset_key(spec.key).pool == POOL, spec.key
