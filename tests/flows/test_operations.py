"""Operating the pipeline with faults: skipping by content, stale and deleted artifacts, locking,
bad input, a run killed during training, a recipe of two runs. Each runs the real CLI on the tiny config."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from serving.registry import default_tracking_uri
from stmem.artifacts import file_sha256, run_lock
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
def first_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    root = tmp_path_factory.mktemp("ops")
    res = stmem_cli("run", "--config", str(TINY_CONFIG), "--set", f"run.root={root}")
    assert res.returncode == 0, res.stderr[-3000:]
    return root / "tiny", res


@pytest.fixture(scope="module")
def run_dir(first_run) -> Path:
    return first_run[0]


def prefect_servers() -> set[int]:
    """Pids of running Prefect temporary servers."""
    out = subprocess.run(["pgrep", "-f", "prefect.server.api.server:create_app"], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


def cli_run(run_dir: Path, *args: str) -> subprocess.CompletedProcess:
    res = stmem_cli("run", "--config", str(TINY_CONFIG), "--set", f"run.root={run_dir.parent}", *args)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


# The tests below share one run directory and run in file order: each starts from what the one before left.

def test_a_run_shows_no_third_party_warnings(first_run):
    """PyKEEN's CUDA, pin_memory, batch-size and torch_max_mem notices, MLflow's dataset-source and type-hint
    warnings: every stage ran (KG, training, registration), and none of them reached the console."""
    stderr = first_run[1].stderr
    assert not [line for line in stderr.splitlines() if "Warning" in line or "| WARNING" in line], stderr[-3000:]


def test_unchanged_rerun_skips_every_stage_and_registers_no_new_version(run_dir):
    before = manifests(run_dir)
    res = cli_run(run_dir)
    assert summary_lines(res.stdout) == dict.fromkeys(STAGES, "reused")
    assert manifests(run_dir) == before  # no stage body ran: nothing was rewritten
    assert (run_dir / "stmem.log").read_text().count("skipped, its inputs, config and code are unchanged") >= 6
    assert versions(run_dir) == ["1"]


def imported(stderr: str) -> set[str]:
    """The top-level packages a command imported, from its ``PYTHONPROFILEIMPORTTIME`` lines."""
    return {line.rsplit("|", 1)[1].strip().split(".")[0] for line in stderr.splitlines()
            if line.startswith("import time:")}


def flow_runs() -> int:
    """The flow runs the suite's Prefect server holds: every command a test runs reports to it."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.count_flow_runs()


def test_warm_command_with_nothing_to_run_starts_no_prefect(run_dir):
    before, runs = manifests(run_dir), flow_runs()
    for command in (["run"], ["stage", "train"]):
        # no PREFECT_API_URL: a command that used Prefect would start its temporary server
        res = stmem_cli(*command, "--config", str(TINY_CONFIG), "--set", f"run.root={run_dir.parent}",
                        env={"PREFECT_API_URL": "", "PYTHONPROFILEIMPORTTIME": "1"})
        assert res.returncode == 0, res.stderr[-3000:]
        assert summary_lines(res.stdout) == dict.fromkeys(STAGES, "reused")
        assert "nothing to run: every stage is current" in res.stdout
        assert not {"prefect", "torch", "mlflow", "spacy", "pykeen"} & imported(res.stderr)
        assert "Starting temporary server" not in res.stderr
        # what it checked is logged, as the stages' skips are
        log = (run_dir / "stmem.log").read_text().rsplit(f"stmem {' '.join(command)}: every stage is current; "
                                                        "nothing to run, so no Prefect flow run\n", 1)
        assert len(log) == 2 and log[1].count("skipped, its inputs, config and code are unchanged") == \
            (6 if command == ["run"] else 1)
        assert f"train: skipped, its inputs, config and code are unchanged (key {json.loads(before['train'])['key']})" \
            in log[1]
    cli_run(run_dir)  # with the suite's server at hand: still no flow run
    assert flow_runs() == runs
    assert manifests(run_dir) == before


