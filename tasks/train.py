import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from stmem.config import Config, ConfigError

START_MODEL_FILES = ("model.safetensors", "model_config.json", "tokenizer.json")  # its tokens map by string


def start_model(cfg: Config) -> list[Path]:
    """The weights training starts from: the model fine-tuning starts from (``train.init_from``, resolved)
    and a pretrained backbone's directory (``model.backbone.path``). Part of the key, by content."""
    files = []
    if cfg.model.backbone.path and Path(cfg.model.backbone.path).is_dir():
        files += sorted(f for f in Path(cfg.model.backbone.path).rglob("*") if f.is_file())
    if not cfg.train.init_from:
        return files
    d = Path(cfg.train.init_from)
    missing = [f for f in START_MODEL_FILES if not (d / f).is_file()]
    if missing:
        from stmem.artifacts import MissingArtifactError

        raise MissingArtifactError(f"train.init_from: {d} has no {', '.join(missing)}; train that model first")
    return files + [d / f for f in START_MODEL_FILES]


def check(cfg: Config) -> None:
    """model.backbone.path, when set, is a pretrained directory with safetensors weights: we never unpickle."""
    path = cfg.model.backbone.path
    if path is None:
        return
    d = Path(path)
    if not (d / "config.json").is_file():
        raise ConfigError(f"model.backbone.path: {path} is not a pretrained model directory (no config.json)")
    if not any((d / f).is_file() for f in ("model.safetensors", "model.safetensors.index.json")):
        # torch.save's weights: loading them unpickles, which can run any code the file holds
        pickled = [f for f in ("pytorch_model.bin", "pytorch_model.bin.index.json") if (d / f).is_file()]
        held = (f"holds {pickled[0]}, a pickle, and no model.safetensors: pickles are never loaded (save the "
                "model with safe_serialization=True)") if pickled else "holds no model.safetensors"
        raise ConfigError(f"model.backbone.path: {path} {held}")


def run_tags(cfg: Config, inputs: dict[str, Path]) -> dict[str, str]:
    """Where the model comes from, as MLflow run tags: commit, dataset, flow run, parent run."""
    from stmem.artifacts import code_version, digest, read_manifest

    tags = {"stmem.run": cfg.run.name, "stmem.git_commit": code_version(),
            "stmem.dataset_digest": digest(read_manifest(inputs["dataset"])["outputs"])}
    from prefect.runtime import flow_run

    if flow_run.id:  # the flow run (named after the run) whose logs and artifacts are this training's
        tags["prefect.flow_run_id"] = str(flow_run.id)
        from prefect.settings import PREFECT_UI_URL

        if PREFECT_UI_URL.value():  # none without a server's UI
            tags["prefect.flow_run_url"] = flow_run.ui_url
    return {**tags, **parent_tags(cfg)}


def parent_tags(cfg: Config) -> dict[str, str]:
    """The model this one starts from (``train.init_from``, a recipe step), as MLflow tags.

    ``stmem.init_from``: its directory; ``stmem.parent_run_id``: the MLflow run
    that trained it; ``stmem.parent_model_uri``: the latest version registered
    from that run (none until the parent is registered); and
    ``stmem.parent_tracking_uri`` where that run is in another store than this one's.
    """
    if not cfg.train.init_from:
        return {}
    from serving.tracking import RUN_FILE

    tags = {"stmem.init_from": cfg.train.init_from}
    run_file = Path(cfg.train.init_from) / RUN_FILE
    if not run_file.is_file():  # a model trained outside the pipeline
        return tags
    parent = json.loads(run_file.read_text())
    tags["stmem.parent_run_id"] = parent["run_id"]
    from mlflow import MlflowClient

    from serving.registry import mlflow_store

    if parent["tracking_uri"] != mlflow_store(cfg.register.tracking_uri, cfg.run_dir)[0]:
        tags["stmem.parent_tracking_uri"] = parent["tracking_uri"]
    client = MlflowClient(parent["tracking_uri"], registry_uri=parent["tracking_uri"])
    made = client.search_model_versions(f"run_id = '{parent['run_id']}'")
    if made:
        latest = max(made, key=lambda v: int(v.version))
        tags["stmem.parent_model_uri"] = f"models:/{latest.name}/{latest.version}"
    return tags


def build(cfg: Config, inputs: dict[str, Path], out: Path) -> dict:
    """Examples + KG embeddings -> checkpoint (safetensors + JSON), ``eval.json``; resumes in ``out``.

    The MLflow run of the model opens here, with per-epoch figures; register
    adds the model to it. With ``train.processes`` > 1 the same training
    runs under torchrun, one process per rank, into the same ``out``.
    """
    from serving.registry import mlflow_store
    from serving.tracking import TrainingRun

    tracking_uri, artifact_root = mlflow_store(cfg.register.tracking_uri, cfg.run_dir)
    run = TrainingRun(tracking_uri=tracking_uri, experiment=cfg.register.experiment, artifact_root=artifact_root,
                      run_dir=cfg.run_dir, run_name=cfg.run.name, tags=run_tags(cfg, inputs),
                      params=cfg.model_dump(mode="json"), out_dir=out,
                      round_epochs=[cfg.train.epochs] + [r.epochs for r in cfg.train.restarts])
    try:
        run.log_inputs(inputs["dataset"])
        if cfg.train.processes == 1:
            from stmem.train import fit_with_restarts

            summary = fit_with_restarts(cfg, dataset_dir=inputs["dataset"], kg_dir=inputs["kg"], out_dir=out,
                                        on_epoch=run.log_epoch)
        else:
            summary = _torchrun(cfg, inputs, out)
            for row in summary["history"]:
                run.log_epoch(row)
    except BaseException:
        run.end(ok=False)
        raise
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # finished: the output needs none
    run.end(ok=True)
    return {**summary, "mlflow_run_id": run.run_id}  # in the stage's Prefect artifact: the way to the MLflow run


def _torchrun(cfg: Config, inputs: dict[str, Path], out: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="stmem-torchrun-") as tmp:
        config = Path(tmp) / "config.yaml"
        config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={cfg.train.processes}", "-m", "stmem.train", "--in-place",
               "--dataset-dir", str(inputs["dataset"]), "--kg-dir", str(inputs["kg"]), "--out-dir", str(out),
               "--config", str(config)]
        from stmem.errors import TrainingDiverged
        from stmem.train import DIVERGED_FILE

        diverged = Path(tmp) / "diverged.txt"
        env = {**os.environ, "OMP_NUM_THREADS": str(cfg.train.num_threads or 1), DIVERGED_FILE: str(diverged)}
        done = subprocess.run(cmd, env=env, stderr=subprocess.PIPE, text=True)  # its epoch lines to our stdout
        if done.returncode != 0 and diverged.is_file():
            raise TrainingDiverged(diverged.read_text())
        if done.returncode != 0:
            raise RuntimeError(f"torchrun exited with {done.returncode}: {done.stderr.strip()[-2000:]}")
    ev = json.loads((out / "eval.json").read_text())
    return {"test_accuracy": ev["test"]["accuracy"], "per_task": ev["test"]["per_task"],
            "best_val_accuracy": ev["best_val_accuracy"], "epochs_run": ev["epochs_run"], "device": ev["device"],
            "world_size": ev["world_size"], "train_seconds": ev["train_seconds"],
            "history": json.loads((out / "history.json").read_text())}
