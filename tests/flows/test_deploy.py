"""Schedules: a real `prefect server` on 127.0.0.1 and `stmem deploy` serving the tiny pipeline on an interval."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import REPO, TINY_CONFIG, stmem_cli
from tests.servers import free_port


def wait_for(check, seconds: float, what: str):
    deadline = time.time() + seconds
    while time.time() < deadline:
        got = check()
        if got:
            return got
        time.sleep(1)
    raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")


def wait_healthy(url: str, what: str, seconds: float = 180) -> None:
    """Until GET ``url`` answers 200 (a server that has started)."""
    def healthy():
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, seconds, what)


def test_deploy_without_a_server_is_refused_in_one_line(tmp_path):
    env = {"PREFECT_API_URL": "", "PREFECT_HOME": str(tmp_path)}
    res = stmem_cli("deploy", "--config", str(TINY_CONFIG), "--interval", "60", env=env)
    assert res.returncode == 2
    assert res.stderr.startswith("stmem: error: stmem deploy needs a Prefect server")


def test_scheduled_deployment_runs_the_pipeline_and_registers_a_model(tmp_path):
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": api,
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    prefect = str(Path(sys.executable).parent / "prefect")
    procs = []
    try:
        procs.append(subprocess.Popen([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                      env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        wait_healthy(f"{api}/health", "prefect server")
        root = tmp_path / "runs"
        procs.append(subprocess.Popen([sys.executable, "-m", "flows.cli", "deploy", "--config", str(TINY_CONFIG),
                                       "--set", f"run.root={root}", "--interval", "5"], cwd=REPO, env=env,
                                      start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        def completed_scheduled_runs():
            body = {"flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}}
            runs = httpx.post(f"{api}/flow_runs/filter", json=body, timeout=10).json()
            return [r for r in runs if r["deployment_id"] and r["flow_id"]]

        runs = wait_for(completed_scheduled_runs, 300, "a completed scheduled flow run")
        deployment = httpx.get(f"{api}/deployments/{runs[0]['deployment_id']}", timeout=10).json()
        assert deployment["name"] == "tiny"
        assert deployment["parameters"]["overrides"] == [f"run.root={root}"]
        reg = json.loads((root / "tiny" / "register" / "registration.json").read_text())
        assert reg["alias"] == "champion" and reg["version"] == 1
        # each stage published its figures as a Prefect artifact; training's has a row per epoch
        artifacts = httpx.post(f"{api}/artifacts/filter", json={}, timeout=10).json()
        by_key = {a["key"]: a for a in artifacts}
        assert {f"{s}-summary" for s in ("ingest", "extract", "kg", "dataset", "train", "register")} <= set(by_key)
        assert "| epoch | loss | val_loss | val_accuracy |" in by_key["train-summary"]["data"]
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
