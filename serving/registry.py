"""Register a trained checkpoint in MLflow and keep the champion alias.

The model is logged as a pyfunc *from code* (``serving/pyfunc_model.py``) with
the checkpoint directory as an artifact, so the model directory holds
safetensors/JSON files and source code only, never a pickled module. The
``serving``, ``stmem``, ``corpora`` and ``kg_pipeline`` packages are bundled as code paths, so a
registered version always serves with the code it was registered with.

Aliases: every new version gets ``challenger``; it becomes ``champion`` when
there is no champion yet, or when its metric beats the champion's by more
than ``register.min_improvement`` on the same test set. Each version's
description is its model card (``serving.model_card``).

Registration is two-phase, so a crash leaves nothing that can be promoted:
the version is created with all its figures in one call and the tag
``stmem.registration=pending``; the aliases are then decided and the tag set
to ``complete``. Only complete versions are promoted. The next registration
of the same MLflow run completes (or removes) what a crash left and never
creates a second version of that run.

Champion moves (registration, ``promote``, ``rollback``) hold
``registry_lock``. The champions in order are the registered-model tag
``stmem.champion_history``, which ``rollback`` walks back; each move is also
recorded as a tag of the version it moved to.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator

from serving.errors import PromotionRefused, RegistrationRefused
from stmem.artifacts import RunInUseError
from stmem.checkpoint import CONFIG, ENTITY_INDEX, TOKENIZER, WEIGHTS
from stmem.dataset import ENTITY_ALIASES

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
TEST_SET_TAG = "test_set"  # version tag: the digest of the test split its metric was measured on
MOVE_TAG = "champion_move"  # version tags champion_move.<ns>: each move of the alias to it, from where and why
REGISTRATION_TAG = "stmem.registration"  # version tag: "pending" from creation until its aliases are decided
PENDING, COMPLETE = "pending", "complete"
HISTORY_TAG = "stmem.champion_history"  # registered-model tag: JSON list of the champions' versions, oldest first
HISTORY_KEPT = 100  # rollback reaches this many champions back
LOCK_TIMEOUT_S = 60.0  # a champion move takes milliseconds; a lock held this long is a stuck process


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


def _log_pyfunc(ckpt: Path, code_paths: list[str], input_example, fusion: bool, config: dict):
    import mlflow

    return mlflow.pyfunc.log_model(
        name=MODEL_NAME_IN_RUN,
        python_model=str(PYFUNC_CODE),
        artifacts={"checkpoint": str(ckpt)},
        code_paths=code_paths,
        signature=_signature(),
        input_example=input_example,
        pip_requirements=_requirements(fusion, config.get("spacy_model")),
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


def _run_exists(client, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return True


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
                   min_improvement: float = 0.0, description: str | None = None,
                   input_example: dict[str, str] | None = None) -> dict:
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
    ``input_example``: a ``{"context", "question"}`` the model can read (one of its own test
    questions), logged with it and answered once before anything is logged; default a qa1 question,
    which a model whose tokenizer never saw those words may read as too long.

    A ``run_id`` that already has a version of ``model_name`` with these
    figures gets that version back (completed first if a crash interrupted
    its registration); nothing is logged again.

    Returns ``{"run_id", "model_uri", "version", "alias", "champion_version",
    "metric", "reason"}``; ``alias`` is ``"none"`` for a version returned
    again that has since lost its alias.
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
    figures = {"metric": metric, "metric_value": repr(value), **({TEST_SET_TAG: test_set} if test_set else {})}
    if run_id and not _run_exists(client, run_id):
        # the store was replaced or register.tracking_uri changed since training opened its run
        log.warning("training's MLflow run %s is not in %s: registering in a new run", run_id, tracking_uri)
        run_id = None
    if run_id:
        with registry_lock(tracking_uri):
            done = _recover_run(client, model_name, run_id, figures, min_improvement)
        if done is not None:
            return done
    experiment_id = _get_or_create_experiment(client, experiment, artifact_root)
    example = input_example or _INPUT_EXAMPLE
    input_example = pd.DataFrame([{"context": example["context"], "question": example["question"]}])

    with tempfile.TemporaryDirectory(prefix="stmem-register-") as tmp:
        ckpt = Path(tmp) / "checkpoint"  # its name becomes artifacts/checkpoint in the model
        config = _stage_checkpoint(checkpoint_dir, ckpt)
        # Fail loudly on a checkpoint that cannot answer: MLflow's own check of
        # the input example at log time only warns.
        from serving.inference import Predictor

        Predictor(ckpt).answer([example["context"]], [example["question"]])
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
                info = _log_pyfunc(ckpt, code_paths, input_example, fusion, config)
    with registry_lock(tracking_uri):
        # Under the lock, a pending version of a local store is one whose registration died (see registry_lock).
        _create_registered_model(client, model_name)
        # Phase 1: the version and its figures in one call, so it is never seen without them.
        mv = client.create_model_version(model_name, info.model_uri, run_id=run_id, description=description,
                                         tags={**figures, REGISTRATION_TAG: PENDING}, model_id=info.model_id)
        return _complete(client, model_name, str(mv.version), run_id, min_improvement)


def _create_registered_model(client, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def _recover_run(client, name: str, run_id: str, figures: dict, min_improvement: float) -> dict | None:
    """The result for ``run_id``'s version with these figures if it has one; completes or removes its leftovers.

    A pending version with other figures holding an alias was decided before the crash: it is completed.
    One holding none is removed (never promoted, nothing points at it)."""
    found = None
    hits = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    for hit in sorted(hits, key=lambda h: int(h.version)):
        mv = client.get_model_version(name, hit.version)  # search results carry no aliases
        same = all(mv.tags.get(k) == v for k, v in figures.items())
        if same and found is None:
            found = mv
        elif mv.tags.get(REGISTRATION_TAG) == PENDING:
            if mv.aliases:
                _complete(client, name, str(mv.version), run_id, min_improvement)
            else:
                log.warning("%s: removing version %s, an interrupted registration of run %s", name, mv.version,
                            run_id)
                client.delete_model_version(name, mv.version)
    if found is None:
        return None
    if found.tags.get(REGISTRATION_TAG) == PENDING:
        log.warning("%s: completing version %s, an interrupted registration of run %s", name, found.version, run_id)
        return _complete(client, name, str(found.version), run_id, min_improvement)
    return _result(client, name, found, run_id, f"run {run_id} is already registered as version {found.version}")


def _complete(client, name: str, version: str, run_id: str | None, min_improvement: float) -> dict:
    """Phase 2, under ``registry_lock``: decide the aliases of ``version``, then mark it complete."""
    mv = client.get_model_version(name, version)
    metric, value = mv.tags["metric"], float(mv.tags["metric_value"])
    if mv.aliases:  # a crash came after the alias move: the decision is made
        reason = f"completed an interrupted registration (alias {', '.join(mv.aliases)})"
    else:
        promote, reason = _beats_champion(client, name, metric, value, mv.tags.get(TEST_SET_TAG), min_improvement)
        if promote:
            stale = _alias_version(client, name, CHALLENGER)
            if stale is not None and int(stale.version) < int(version):  # older than the new champion
                client.delete_registered_model_alias(name, CHALLENGER)
            _move(client, name, mv, reason)
        else:
            client.set_model_version_tag(name, version, "challenger_reason", reason)
            client.set_registered_model_alias(name, CHALLENGER, version)
    client.set_model_version_tag(name, version, REGISTRATION_TAG, COMPLETE)
    mv = client.get_model_version(name, version)
    log.info("registered %s version %s (%s=%s) as %s: %s", name, version, metric, value,
             " and ".join(mv.aliases) or "neither alias", reason)
    return _result(client, name, mv, run_id, reason)


def _result(client, name: str, mv, run_id: str | None, reason: str) -> dict:
    champion = _alias_version(client, name, CHAMPION)
    alias = CHAMPION if CHAMPION in mv.aliases else CHALLENGER if CHALLENGER in mv.aliases else "none"
    return {"run_id": run_id or mv.run_id, "model_uri": f"models:/{name}/{mv.version}", "version": int(mv.version),
            "alias": alias, "champion_version": int(champion.version) if champion else None,
            "metric": float(mv.tags["metric_value"]), "reason": reason}


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


def _lock_path(tracking_uri: str) -> Path:
    """Beside a local SQLite store; for a tracking server, one file per server URI in the temp directory
    (MLflow's REST API has no lock: this serialises the moves made from this machine only)."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(f"{tracking_uri[len('sqlite:///'):]}.lock")
    return Path(tempfile.gettempdir()) / f"stmem-registry-{hashlib.sha256(tracking_uri.encode()).hexdigest()[:16]}.lock"


@contextlib.contextmanager
def registry_lock(tracking_uri: str) -> Iterator[None]:
    """Hold the registry of ``tracking_uri`` for one champion move; waits up to ``LOCK_TIMEOUT_S`` for another.

    An OS lock (flock) like the run directory's: it goes with its process, so a killed move leaves no stale
    lock. Not re-entrant: the public functions take it, the helpers under them do not.
    """
    path = _lock_path(tracking_uri)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
                    raise RunInUseError(f"{path}: the model registry is locked by {holder} (waited "
                                        f"{LOCK_TIMEOUT_S:g} s); try again when it has finished") from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _history(client, name: str, champion) -> list[str]:
    """The champions' versions, oldest first, ending with the current champion.

    The alias moves before the history is written (promotion) or after (rollback): a move cut between the
    two, or an alias moved outside stmem, leaves a history not ending with the champion; the champion is
    then appended, which completes an interrupted promotion and undoes an interrupted rollback."""
    from mlflow.exceptions import MlflowException

    try:
        history = [str(v) for v in json.loads(client.get_registered_model(name).tags.get(HISTORY_TAG, "[]"))]
    except (MlflowException, ValueError, TypeError):  # no such model yet, or a tag edited by hand: start afresh
        history = []
    if champion is not None and history[-1:] != [str(champion.version)]:
        history.append(str(champion.version))
    return history


def _write_history(client, name: str, history: list[str]) -> None:
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history[-HISTORY_KEPT:]))


