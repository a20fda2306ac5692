"""The end-to-end flow and one flow per stage, both derived from ``tasks.graph.GRAPH``.

Stages pass only paths: each task returns its output directory, which the
tasks that read it take as input. A stage whose inputs, config and code are
unchanged is skipped (``tasks/stage.py``). A config that starts from another
run (``train.init_from: run:NAME``) runs that run first, as a sub-flow.
"""
from __future__ import annotations

import logging

from prefect import Flow, flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from flows.recipes import chain
from stmem.artifacts import MissingArtifactError, run_lock
from stmem.config import Config, RunConfig
from stmem.layout import RunLayout
from tasks.graph import GRAPH, STAGES, downstream, stale
from tasks.stage import stage_task


def with_task_runner(target: Flow, run: RunConfig) -> Flow:
    """``target`` with the task runner ``run.task_runner`` names, for the tasks stages submit (extract's shards)."""
    if run.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        logging.getLogger("distributed").setLevel(logging.WARNING)  # its INFO lines would drown the stages'

        # a local cluster of processes for this flow run, or the running cluster at dask_address
        return target.with_options(task_runner=DaskTaskRunner(address=run.dask_address) if run.dask_address
                                   else DaskTaskRunner())
    return target.with_options(task_runner=ThreadPoolTaskRunner())


def run_stages(cfg: Config, force: tuple[str, ...] = ()) -> dict[str, str]:
    """Every stage of ``cfg`` in dependency order; ``force``: re-run these and all that depend on them."""
    forced = downstream(force)
    dirs: dict[str, str] = {}
    with run_lock(cfg.run_dir):
        for name, stage in GRAPH.items():
            dirs[name] = stage_task(cfg, name)(cfg, name, {n: dirs[n] for n in stage.needs}, force=name in forced)
    return dirs


@flow(name="stmem-run", log_prints=True)
def run_one_config(cfg: Config, force: tuple[str, ...] = ()) -> dict[str, str]:
    """One run's stages (a sub-flow of the pipeline for each run of a recipe)."""
    return run_stages(cfg, force)


@flow(name="stmem-pipeline", log_prints=True)
def pipeline(config_path: str | None = None, overrides: list[str] | None = None,
             force: list[str] | None = None) -> dict[str, str]:
    """ingest -> extract -> kg -> dataset -> train -> register, after the runs this one starts from."""
    runs = chain(config_path, overrides or [])
    for _, _, parent in runs[:-1]:
        get_run_logger().info("recipe: run '%s' first (%s)", parent.run.name, parent.run_dir)
        with_task_runner(run_one_config, parent.run).with_options(name=f"stmem-run-{parent.run.name}")(parent)
    return run_stages(runs[-1][2], tuple(force or ()))


def _stage_flow(name: str):
    @flow(name=f"stmem-{name}", log_prints=True)
    def run_stage_alone(config_path: str | None = None, overrides: list[str] | None = None,
                        force: bool = False) -> str:
        cfg = chain(config_path, overrides or [], (name,))[-1][2]
        layout = RunLayout(cfg.run_dir)
        with run_lock(cfg.run_dir):
            for up in GRAPH[name].needs:  # stale upstream output is refused, never silently reused
                why = stale(cfg, up)
                if why:
                    raise MissingArtifactError(f"stage '{up}' is out of date ({why}); run it again "
                                               f"(stmem stage {up}) or the pipeline (stmem run)")
            dirs = {n: str(layout.stage_dir(n)) for n in GRAPH[name].needs}
            return stage_task(cfg, name)(cfg, name, dirs, force=force)

    run_stage_alone.__doc__ = (f"Run stage '{name}' alone on the current outputs of the stages before it "
                               "(skipped when its output is current, unless forced).")
    return run_stage_alone


STAGE_FLOWS = {name: _stage_flow(name) for name in STAGES}
