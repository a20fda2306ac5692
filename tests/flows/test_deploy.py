"""Deployments on a real `prefect server` on 127.0.0.1: `stmem deploy` serving the tiny pipeline on a schedule,
runs of it that overlap, and the work-pool route from prefect.yaml with a process worker.

One server and one served deployment for the module: the first scheduled run makes the tiny run; the tests
after it start runs that reuse its stages, so each costs seconds, not a training."""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from distributed import Client, LocalCluster
from mlflow import MlflowClient

from serving.registry import default_tracking_uri
from stmem.artifacts import run_lock
from tasks.graph import STAGES
from tests.conftest import REPO, TINY_CONFIG, stmem_cli
from tests.servers import free_port, start, stop, wait_http

TERMINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def wait_for(check, seconds: float, what: str):
    deadline = time.time() + seconds
    while time.time() < deadline:
        got = check()
        if got:
            return got
        time.sleep(1)
    raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")


class Api:
    """The Prefect server's REST API."""

    def __init__(self, url: str):
        self.url = url

    def _call(self, method: str, path: str, body: dict | None = None):
        for attempt in range(5):  # a busy server's SQLite answers 503 now and then, as Prefect's client knows
            r = httpx.request(method, f"{self.url}{path}", json=body, timeout=30)
            if r.status_code != 503:
                break
            time.sleep(2)
        r.raise_for_status()
        return r.json() if r.content else None

    def get(self, path: str):
        return self._call("GET", path)

    def post(self, path: str, body: dict | None = None):
        return self._call("POST", path, body or {})

    def flow_runs(self, **flow_runs) -> list[dict]:
        return self.post("/flow_runs/filter", {"flow_runs": flow_runs, "sort": "EXPECTED_START_TIME_ASC"})

    def subflow(self, run: dict) -> dict:
        """The `stmem-run` sub-flow run of a pipeline run: the flow run of the run's stages."""
        (sub,) = self.flow_runs(parent_flow_run_id={"any_": [run["id"]]})
        return sub

    def task_states(self, flow_run: dict) -> dict[str, str]:
        """Stage -> the name of its task run's final state."""
        runs = self.post("/task_runs/filter", {"task_runs": {"flow_run_id": {"any_": [flow_run["id"]]}}})
        # a stage's task run is named "<stage>-<3 hex digits>"; extract's parts "extract-shard-<i>"
        return {t["name"].rsplit("-", 1)[0]: t["state"]["name"] for t in runs if t["name"].rsplit("-", 1)[0] in STAGES}

    def run_deployment(self, deployment_id: str, **parameters) -> dict:
        return self.post(f"/deployments/{deployment_id}/create_flow_run", {"parameters": parameters})

    def finished(self, run: dict, seconds: float = 300) -> dict:
        def done():
            now = self.get(f"/flow_runs/{run['id']}")
            return now if now["state"]["type"] in TERMINAL else None

        return wait_for(done, seconds, f"flow run {run['name']} to finish")

    def logged(self, text: str) -> list[dict]:
        return [log for log in self.post("/logs/filter", {"sort": "TIMESTAMP_ASC"}) if text in log["message"]]


@pytest.fixture(scope="module")
def prefect(tmp_path_factory):
    """A `prefect server` of the module's own, and the environment of the commands that report to it."""
    home = tmp_path_factory.mktemp("prefect")
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(PREFECT_HOME=str(home), PREFECT_API_URL=url, PATH=f"{Path(sys.executable).parent}:{env['PATH']}")
    server = start([str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1",
                    "--port", str(port)], home / "server.log", env)
    try:
        wait_http(server, f"{url}/health", home / "server.log", timeout=180)
        yield Api(url), env
    finally:
        stop(server)


