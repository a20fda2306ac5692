import json
from pathlib import Path

from stmem.config import Config
from stmem.layout import split_file, split_path


def _metrics(train_dir: Path, kg_dir: Path) -> dict:
    ev = json.loads((train_dir / "eval.json").read_text())
    kg = json.loads((kg_dir / "kg_metrics.json").read_text())
    test = ev["test"]
    return {
        "test_accuracy": test["accuracy"], "test_mean_error": test["mean_error"],
        "test_failed_tasks": test["failed_tasks"], "best_val_accuracy": ev["best_val_accuracy"],
        **({"test_majority_baseline": test["majority_baseline"]} if "majority_baseline" in test else {}),
        **{f"test_accuracy.{t}": a for t, a in test["per_task"].items()},
        **{f"kg.{k}": kg[k] for k in ("mrr", "hits_at_1", "hits_at_3", "hits_at_10") if k in kg},  # none: skipped
    }


def build(cfg: Config, inputs: dict[str, Path], out: Path) -> dict:
    """Checkpoint + metrics -> MLflow run, registered pyfunc, champion/challenger alias."""
    import tempfile

    from serving.model_card import model_card
    from serving.plots import training_plots
    from serving.tracking import RUN_FILE

    from serving.registry import verify_checkpoint

    train, kg = inputs["train"], inputs["kg"]
    verify_checkpoint(train, split_file(inputs["dataset"], "test"))  # before anything reaches MLflow
    manifests = [inputs[s] / "manifest.json" for s in ("ingest", "extract", "kg", "dataset", "train")]
    run_file = train / RUN_FILE  # the run training opened; absent for a model trained outside the pipeline
    run_id = json.loads(run_file.read_text())["run_id"] if run_file.is_file() else None
    from stmem.artifacts import read_manifest

    test_set = read_manifest(inputs["dataset"])["outputs"][split_path("test")][:16]  # the test split's sha256
    card = model_card(json.loads((train / "eval.json").read_text()), _sources(cfg, inputs, test_set))
    with tempfile.TemporaryDirectory(prefix="stmem-plots-") as tmp:
        plots = training_plots(train, inputs["ingest"] / "corpus.parquet", Path(tmp) / "plots")
        result = _register(cfg, train, kg, manifests, run_id, plots, test_set, card,
                           _input_example(inputs["ingest"] / "corpus.parquet"))
    _tag_lineage(cfg, result)
    (out / "registration.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _input_example(corpus: Path) -> dict[str, str]:
    """The corpus's first test question that has a context, as raw text: the example registered with the
    model, in words its tokenizer knows (bAbI qa4's model reads "Where is Mary?" as 8 tokens of 7)."""
    from corpora.schema import iter_corpus

    first = None  # of any split, for a corpus whose splits the dataset stage makes
    for stories in iter_corpus(corpus):
        for story in stories:
            for question, pos in zip(story.questions, story.question_positions):
                if pos > 0:
                    example = {"context": "\n".join(story.sentences[:pos]), "question": question}
                    if story.split == "test":
                        return example
                    first = first or example
    if first is None:
        raise ValueError(f"{corpus}: no question with a context to register the model with")
    return first


def _sources(cfg: Config, inputs: dict[str, Path], test_set: str) -> dict[str, str]:
    """The model card's provenance rows: what the model was built from, by hash."""
    from stmem.artifacts import digest, read_manifest
    from tasks.train import run_tags

    train = read_manifest(inputs["train"])
    tags = run_tags(cfg, inputs)
    sources = {f"test set (sha256 of {split_path('test')})": test_set,
               "dataset (digest of its files)": tags["stmem.dataset_digest"],
               "KG (digest of its files)": digest(read_manifest(inputs["kg"])["outputs"]),
               "config (train stage's sections)": train["config_hash"],
               "code version": train["code_version"], "run": cfg.run.name}
    if "stmem.init_from" in tags:
        sources["parent (train.init_from)"] = tags["stmem.init_from"]
        sources["parent MLflow run"] = tags.get("stmem.parent_run_id", "unknown")
        sources["parent registered model"] = tags.get("stmem.parent_model_uri", "none")
    return sources


def _tag_lineage(cfg: Config, result: dict) -> None:
    """The parent tags on the registered version, and on its run again: the parent may have been
    registered only after this model's training began."""
    from tasks.train import parent_tags

    lineage = parent_tags(cfg)
    if not lineage:
        return
    from mlflow import MlflowClient

    from serving.registry import mlflow_store

    uri = mlflow_store(cfg.register.tracking_uri, cfg.run_dir)[0]
    client = MlflowClient(uri, registry_uri=uri)
    for k, v in lineage.items():
        client.set_tag(result["run_id"], k, v)
        client.set_model_version_tag(cfg.register.model_name, str(result["version"]), k, v)


def _register(cfg: Config, train: Path, kg: Path, manifests: list[Path], run_id: str | None,
              plots: list[Path], test_set: str, description: str, input_example: dict[str, str]) -> dict:
    from serving.registry import mlflow_store, register_model

    tracking_uri, artifact_root = mlflow_store(cfg.register.tracking_uri, cfg.run_dir)
    return register_model(
        checkpoint_dir=train, tracking_uri=tracking_uri,
        experiment=cfg.register.experiment, model_name=cfg.register.model_name, metric=cfg.register.metric,
        params=cfg.model_dump(mode="json"), metrics=_metrics(train, kg),
        artifacts=manifests + [kg / "kg_metrics.json", train / "eval.json", train / "history.json",
                               train / "test_predictions.parquet",
                               *plots],
        artifact_root=artifact_root, run_id=run_id, test_set=test_set,
        min_improvement=cfg.register.min_improvement, description=description, input_example=input_example,
    )
