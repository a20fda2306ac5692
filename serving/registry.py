"""Register a trained checkpoint in MLflow and keep the champion alias.

The model is logged as a pyfunc *from code* (``serving/pyfunc_model.py``) with
the checkpoint directory as an artifact, so the model directory holds
safetensors/JSON files and source code only, never a pickled module. The
``serving``, ``stmem``, ``corpora`` and ``kg_pipeline`` packages are bundled as code paths, so a
registered version always serves with the code it was registered with.

Aliases: every new version gets ``challenger``; it becomes ``champion`` when
there is no champion yet, or when its metric beats the champion's by more
than ``register.min_improvement`` on the same test set. Every move of
``champion`` is recorded as a version tag; ``rollback`` follows them back.
Each version's description is its model card (``serving.model_card``).
"""
from __future__ import annotations

import importlib.metadata
import json
import logging
import math
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable

from serving.errors import RegistrationRefused
from stmem.checkpoint import CONFIG, ENTITY_INDEX, TOKENIZER, WEIGHTS
from stmem.dataset import ENTITY_ALIASES

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
TEST_SET_TAG = "test_set"  # version tag: the digest of the test split its metric was measured on
MOVE_TAG = "champion_move"  # version tags champion_move.<ns>: each move of the alias to it, from where and why


def verify_checkpoint(checkpoint_dir: Path, test_split: Path) -> float:
    """The checkpoint's test exact match, recomputed; refuses non-finite weights and a figure other than
    its ``eval.json``'s (the metric that decides promotion must be this checkpoint's own)."""
    import torch

    from stmem.checkpoint import load_checkpoint
    from stmem.dataset import load_tokenizer
    from stmem.evaluate import exact_match
    from stmem.train import load_examples

    checkpoint_dir = Path(checkpoint_dir)
    model, _ = load_checkpoint(checkpoint_dir)
    bad = [n for n, p in model.state_dict().items() if p.is_floating_point() and not torch.isfinite(p).all()]
    if bad:
        raise RegistrationRefused(f"{checkpoint_dir}: {len(bad)} weight tensors hold NaN or inf (first: {bad[0]}); "
                                  "not registered")
    recorded = json.loads((checkpoint_dir / "eval.json").read_text())["test"]["accuracy"]
    now = exact_match(model, load_examples(test_split), load_tokenizer(checkpoint_dir / TOKENIZER), batch_size=64,
                      device=torch.device("cpu"))["accuracy"]
    if abs(now - recorded) > 1e-9:
        raise RegistrationRefused(f"{checkpoint_dir}: test accuracy recomputed from the weights is {now:.4f}, "
                                  f"eval.json says {recorded:.4f}; not registered")
    return now
MODEL_NAME_IN_RUN = "model"
STAGE_ARTIFACTS = "stage_artifacts"
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
# Only these checkpoint files go into the model: tensors, JSON, parquet.
_CKPT_REQUIRED = (WEIGHTS, CONFIG, TOKENIZER)
_CKPT_OPTIONAL = (ENTITY_INDEX, ENTITY_ALIASES, "eval.json", "manifest.json")
_INPUT_EXAMPLE = {"context": "Mary moved to the bathroom.\nJohn went to the hallway.", "question": "Where is Mary?"}
_MAX_PARAM_LEN = 6000  # MLflow's limit on a param value
_METRIC_KEY_BAD = re.compile(r"[^A-Za-z0-9_\-. /]")


def _log_pyfunc(ckpt: Path, code_paths: list[str], input_example, fusion: bool, config: dict, model_name: str):
    import mlflow

    return mlflow.pyfunc.log_model(
        name=MODEL_NAME_IN_RUN,
        python_model=str(PYFUNC_CODE),
        artifacts={"checkpoint": str(ckpt)},
        code_paths=code_paths,
        signature=_signature(),
        input_example=input_example,
        pip_requirements=_requirements(fusion, config.get("spacy_model")),
        registered_model_name=model_name,
    )


def default_tracking_uri(run_dir: Path | str) -> str:
    """``sqlite:///<absolute run_dir>/mlflow.db``."""
    return f"sqlite:///{Path(run_dir).resolve() / 'mlflow.db'}"