@pytest.fixture(scope="module")
def served(prefect, tmp_path_factory):
    """`stmem deploy --interval 5` of the tiny config; its first scheduled run has made the run. The schedule is
    then paused and the runs it queued meanwhile are cancelled: the tests after start runs of their own."""
    api, env = prefect
    root = tmp_path_factory.mktemp("runs")
    log = root.parent / f"{root.name}-serve.log"
    proc = start([sys.executable, "-m", "flows.cli", "deploy", "--config", str(TINY_CONFIG),
                  "--set", f"run.root={root}", "--set", "extract.shards=2", "--interval", "5"], log, env)
    try:
        def scheduled_run():
            runs = [r for r in api.flow_runs(state={"type": {"any_": ["RUNNING"]}}) if r["deployment_id"]]
            return runs[0] if runs else None

        first = wait_for(scheduled_run, 180, "a scheduled flow run to start")
        api.post(f"/deployments/{first['deployment_id']}/pause_deployment")
        for queued in api.flow_runs(deployment_id={"any_": [first["deployment_id"]]},
                                    state={"type": {"any_": ["SCHEDULED", "PENDING"]}}):
            api.post(f"/flow_runs/{queued['id']}/set_state", {"state": {"type": "CANCELLED"}, "force": True})
        first = api.finished(first, 400)
        assert first["state"]["type"] == "COMPLETED", (first["state"], log.read_text()[-3000:])
        yield api, root, first
    finally:
        stop(proc)


def test_deploy_without_a_server_is_refused_in_one_line(tmp_path):
    env = {"PREFECT_API_URL": "", "PREFECT_HOME": str(tmp_path)}
    res = stmem_cli("deploy", "--config", str(TINY_CONFIG), "--interval", "60", env=env)
    assert res.returncode == 2
    assert res.stderr.startswith("stmem: error: stmem deploy needs a Prefect server")


