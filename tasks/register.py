import json
from pathlib import Path

from stmem.config import Config


def _metrics(train_dir: Path, kg_dir: Path) -> dict:
    ev = json.loads((train_dir / "eval.json").read_text())
    kg = json.loads((kg_dir / "kg_metrics.json").read_text())
    test = ev["test"]
    return {
        "test_accuracy": test["accuracy"], "test_mean_error": test["mean_error"],
        "test_failed_tasks": test["failed_tasks"], "best_val_accuracy": ev["best_val_accuracy"],
        **{f"test_accuracy.{t}": a for t, a in test["per_task"].items()},
        **{f"kg.{k}": kg[k] for k in ("mrr", "hits_at_1", "hits_at_3", "hits_at_10")},
    }


def _tags(cfg: Config, inputs: dict[str, Path]) -> dict[str, str]:
    """Where the model came from, as MLflow run tags."""
    from stmem.artifacts import code_version, digest, read_manifest

    tags = {"stmem.run": cfg.run.name, "stmem.git_commit": code_version(),
            "stmem.dataset_digest": digest(read_manifest(inputs["dataset"])["outputs"])}
    try:
        from prefect.runtime import flow_run

        if flow_run.id:
            tags["prefect.flow_run_id"] = str(flow_run.id)
    except ImportError:
        pass
    if cfg.train.init_from:  # a recipe step: the run whose model this one started from
        tags["stmem.init_from"] = cfg.train.init_from
        parent = Path(cfg.train.init_from).parent / "register" / "registration.json"
        if parent.is_file():
            reg = json.loads(parent.read_text())
            tags.update({"stmem.parent_run_id": reg["run_id"], "stmem.parent_model_uri": reg["model_uri"]})
    return tags


def build(cfg: Config, inputs: dict[str, Path], out: Path) -> dict:
    """Checkpoint + metrics -> MLflow run, registered pyfunc, champion/challenger alias."""
    from serving.registry import default_tracking_uri, register_model
    from stmem.layout import RunLayout

    train, kg = inputs["train"], inputs["kg"]
    manifests = [inputs[s] / "manifest.json" for s in ("ingest", "extract", "kg", "dataset", "train")]
    result = register_model(
        checkpoint_dir=train, tracking_uri=cfg.register.tracking_uri or default_tracking_uri(cfg.run_dir),
        experiment=cfg.register.experiment, model_name=cfg.register.model_name, metric=cfg.register.metric,
        params=cfg.model_dump(mode="json"), metrics=_metrics(train, kg),
        artifacts=manifests + [kg / "kg_metrics.json", train / "eval.json"],
        artifact_root=RunLayout(cfg.run_dir).mlflow_artifacts, tags=_tags(cfg, inputs),
    )
    (out / "registration.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
