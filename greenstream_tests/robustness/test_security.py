"""Issue 5, security: landing names never lead outside the data home, the raw zone is read-only,
the webhook URL never reaches the alerts file, the logs or the web UI, and no SQL is built by
pasting input text."""

from __future__ import annotations

import ast
import http.server
import json
import logging
import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import dagster as dg
import pytest

import greenstream_dagster
from greenstream_dagster import pipeline
from greenstream_dagster.alerts import raise_alert
from greenstream_dagster.landing import land_file
from greenstream_dagster.orchestration.resources import GreenstreamSettings
from greenstream_dagster.orchestration.sensors import landing_sensor
from greenstream_dagster.settings import Settings
from greenstream_dagster.storage import warehouse
from greenstream_dagster.storage.raw_zone import RawZone

from .helpers import DAY, write_lines

GOOD_LINE = "m1,2026-11-20T00:00:00Z,1.5,kW"
SECRET = "s3cr3t-T0KEN-9f8e7d"


def tree(root: Path) -> dict[str, bytes | str]:
    """Every entry under ``root``: file contents, link targets, and other kinds by name."""
    found: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            found[key] = "link -> " + os.readlink(path)
        elif path.is_file():
            found[key] = path.read_bytes()
        else:
            found[key] = stat.filemode(path.lstat().st_mode)
    return found


def sensor_ticks(settings: Settings, ticks: int) -> list[dg.SensorResult]:
    resources = {"greenstream": GreenstreamSettings.from_settings(settings)}
    results, cursor = [], None
    with dg.instance_for_test() as instance:
        for _ in range(ticks):
            context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
            result = landing_sensor(context)
            results.append(result)
            cursor = result.cursor
    return results


ODD_NAMES = [
    "odd name ü € 😀.csv",
    "'; DROP TABLE raw_files; --.csv",
    "x\\..\\..\\outside\\evil.csv",  # backslashes are plain characters in a POSIX name
    "-rf --no-preserve-root.csv",
    "line\nbreak.csv",
    "$(touch pwned).csv",
]


def test_landing_names_never_lead_outside_the_data_home(tmp_path):
    settings = Settings(home=tmp_path / "home", settle_seconds=0)
    outside = tmp_path / "outside"
    write_lines(outside / "secret.csv", ["secret,2026-11-20T00:00:00Z,9,kW"])
    (outside / "folder").mkdir()
    write_lines(outside / "folder" / "inner.csv", ["inner,2026-11-20T00:00:00Z,9,kW"])
    landing = settings.landing_dir
    for i, name in enumerate(ODD_NAMES):
        write_lines(landing / name, [GOOD_LINE.replace("m1", f"m{i}")])
    (landing / "link.csv").symlink_to(outside / "secret.csv")
    (landing / "dangling.csv").symlink_to(tmp_path / "nowhere.csv")
    (landing / "folder_link").symlink_to(outside / "folder")
    write_lines(landing / "sub" / "nested.csv", [GOOD_LINE.replace("m1", "nested")])
    os.mkfifo(landing / "pipe.csv")  # opening it would block a reader forever
    write_lines(landing / ".hidden.csv", [GOOD_LINE.replace("m1", "hidden")])
    write_lines(landing / "upload.csv.part", [GOOD_LINE.replace("m1", "part")])
    write_lines(landing / "...", [GOOD_LINE.replace("m1", "dots")])
    write_lines(landing / "..\\..\\evil.csv", [GOOD_LINE.replace("m1", "dots2")])
    outside_before = tree(outside)
    landing_ignored = {
        "link.csv",
        "dangling.csv",
        "folder_link",
        "sub",
        "pipe.csv",
        ".hidden.csv",
        "upload.csv.part",
        "...",
        "..\\..\\evil.csv",
    }

    results = sensor_ticks(settings, 3)

    assert tree(outside) == outside_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "outside"]
    # Only the plain files were taken, each under its own name, and only those left landing/.
    assert {p.name for p in landing.iterdir()} == landing_ignored
    zone = RawZone(settings.raw_dir)
    assert sorted(s.original_name for s in zone.sidecars()) == sorted(ODD_NAMES)
    for path in settings.raw_dir.iterdir():
        assert not path.is_symlink()
        assert path.resolve().parent == settings.raw_dir.resolve()
        sha = path.name.removesuffix(".json")
        assert len(sha) == 64 and set(sha) <= set("0123456789abcdef"), path.name
    # Nothing in the data home points outside it.
    for path in settings.home.rglob("*"):
        assert not path.is_symlink() or path.parent == landing, path
    requests = [r for result in results for r in (result.run_requests or [])]
    assert [r.partition_key for r in requests] == [DAY.isoformat()]

    # The odd names travel as data: raw_files holds them verbatim.
    with warehouse.connect(":memory:") as con:
        pipeline.sync_raw_files(con, zone.sidecars())
        names = [n for (n,) in con.execute("SELECT original_name FROM raw_files").fetchall()]
    assert sorted(names) == sorted(ODD_NAMES)