def mlflow_store(tracking_uri: str | None, run_dir: Path) -> tuple[str, Path | None]:
    """``(tracking URI, artifact root of a new experiment)`` for a run.

    ``tracking_uri`` (``register.tracking_uri``), else the run directory's
    SQLite store. A SQLite store keeps artifacts in ``mlartifacts`` beside
    it (MLflow's default, ``./mlruns``, would follow the working directory;
    a recipe's later runs use its first run's store). A tracking server
    keeps its own artifact store (``mlflow server`` proxies it), so another
    machine can load the models. (Not ``MLFLOW_TRACKING_URI``: MLflow sets it
    in-process; the CLI reads it once, when it starts.)
    """
    uri = tracking_uri or default_tracking_uri(run_dir)
    if uri.startswith("sqlite:///"):
        return uri, Path(uri[len("sqlite:///"):]).parent / "mlartifacts"
    return uri, None


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def _param_value(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    return s[:_MAX_PARAM_LEN]


def _metric_values(metrics: dict) -> dict[str, float]:
    out = {}
    for k, v in flatten(metrics).items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            log.debug("metric %s skipped: %r is not a number", k, v)
            continue
        out[_METRIC_KEY_BAD.sub("_", k)] = float(v)
    return out


def _requirements(with_spacy: bool, spacy_model: str | None) -> list[str]:
    """Pinned runtime deps of the pyfunc (local labels like ``+cpu`` dropped)."""
    dists = ["mlflow", "torch", "transformers", "tokenizers", "safetensors", "pydantic",
             "pandas", "pyarrow", "pyyaml", "tqdm"]
    if with_spacy:
        dists.append("spacy")
        if spacy_model:
            dists += importlib.metadata.packages_distributions().get(spacy_model, [])
    reqs = []
    for dist in dict.fromkeys(dists):
        try:
            reqs.append(f"{dist}=={importlib.metadata.version(dist).split('+')[0]}")
        except importlib.metadata.PackageNotFoundError:
            reqs.append(dist)
    return reqs


def _stage_checkpoint(checkpoint_dir: Path, dest: Path) -> dict:
    """Copy the checkpoint's safe files into ``dest``; returns its model_config."""
    missing = [n for n in _CKPT_REQUIRED if not (checkpoint_dir / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{checkpoint_dir}: checkpoint is missing {missing}")
    dest.mkdir(parents=True)
    for name in _CKPT_REQUIRED + _CKPT_OPTIONAL:
        if (checkpoint_dir / name).is_file():
            shutil.copy2(checkpoint_dir / name, dest / name)
    skipped = sorted(p.name for p in checkpoint_dir.iterdir() if not (dest / p.name).exists())
    if skipped:
        log.info("not packaged with the model: %s", skipped)
    return json.loads((dest / CONFIG).read_text())


def _stage_artifact_paths(artifacts: Iterable[Path]) -> list[tuple[Path, str]]:
    """(file, artifact dir) pairs: ``stage_artifacts/<parent dir name>``, unique."""
    out, used = [], set()
    for p in map(Path, artifacts):
        if not p.exists():
            raise FileNotFoundError(f"{p}: artifact to log does not exist")
        base = f"{STAGE_ARTIFACTS}/{p.resolve().parent.name or 'root'}"
        sub, i = base, 1
        while (sub, p.name) in used:
            i += 1
            sub = f"{base}-{i}"
        used.add((sub, p.name))
        out.append((p, sub))
    return out


def _signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec("string", "context"), ColSpec("string", "question")]),
                          outputs=Schema([ColSpec("string", "answer"), ColSpec("double", "score")]))