def test_scheduled_run_makes_the_run_and_can_be_found_from_prefect_and_mlflow(served):
    api, root, run = served
    deployment = api.get(f"/deployments/{run['deployment_id']}")
    assert deployment["name"] == "tiny"
    assert deployment["parameters"]["overrides"] == [f"run.root={root}", "extract.shards=2"]
    # runs of the deployment take turns: a concurrency limit of one that queues the next
    assert deployment["global_concurrency_limit"]["limit"] == 1
    assert deployment["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    reg = json.loads((root / "tiny" / "register" / "registration.json").read_text())
    assert reg["alias"] == "champion" and reg["version"] == 1

    # the flow runs are named after the run: the deployment's, and the sub-flow of its stages
    sub = api.subflow(run)
    assert run["name"] == sub["name"] == "tiny"
    assert api.task_states(sub) == dict.fromkeys(STAGES, "Completed")
    # each stage published its figures as an artifact of that flow run, keyed by the run
    artifacts = {a["key"]: a for a in api.post("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [sub["id"]]}}})}
    assert set(artifacts) == {f"tiny-{s}-summary" for s in STAGES}
    train = artifacts["tiny-train-summary"]["data"]
    assert "| epoch | loss | val_loss | val_accuracy |" in train
    # Prefect -> MLflow: the MLflow run's id in the artifacts; MLflow -> Prefect: the flow run in the run's tags
    assert f"| mlflow_run_id | {reg['run_id']} |" in train and f"| run_id | {reg['run_id']} |" in \
        artifacts["tiny-register-summary"]["data"]
    uri = default_tracking_uri(root / "tiny")
    tags = MlflowClient(uri).get_run(reg["run_id"]).data.tags
    assert tags["prefect.flow_run_id"] == sub["id"]
    assert tags["prefect.flow_run_url"] == f"{api.url.removesuffix('/api')}/flow-runs/flow-run/{sub['id']}"


def test_overlapping_runs_take_turns_and_a_wait_past_its_bound_fails_in_one_line(served):
    api, root, first = served
    deployment = first["deployment_id"]
    run_dir = (root / "tiny").resolve()
    held = rf"pid {os.getpid()} since \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
    with run_lock(run_dir):  # as another run of the directory would (`stmem run`, another deployment)
        late = api.finished(api.run_deployment(deployment, overrides=["run.lock_timeout=1"]))
        assert late["state"]["type"] == "FAILED"
        assert re.search(rf"RunInUseError: {run_dir}: in use by {held}; waited 1 s \(run.lock_timeout\); wait for "
                         r"it or use another run.name$", late["state"]["message"]), late["state"]["message"]

        # run-time overrides are added to the deployment's (run.root stays)
        waiting = api.run_deployment(deployment, overrides=["train.epochs=1"])
        wait_for(lambda: len(api.logged(f"waiting for run {run_dir} held by pid {os.getpid()}")) == 2, 120,
                 "the run to wait for the run directory")  # the one before waited too, for 1 s
        queued = api.run_deployment(deployment, overrides=["train.epochs=1"])
        wait_for(lambda: api.get(f"/flow_runs/{queued['id']}")["state"]["name"] == "AwaitingConcurrencySlot", 120,
                 "the next run of the deployment to queue")
        assert api.get(f"/flow_runs/{waiting['id']}")["state"]["type"] == "RUNNING"
    (message,) = api.logged(f"waiting for run {run_dir}")[1:]  # the failed run's, then this one's
    assert re.fullmatch(rf"waiting for run {run_dir} held by {held} \(for up to \d+ s, run.lock_timeout\)",
                        message["message"]), message["message"]

    waiting, queued = api.finished(waiting), api.finished(queued)
    assert waiting["state"]["type"] == queued["state"]["type"] == "COMPLETED"
    assert queued["start_time"] >= waiting["end_time"]  # one after the other
    assert json.loads((run_dir / "train" / "eval.json").read_text())["epochs_run"] == 1
    # Prefect shows what each run reused: the first trained again on one epoch, the next reused all
    assert api.task_states(api.subflow(waiting)) == {"ingest": "Cached", "extract": "Cached", "kg": "Cached",
                                                     "dataset": "Cached", "train": "Completed",
                                                     "register": "Completed"}
    assert api.task_states(api.subflow(queued)) == dict.fromkeys(STAGES, "Cached")


def test_work_pool_route_from_prefect_yaml_runs_on_the_configured_task_runner(served, prefect, tmp_path):
    """`prefect deploy --all` from the checkout, a process worker started elsewhere with no extra variable,
    and a run that asks for extract on a Dask cluster: it runs there."""
    api, root, _ = served
    _, env = prefect
    prefect_cli = str(Path(sys.executable).parent / "prefect")
    for cmd, cwd in (([prefect_cli, "work-pool", "create", "stmem", "--type", "process"], tmp_path),
                     ([prefect_cli, "--no-prompt", "deploy", "--all"], REPO)):
        res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (deployment,) = [d for d in api.post("/deployments/filter") if d["name"] == "demo-nightly"]
    assert deployment["pull_steps"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]
    assert deployment["global_concurrency_limit"]["limit"] == 1

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        run = api.run_deployment(deployment["id"], config_path=str(TINY_CONFIG), overrides=[
            f"run.root={root}", "extract.shards=2", "train.epochs=1",  # the run as the test before left it
            "run.task_runner=dask", f"run.dask_address={cluster.scheduler_address}"],
            force=["extract"])  # extract runs again (and, forced, all after it)
        worker = subprocess.run([prefect_cli, "worker", "start", "--pool", "stmem", "--run-once"], cwd=tmp_path,
                                env=env, capture_output=True, text=True, timeout=400)
        run = api.get(f"/flow_runs/{run['id']}")
        assert run["state"]["type"] == "COMPLETED", (run["state"]["message"], worker.stdout[-3000:],
                                                     worker.stderr[-3000:])
        computed = client.run_on_scheduler(lambda dask_scheduler: {
            p: prefix.state_counts["memory"] for p, prefix in dask_scheduler.task_prefixes.items()})
    assert computed == {"extract_part": 2}, computed  # the shards ran on the cluster, not in threads
    assert run["name"] == "tiny"
    # extract ran again (forced, with all after it), in its two parts on the cluster; ingest was reused
    assert api.task_states(api.subflow(run)) == {"ingest": "Cached", **dict.fromkeys(STAGES[1:], "Completed")}