def _move(client, name: str, new, reason: str, history: list[str] | None = None) -> dict:
    """Point ``champion`` at version ``new``, record the move as its tag, and write ``history`` (default:
    the current one plus ``new``). Under ``registry_lock``."""
    old = _alias_version(client, name, CHAMPION)
    version = str(new.version)
    record = {"from": str(old.version) if old else None, "to": version, "reason": reason,
              "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "metric": new.tags.get("metric"),
              "from_value": old.tags.get("metric_value") if old else None, "to_value": new.tags.get("metric_value")}
    if history is None:  # a promotion: the alias first, so a crash before the history is healed by _history
        history = _history(client, name, old) + [version]
        client.set_registered_model_alias(name, CHAMPION, version)
        _write_history(client, name, history)
    else:  # a rollback: the history first, so a crash before the alias leaves the rollback undone
        _write_history(client, name, history)
        client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, f"{MOVE_TAG}.{time.time_ns()}", json.dumps(record))
    return record


def promote(client, name: str, version: str | int, *, force: bool = False,
            reason: str = "promoted by hand") -> dict | None:
    """Make ``version`` the champion; None when it already is (nothing is recorded).

    Refused (``PromotionRefused``) for a version whose registration is not complete, and, unless ``force``,
    for one measured on another (or an unknown) test set or with another metric than the champion, or worse.
    """
    with registry_lock(client.tracking_uri):
        new = client.get_model_version(name, str(version))  # an unknown version fails here, before anything moves
        state = new.tags.get(REGISTRATION_TAG)
        # a version registered before the two phases has no state tag: it was complete if its figures are there
        legacy = state is None and {"metric", "metric_value"} <= new.tags.keys()
        if state != COMPLETE and not legacy:
            raise PromotionRefused(
                f"{name}: version {new.version} is not a complete registration ({REGISTRATION_TAG}: "
                f"{state or 'absent'}); it is never promoted: register its run again to complete it")
        old = _alias_version(client, name, CHAMPION)
        if old is not None and str(old.version) == str(new.version):
            return None
        if old is not None and not force:
            _check_comparable(name, old, new)
        return _move(client, name, new, reason + (" (--force)" if force and old is not None else ""))


