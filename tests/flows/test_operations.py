"""Operating the pipeline with faults: skipping by content, stale and deleted artifacts, locking,
bad input, a run killed during training, a recipe of two runs. Each runs the real CLI on the tiny config."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from serving.registry import default_tracking_uri
from stmem.artifacts import run_lock
from stmem.layout import RunLayout
from tasks.graph import STAGES
from tests.conftest import REPO, TINY_CONFIG, error_lines, stmem_cli


def manifests(run_dir: Path) -> dict[str, str]:
    L = RunLayout(run_dir)
    return {s: (L.stage_dir(s) / "manifest.json").read_text() for s in STAGES}


def versions(run_dir: Path, name: str = "stmem-tiny") -> list[str]:
    uri = default_tracking_uri(run_dir)
    return sorted(str(v.version) for v in MlflowClient(uri, registry_uri=uri).search_model_versions(f"name='{name}'"))


def summary_lines(stdout: str) -> dict[str, str]:
    """Stage -> 'ran', 'reused' or 'stale', from the CLI's stage summary."""
    return {p[0]: p[1] for p in (line.split() for line in stdout.splitlines()) if len(p) > 2 and p[0] in STAGES}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ops")
    res = stmem_cli("run", "--config", str(TINY_CONFIG), "--set", f"run.root={root}")
    assert res.returncode == 0, res.stderr[-3000:]
    return root / "tiny"


