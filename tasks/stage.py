"""What every stage task shares: upstream checks, atomic output, a log line."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from kg_pipeline import KGInputError
from stmem.artifacts import MissingArtifactError, require, stage_output
from stmem.config import Config, ConfigError
from corpora import CorpusError
from stmem.layout import RunLayout

# Retrying cannot fix bad input; it only repeats the same error.
BAD_INPUT = (ConfigError, CorpusError, KGInputError, MissingArtifactError)


def _retry_unless_bad_input(task, task_run, state) -> bool:
    try:
        state.result()
    except BAD_INPUT:
        return False
    except Exception:
        return True
    return False


def stage_task(name: str):
    """A Prefect task for one stage; its retry count comes from ``run.retries`` (see flows)."""
    return task(name=name, cache_policy=NO_CACHE, persist_result=False, retry_delay_seconds=2,
                retry_condition_fn=_retry_unless_bad_input)


def run_stage(cfg: Config, stage: str, *, inputs: dict[Path, str], sections: tuple[str, ...],
              work: Callable[[Path], dict]) -> str:
    """Check ``inputs`` (path -> stage that makes it), run ``work(tmp_dir)``, publish atomically."""
    logger = get_run_logger()
    for path, upstream in inputs.items():
        require(path, stage=upstream)
    out = RunLayout(cfg.run_dir).stage_dir(stage)
    logger.info("%s: started", stage)
    started = time.time()
    with stage_output(out, stage=stage, inputs=list(inputs), config_hash=cfg.section_hash(*sections)) as (tmp, summary):
        summary.update(work(tmp))
    figures = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in summary.items() if not isinstance(v, (dict, list)))
    logger.info("%s: finished in %.1fs: %s", stage, time.time() - started, figures)
    return str(out)