def test_raw_zone_is_read_only_after_writing(tmp_path):
    settings = Settings(home=tmp_path / "home")
    accepted = land_file(write_lines(tmp_path / "a.csv", [GOOD_LINE]), settings)
    rejected_path = tmp_path / "b.csv"
    rejected_path.write_bytes(b"\x00\x01 not csv")
    rejected = land_file(rejected_path, settings)
    zone = RawZone(settings.raw_dir)
    entries = sorted(settings.raw_dir.iterdir())
    assert len(entries) == 4  # two files, two sidecars, no temp file left
    before = {p: (p.stat().st_mtime_ns, p.stat().st_ino, p.read_bytes()) for p in entries}
    for path in entries:
        assert stat.S_IMODE(path.stat().st_mode) & 0o222 == 0, f"{path.name} is writable"

    with pytest.raises(FileExistsError):
        zone.write_sidecar(accepted.sidecar)
    # Landing the same bytes again under another name changes nothing.
    again = land_file(write_lines(tmp_path / "copy.csv", [GOOD_LINE]), settings)
    assert again.already_landed and again.sidecar == accepted.sidecar
    assert {p: (p.stat().st_mtime_ns, p.stat().st_ino, p.read_bytes()) for p in entries} == before
    assert sorted(settings.raw_dir.iterdir()) == entries
    assert rejected.sidecar.status == "rejected"


def test_landing_never_follows_a_link_or_opens_a_pipe(tmp_path):
    """A name seen as a plain file may be swapped for a link before it is opened: taken with
    ``follow_symlinks=False`` (as files from landing/ are), a link is refused and nothing of
    its target reaches the raw zone. A FIFO is refused without blocking."""
    settings = Settings(home=tmp_path / "home")
    secret = write_lines(tmp_path / "outside" / "secret.csv", ["secret,2026-11-20T00:00:00Z,9,kW"])
    link = tmp_path / "landing" / "swapped.csv"
    link.parent.mkdir()
    link.symlink_to(secret)
    with pytest.raises(OSError):
        land_file(link, settings, follow_symlinks=False)
    fifo = tmp_path / "landing" / "pipe.csv"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def take_fifo():
        try:
            land_file(fifo, settings)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    taker = threading.Thread(target=take_fifo, daemon=True)
    taker.start()
    taker.join(timeout=10)
    assert not taker.is_alive(), "opening a FIFO blocked"
    assert len(outcome) == 1 and isinstance(outcome[0], OSError)
    assert list(settings.raw_dir.iterdir()) == []
    assert link.is_symlink() and secret.exists()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FailingHook(http.server.BaseHTTPRequestHandler):
    """A webhook that takes the alert and answers 500 (the error then names the URL)."""

    received: list[dict] = []

    def do_POST(self):  # noqa: N802
        length = int(self.headers["Content-Length"])
        FailingHook.received.append(json.loads(self.rfile.read(length)))
        self.send_response(500)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def failing_hook():
    server = http.server.HTTPServer(("127.0.0.1", 0), FailingHook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FailingHook.received = []
    yield f"http://127.0.0.1:{server.server_port}/hooks/{SECRET}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    "kind", ["unreachable", "user_and_password", "bad_port", "no_scheme", "answers_500"]
)
def test_webhook_url_never_in_alerts_or_logs(tmp_path, caplog, failing_hook, kind):
    url = {
        "unreachable": f"http://127.0.0.1:{closed_port()}/hooks/{SECRET}",
        "user_and_password": f"http://alerts:{SECRET}@127.0.0.1:{closed_port()}/hook",
        "bad_port": f"http://127.0.0.1:port/{SECRET}",
        "no_scheme": f"hooks.example.com/{SECRET}",
        "answers_500": failing_hook,
    }[kind]
    settings = Settings(home=tmp_path / "home", alert_webhook=url)
    with caplog.at_level(logging.DEBUG):
        record = raise_alert(settings, "run_failed", "processing of 2026-11-20 failed")
    assert SECRET not in json.dumps(record)
    assert SECRET not in settings.alerts_path.read_text()
    assert SECRET not in caplog.text
    assert "alert webhook delivery failed" in caplog.text
    if kind == "answers_500":
        assert FailingHook.received[0]["text"] == (
            "GreenStream run_failed: processing of 2026-11-20 failed"
        )


