"""The benchmark (benchmarks/pipeline_benchmark.py) runs end to end at a tiny size and prints its
table. No timing is asserted: figures belong in notes and the README, not in tests."""

import datetime as dt
import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "pipeline_benchmark.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("pipeline_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_benchmark_runs_and_prints_its_table(tmp_path, capsys):
    bench = load_benchmark()
    figures = bench.main(
        [
            "--meters",
            "12",
            "--days",
            "1",
            "--sensor-files",
            "6",
            "--repeat",
            "2",
            "--data-dir",
            str(tmp_path / "data"),
            "--work-dir",
            str(tmp_path / "work"),
            "--json",
            str(tmp_path / "figures.json"),
        ]
    )
    printed = capsys.readouterr().out
    sections = {f.section for f in figures.rows}
    assert {"data", "one day", "floor", "backfill", "sensor, 6 files", "machine"} <= sections
    for figure in (
        "greenstream process wall time",
        "peak RSS",
        "ratio pipeline / floor",
        "rows per second (raw rows / wall)",
        "tick 2 (settled, lands <= 50)",
        "last day again, fresh process: peak RSS",
    ):
        assert figure in printed
    # The day and the floor are timed twice in turn: both pairs, and the verdict on the medians.
    pairs = [f.name for f in figures.rows if f.section == "floor" and f.name.startswith("pair")]
    assert pairs == ["pair 1: day / floor", "pair 2: day / floor"]
    (verdict,) = [f for f in figures.rows if f.name == "ratio pipeline / floor"]
    assert verdict.note.endswith("(medians of 2 pairs)")
    exits = [f.note for f in figures.rows if f.name == "greenstream process wall time"]
    assert exits == ["exit 0"]
    # The backfill is one run; each day's share of it is found from the steps' log lines.
    start = bench.default_start(1)
    per_day = [f.name.split()[-1] for f in figures.rows if f.section == "backfill per day"]
    assert per_day == [(start - dt.timedelta(days=1)).isoformat(), start.isoformat()]
    (backfill,) = [f for f in figures.rows if f.name == "2 days in one process"]
    assert backfill.note.endswith("; 1 run(s)")
    assert (tmp_path / "figures.json").exists()

    # A second run reuses the generated files instead of generating them again.
    again = bench.dataset(tmp_path / "data", 12, 1, bench.default_start(1), 15, 42)
    assert again.generated_seconds is None and again.files


def test_the_verdict_takes_the_median_day_and_the_median_floor():
    """Each median taken apart (for an even count, the lower middle one): the day and the floor
    of a pair need not be the pair's."""
    bench = load_benchmark()

    def pair(day: float, floor: float):
        run = SimpleNamespace(measured=SimpleNamespace(wall_seconds=day))
        return run, SimpleNamespace(wall_seconds=floor), 0

    pairs = [pair(17.0, 2.5), pair(15.0, 3.5), pair(16.0, 3.0)]
    run, floor = bench.median_pair(pairs)
    assert (run.measured.wall_seconds, floor.wall_seconds) == (16.0, 3.0)
    run, floor = bench.median_pair(pairs[:2])
    assert (run.measured.wall_seconds, floor.wall_seconds) == (15.0, 2.5)
