"""``stmem deploy``: serve a Prefect deployment of the pipeline (or of one stage) on a schedule.

It registers the deployment with the Prefect server in ``PREFECT_API_URL``
and runs its scheduled (and manually triggered) flow runs in this process,
in the foreground until stopped: Prefect's ``flow.serve``. The production
route, a work pool and workers, is ``prefect.yaml`` (docs/operations.md).

Runs of one deployment take turns: its concurrency limit (one by default)
queues a run that comes while another runs (a schedule and a manual run).
"""
from __future__ import annotations

from pathlib import Path

from stmem.config import ConfigError, load_config
from tasks.graph import STAGES, check_stages


def deploy(config_path: str | None, overrides: list[str], *, cron: str | None = None,
           interval: float | None = None, stage: str | None = None, limit: int = 1) -> None:
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise ConfigError("stmem deploy needs a Prefect server: start one (prefect server start --host 127.0.0.1) "
                          "and set PREFECT_API_URL, e.g. http://127.0.0.1:4200/api (docs/operations.md)")
    if limit < 1:
        raise ConfigError(f"--limit: runs of the deployment at a time, at least 1 (got {limit})")
    cfg = load_config(config_path, overrides)  # a bad config fails now, not at the first scheduled run
    check_stages(cfg, STAGES if stage is None else (stage,))  # its flow runs run here, with these libraries
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    from flows.pipeline import STAGE_FLOWS, pipeline, with_task_runner

    # the pipeline sets each run's task runner itself; a stage flow runs on the one given here
    target = pipeline if stage is None else with_task_runner(STAGE_FLOWS[stage], cfg.run)
    name = cfg.run.name if stage is None else f"{cfg.run.name}-{stage}"
    # the config by absolute path: scheduled runs do not depend on this shell's directory
    params = {"config_path": str(Path(config_path).resolve()) if config_path else None, "overrides": list(overrides)}
    # a run that finds `limit` runs of the deployment running waits for one to end (Prefect queues it)
    target.serve(name=name, cron=cron, interval=interval, parameters=params, print_starting_message=True,
                 global_limit=ConcurrencyLimitConfig(limit=limit, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE))
