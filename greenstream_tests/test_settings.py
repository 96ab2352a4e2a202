"""Settings come from environment variables, each documented in the README."""

from pathlib import Path

import pytest

from greenstream_dagster.settings import SETTINGS, Settings, SettingsError

README = Path(__file__).resolve().parents[1] / "README.md"


def test_defaults_are_the_contract_values():
    s = Settings.from_env({})
    assert (s.max_kw, s.zscore_threshold, s.zscore_min_readings, s.fill_max_minutes) == (
        10.0,
        3.0,
        12,
        60.0,
    )
    assert (s.near_zero_kw, s.near_zero_hours, s.zero_days, s.source_tz) == (0.01, 24.0, 3, "UTC")
    assert s.home == Path("./greenstream_data")


def test_environment_overrides():
    s = Settings.from_env({"GREENSTREAM_MAX_KW": "7.5", "GREENSTREAM_HOME": "/data/gs"})
    assert s.max_kw == 7.5
    assert s.warehouse_path == Path("/data/gs/warehouse.duckdb")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GREENSTREAM_MAX_KW": "ten"}, "GREENSTREAM_MAX_KW='ten' is not a valid float"),
        ({"GREENSTREAM_SOURCE_TZ": "Mars/Olympus"}, "GREENSTREAM_SOURCE_TZ='Mars/Olympus'"),
        (
            {"GREENSTREAM_DEFAULT_INTERVAL_MINUTES": "0"},
            "GREENSTREAM_DEFAULT_INTERVAL_MINUTES=0.0 is not a finite number of minutes of at "
            "least a microsecond",
        ),
    ],
)
def test_bad_values_name_the_variable(env, message):
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        Settings.from_env(env)


def test_every_variable_is_documented_in_the_readme():
    text = README.read_text(encoding="utf-8")
    for spec in SETTINGS.values():
        assert f"`{spec.env}`" in text, spec.env


def test_dataclass_defaults_equal_the_documented_defaults():
    """Settings' field defaults and the SETTINGS table (the README's source) say the same."""
    assert Settings() == Settings.from_env({})


def test_the_dagster_resource_carries_every_setting():
    """A setting missing from the resource would silently take its default inside runs,
    whatever the environment says; the round trip keeps every value."""
    from greenstream_dagster.orchestration.resources import GreenstreamSettings

    assert set(GreenstreamSettings.model_fields) == set(SETTINGS)
    changed = Settings(home=Path("/data/gs"), max_inflated_mib=7, duckdb_memory_limit="1GB")
    assert GreenstreamSettings.from_settings(changed).settings() == changed
