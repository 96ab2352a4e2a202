"""``startup_gc``: ``greenstream process`` collects nothing while it starts, freezes what the
start built, and collects as usual from its first run on, whatever happens in between."""

import gc

import pytest

from greenstream_dagster import cli, process, startup_gc
from greenstream_tests.support import write_csv


@pytest.fixture(autouse=True)
def collector_restored():
    """Each test leaves the collector as it found it (on, nothing frozen)."""
    assert gc.isenabled()
    yield
    startup_gc.resume()
    gc.enable()
    gc.unfreeze()


def test_pause_then_resume_freezes_the_start_and_collects_again():
    frozen = gc.get_freeze_count()
    startup_gc.pause()
    assert not gc.isenabled()
    made_while_paused = [[] for _ in range(1000)]
    startup_gc.resume()
    assert gc.isenabled()
    assert gc.get_freeze_count() >= frozen + len(made_while_paused)
    # frozen: no collection walks them any more
    made = {id(x) for x in made_while_paused}
    assert not any(id(x) in made for x in gc.get_objects())


def test_resume_only_undoes_a_pause():
    startup_gc.resume()  # no pause before it: nothing frozen
    assert gc.isenabled() and gc.get_freeze_count() == 0
    gc.disable()  # off by someone else: pause leaves it, resume does not turn it on
    startup_gc.pause()
    startup_gc.resume()
    assert not gc.isenabled() and gc.get_freeze_count() == 0


def _one_reading(tmp_path):
    return write_csv(tmp_path / "in.csv", [("m1", "2026-11-20T10:00:00Z", "1.0", "kW")])


def test_the_command_starts_paused_and_runs_its_days_collecting(tmp_path, monkeypatch):
    monkeypatch.setenv("GREENSTREAM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    seen = {}
    open_instance = process._instance

    def instance(home):
        seen["opening the instance"] = gc.isenabled()
        return open_instance(home)

    def run_days(days, settings, instance):
        seen["running"] = (days, gc.isenabled(), gc.get_freeze_count() > 0)
        return []

    monkeypatch.setattr(process, "_instance", instance)
    monkeypatch.setattr(process, "run_days", run_days)
    assert cli.main(["process", str(_one_reading(tmp_path))]) == 0
    assert seen["opening the instance"] is False
    days, collecting, frozen = seen["running"]
    assert [d.isoformat() for d in days] == ["2026-11-20"]
    assert collecting and frozen
    assert gc.isenabled()


def test_the_command_collects_again_when_its_start_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("GREENSTREAM_HOME", str(tmp_path / "home"))

    def broken(home):
        raise RuntimeError("no instance")

    monkeypatch.setattr(process, "_instance", broken)
    with pytest.raises(RuntimeError, match="no instance"):
        cli.main(["process", str(_one_reading(tmp_path))])
    assert gc.isenabled()