def prefect_servers() -> set[int]:
    """Pids of running Prefect temporary servers."""
    out = subprocess.run(["pgrep", "-f", "prefect.server.api.server:create_app"], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


def cli_run(run_dir: Path, *args: str) -> subprocess.CompletedProcess:
    res = stmem_cli("run", "--config", str(TINY_CONFIG), "--set", f"run.root={run_dir.parent}", *args)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


# The tests below share one run directory and run in file order: each starts from what the one before left.

def test_unchanged_rerun_skips_every_stage_and_registers_no_new_version(run_dir):
    before = manifests(run_dir)
    res = cli_run(run_dir)
    assert summary_lines(res.stdout) == dict.fromkeys(STAGES, "reused")
    assert manifests(run_dir) == before  # no stage body ran: nothing was rewritten
    assert (run_dir / "stmem.log").read_text().count("skipped, its inputs, config and code are unchanged") >= 6
    assert versions(run_dir) == ["1"]


def test_training_change_reruns_train_and_register_only(run_dir):
    before = manifests(run_dir)
    res = cli_run(run_dir, "--set", "train.lr=0.002")
    assert summary_lines(res.stdout) == {**dict.fromkeys(STAGES, "reused"), "train": "ran", "register": "ran"}
    after = manifests(run_dir)
    assert [s for s in STAGES if after[s] != before[s]] == ["train", "register"]
    assert versions(run_dir) == ["1", "2"]
    # an execution-only setting is not a change
    res = cli_run(run_dir, "--set", "train.lr=0.002", "--set", "train.num_threads=1")
    assert summary_lines(res.stdout) == dict.fromkeys(STAGES, "reused")


def test_force_reruns_a_stage_and_what_depends_on_it(run_dir):
    before = manifests(run_dir)
    res = cli_run(run_dir, "--set", "train.lr=0.002", "--force", "dataset")
    assert summary_lines(res.stdout) == {**dict.fromkeys(STAGES, "reused"), "dataset": "ran", "train": "ran",
                                         "register": "ran"}
    after = manifests(run_dir)
    assert after["kg"] == before["kg"]
    # the rebuilt dataset is byte for byte the one before, so the new version is compared with the champion
    assert json.loads(after["dataset"])["outputs"] == json.loads(before["dataset"])["outputs"]
    reason = json.loads((RunLayout(run_dir).stage_dir("register") / "registration.json").read_text())["reason"]
    assert not reason.startswith("not compared"), reason


def test_deleted_or_altered_artifact_is_rebuilt_not_reused(run_dir):
    L = RunLayout(run_dir)
    (L.stage_dir("extract") / "mentions.parquet").unlink()
    (L.stage_dir("kg") / "kg_metrics.json").write_text("{}")
    res = cli_run(run_dir, "--set", "train.lr=0.002")
    ran = summary_lines(res.stdout)
    assert ran["ingest"] == "reused" and ran["extract"] == "ran" and ran["kg"] == "ran"
    assert (L.stage_dir("extract") / "mentions.parquet").is_file()
    assert json.loads((L.stage_dir("kg") / "kg_metrics.json").read_text())["mrr"] >= 0
    log = (run_dir / "stmem.log").read_text()
    assert "mentions.parquet was deleted" in log and "kg_metrics.json was changed" in log


def test_stale_upstream_is_refused_by_a_single_stage(run_dir):
    before = manifests(run_dir)
    changed = ["--set", f"run.root={run_dir.parent}", "--set", "corpus.demo.train_stories=30"]
    res = stmem_cli("stage", "ingest", "--config", str(TINY_CONFIG), *changed)
    assert res.returncode == 0, res.stderr[-3000:]
    # the summary says which stages the new corpus left out of date, and shows none of their old figures
    assert summary_lines(res.stdout) == {"ingest": "ran", **dict.fromkeys(STAGES[1:], "stale")}
    assert "  extract  stale            stage 'extract' ran on other inputs, config or code\n" in res.stdout
    assert "mentions=" not in res.stdout and "test exact-match accuracy" not in res.stdout
    assert "registered models:/" not in res.stdout
    # the mentions were extracted from the corpus before: building a dataset on them is refused
    res = stmem_cli("stage", "dataset", "--config", str(TINY_CONFIG), *changed)
    assert res.returncode == 2
    [line] = error_lines(res.stderr)
    assert line.startswith("stmem: error: stage 'extract' is out of date (stage 'extract' ran on other inputs")
    assert manifests(run_dir)["dataset"] == before["dataset"]
    cli_run(run_dir)  # put the run back as the config makes it, for the tests after


def test_second_concurrent_run_is_refused_in_one_line(run_dir):
    before = manifests(run_dir)
    with run_lock(run_dir):  # this process holds the run, as a first `stmem run` would
        res = stmem_cli("run", "--config", str(TINY_CONFIG), "--set", f"run.root={run_dir.parent}",
                        "--set", "train.epochs=1")
    assert res.returncode == 2
    assert res.stderr == f"stmem: error: {run_dir.resolve()}: in use by pid {os.getpid()}; wait for it or use " \
                         "another run.name\n"  # refused before Prefect starts: nothing else is printed
    assert manifests(run_dir) == before


def test_bad_input_is_not_retried_and_reported_in_one_line(tmp_path):
    babi = tmp_path / "babi"
    babi.mkdir()
    (babi / "qa1_x_train.txt").write_bytes(b"1 Mary went to the kitchen.\n2 Where is Mary?\tkitchen\t1\n"
                                           b"1 John went to the hall\xff.\n")
    (babi / "qa1_x_test.txt").write_bytes(b"1 Mary went to the kitchen.\n2 Where is Mary?\tkitchen\t1\n")
    res = stmem_cli("run", "--config", str(TINY_CONFIG), "--set", f"run.root={tmp_path}", "--set", "run.retries=3",
                    "--set", "run.retry_delay=0", "--set", "corpus.format=babi", "--set", f"corpus.path={babi}")
    assert res.returncode == 2
    assert error_lines(res.stderr) == [f"stmem: error: {babi / 'qa1_x_train.txt'}:3: not UTF-8 (byte 0xff at "
                                       "offset 78 in the file)"]
    log = (tmp_path / "tiny" / "stmem.log").read_text()
    assert log.count("ingest: started") == 1 and "Retrying" not in log  # tried once
    assert "Traceback" in log  # the traceback is kept, in the log
    assert not (tmp_path / "tiny" / "corpus").exists() and not list((tmp_path / "tiny").glob(".corpus*"))


def test_stage_past_its_timeout_fails_in_one_line(tmp_path):
    res = stmem_cli("run", "--config", str(TINY_CONFIG), "--set", f"run.root={tmp_path}",
                    "--set", "run.stage_timeout={kg: 0.5}")  # PyKEEN takes seconds
    assert res.returncode == 2
    assert [line for line in error_lines(res.stderr) if "stmem: error" in line] == [
        "stmem: error: a stage ran past its run.stage_timeout (Scope timed out after 0.5 second(s).); the log names it"]
    assert "Task run 'kg-" in res.stderr and "exceeded timeout of 0.5 second(s)" in res.stderr
    assert (tmp_path / "tiny" / "extract").is_dir() and not (tmp_path / "tiny" / "kg").exists()


def test_run_killed_during_training_resumes_from_its_checkpoint(tmp_path):
    # long enough to be killed in the middle: 5 optimizer steps an epoch, a checkpoint every 5
    slow = ["--set", "train.epochs=30", "--set", "train.patience=30", "--set", "train.checkpoint_every=5"]
    root = tmp_path / "killed"
    servers_before = prefect_servers()
    # no PREFECT_API_URL: the command starts (and must not outlive) a temporary server of its own
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PREFECT_API_URL": ""}
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", "--config", str(TINY_CONFIG),
                             "--set", f"run.root={root}", *slow], cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not list((root / "tiny").glob(".train.tmp-*/checkpoints/step-00002[0-9]")):
        time.sleep(0.05)
    servers = prefect_servers() - servers_before
    assert servers  # the temporary Prefect server this command started
    os.kill(proc.pid, signal.SIGKILL)  # the CLI alone: nothing it started may outlive it
    proc.wait()
    deadline = time.time() + 20
    while time.time() < deadline and prefect_servers() & servers:
        time.sleep(0.2)
    assert not prefect_servers() & servers
    leftover = list((root / "tiny").glob(".train.tmp-*"))
    assert leftover and not (root / "tiny" / "train").exists()
    killed_at = max(int(p.name.split("-")[1]) for p in leftover[0].glob("checkpoints/step-*"))
    assert killed_at >= 20
    client = MlflowClient(default_tracking_uri(root / "tiny"))
    [killed_run] = client.search_runs([client.get_experiment_by_name("stmem").experiment_id])
    assert killed_run.info.status == "RUNNING"  # the training's MLflow run, left open by the kill

    res = stmem_cli("run", "--config", str(TINY_CONFIG), "--set", f"run.root={root}", *slow)
    assert res.returncode == 0, res.stderr[-3000:]
    ran = summary_lines(res.stdout)
    assert [s for s in STAGES if ran[s] == "ran"] == ["train", "register"]
    log = (root / "tiny" / "stmem.log").read_text()
    # the checkpoint is taken after the last step of an epoch, before its validation
    assert f"at optimizer step {killed_at} (epoch {killed_at // 5}, step 5)" in log  # resumed, not restarted
    assert not list((root / "tiny").glob(".train.tmp-*"))  # the leftover became the output
    [run] = client.search_runs([killed_run.info.experiment_id])  # the same MLflow run went on, and finished
    assert run.info.run_id == killed_run.info.run_id and run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "epoch.loss")][-1] == 30
    assert {"training_curves.png", "accuracy_by_task.png", "accuracy_by_distance.png"} <= {
        Path(a.path).name for a in client.list_artifacts(run.info.run_id, "stage_artifacts/plots")}

    # the same training uninterrupted, on the same dataset (a rebuilt one can differ in WordPiece
    # ties, README), which the run reuses by its key
    whole = tmp_path / "whole"
    for stage in ("ingest", "extract", "kg", "dataset"):
        d = RunLayout(root / "tiny").stage_dir(stage)
        shutil.copytree(d, whole / "tiny" / d.name)
    res = stmem_cli("run", "--config", str(TINY_CONFIG), "--set", f"run.root={whole}", *slow)
    assert res.returncode == 0, res.stderr[-3000:]
    assert [s for s, r in summary_lines(res.stdout).items() if r == "ran"] == ["train", "register"]
    resumed = json.loads((root / "tiny" / "train" / "history.json").read_text())
    uninterrupted = json.loads((whole / "tiny" / "train" / "history.json").read_text())
    assert [h["loss"] for h in resumed] == pytest.approx([h["loss"] for h in uninterrupted], rel=1e-6)
    assert json.loads((root / "tiny" / "train" / "eval.json").read_text())["test"] == \
        json.loads((whole / "tiny" / "train" / "eval.json").read_text())["test"]


