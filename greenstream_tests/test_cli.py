"""The console command ends without Python's teardown: its exit code, its output and the exit
handlers must survive that."""

import subprocess
import sys

RUN_WITH_HANDLER = r"""
import atexit, sys
from pathlib import Path
marker = Path(sys.argv[1])
atexit.register(lambda: marker.write_text("handled"))
sys.argv = ["greenstream", *sys.argv[2:]]
print("before the command")
from greenstream_dagster.cli import run
run()
"""


def test_the_command_keeps_its_exit_code_output_and_exit_handlers(tmp_path):
    marker = tmp_path / "marker"
    missing = tmp_path / "nowhere.csv"
    done = subprocess.run(
        [sys.executable, "-c", RUN_WITH_HANDLER, str(marker), "process", str(missing)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stdout == "before the command\n"
    assert done.stderr == f"greenstream: no such file: {missing}\n"
    assert marker.read_text() == "handled"