def _alias_version(client, name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _get_or_create_experiment(client, name: str, artifact_root: Path | None) -> str:
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if artifact_root is not None and exp.artifact_location != Path(artifact_root).resolve().as_uri():
            log.warning("experiment %r keeps its artifact location %s", name, exp.artifact_location)
        return exp.experiment_id
    location = Path(artifact_root).resolve().as_uri() if artifact_root is not None else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # created concurrently
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def register_model(*, checkpoint_dir: Path, tracking_uri: str, experiment: str, model_name: str, metric: str,
                   params: dict, metrics: dict, artifacts: Iterable[Path] = (),
                   artifact_root: Path | None = None, run_id: str | None = None, test_set: str | None = None,
                   min_improvement: float = 0.0, description: str | None = None) -> dict:
    """Log a run with the pyfunc model, register it, and update the aliases.

    ``params``/``metrics`` may be nested (keys flattened with dots); params are
    stringified, non-numeric metrics are skipped. ``metric`` must be one of the
    flattened metric keys; it decides promotion. ``artifacts`` (files) are
    logged under ``stage_artifacts/<parent dir name>/``. ``artifact_root`` is
    the artifact location of a *new* experiment (e.g. ``<run_dir>/mlartifacts``);
    leave it None with a tracking server that proxies artifacts. ``run_id``:
    an existing run to add all this to (the one training opened), else a new run.

    The new version becomes ``champion`` when its ``metric`` beats the
    champion's by more than ``min_improvement`` on the same ``test_set`` (a
    digest of the test split; versions of different test sets are never
    compared), else ``challenger``; every champion move is a version tag.
    ``description``: the version's model card (``serving.model_card``).

    Returns ``{"run_id", "model_uri", "version", "alias", "champion_version",
    "metric", "reason"}``. Not atomic across concurrent registrations of one model.
    """
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient

    checkpoint_dir = Path(checkpoint_dir)
    metric_values = _metric_values(metrics)
    if metric not in metric_values:
        raise ValueError(f"metric {metric!r} is not among the numeric metrics {sorted(metric_values)}")
    value = metric_values[metric]
    if math.isnan(value):
        raise ValueError(f"metric {metric!r} is NaN")
    stage_files = _stage_artifact_paths(artifacts)
    param_values = {k: _param_value(v) for k, v in flatten(params).items()}

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    experiment_id = _get_or_create_experiment(client, experiment, artifact_root)
    input_example = pd.DataFrame([_INPUT_EXAMPLE])

    with tempfile.TemporaryDirectory(prefix="stmem-register-") as tmp:
        ckpt = Path(tmp) / "checkpoint"  # its name becomes artifacts/checkpoint in the model
        config = _stage_checkpoint(checkpoint_dir, ckpt)
        # Fail loudly on a checkpoint that cannot answer: MLflow's own check of
        # the input example at log time only warns.
        from serving.inference import Predictor

        Predictor(ckpt).answer([_INPUT_EXAMPLE["context"]], [_INPUT_EXAMPLE["question"]])
        fusion = (ckpt / ENTITY_INDEX).is_file()
        # the serving layer and the libraries under it
        root = Path(__file__).resolve().parent.parent
        code_paths = [str(root / pkg) for pkg in ("serving", "stmem", "corpora", "kg_pipeline")]

        with mlflow.start_run(run_id=run_id, experiment_id=None if run_id else experiment_id) as run:
            existing = run_id is not None
            run_id = run.info.run_id
            if param_values and not existing:  # training logged them
                mlflow.log_params(param_values)
            if metric_values:
                mlflow.log_metrics(metric_values)
            for path, sub in stage_files:
                if path.is_dir():
                    mlflow.log_artifacts(str(path), artifact_path=f"{sub}/{path.name}")
                else:
                    mlflow.log_artifact(str(path), artifact_path=sub)
            with warnings.catch_warnings():
                # The signature below does the validation that type hints would.
                warnings.filterwarnings("ignore", message=".*type hints to the `predict` method")
                info = _log_pyfunc(ckpt, code_paths, input_example, fusion, config, model_name)
    version = str(info.registered_model_version)
    if description:
        client.update_model_version(model_name, version, description=description)
    client.set_model_version_tag(model_name, version, "metric", metric)
    client.set_model_version_tag(model_name, version, "metric_value", repr(value))
    if test_set:
        client.set_model_version_tag(model_name, version, TEST_SET_TAG, test_set)
    promote, reason = _beats_champion(client, model_name, metric, value, test_set, min_improvement)
    if promote:
        move_champion(client, model_name, version, reason)
        stale = _alias_version(client, model_name, CHALLENGER)
        if stale is not None and int(stale.version) < int(version):  # older than the new champion
            client.delete_registered_model_alias(model_name, CHALLENGER)
    else:
        client.set_registered_model_alias(model_name, CHALLENGER, version)
        client.set_model_version_tag(model_name, version, "challenger_reason", reason)
    champion_version = _alias_version(client, model_name, CHAMPION).version
    log.info("registered %s version %s (%s=%s) as %s: %s", model_name, version, metric, value,
             CHAMPION if promote else CHALLENGER, reason)
    return {"run_id": run_id, "model_uri": f"models:/{model_name}/{version}", "version": int(version),
            "alias": CHAMPION if promote else CHALLENGER, "champion_version": int(champion_version),
            "metric": value, "reason": reason}


def _beats_champion(client, name: str, metric: str, value: float, test_set: str | None,
                    min_improvement: float) -> tuple[bool, str]:
    """Whether a new version measured at ``value`` on ``test_set`` replaces the champion, and why."""
    champion = _alias_version(client, name, CHAMPION)
    if champion is None:
        return True, "the first champion"
    theirs = champion.tags.get(TEST_SET_TAG)
    if test_set and theirs and theirs != test_set:
        return False, (f"not compared: champion version {champion.version} was measured on another test set "
                       f"({theirs}; this one {test_set})")
    if champion.tags.get("metric") != metric or "metric_value" not in champion.tags:
        return False, f"not compared: champion version {champion.version} has no {metric} figure"
    best = float(champion.tags["metric_value"])
    verdict = "beats" if value > best + min_improvement else "does not beat"
    return verdict == "beats", (f"{metric} {value:.4f} {verdict} champion version {champion.version}'s "
                                f"{best:.4f} by more than {min_improvement:g}")


def move_champion(client, name: str, version: str | int, reason: str) -> dict:
    """Point alias ``champion`` at ``version`` and record the move as a tag of that version."""
    import time

    version = str(version)
    new = client.get_model_version(name, version)  # an unknown version fails here, before anything moves
    old = _alias_version(client, name, CHAMPION)
    record = {"from": str(old.version) if old else None, "to": version, "reason": reason,
              "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "metric": new.tags.get("metric"),
              "from_value": old.tags.get("metric_value") if old else None, "to_value": new.tags.get("metric_value")}
    client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, f"{MOVE_TAG}.{time.time_ns()}", json.dumps(record))
    return record


def rollback(client, name: str) -> dict:
    """Move ``champion`` back to the version it replaced most recently."""
    champion = _alias_version(client, name, CHAMPION)
    if champion is None:
        raise ValueError(f"{name}: no champion to roll back")
    moves = sorted((k, v) for k, v in champion.tags.items() if k.startswith(f"{MOVE_TAG}."))
    previous = json.loads(moves[-1][1])["from"] if moves else None
    if previous is None:
        raise ValueError(f"{name}: champion version {champion.version} replaced no earlier champion")
    return move_champion(client, name, previous, f"rollback from version {champion.version}")