def _check_comparable(name: str, old, new) -> None:
    """``PromotionRefused`` unless ``new`` was measured like ``old`` (test set and metric) and is not worse."""
    force = "not promoted (--force to promote it anyway)"
    sets = new.tags.get(TEST_SET_TAG), old.tags.get(TEST_SET_TAG)
    if sets[0] is None or sets[0] != sets[1]:
        raise PromotionRefused(
            f"{name}: version {new.version} was measured on test set {sets[0] or '(none recorded)'}, champion "
            f"version {old.version} on {sets[1] or '(none recorded)'}; {force}")
    metrics = new.tags.get("metric"), old.tags.get("metric")
    if metrics[0] != metrics[1] or "metric_value" not in old.tags:
        raise PromotionRefused(f"{name}: version {new.version} is measured by {metrics[0]}, champion version "
                               f"{old.version} by {metrics[1] or '(none recorded)'}; {force}")
    mine, best = float(new.tags["metric_value"]), float(old.tags["metric_value"])
    if mine < best:
        raise PromotionRefused(f"{name}: version {new.version}'s {metrics[0]} {mine:.4f} is worse than champion "
                               f"version {old.version}'s {best:.4f}; {force}")


def rollback(client, name: str) -> dict:
    """Move ``champion`` back to the champion before it in the history (versions deleted since are skipped)."""
    from mlflow.exceptions import MlflowException

    with registry_lock(client.tracking_uri):
        champion = _alias_version(client, name, CHAMPION)
        if champion is None:
            raise PromotionRefused(f"{name}: no champion to roll back")
        history = _history(client, name, champion)[:-1]
        while history:
            try:
                previous = client.get_model_version(name, history[-1])
                break
            except MlflowException:
                log.warning("%s: version %s, an earlier champion, no longer exists; skipped", name, history[-1])
                history.pop()
        else:
            raise PromotionRefused(f"{name}: no earlier champion than version {champion.version} to roll back to")
        return _move(client, name, previous, f"rollback from version {champion.version}", history=history)