def test_two_step_recipe_runs_its_parent_first_then_skips_both(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    shutil.copy(TINY_CONFIG, conf / "tiny.yaml")
    (conf / "tiny-ft.yaml").write_text(
        "extends: tiny.yaml\nrun: {name: tiny-ft}\nregister: {model_name: stmem-tiny-ft}\n"
        "train: {epochs: 1, init_from: 'run:tiny', restarts: [{epochs: 1, lr: 0.0005}]}\n")
    root = tmp_path / "runs"
    res = stmem_cli("run", "--config", str(conf / "tiny-ft.yaml"), "--set", f"run.root={root}")
    assert res.returncode == 0, res.stderr[-3000:]
    parent, child = root / "tiny", root / "tiny-ft"
    assert summary_lines(res.stdout) == dict.fromkeys(STAGES, "ran")
    train = json.loads((child / "train" / "manifest.json").read_text())
    assert str(parent / "train" / "model.safetensors") in train["inputs"]["files"]  # started from the parent
    assert (child / "train" / "round-1" / "model.safetensors").is_file()  # the first of two rounds
    uri = default_tracking_uri(child)
    reg = json.loads((child / "register" / "registration.json").read_text())
    tags = MlflowClient(uri).get_run(reg["run_id"]).data.tags
    assert tags["stmem.parent_run_id"] == json.loads((parent / "register" / "registration.json").read_text())["run_id"]
    assert tags["prefect.flow_run_id"]

    before = {**manifests(parent), **{f"ft-{k}": v for k, v in manifests(child).items()}}
    res = stmem_cli("run", "--config", str(conf / "tiny-ft.yaml"), "--set", f"run.root={root}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert summary_lines(res.stdout) == dict.fromkeys(STAGES, "reused")
    assert {**manifests(parent), **{f"ft-{k}": v for k, v in manifests(child).items()}} == before
