"""Registering checkpoints in a real MLflow store (sqlite), loading and serving them; crash-safe registration,
promotion, rollback and the registry lock."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from serving.inference import Predictor
from tests.servers import SERVER_ENV as ENV, free_port, start, stop, wait_http
from stmem.layout import split_file

MLFLOW_BIN = str(Path(sys.executable).parent / "mlflow")
STORY = "Mary moved to the bathroom.\nJohn went to the hallway."
SENTENCES = [
    "Mary moved to the bathroom.", "John went to the hallway.", "Daniel journeyed to the office.",
    "Sandra travelled to the garden.", "Where is Mary?", "Where is John?", "bathroom hallway office garden",
]
NAME = "stmem-qa-test"


@pytest.fixture(scope="module", autouse=True)
def _mlflow_env():
    with pytest.MonkeyPatch.context() as mp:
        for k, v in ENV.items():
            mp.setenv(k, v)
        yield


def _make_checkpoint(out: Path) -> Path:
    import torch

    from stmem.checkpoint import save_checkpoint
    from stmem.config import ModelConfig
    from stmem.dataset import train_tokenizer
    from stmem.model import MemoryQA, Vocab

    torch.manual_seed(0)
    tok = train_tokenizer(SENTENCES * 3, vocab_size=60)
    cfg = ModelConfig(backbone={"hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32},
                      memory={"type": "routed", "slots": 2}, kg_fusion=False)
    vocab = Vocab(vocab_size=tok.get_vocab_size(), pad_id=tok.token_to_id("[PAD]"), bos_id=tok.token_to_id("[CLS]"),
                  eos_id=tok.token_to_id("[SEP]"), segment_len=8, max_question_len=8, max_answer_len=3)
    out.mkdir(parents=True)
    save_checkpoint(MemoryQA(cfg, vocab), out, spacy_model="en_core_web_sm")
    tok.save(str(out / "tokenizer.json"))
    (out / "eval.json").write_text(json.dumps({"exact_match": 0.5}))
    return out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return _make_checkpoint(tmp_path_factory.mktemp("ckpt") / "train")


@pytest.fixture(scope="module")
def registered(tmp_path_factory, checkpoint):
    """Three registrations (exact_match 0.5, 0.3, 0.8) and the aliases after each."""
    from mlflow import MlflowClient

    from serving.registry import default_tracking_uri, register_model

    run_dir = tmp_path_factory.mktemp("run")
    manifest = run_dir / "train" / "manifest.json"
    manifest.parent.mkdir()
    manifest.write_text("{}")
    uri = default_tracking_uri(run_dir)
    client = MlflowClient(uri, registry_uri=uri)
    results, aliases = [], []
    for em in (0.5, 0.3, 0.8):
        results.append(register_model(
            checkpoint_dir=checkpoint, tracking_uri=uri, experiment="stmem-test", model_name=NAME,
            metric="eval.exact_match", params={"model": {"hidden_size": 16, "kg_fusion": False}, "seed": 0},
            metrics={"eval": {"exact_match": em, "n": 10, "note": "text"}},
            artifacts=[checkpoint / "eval.json", manifest], artifact_root=run_dir / "mlartifacts"))
        aliases.append({k: int(v) for k, v in client.get_registered_model(NAME).aliases.items()})
    return {"run_dir": run_dir, "uri": uri, "client": client, "results": results, "aliases": aliases}


def test_default_tracking_uri(tmp_path):
    from serving.registry import default_tracking_uri

    assert default_tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"


def test_champion_and_challenger(registered):
    r1, r2, r3 = registered["results"]
    assert (r1["version"], r1["alias"], r1["champion_version"], r1["metric"]) == (1, "champion", 1, 0.5)
    assert r1["model_uri"] == f"models:/{NAME}/1"
    assert registered["aliases"][0] == {"champion": 1}
    # worse: stays challenger, champion unchanged
    assert (r2["version"], r2["alias"], r2["champion_version"]) == (2, "challenger", 1)
    assert registered["aliases"][1] == {"champion": 1, "challenger": 2}
    # better: becomes champion; the older challenger is stale and loses its alias
    assert (r3["version"], r3["alias"], r3["champion_version"], r3["metric"]) == (3, "champion", 3, 0.8)
    assert registered["aliases"][2] == {"champion": 3}

    run = registered["client"].get_run(r2["run_id"])
    assert run.data.metrics == {"eval.exact_match": 0.3, "eval.n": 10.0}
    assert run.data.params == {"model.hidden_size": "16", "model.kg_fusion": "false", "seed": "0"}
    assert run.info.artifact_uri.startswith((registered["run_dir"] / "mlartifacts").as_uri())
    logged = {f.path for d in registered["client"].list_artifacts(r2["run_id"], "stage_artifacts")
              for f in registered["client"].list_artifacts(r2["run_id"], d.path)}
    assert logged == {"stage_artifacts/train/eval.json", "stage_artifacts/train/manifest.json"}


def test_unknown_metric_is_rejected(registered, checkpoint):
    from serving.registry import register_model

    with pytest.raises(ValueError, match="accuracy"):
        register_model(checkpoint_dir=checkpoint, tracking_uri=registered["uri"], experiment="stmem-test",
                       model_name=NAME, metric="accuracy", params={}, metrics={"exact_match": 1.0})


def test_logged_model_holds_no_pickles(registered, tmp_path):
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(f"models:/{NAME}/1", dst_path=str(tmp_path),
                                                     tracking_uri=registered["uri"]))
    files = {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()}
    assert {"MLmodel", "pyfunc_model.py", "requirements.txt", "input_example.json",
            "artifacts/checkpoint/model.safetensors", "artifacts/checkpoint/model_config.json",
            "artifacts/checkpoint/tokenizer.json", "artifacts/checkpoint/eval.json",
            "code/serving/inference.py"} <= files
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".pt", ".pth", ".bin", ".ckpt", ".pyc"))]
    mlmodel = (local / "MLmodel").read_text()
    assert "python_model.pkl" not in mlmodel and "model_code_path" in mlmodel
    reqs = (local / "requirements.txt").read_text().split()
    assert any(r.startswith("torch==") and "+" not in r for r in reqs) and any(r.startswith("mlflow==") for r in reqs)


def test_bad_input_is_rejected():
    import pandas as pd
    from mlflow.exceptions import MlflowException

    from serving.pyfunc_model import validate_input

    assert validate_input(pd.DataFrame({"context": ["a."], "question": ["b?"]})) == (["a."], ["b?"])
    for frame, words in [(pd.DataFrame({"context": ["a."]}), ["question"]),
                         (pd.DataFrame({"context": ["a.", " "], "question": ["b?", "c?"]}), ["context", "row 1"]),
                         (pd.DataFrame({"context": ["a."], "question": [3]}), ["question", "row 0"])]:
        with pytest.raises(MlflowException) as e:
            validate_input(frame)
        assert e.value.get_http_status_code() == 400
        assert all(w in e.value.message for w in words)


def test_a_request_over_its_character_budget_is_refused_before_any_work():
    import time

    import pandas as pd
    from mlflow.exceptions import MlflowException

    from serving.pyfunc_model import validate_input

    frame = pd.DataFrame({"context": ["x" * 100_000] * 256, "question": ["Where is Mary?"] * 256})
    started = time.perf_counter()
    with pytest.raises(MlflowException) as e:
        validate_input(frame)
    print(f"refused in {time.perf_counter() - started:.3f} s")  # the figure docs/operations.md quotes
    assert e.value.get_http_status_code() == 400
    assert e.value.message == ("25,603,584 characters in one request (256 rows, contexts and questions), over the "
                               "limit of 200,000; send fewer or shorter rows per request")
    assert validate_input(frame[:1]) == (["x" * 100_000], ["Where is Mary?"])  # one such row is within it


def test_champion_loads_in_fresh_process(registered, checkpoint, tmp_path):
    code = ("import json, mlflow, pandas as pd\n"
            f"m = mlflow.pyfunc.load_model('models:/{NAME}@champion')\n"
            f"out = m.predict(pd.DataFrame({{'context': [{STORY!r}], 'question': ['Where is Mary?']}}))\n"
            "import stmem; print(json.dumps({'answer': out['answer'].tolist(), 'stmem': stmem.__file__}))\n")
    env = {**os.environ, **ENV, "MLFLOW_TRACKING_URI": registered["uri"]}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # the registered model answers exactly as the checkpoint it was made from
    assert out["answer"] == Predictor(checkpoint).answer([STORY], ["Where is Mary?"])
    assert "/code/stmem/" in out["stmem"]  # the code bundled with the model, not the working tree


@pytest.mark.slow
def test_register_with_tracking_server(tmp_path, checkpoint):
    from mlflow import MlflowClient

    from serving.registry import register_model

    port, log = free_port(), tmp_path / "server.log"
    proc = start([MLFLOW_BIN, "server", "--backend-store-uri", f"sqlite:///{tmp_path}/srv.db",
                   "--artifacts-destination", str(tmp_path / "art"), "--host", "127.0.0.1", "--port", str(port),
                   "--workers", "1"], log)
    try:
        uri = f"http://127.0.0.1:{port}"
        wait_http(proc, f"{uri}/health", log)
        result = register_model(checkpoint_dir=checkpoint, tracking_uri=uri, experiment="srv", model_name="srv-qa",
                                metric="exact_match", params={"a": 1}, metrics={"exact_match": 0.4})
        assert result["alias"] == "champion" and result["version"] == 1
        again = register_model(checkpoint_dir=checkpoint, tracking_uri=uri, experiment="srv", model_name="srv-qa",
                               metric="exact_match", params={"a": 1}, metrics={"exact_match": 0.4},
                               run_id=result["run_id"])
        assert again["version"] == 1 and "already registered" in again["reason"]  # found through the REST API
        client = MlflowClient(uri, registry_uri=uri)
        assert int(client.get_model_version_by_alias("srv-qa", "champion").version) == 1
        assert any((tmp_path / "art").rglob("model.safetensors"))  # proxied to the server's artifact store
    finally:
        stop(proc)


def test_registration_refuses_non_finite_weights_and_a_metric_not_its_own(tmp_path):
    from safetensors.torch import load_file, save_file

    from serving.errors import RegistrationRefused
    from serving.registry import verify_checkpoint
    from stmem.train import fit
    from tests.conftest import make_dataset, tiny_config

    ds = make_dataset(tmp_path)
    out = tmp_path / "train"
    fit(tiny_config(epochs=2), dataset_dir=ds, out_dir=out)
    ev = json.loads((out / "eval.json").read_text())
    assert verify_checkpoint(out, split_file(ds, "test")) == ev["test"]["accuracy"]

    ev["test"]["accuracy"] += 0.25  # a figure the weights do not give
    (out / "eval.json").write_text(json.dumps(ev))
    with pytest.raises(RegistrationRefused, match="recomputed from the weights"):
        verify_checkpoint(out, split_file(ds, "test"))

    weights = load_file(out / "model.safetensors")
    name = next(iter(weights))
    weights[name] = weights[name] * float("nan")
    save_file(weights, str(out / "model.safetensors"))
    with pytest.raises(RegistrationRefused, match="hold NaN or inf"):
        verify_checkpoint(out, split_file(ds, "test"))


def test_champion_moves_only_on_the_same_test_set_and_rolls_back(tmp_path, checkpoint):
    from mlflow import MlflowClient

    from serving.registry import MOVE_TAG, default_tracking_uri, register_model, rollback

    uri = default_tracking_uri(tmp_path)
    client = MlflowClient(uri, registry_uri=uri)
    name = "stmem-promotion"

    def register(value, test_set, min_improvement=0.0):
        r = register_model(checkpoint_dir=checkpoint, tracking_uri=uri, experiment="stmem-test", model_name=name,
                           metric="acc", params={}, metrics={"acc": value}, artifact_root=tmp_path / "mlartifacts",
                           test_set=test_set, min_improvement=min_improvement)
        return r["alias"], r["champion_version"]

    assert register(0.5, "A") == ("champion", 1)
    assert register(0.3, "A") == ("challenger", 1)  # worse
    assert register(0.9, "B") == ("challenger", 1)  # better, but on another test set: never compared
    assert "another test set" in client.get_model_version(name, "3").tags["challenger_reason"]
    assert register(0.52, "A", min_improvement=0.05) == ("challenger", 1)  # not better by enough
    assert register(0.8, "A") == ("champion", 5)
    moves = [json.loads(v) for k, v in client.get_model_version(name, "5").tags.items() if k.startswith(MOVE_TAG)]
    assert [(m["from"], m["to"], m["from_value"], m["to_value"]) for m in moves] == [("1", "5", "0.5", "0.8")]

    assert rollback(client, name)["to"] == "1"
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    [back] = [json.loads(v) for k, v in client.get_model_version(name, "1").tags.items()
              if k.startswith(MOVE_TAG) and json.loads(v)["from"] == "5"]
    assert back["reason"] == "rollback from version 5"


LADDER = "stmem-ladder"


@pytest.fixture(scope="module")
def ladder(tmp_path_factory, checkpoint) -> Path:
    """A store where LADDER's versions 1, 2, 3 (acc 0.5, 0.6, 0.7 on test set A) each became champion in turn,
    version 4 (0.4 on A) and 5 (0.9 on B) are challengers. Each test copies it (the moves change it)."""
    from serving.registry import default_tracking_uri, register_model

    d = tmp_path_factory.mktemp("ladder")
    for value, test_set in [(0.5, "A"), (0.6, "A"), (0.7, "A"), (0.4, "A"), (0.9, "B")]:
        register_model(checkpoint_dir=checkpoint, tracking_uri=default_tracking_uri(d), experiment="ladder",
                       model_name=LADDER, metric="acc", params={}, metrics={"acc": value},
                       artifact_root=d / "mlartifacts", test_set=test_set)
    return d / "mlflow.db"


def _ladder_copy(ladder: Path, run_dir: Path):
    """A client on a copy of the ladder store in ``run_dir`` (``<run.root>/<run.name>`` for the CLI)."""
    import shutil

    from mlflow import MlflowClient

    from serving.registry import default_tracking_uri

    run_dir.mkdir(parents=True)
    shutil.copy(ladder, run_dir / "mlflow.db")
    uri = default_tracking_uri(run_dir)
    return MlflowClient(uri, registry_uri=uri)


def _champion(client, name=LADDER) -> str:
    return str(client.get_model_version_by_alias(name, "champion").version)


def _moves(client, version: str, name=LADDER) -> list[dict]:
    from serving.registry import MOVE_TAG

    return [json.loads(v) for k, v in sorted(client.get_model_version(name, version).tags.items())
            if k.startswith(MOVE_TAG)]


class Killed(BaseException):
    """The process dying at this point: nothing after it runs, no `except Exception` sees it."""


def test_registration_interrupted_after_the_version_is_created_is_completed_never_duplicated(
        tmp_path, checkpoint, monkeypatch):
    from mlflow import MlflowClient

    from serving.errors import PromotionRefused
    from serving.registry import REGISTRATION_TAG, default_tracking_uri, promote, register_model

    uri = default_tracking_uri(tmp_path)
    client = MlflowClient(uri, registry_uri=uri)
    name = "stmem-crash"
    exp = client.create_experiment("crash", artifact_location=(tmp_path / "mlartifacts").as_uri())

    def register(run_id, value):
        return register_model(checkpoint_dir=checkpoint, tracking_uri=uri, experiment="crash", model_name=name,
                              metric="acc", params={}, metrics={"acc": value}, run_id=run_id, test_set="A",
                              description=f"card {value}")

    def killed_after(method):
        real = getattr(MlflowClient, method)

        def call(self, *args, **kwargs):
            real(self, *args, **kwargs)
            raise Killed
        monkeypatch.setattr(MlflowClient, method, call)

    def versions():
        return sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))

    # 1. killed right after MLflow created the version
    run1 = client.create_run(exp).info.run_id
    killed_after("create_model_version")
    with pytest.raises(Killed):
        register(run1, 0.5)
    monkeypatch.undo()
    v1 = client.get_model_version(name, "1")
    # created with its figures in one call; pending, no alias
    assert (v1.tags[REGISTRATION_TAG], v1.tags["metric_value"], v1.tags["test_set"], v1.description, v1.aliases) == (
        "pending", "0.5", "A", "card 0.5", [])
    with pytest.raises(PromotionRefused, match="version 1 is not a complete registration .*pending"):
        promote(client, name, 1, force=True)
    # the same run registered again completes version 1 instead of registering a duplicate, and again returns it
    r = register(run1, 0.5)
    assert (r["version"], r["alias"], r["champion_version"]) == (1, "champion", 1)
    assert client.get_model_version(name, "1").tags[REGISTRATION_TAG] == "complete"
    r = register(run1, 0.5)
    assert (r["version"], r["alias"]) == (1, "champion") and "already registered as version 1" in r["reason"]
    assert versions() == [1]

    # 2. killed after the champion alias moved, before the version was marked complete: completed as decided
    run2 = client.create_run(exp).info.run_id
    real_tag = MlflowClient.set_model_version_tag

    def tag_unless_completion(self, name, version, key, value):
        if key == REGISTRATION_TAG:
            raise Killed
        return real_tag(self, name, version, key, value)
    monkeypatch.setattr(MlflowClient, "set_model_version_tag", tag_unless_completion)
    with pytest.raises(Killed):
        register(run2, 0.8)
    monkeypatch.undo()
    assert _champion(client, name) == "2" and client.get_model_version(name, "2").tags[REGISTRATION_TAG] == "pending"
    r = register(run2, 0.8)
    assert (r["version"], r["alias"]) == (2, "champion") and "interrupted" in r["reason"]
    assert client.get_model_version(name, "2").tags[REGISTRATION_TAG] == "complete"
    assert [m["to"] for m in _moves(client, "2", name)] == ["2"]  # moved once
    assert versions() == [1, 2]

    # 3. a leftover of the run measured otherwise, holding no alias, is removed, not left for promotion
    run3 = client.create_run(exp).info.run_id
    killed_after("create_model_version")
    with pytest.raises(Killed):
        register(run3, 0.3)
    monkeypatch.undo()
    r = register(run3, 0.35)
    assert (r["version"], r["alias"]) == (4, "challenger")
    assert versions() == [1, 2, 4]


def test_promote_refuses_a_worse_version_or_another_test_set_unless_forced(ladder, tmp_path):
    from serving.errors import PromotionRefused
    from serving.registry import promote

    client = _ladder_copy(ladder, tmp_path / "reg")
    assert _champion(client) == "3"
    with pytest.raises(PromotionRefused) as e:
        promote(client, LADDER, 5)
    assert str(e.value) == (f"{LADDER}: version 5 was measured on test set B, champion version 3 on A; not promoted "
                            "(--force to promote it anyway)")
    with pytest.raises(PromotionRefused) as e:
        promote(client, LADDER, 4)
    assert str(e.value) == (f"{LADDER}: version 4's acc 0.4000 is worse than champion version 3's 0.7000; "
                            "not promoted (--force to promote it anyway)")
    assert _champion(client) == "3" and len(_moves(client, "4")) == len(_moves(client, "5")) == 0
    move = promote(client, LADDER, 4, force=True)
    assert (move["from"], move["to"], move["reason"]) == ("3", "4", "promoted by hand (--force)")
    assert _champion(client) == "4"


def test_a_version_registered_before_the_two_phases_is_still_promoted(ladder, tmp_path):
    """Stores written by earlier stmem have no state tag: a version with its figures was complete."""
    from serving.registry import REGISTRATION_TAG, promote

    client = _ladder_copy(ladder, tmp_path / "reg")
    client.delete_model_version_tag(LADDER, "4", REGISTRATION_TAG)
    assert promote(client, LADDER, 4, force=True)["to"] == "4"


def test_rollback_walks_back_through_the_champions(ladder, tmp_path):
    from serving.errors import PromotionRefused
    from serving.registry import promote, rollback

    client = _ladder_copy(ladder, tmp_path / "reg")  # champions 1, 2, 3 in turn
    assert rollback(client, LADDER)["to"] == "2"
    assert rollback(client, LADDER)["to"] == "1"
    with pytest.raises(PromotionRefused, match="^stmem-ladder: no earlier champion than version 1 to roll back to$"):
        rollback(client, LADDER)
    assert _champion(client) == "1"
    # a promotion after rollbacks starts a new step on top: rollback returns to where it came from
    promote(client, LADDER, 3)
    assert rollback(client, LADDER)["to"] == "1"


def test_promoting_the_champion_changes_and_records_nothing(ladder, tmp_path):
    from serving.registry import HISTORY_TAG, promote, rollback

    client = _ladder_copy(ladder, tmp_path / "reg")
    before = client.get_model_version(LADDER, "3").tags, client.get_registered_model(LADDER).tags[HISTORY_TAG]
    assert promote(client, LADDER, 3) is None
    assert (client.get_model_version(LADDER, "3").tags, client.get_registered_model(LADDER).tags[HISTORY_TAG]) == before
    assert rollback(client, LADDER)["to"] == "2"  # a real move back, not 3 -> 3


def test_champion_moves_wait_for_the_registry_lock(ladder, tmp_path, monkeypatch):
    import serving.registry as registry
    from stmem.artifacts import RunInUseError

    client = _ladder_copy(ladder, tmp_path / "reg")
    lock = tmp_path / "reg" / "mlflow.db.lock"  # beside the store
    # another process in the middle of a move: it holds the lock, as registry_lock does, until its stdin closes
    # (a bare flock: importing serving.registry there would cost seconds)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys\n"
         f"fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT)\nfcntl.flock(fd, fcntl.LOCK_EX)\n"
         "os.ftruncate(fd, 0)\nos.write(fd, f'pid {os.getpid()}'.encode())\nprint('held', flush=True)\n"
         "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(registry, "LOCK_TIMEOUT_S", 0)  # give up at once instead of waiting
        for move in (lambda: registry.promote(client, LADDER, 4, force=True),
                     lambda: registry.rollback(client, LADDER)):
            with pytest.raises(RunInUseError, match=f"the model registry is locked by pid {holder.pid} "):
                move()
        assert _champion(client) == "3"
    finally:
        holder.communicate(timeout=60)
    assert holder.returncode == 0
    assert registry.rollback(client, LADDER)["to"] == "2"  # released with its process


def test_cli_promote_and_rollback(ladder, tmp_path, monkeypatch, capsys):
    import flows.cli as cli

    monkeypatch.setattr(cli, "_ENV_TRACKING_URI", None)  # this process's registrations set it; a user's shell did not
    client = _ladder_copy(ladder, tmp_path / "reg")
    where = ["--set", f"run.root={tmp_path}", "--set", "run.name=reg", "--set", f"register.model_name={LADDER}"]

    def stmem(*args):
        code = cli.main([*args, *where])
        out, err = capsys.readouterr()
        return code, out.strip(), err.strip()

    code, out, err = stmem("promote", "5")
    assert (code, out) == (2, "") and err == (f"stmem: error: {LADDER}: version 5 was measured on test set B, champion "
                                              "version 3 on A; not promoted (--force to promote it anyway)")
    assert stmem("promote", "3") == (0, f"{LADDER}: version 3 is already the champion; nothing changed or recorded", "")
    code, out, err = stmem("promote", "5", "--force")
    assert (code, out) == (0, f"{LADDER}: champion is version 5 (was 3): promoted by hand (--force)")
    assert stmem("rollback")[:2] == (0, f"{LADDER}: champion is version 3 (was 5): rollback from version 5")
    stmem("rollback"), stmem("rollback")
    assert _champion(client) == "1"
    assert stmem("rollback") == (2, "", f"stmem: error: {LADDER}: no earlier champion than version 1 to roll back to")


def test_a_training_run_missing_from_the_store_is_registered_in_a_new_run(tmp_path, checkpoint, caplog):
    """The store was replaced (or register.tracking_uri changed) after training opened its run."""
    from mlflow import MlflowClient

    from serving.registry import default_tracking_uri, register_model

    uri = default_tracking_uri(tmp_path)
    gone = "0123456789abcdef0123456789abcdef"
    result = register_model(checkpoint_dir=checkpoint, tracking_uri=uri, experiment="moved", model_name="stmem-moved",
                            metric="acc", params={}, metrics={"acc": 0.5}, run_id=gone, test_set="A")
    assert result["run_id"] != gone and int(result["version"]) == 1 and result["alias"] == "champion"
    client = MlflowClient(uri, registry_uri=uri)
    assert client.get_run(result["run_id"]).data.metrics["acc"] == 0.5
    assert f"training's MLflow run {gone} is not in {uri}: registering in a new run" in caplog.text