def test_stale_stage_still_runs_through_prefect(run_dir):
    (RunLayout(run_dir).stage_dir("dataset") / "dataset_info.json").unlink()
    runs, logged = flow_runs(), len((run_dir / "stmem.log").read_text())
    res = cli_run(run_dir)
    # the rebuilt dataset is byte for byte the one before: nothing after it runs
    assert summary_lines(res.stdout) == {**dict.fromkeys(STAGES, "reused"), "dataset": "ran"}
    assert "nothing to run" not in res.stdout
    assert flow_runs() == runs + 2  # the pipeline's flow run and its stmem-run sub-flow, on the suite's server
    log = (run_dir / "stmem.log").read_text()[logged:]  # each stage a Prefect task run
    assert f"prefect.task_runs INFO dataset: started: {RunLayout(run_dir).stage_dir('dataset')}/dataset_info.json " \
           "was deleted" in log
    skipped = [line for line in log.splitlines() if "skipped, its inputs, config and code are unchanged" in line]
    assert len(skipped) == 5 and all(" prefect.task_runs INFO " in line for line in skipped)


def test_training_change_reruns_train_and_register_only(run_dir):
    before = manifests(run_dir)
    res = cli_run(run_dir, "--set", "train.lr=0.002")
    assert summary_lines(res.stdout) == {**dict.fromkeys(STAGES, "reused"), "train": "ran", "register": "ran"}
    after = manifests(run_dir)
    assert [s for s in STAGES if after[s] != before[s]] == ["train", "register"]
    assert versions(run_dir) == ["1", "2"]
    log = (run_dir / "stmem.log").read_text()  # each stage that ran says what changed
    assert "train: started: config key `train.lr` 0.001 -> 0.002" in log
    assert "register: started: output of stage 'train' changed" in log
    # an execution-only setting is not a change
    res = cli_run(run_dir, "--set", "train.lr=0.002", "--set", "train.num_threads=1")
    assert summary_lines(res.stdout) == dict.fromkeys(STAGES, "reused")


def test_going_back_to_an_earlier_config_reuses_its_outputs(run_dir):
    res = cli_run(run_dir)  # train.lr as the first run had it: its model is kept, not trained again
    assert summary_lines(res.stdout) == dict.fromkeys(STAGES, "reused")
    log = (run_dir / "stmem.log").read_text()
    assert "train: reused its earlier output of key" in log and "(config key `train.lr` 0.002 -> 0.001)" in log
    assert "register: reused its earlier output of key" in log
    assert versions(run_dir) == ["1", "2"]  # nothing registered again: version 1 is this config's model
    assert json.loads((RunLayout(run_dir).stage_dir("register") / "registration.json").read_text())["version"] == 1


def test_extract_in_shards_writes_the_same_bytes_and_nothing_after_it_reruns(run_dir):
    before = json.loads(manifests(run_dir)["extract"])
    res = stmem_cli("stage", "extract", "--force", "--config", str(TINY_CONFIG), "--set", f"run.root={run_dir.parent}",
                    "--set", "extract.shards=2", "--set", "extract.batch_size=3")
    assert res.returncode == 0, res.stderr[-3000:]
    after = json.loads(manifests(run_dir)["extract"])
    assert after["summary"]["shards"] == 2 and after["created_at"] >= before["created_at"]
    assert after["outputs"] == before["outputs"]  # every file's sha256
    # how extract is cut and batched is not part of any key: with those settings too, nothing runs
    res = cli_run(run_dir, "--set", "extract.shards=2", "--set", "extract.n_process=2")
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
    assert ("  extract  stale            stage 'extract' ran on other inputs, config or code: output of stage "
            "'ingest' changed\n") in res.stdout
    assert "mentions=" not in res.stdout and "test exact-match accuracy" not in res.stdout
    assert "registered models:/" not in res.stdout
    # the mentions were extracted from the corpus before: building a dataset on them is refused
    res = stmem_cli("stage", "dataset", "--config", str(TINY_CONFIG), *changed)
    assert res.returncode == 2
    [line] = error_lines(res.stderr)
    assert line.startswith("stmem: error: stage 'extract' is out of date (stage 'extract' ran on other inputs")
    assert manifests(run_dir)["dataset"] == before["dataset"]
    cli_run(run_dir)  # put the run back as the config makes it, for the tests after


