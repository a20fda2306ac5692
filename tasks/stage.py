"""The one Prefect task every stage runs through: key, skip or build, publish atomically.

A stage runs only when its key (``tasks.graph.stage_key``) differs from the
one in its output's manifest, or its output files no longer match their
hashes, or it is forced. It fixes its inputs before the work: the key is
computed from the upstream manifests first, so what it records is what it
read. Bad input is never retried; anything else is, ``run.retries`` times.
"""
from __future__ import annotations

import time
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from corpora import CorpusError
from kg_pipeline import KGInputError
from serving.errors import RegistrationRefused
from stmem.artifacts import MissingArtifactError, RunInUseError, altered, read_manifest, run_lock, stage_output
from stmem.config import Config, ConfigError
from stmem.errors import TrainingDiverged
from stmem.layout import RunLayout
from tasks.graph import GRAPH, load, stage_inputs, stage_key

# Retrying cannot fix bad input; it only repeats the same error.
BAD_INPUT = (ConfigError, CorpusError, KGInputError, MissingArtifactError, RunInUseError, UnicodeDecodeError,
             RegistrationRefused, TrainingDiverged)


def _retry_unless_bad_input(task, task_run, state) -> bool:
    try:
        state.result()
    except BAD_INPUT:
        return False
    except Exception:
        return True
    return False


def run_stage(cfg: Config, name: str, dirs: dict[str, str], force: bool = False) -> str:
    """Run stage ``name`` on the upstream outputs ``dirs`` (stage -> directory) unless its output is current."""
    logger = get_run_logger()
    stage = GRAPH[name]
    out = RunLayout(cfg.run_dir).stage_dir(name)
    with run_lock(cfg.run_dir):
        inputs = stage_inputs(cfg, stage, {n: Path(dirs[n]) for n in stage.needs})
        key = stage_key(stage, inputs)
        m = read_manifest(out)
        if not force and m is not None and m.get("key") == key:
            why = altered(out, m)
            if why is None:
                logger.info("%s: skipped, its inputs, config and code are unchanged (key %s)", name, key)
                return str(out)
            logger.info("%s: rebuilding, %s", name, why)
        logger.info("%s: started", name)
        started = time.time()
        build = load(stage.build)
        with stage_output(out, stage=name, key=key, inputs=inputs, config_hash=inputs["config"],
                          resumable=stage.resumable) as (tmp, summary):
            summary.update(build(cfg, {n: Path(dirs[n]) for n in stage.needs}, tmp) or {})
            missing = [f for f in stage.writes if not (tmp / f).is_file()]
            if missing:
                raise RuntimeError(f"stage '{name}' did not write {', '.join(missing)}")
        figures = {k: v for k, v in summary.items() if not isinstance(v, (dict, list))}
        logger.info("%s: finished in %.1fs: %s", name, time.time() - started,
                    ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()))
        create_markdown_artifact(key=f"{name}-summary", description=f"stage {name}", markdown=_report(
            name, time.time() - started, figures, summary.get("history")))
    return str(out)


def _report(name: str, seconds: float, figures: dict, history: list[dict] | None) -> str:
    rows = "\n".join(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in figures.items())
    text = f"### {name} ({seconds:.1f} s)\n\n| figure | value |\n|---|---|\n{rows}\n"
    if history:  # training: one row per epoch
        cols = list(history[0])
        text += "\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n" + "\n".join(
            "| " + " | ".join(f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |"
            for r in history) + "\n"
    return text


def stage_task(cfg: Config, name: str):
    """The Prefect task for stage ``name``, with the config's retries and timeout."""
    return task(run_stage, name=name, cache_policy=NO_CACHE, persist_result=False,
                retries=cfg.run.retries, retry_delay_seconds=exponential_backoff(backoff_factor=cfg.run.retry_delay),
                retry_condition_fn=_retry_unless_bad_input, timeout_seconds=cfg.run.stage_timeout.get(name))
