"""End to end with the real thing (issue 3): `dagster dev` (web server and daemon) on a free
loopback port over a temporary data home, files dropped into landing/, and everything seen
through the GraphQL API the web UI itself uses.

- The sensor takes the files and runs their two days; the runs succeed.
- Every asset check reports a result per day; the warehouse holds the days.
- A backfill of the two days, launched through the API as the UI does from the job's page, is
  one run over both days (the assets' single-run backfill policy): it goes through the days in
  order, reports every check on its day again, and gives identical outputs. Launched from the
  asset graph, it is three runs over both days (Dagster gives each self-dependent asset's steps
  a run of their own), with the same outputs and checks.
- A rejected file and a faulty meter reach a webhook served by this test on 127.0.0.1; the
  fault is alerted once, also after the backfill re-ran its day.

Run alone with ``pytest -m integration``. About two minutes on two cores.
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pytest
from dagster_graphql import DagsterGraphQLClient

from greenstream_dagster.orchestration.assets import ASSET_KEYS
from greenstream_dagster.orchestration.checks import CHECKS, SCHEMA_TABLES

pytestmark = [
    pytest.mark.integration,
    # the dagster-graphql client calls gql in a way gql deprecates; not ours to fix
    pytest.mark.filterwarnings("ignore::DeprecationWarning:gql"),
]

REPO = Path(__file__).resolve().parents[2]
# The `dagster` command of this test's own environment (the venv's bin), else the one on PATH.
DAGSTER = shutil.which("dagster", path=str(Path(sys.executable).parent)) or shutil.which("dagster")
TABLES = SCHEMA_TABLES  # the six table assets
CHECK_KEYS = sorted(
    (tuple(key.asset_key.path), key.name) for check in CHECKS for key in check.check_keys
)
# Two consecutive past UTC days, so that they are partitions wherever and whenever this runs.
FIRST = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=3)
DAYS = [FIRST.isoformat(), (FIRST + dt.timedelta(days=1)).isoformat()]
METERS = ("M1", "M2", "M3")
STUCK = "M9"  # reads 0 kW throughout: near_zero once its run spans more than 24 hours

STARTUP_TIMEOUT = 90
RUNS_TIMEOUT = 150
BACKFILL_TIMEOUT = 240


# ---------------------------------------------------------------------------------------------
# The input files
# ---------------------------------------------------------------------------------------------


def day_file(day: str) -> str:
    """A day of 15-minute readings: three normal meters (M2 in W) and one stuck at zero, with
    one duplicated line (quarantined) so the quarantine has something to show."""
    start = dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC)
    lines = ["meter_id,timestamp,energy_value,energy_unit"]
    for i in range(96):
        ts = (start + dt.timedelta(minutes=15 * i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        for n, meter in enumerate(METERS):
            kw = 0.5 + n * 0.3 + 0.1 * (i % 8)
            value, unit = (f"{kw * 1000:.0f}", "W") if meter == "M2" else (f"{kw:.3f}", "kW")
            lines.append(f"{meter},{ts},{value},{unit}")
        lines.append(f"{STUCK},{ts},0,kW")
    lines.append(lines[1])  # the first reading again: a duplicate
    return "\n".join(lines) + "\n"


def drop(landing: Path, name: str, text: str) -> None:
    """Write as an uploader does: under a temporary name, then renamed."""
    partial = landing / f"{name}.part"
    partial.write_text(text, encoding="utf-8")
    partial.rename(landing / name)


# ---------------------------------------------------------------------------------------------
# The webhook, the API, the server
# ---------------------------------------------------------------------------------------------


class Webhook(http.server.ThreadingHTTPServer):
    """Receives alerts on 127.0.0.1 and keeps their JSON bodies."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        webhook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                webhook.received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/alerts"

    def kinds(self) -> list[str]:
        return [alert["kind"] for alert in self.received]