def test_webhook_url_never_in_process_output_or_files(tmp_path):
    """``greenstream process`` with a webhook that cannot be reached, a rejected file and a
    good one: the secret is in no output and no file under the data home or DAGSTER_HOME."""
    home, dagster_home = tmp_path / "home", tmp_path / "dagster_home"
    dagster_home.mkdir()
    deploy = Path(greenstream_dagster.__file__).parents[1] / "deploy" / "dagster.yaml"
    if deploy.exists():
        (dagster_home / "dagster.yaml").write_text(deploy.read_text())
    good = write_lines(tmp_path / "in" / "good.csv", [GOOD_LINE])
    bad = tmp_path / "in" / "bad.csv"
    bad.write_bytes(b"\xff\xfe\x00junk")
    env = {
        **os.environ,
        "GREENSTREAM_HOME": str(home),
        "DAGSTER_HOME": str(dagster_home),
        "GREENSTREAM_ALERT_WEBHOOK": f"http://127.0.0.1:{closed_port()}/hooks/{SECRET}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "greenstream_dagster.cli", "process", str(good), str(bad)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "file_rejected" in (home / "alerts.jsonl").read_text()
    assert SECRET not in done.stdout + done.stderr
    for root in (home, dagster_home):
        for path in root.rglob("*"):
            if path.is_file():
                assert SECRET.encode() not in path.read_bytes(), path


def test_webhook_url_not_shown_in_the_web_ui(tmp_path):
    """The code location's snapshot is what the web UI (and its GraphQL API) shows of each
    resource's configuration: the webhook must appear there as its variable, not its value."""
    script = (
        "from dagster._core.remote_representation.external_data import RepositorySnap\n"
        "from dagster._serdes import serialize_value\n"
        "from greenstream_dagster.definitions import defs\n"
        "print(serialize_value(RepositorySnap.from_def(defs.get_repository_def())))\n"
    )
    env = {
        **os.environ,
        "GREENSTREAM_HOME": str(tmp_path / "home"),
        "GREENSTREAM_ALERT_WEBHOOK": f"https://hooks.example.com/services/{SECRET}",
    }
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "alert_webhook" in done.stdout
    assert SECRET not in done.stdout


# --- SQL is never built from input text ---------------------------------------------------------

PACKAGE = Path(greenstream_dagster.__file__).parent
SQL_WORDS = ("SELECT ", "INSERT ", "DELETE ", "CREATE ", "COPY ", "UPDATE ", "DROP ", " WHERE ")
# Everything pasted into SQL text in the package, each reviewed: table and staged-table names,
# constants of rules/codes.py and of the rule modules, SQL fragments built by the rule
# functions from such constants, a typed date, and the archive's temp path (quotes doubled).
# An entry here is a promise that no input text (meter ids, values, file names) can reach it.
REVIEWED_INTERPOLATIONS = {
    "table",
    "staged",
    "name",
    "columns",
    "source",
    "raw_text",
    "naive_ts",
    "dst_problem",
    "window",
    "measured",
    "quoted",
    "', '.join(COLUMNS)",
    "day.isoformat()",
    "placed_rows_sql(source, settings)",
    "checked_rows_sql(source, settings)",
    # rules/standardize.py: SQL built from constants only (codes and table names)
    "spacings_of_stored_day_sql()",
    # rules/standardize.py: the range of meter codes of a z-score group, integers of the code's
    # own
    "first_code",
    "end_code",
    # rules/row_checks.py: the relation of timestamp texts (a constant subquery over ``source``)
    "texts",
    # validation.py: the unique-key column names of a Pandera schema (constants)
    "keys",
    # storage/warehouse.py: a type's definition in ``TYPES`` (built from ``codes``), and a
    # table's columns from ``TABLES`` and ``COMPRESSION`` (constants)
    "definition",
    "table_definition(name)",
}


def _reviewed(expression: str) -> bool:
    if expression in REVIEWED_INTERPOLATIONS:
        return True
    if expression.split(".")[-1].isupper():  # a constant: MAX_OFFSET_HOURS, codes.DUPLICATE
        return True
    return expression.startswith(("sql_list(", "checked_rows_sql(", "stamps_sql("))


def _sql_strings(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
            if any(word in text.upper() for word in SQL_WORDS):
                yield node
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            # "...".format(...) and "..." % (...) on SQL text are not used at all.
            if node.func.attr == "format" and isinstance(node.func.value, ast.Constant):
                if any(word in str(node.func.value.value).upper() for word in SQL_WORDS):
                    yield node
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
            if isinstance(node.left, ast.Constant) and any(
                word in str(node.left.value).upper() for word in SQL_WORDS
            ):
                yield node


def test_sql_is_never_built_from_input_text():
    unreviewed = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in _sql_strings(tree):
            where = f"{path.relative_to(PACKAGE)}:{node.lineno}"
            if not isinstance(node, ast.JoinedStr):
                unreviewed.append(f"{where}: SQL built with format or %")
                continue
            for value in node.values:
                if isinstance(value, ast.FormattedValue):
                    expression = ast.unparse(value.value)
                    if not _reviewed(expression):
                        unreviewed.append(f"{where}: {{{expression}}}")
    assert unreviewed == []


def test_relation_filters_are_not_built_from_input_text():
    """DuckDB relation methods (filter, project, order) take SQL text too."""
    unreviewed = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("filter", "project", "order", "aggregate")
                and node.args
                and isinstance(node.args[0], ast.JoinedStr)
            ):
                for value in node.args[0].values:
                    if isinstance(value, ast.FormattedValue):
                        expression = ast.unparse(value.value)
                        if not _reviewed(expression):
                            unreviewed.append(f"{path.name}:{node.lineno}: {{{expression}}}")
    assert unreviewed == []


def test_quotes_in_ids_names_and_headers_round_trip(tmp_path):
    """Input text with quotes and SQL goes in and comes out unchanged; the tables survive."""
    settings = Settings(home=tmp_path / "home")
    meter = "O'Brien\"; DROP TABLE standardized_readings; --"
    column = "note'); DROP TABLE raw_readings; --"
    path = tmp_path / "in" / 'it\'s "quoted"; DROP TABLE raw_files.csv'
    path.parent.mkdir()
    path.write_text(
        f'meter_id,timestamp,energy_value,energy_unit,"{column}"\n'
        f'"{meter.replace(chr(34), chr(34) * 2)}",2026-11-20T00:00:00Z,1.5,kW,"x\'y"\n',
        encoding="utf-8",
    )
    landed = land_file(path, settings)
    with warehouse.connect(":memory:") as con:
        for build in (pipeline.build_raw_readings, pipeline.build_standardized):
            build(con, settings, DAY)
        assert con.execute("SELECT meter_id FROM standardized_readings").fetchall() == [(meter,)]
        (extra,) = con.execute("SELECT extra_fields FROM raw_readings").fetchone()
        assert json.loads(extra) == {column: "x'y"}
        assert con.execute("SELECT original_name FROM raw_files").fetchall() == [(path.name,)]
        assert landed.sidecar.original_name == path.name