def test_second_concurrent_run_waits_then_is_refused_in_one_line(run_dir):
    before = manifests(run_dir)
    with run_lock(run_dir):  # this process holds the run, as a first `stmem run` would
        res = stmem_cli("run", "--config", str(TINY_CONFIG), "--set", f"run.root={run_dir.parent}",
                        "--set", "train.epochs=1", "--set", "run.lock_timeout=1")
    assert res.returncode == 2
    held = rf"pid {os.getpid()} since \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
    # it waited, saying for whom, then gave up before Prefect started: nothing else is printed
    assert re.fullmatch(rf"stmem: waiting for run {run_dir.resolve()} held by {held} \(for up to 1 s, "
                        rf"run.lock_timeout\)\nstmem: error: {run_dir.resolve()}: in use by {held}; waited 1 s "
                        r"\(run.lock_timeout\); wait for it or use another run.name\n", res.stderr), res.stderr
    assert manifests(run_dir) == before


def test_diverged_training_stops_in_one_line_is_not_retried_and_publishes_nothing(run_dir):
    before, versions_before = manifests(run_dir), versions(run_dir)
    started = (run_dir / "stmem.log").read_text().count("train: started")
    res = stmem_cli("stage", "train", "--config", str(TINY_CONFIG), "--set", f"run.root={run_dir.parent}",
                    "--set", "train.lr=1.0e+30", "--set", "train.warmup_ratio=0", "--set", "run.retries=2",
                    "--set", "run.retry_delay=0")
    assert res.returncode == 2
    assert error_lines(res.stderr) == [
        "stmem: error: training diverged: the loss is nan at epoch 1, step 2 (optimizer step 2, train.lr 1e+30); "
        "stopped there, no checkpoint written from it and nothing published; lower train.lr or check the data"]
    log = (run_dir / "stmem.log").read_text()
    assert log.count("train: started") == started + 1 and "Retrying" not in log  # tried once
    assert manifests(run_dir) == before and versions(run_dir) == versions_before
    uri = default_tracking_uri(run_dir)
    [last] = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("stmem").experiment_id],
                                            order_by=["attribute.start_time DESC"], max_results=1)
    assert last.info.status == "FAILED" and last.data.params["train.lr"] == "1e+30"


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
    # (not MLFLOW_TRACKING_URI: a test before this one in the process may have had MLflow set it, as stmem_cli says)
    env = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PREFECT_API_URL": ""}
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


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> tuple[Path, Path]:
    """A two-step recipe, tiny-ft fine-tuned from tiny: its config directory and the run root it uses."""
    tmp = tmp_path_factory.mktemp("recipe")
    conf = tmp / "conf"
    conf.mkdir()
    shutil.copy(TINY_CONFIG, conf / "tiny.yaml")
    (conf / "tiny-ft.yaml").write_text(
        "extends: tiny.yaml\nrun: {name: tiny-ft}\nregister: {model_name: stmem-tiny-ft}\n"
        "train: {epochs: 1, init_from: 'run:tiny', restarts: [{epochs: 1, lr: 0.0005}]}\n")
    return conf, tmp / "runs"


def recipe_cli(recipe, *args: str, config: str = "tiny-ft.yaml") -> subprocess.CompletedProcess:
    conf, root = recipe
    res = stmem_cli(*args, "--config", str(conf / config), "--set", f"run.root={root}")
    assert res.returncode == 0, res.stderr[-3000:]
    return res


# The recipe tests run in file order on one run root, as those above.