class Api:
    """GraphQL over HTTP, as the web UI sends it; run status through the dagster-graphql
    client. Never through a proxy: everything is on 127.0.0.1."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/graphql"
        self.client = DagsterGraphQLClient("127.0.0.1", port_number=port)
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def __call__(self, query: str, **variables) -> dict:
        body = json.dumps({"query": query, "variables": variables}).encode()
        request = urllib.request.Request(
            self.url, data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with self._opener.open(request, timeout=30) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:3000]
            raise AssertionError(f"GraphQL HTTP {error.code}: {detail}") from error
        assert not answer.get("errors"), answer["errors"]
        return answer["data"]

    def ready(self) -> bool:
        """The web server answers and the code location is loaded."""
        try:
            data = self(
                """{ workspaceOrError { ... on Workspace { locationEntries {
                       name locationOrLoadError { __typename } } } } }"""
            )
        except OSError:
            return False
        entries = data["workspaceOrError"].get("locationEntries") or []
        return any(
            (e["locationOrLoadError"] or {}).get("__typename") == "RepositoryLocation"
            for e in entries
        )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def dagster_dev(env: dict[str, str], port: int, log_path: Path) -> Iterator[subprocess.Popen]:
    """`dagster dev` in its own process group, always stopped with everything it started."""
    assert DAGSTER, "the `dagster` command is not installed (pip install -e '.[test]')"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [DAGSTER, "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        stop(process)


@contextmanager
def serving(
    env: dict[str, str], port: int, log_path: Path, api: Api, timeout: float
) -> Iterator[subprocess.Popen]:
    """`dagster dev` started, with its web server answering and the code location loaded, or
    the test fails with the server's log."""
    with dagster_dev(env, port, log_path) as server:
        wait_for(
            "the web server and the code location",
            lambda: server.poll() is not None or api.ready(),
            timeout,
            log_path,
        )
        assert server.poll() is None, log_path.read_text(errors="replace")[-4000:]
        yield server


def stop(process: subprocess.Popen) -> None:
    group = process.pid  # the session leader's id is the group's id
    if process.poll() is None:
        os.killpg(group, signal.SIGTERM)  # dagster dev shuts its services down on SIGTERM
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(group, signal.SIGKILL)  # whatever is left: code servers, run workers
    except ProcessLookupError:
        pass
    process.wait(timeout=10)


def log_tail(log: Path, chars: int = 6000) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    return f"--- dagster dev (last {chars} characters) ---\n{text[-chars:]}"


def wait_for(what: str, condition: Callable[[], object], timeout: float, log: Path, every=1.0):
    """Poll ``condition`` until it returns something truthy; fail with the server's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{log_tail(log)}")


# ---------------------------------------------------------------------------------------------
# Queries
# ---------------------------------------------------------------------------------------------

RUNS = """query($tags: [ExecutionTag!]) {
  runsOrError(filter: {tags: $tags}) { ... on Runs { results {
    runId status tags { key value } } } } }"""

CHECK_EXECUTIONS = """query($asset: AssetKeyInput!, $check: String!) {
  assetCheckExecutions(assetKey: $asset, checkName: $check, limit: 20) {
    runId status partition evaluation { success partition } } }"""

MATERIALIZATIONS = """query($asset: AssetKeyInput!, $partitions: [String!]) {
  assetOrError(assetKey: $asset) { ... on Asset {
    assetMaterializations(partitions: $partitions) {
      partition runId metadataEntries { label
        ... on IntMetadataEntry { intValue }
        ... on TextMetadataEntry { text }
        ... on JsonMetadataEntry { jsonString } } } } } }"""

LAUNCH_BACKFILL = """mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on InvalidSubsetError { message } } }"""

BACKFILL = """query($id: String!) {
  partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill {
    status runs { runId status startTime tags { key value } } } } }"""

TICKS = """query($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) { ... on Sensor { sensorState { ticks(limit: 50) {
    status skipReason runIds logEvents { events { message } } } } } } }"""

ASSET_NODES = """{ assetNodes { assetKey { path } description groupName kinds isPartitioned
  owners { ... on TeamAssetOwner { team } ... on UserAssetOwner { email } }
  metadataEntries { label } } }"""

SENSOR = """query($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) {
  ... on Sensor { description sensorState { status } } } }"""

TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


def tag(run: dict, key: str) -> str | None:
    return next((t["value"] for t in run["tags"] if t["key"] == key), None)


def run_day(run: dict) -> str | None:
    return tag(run, "dagster/partition") or tag(run, "dagster/asset_partition_range_start")


def snapshot(warehouse: Path) -> dict[str, list]:
    """The rows of the two days in every table, in a stable order (read-only, no run active)."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return {
            table: con.execute(
                f"SELECT * FROM {table} WHERE CAST(partition_date AS VARCHAR) IN (?, ?) "
                "ORDER BY ALL",
                DAYS,
            ).fetchall()
            for table in TABLES
        }


def archive_rows(home: Path) -> dict[str, int]:
    with duckdb.connect() as con:
        return {
            day: con.execute(
                "SELECT count(*) FROM read_parquet(?)",
                [str(home / "archive" / "readings" / f"date={day}" / "*.parquet")],
            ).fetchone()[0]
            for day in DAYS
        }


# ---------------------------------------------------------------------------------------------
# The test
# ---------------------------------------------------------------------------------------------


