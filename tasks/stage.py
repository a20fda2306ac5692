"""The one Prefect task every stage runs through: key, skip, reuse or build, publish atomically.

A stage runs only when its key (``tasks.graph.stage_key``) differs from the
one in its output's manifest, or its output files no longer match their
hashes, or it is forced; its log line says which, and what changed
(``tasks.graph.changes``). An earlier output of the same key, kept from
before (``run.keep_outputs``), is put back instead of built again. It fixes
its inputs before the work: the key is computed from the upstream manifests
first, so what it records is what it read. Bad input, and storage that
refuses a write (``storage_refused``), are never retried;
anything else is, ``run.retries`` times.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed
from prefect.tasks import exponential_backoff

from corpora import CorpusError
from kg_pipeline import KGInputError
from serving.errors import RegistrationRefused
from stmem.artifacts import (MissingArtifactError, RunInUseError, altered, digest, read_manifest, restore_earlier,
                             run_lock, stage_output, storage_refused)
from stmem.config import Config, ConfigError
from stmem.errors import TrainingDiverged
from stmem.layout import RunLayout
from tasks.graph import GRAPH, SKIPPED, changes, load, stage_inputs, stage_key

# Retrying cannot fix bad input; it only repeats the same error.
BAD_INPUT = (ConfigError, CorpusError, KGInputError, MissingArtifactError, RunInUseError, UnicodeDecodeError,
             RegistrationRefused, TrainingDiverged)


def _retry_unless_bad_input(task, task_run, state) -> bool:
    try:
        state.result()
    except BAD_INPUT:
        return False
    except Exception as exc:
        return not storage_refused(exc)
    return False


def run_stage(cfg: Config, name: str, dirs: dict[str, str], force: bool = False):
    """Run stage ``name`` on the upstream outputs ``dirs`` (stage -> directory) unless its output is current.

    Returns its output directory; when skipped, in a Completed state named
    Cached, so that Prefect shows the stage as reused, not as run.
    """
    logger = get_run_logger()
    stage = GRAPH[name]
    out = RunLayout(cfg.run_dir).stage_dir(name)
    with run_lock(cfg.run_dir):
        inputs = stage_inputs(cfg, stage, {n: Path(dirs[n]) for n in stage.needs})
        key = stage_key(stage, inputs)
        m = read_manifest(out)
        if force:
            why = "forced"
        elif m is not None and m.get("key") == key:
            why = altered(out, m)
            if why is None:
                logger.info(SKIPPED, name, key)
                return Completed(name="Cached", data=str(out), message=f"{out} is current (key {key})")
        else:
            why = changes(None if m is None else m.get("inputs", {}), inputs)
            kept = restore_earlier(out, key, cfg.run.keep_outputs)
            if kept is not None:
                logger.info("%s: reused its earlier output of key %s, made %s (%s)", name, key, kept["created_at"],
                            why)
                return Completed(name="Cached", data=str(out), message=f"{out} put back from an earlier output "
                                                                       f"(key {key})")
        logger.info("%s: started: %s", name, why)
        started = time.time()
        build = load(stage.build)
        with stage_output(out, stage=name, key=key, inputs=inputs, config_hash=digest(inputs["config"]),
                          resumable=stage.resumable, keep=cfg.run.keep_outputs) as (tmp, summary):
            summary.update(build(cfg, {n: Path(dirs[n]) for n in stage.needs}, tmp) or {})
            missing = [f for f in stage.writes if not (tmp / f).is_file()]
            if missing:
                raise RuntimeError(f"stage '{name}' did not write {', '.join(missing)}")
        figures = {k: v for k, v in summary.items() if not isinstance(v, (dict, list))}
        logger.info("%s: finished in %.1fs: %s", name, time.time() - started,
                    ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()))
        create_markdown_artifact(key=artifact_key(cfg, name), description=f"run {cfg.run.name}, stage {name}",
                                 markdown=_report(name, time.time() - started, figures, summary.get("history")))
    return str(out)


def artifact_key(cfg: Config, stage: str) -> str:
    """``<run>-<stage>-summary``: each run's artifacts are their own (a key takes lowercase, digits, dashes)."""
    return re.sub(r"[^a-z0-9-]", "-", f"{cfg.run.name}-{stage}-summary".lower())


def _report(name: str, seconds: float, figures: dict, history: list[dict] | None) -> str:
    rows = "\n".join(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in figures.items())
    text = f"### {name} ({seconds:.1f} s)\n\n| figure | value |\n|---|---|\n{rows}\n"
    if history:  # training: one row per epoch
        cols = list(history[0])
        text += "\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n" + "\n".join(
            "| " + " | ".join(f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |"
            for r in history) + "\n"
    return text


def run_stage_task(cfg: Config, name: str, dirs: dict[str, str], force: bool = False) -> str:
    """``run_stage`` as a Prefect task run, with the config's retries and timeout; its output directory."""
    stage = task(run_stage, name=name, cache_policy=NO_CACHE, persist_result=False,
                 retries=cfg.run.retries, retry_delay_seconds=exponential_backoff(backoff_factor=cfg.run.retry_delay),
                 retry_condition_fn=_retry_unless_bad_input, timeout_seconds=cfg.run.stage_timeout.get(name))
    # the final state, not the value: a skipped stage returns its Cached state; result() raises a failure
    return stage(cfg, name, dirs, force=force, return_state=True).result()