def test_two_step_recipe_runs_its_parent_first_then_skips_both(recipe):
    conf, root = recipe
    res = recipe_cli(recipe, "run")
    parent, child = root / "tiny", root / "tiny-ft"
    assert summary_lines(res.stdout) == dict.fromkeys(STAGES, "ran")
    train = json.loads((child / "train" / "manifest.json").read_text())
    assert str(parent / "train" / "model.safetensors") in train["inputs"]["files"]  # started from the parent
    assert (child / "train" / "round-1" / "model.safetensors").is_file()  # the first of two rounds

    # both runs are in one store, the first run's: the child's tags lead to the parent's run and version
    assert not (child / "mlflow.db").exists()
    client = MlflowClient(default_tracking_uri(parent), registry_uri=default_tracking_uri(parent))
    reg = json.loads((child / "register" / "registration.json").read_text())
    parent_reg = json.loads((parent / "register" / "registration.json").read_text())
    parent_run = client.get_run(parent_reg["run_id"])
    assert parent_run.data.tags["stmem.run"] == "tiny"
    tags = client.get_run(reg["run_id"]).data.tags
    assert tags["stmem.parent_run_id"] == parent_run.info.run_id
    assert tags["stmem.parent_model_uri"] == parent_reg["model_uri"] == "models:/stmem-tiny/1"
    assert "stmem.parent_tracking_uri" not in tags  # the same store
    assert tags["prefect.flow_run_id"]
    version = client.get_model_version("stmem-tiny-ft", str(reg["version"]))
    assert {k: version.tags[k] for k in ("stmem.parent_run_id", "stmem.parent_model_uri")} == {
        k: tags[k] for k in ("stmem.parent_run_id", "stmem.parent_model_uri")}
    assert parent_reg["model_uri"] in version.description  # the model card's row
    # the version the tag names holds the weights the child's training read
    name, number = tags["stmem.parent_model_uri"].split("/")[1:]
    used = mlflow.artifacts.download_artifacts(
        client.get_model_version_download_uri(name, number) + "/artifacts/checkpoint/model.safetensors",
        dst_path=str(root.parent / "parent-model"), tracking_uri=default_tracking_uri(parent))
    assert file_sha256(Path(used)) == train["inputs"]["files"][str(parent / "train" / "model.safetensors")]

    before = {**manifests(parent), **{f"ft-{k}": v for k, v in manifests(child).items()}}
    res = recipe_cli(recipe, "run")
    assert summary_lines(res.stdout) == dict.fromkeys(STAGES, "reused")
    assert {**manifests(parent), **{f"ft-{k}": v for k, v in manifests(child).items()}} == before

    # the commands that use a registered model find the child's in the recipe's store
    (root.parent / "story.txt").write_text("Mary went to the kitchen.\nJohn went to the hall.\n")
    res = recipe_cli(recipe, "predict", "--model", "models:/stmem-tiny-ft@champion", "--context",
                     str(root.parent / "story.txt"), "--question", "Where is Mary?")
    assert res.stdout.strip()


def test_child_train_key_holds_the_parents_weights_not_their_path(recipe):
    conf, root = recipe
    # the same parent under another run root: the child's training is current
    moved = root.parent / "moved"
    shutil.copytree(root, moved)
    res = stmem_cli("stage", "train", "--config", str(conf / "tiny-ft.yaml"), "--set", f"run.root={moved}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert summary_lines(res.stdout)["train"] == "reused"

    # the parent retrained (other weights, in place): the child's training runs again, from them
    recipe_cli(recipe, "stage", "train", "--set", "train.lr=0.002", config="tiny.yaml")
    parent, child = root / "tiny", root / "tiny-ft"
    res = recipe_cli(recipe, "stage", "train")
    assert summary_lines(res.stdout)["train"] == "ran"
    files = json.loads((child / "train" / "manifest.json").read_text())["inputs"]["files"]
    assert files[str(parent / "train" / "model.safetensors")] == file_sha256(parent / "train" / "model.safetensors")
    client = MlflowClient(default_tracking_uri(parent), registry_uri=default_tracking_uri(parent))
    tags = client.get_run(json.loads((child / "train" / "mlflow_run.json").read_text())["run_id"]).data.tags
    parent_run_id = json.loads((parent / "train" / "mlflow_run.json").read_text())["run_id"]
    assert tags["stmem.parent_run_id"] == parent_run_id and client.get_run(parent_run_id).info.status == "FINISHED"
    assert "stmem.parent_model_uri" not in tags  # the retrained parent is not registered; version 1 is not it