def test_files_in_runs_out_checks_per_day_backfill_and_webhook(tmp_path, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    home, dagster_home, log = tmp_path / "home", tmp_path / "dagster_home", tmp_path / "dev.log"
    (home / "landing").mkdir(parents=True)
    dagster_home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", dagster_home / "dagster.yaml")

    webhook = Webhook()
    threading.Thread(target=webhook.serve_forever, daemon=True).start()
    port = free_port()
    env = {
        **os.environ,
        "GREENSTREAM_HOME": str(home),
        "DAGSTER_HOME": str(dagster_home),
        "GREENSTREAM_SETTLE_SECONDS": "1",
        "GREENSTREAM_ALERT_WEBHOOK": webhook.url,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "PYTHONWARNINGS": "ignore",
    }
    api = Api(port)
    try:
        with serving(env, port, log, api, STARTUP_TIMEOUT):
            # --- what the UI shows before anything ran: the assets and the sensor, running ----
            nodes = {tuple(n["assetKey"]["path"]): n for n in api(ASSET_NODES)["assetNodes"]}
            assert set(nodes) == {tuple(key.path) for key in ASSET_KEYS}
            for path, node in nodes.items():
                assert node["description"] and node["groupName"] != "default", path
                assert node["kinds"] and node["owners"] and node["isPartitioned"], path
                if path[0] in TABLES:
                    labels = {e["label"] for e in node["metadataEntries"]}
                    assert "dagster/column_schema" in labels, path
            selector = {
                "repositoryLocationName": "greenstream",
                "repositoryName": "__repository__",
                "sensorName": "landing_sensor",
            }
            sensor = api(SENSOR, selector=selector)["sensorOrError"]
            assert sensor["sensorState"]["status"] == "RUNNING" and sensor["description"]

            # --- files in: the sensor takes them and runs exactly their two days ---------------
            landing = home / "landing"
            drop(landing, "broken.csv", "meter_id,timestamp,energy_value\nM1,2026-01-01,1\n")
            for day in DAYS:
                drop(landing, f"headend_{day}.csv", day_file(day))

            def sensor_runs_done():
                runs = api(RUNS, tags=[{"key": "greenstream/trigger", "value": "landing"}])
                runs = runs["runsOrError"]["results"]
                return (
                    runs if len(runs) >= 2 and all(r["status"] in TERMINAL for r in runs) else None
                )

            runs = wait_for("the sensor's runs", sensor_runs_done, RUNS_TIMEOUT, log, every=2)
            assert sorted(run_day(r) for r in runs) == DAYS
            for run in runs:
                assert api.client.get_run_status(run["runId"]).value == "SUCCESS", run
            assert sorted(p.name for p in landing.iterdir()) == []

            # The rejection is in the sensor's ticks, as the UI shows them.
            ticks = api(TICKS, selector=selector)["sensorOrError"]["sensorState"]["ticks"]
            told = " ".join(
                (t["skipReason"] or "") + " ".join(e["message"] for e in t["logEvents"]["events"])
                for t in ticks
            )
            assert "broken.csv: REJECTED" in told and "energy_unit" in told

            # --- checks: one result per check and day, all passed ------------------------------
            for asset, check in CHECK_KEYS:
                executions = api(CHECK_EXECUTIONS, asset={"path": list(asset)}, check=check)
                by_day = {e["partition"]: e for e in executions["assetCheckExecutions"]}
                assert sorted(by_day) == DAYS, (asset, check, by_day)
                for day, execution in by_day.items():
                    assert execution["status"] == "SUCCEEDED", (asset, check, day, execution)
                    assert execution["evaluation"]["partition"] == day

            # --- the warehouse: per-day metadata as the UI shows it, then the tables ----------
            def metadata(asset: str) -> dict[str, dict]:
                """Each day's materialization metadata of ``asset`` (the latest per day)."""
                found = api(MATERIALIZATIONS, asset={"path": [asset]}, partitions=DAYS)
                by_day: dict[str, dict] = {}
                for event in found["assetOrError"]["assetMaterializations"]:
                    by_day.setdefault(
                        event["partition"], {e["label"]: e for e in event["metadataEntries"]}
                    )
                return by_day

            raw_meta = metadata("raw_readings")
            assert {day: m["rows"]["intValue"] for day, m in raw_meta.items()} == {
                day: 4 * 96 + 1 for day in DAYS
            }
            assert "preview" in raw_meta[DAYS[0]]
            reasons = json.loads(
                metadata("quarantine")[DAYS[0]]["quarantine_by_reason"]["jsonString"]
            )
            assert reasons == {"duplicate": 1}
            faults_meta = metadata("fault_flags")
            assert [faults_meta[day]["faulty_meters"]["intValue"] for day in DAYS] == [0, 1]
            assert STUCK in faults_meta[DAYS[1]]["faulty_meter_ids"]["text"]
            assert "system_peak_kw" in metadata("system_peaks")[DAYS[1]]

            before = snapshot(home / "warehouse.duckdb")
            for day in DAYS:
                day_rows = [r for r in before["raw_readings"] if str(r[-1]) == day]
                assert len(day_rows) == 4 * 96 + 1
            assert len(before["standardized_readings"]) == 2 * 4 * 96
            assert len(before["quarantine"]) == 2  # the duplicate of each day
            assert len(before["system_peaks"]) == 2 and len(before["meter_daily_peaks"]) == 8
            assert {r[0] for r in before["fault_flags"]} == {STUCK}
            assert archive_rows(home) == {day: 4 * 96 for day in DAYS}

            # --- a backfill of the two days through the API, as the UI launches it from the
            # job's page, then from the asset graph: runs over both days, not one per day ----
            job_page = {
                "partitionSetName": "daily_pipeline_partition_set",
                "repositorySelector": {
                    "repositoryLocationName": "greenstream",
                    "repositoryName": "__repository__",
                },
            }
            for title, selector in (("job page", job_page), ("asset graph", None)):
                params = {
                    "assetSelection": [{"path": key.path} for key in ASSET_KEYS],
                    "partitionNames": DAYS,
                    "fromFailure": False,
                    "title": f"end-to-end test: re-run two days from the {title}",
                }
                if selector:
                    params["selector"] = selector
                launched = api(LAUNCH_BACKFILL, params=params)["launchPartitionBackfill"]
                assert launched["__typename"] == "LaunchBackfillSuccess", (title, launched)

                def backfill_done(backfill_id=launched["backfillId"]):
                    backfill = api(BACKFILL, id=backfill_id)["partitionBackfillOrError"]
                    done = backfill["status"] not in {"REQUESTED", "CANCELING", "FAILING"}
                    return (
                        backfill
                        if done and all(r["status"] in TERMINAL for r in backfill["runs"])
                        else None
                    )

                backfill = wait_for(title, backfill_done, BACKFILL_TIMEOUT, log, every=3)
                assert backfill["status"] in {"COMPLETED", "COMPLETED_SUCCESS"}, backfill
                runs = backfill["runs"]
                # The job's page: one run. The asset graph: Dagster starts the steps of each
                # self-dependent asset (clean data, fault flags) in a run of its own, a daemon
                # pass apart; still each run covers both days, not one run per day.
                assert len(runs) == (1 if selector else 3), (title, runs)
                for run in runs:
                    assert run["status"] == "SUCCESS", title
                    assert tag(run, "dagster/asset_partition_range_start") == DAYS[0], title
                    assert tag(run, "dagster/asset_partition_range_end") == DAYS[1], title

                # identical outputs, and every check ran again, recorded on its day
                after = snapshot(home / "warehouse.duckdb")
                for table in TABLES:
                    assert after[table] == before[table], (title, table)
                assert archive_rows(home) == {day: 4 * 96 for day in DAYS}
                for asset, check in CHECK_KEYS:
                    executions = api(CHECK_EXECUTIONS, asset={"path": list(asset)}, check=check)
                    rerun = {
                        e["partition"]
                        for e in executions["assetCheckExecutions"]
                        if e["runId"] in {r["runId"] for r in runs} and e["status"] == "SUCCEEDED"
                    }
                    assert rerun == set(DAYS), (title, asset, check)
    except BaseException:
        print(log_tail(log))  # shown with the failure
        raise
    finally:
        webhook.shutdown()
        webhook.server_close()

    # --- alerts: the webhook got the rejection and the fault, the fault only once -------------
    assert webhook.kinds().count("file_rejected") == 1
    (rejected,) = [a for a in webhook.received if a["kind"] == "file_rejected"]
    assert rejected["file"] == "broken.csv" and "energy_unit" in rejected["text"]
    faults = [a for a in webhook.received if a["kind"] == "faulty_meter"]
    assert [(a["meter_id"], a["rule"]) for a in faults] == [(STUCK, "near_zero")]
    assert faults[0]["text"].startswith("GreenStream faulty_meter:")
    logged = [json.loads(line) for line in (home / "alerts.jsonl").read_text().splitlines()]
    assert [a["kind"] for a in logged] == webhook.kinds()
    assert "run_failed" not in webhook.kinds()
