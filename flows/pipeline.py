"""The end-to-end flow and one flow per stage, both derived from ``tasks.graph.GRAPH``.

Stages pass only paths: each task returns its output directory, which the
tasks that read it take as input. A stage whose inputs, config and code are
unchanged is skipped (``tasks/stage.py``). Each run the pipeline makes is a
sub-flow on the task runner its config names (``run.task_runner``), named
after the run; a config that starts from another run (``train.init_from:
run:NAME``) runs that run first.

In a deployment, the overrides a run is started with are added to the
deployment's own (``prefect deployment run --param overrides=[...]``).
"""
# No `from __future__ import annotations`: Prefect validates a sub-flow's parameters against their annotations,
# and in a flow run started in a subprocess (`stmem deploy`, a worker) a string "Config" no longer resolves.
import logging

from prefect import Flow, flow, get_run_logger
from prefect.runtime import deployment, flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from flows.recipes import chain
from stmem.artifacts import MissingArtifactError, run_lock
from stmem.config import Config, RunConfig, load_config
from stmem.layout import RunLayout
from tasks.graph import GRAPH, STAGES, downstream, stale
from tasks.stage import run_stage_task


def with_task_runner(target: Flow, run: RunConfig) -> Flow:
    """``target`` with the task runner ``run.task_runner`` names, for the tasks stages submit (extract's shards)."""
    if run.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        logging.getLogger("distributed").setLevel(logging.WARNING)  # its INFO lines would drown the stages'

        # a local cluster of processes for this flow run, or the running cluster at dask_address
        return target.with_options(task_runner=DaskTaskRunner(address=run.dask_address) if run.dask_address
                                   else DaskTaskRunner())
    return target.with_options(task_runner=ThreadPoolTaskRunner())


def _key(override: str) -> str:
    return override.split("=", 1)[0].strip()


def with_deployment_overrides(overrides: list[str] | None) -> list[str]:
    """``overrides`` added to those of the deployment this flow run belongs to; these win, key by key.

    Prefect gives a run-time parameter in place of the deployment's value,
    so ``--param overrides=[...]`` would otherwise drop the deployment's
    ``--set`` values (its run.root among them).
    """
    overrides = list(overrides or [])
    if not deployment.id:
        return overrides
    from prefect import get_client

    with get_client(sync_client=True) as client:
        base = client.read_deployment(deployment.id).parameters.get("overrides") or []
    given = {_key(o) for o in overrides}
    return [o for o in base if _key(o) not in given] + overrides


def _run_name(suffix: str = "") -> str:
    """The name of a flow run: the run it makes (``run.name``), so it can be found in Prefect."""
    params = flow_run.parameters
    try:
        cfg = load_config(params.get("config_path"), with_deployment_overrides(params.get("overrides")))
    except Exception:  # a bad config: the flow fails on it in one line; the run keeps Prefect's name
        return flow_run.name
    return cfg.run.name + suffix


def run_stages(cfg: Config, force: tuple[str, ...] = ()) -> dict[str, str]:
    """Every stage of ``cfg`` in dependency order; ``force``: re-run these and all that depend on them."""
    forced = downstream(force)
    dirs: dict[str, str] = {}
    with run_lock(cfg.run_dir, wait=cfg.run.lock_timeout, on_wait=get_run_logger().warning):
        for name, stage in GRAPH.items():
            dirs[name] = run_stage_task(cfg, name, {n: dirs[n] for n in stage.needs}, force=name in forced)
    return dirs


@flow(name="stmem-run", flow_run_name="{cfg.run.name}", log_prints=True)
def run_one_config(cfg: Config, force: tuple[str, ...] = ()) -> dict[str, str]:
    """One run's stages (a sub-flow of the pipeline for each run of a recipe)."""
    return run_stages(cfg, force)


@flow(name="stmem-pipeline", flow_run_name=_run_name, log_prints=True)
def pipeline(config_path: str | None = None, overrides: list[str] | None = None,
             force: list[str] | None = None) -> dict[str, str]:
    """ingest -> extract -> kg -> dataset -> train -> register, after the runs this one starts from."""
    overrides = with_deployment_overrides(overrides)
    get_run_logger().info("config %s, overrides %s", config_path or "(defaults)", overrides)
    runs = chain(config_path, overrides)
    for _, _, parent in runs[:-1]:
        get_run_logger().info("recipe: run '%s' first (%s)", parent.run.name, parent.run_dir)
        with_task_runner(run_one_config, parent.run).with_options(name=f"stmem-run-{parent.run.name}")(parent)
    # a sub-flow here too: the runner run.task_runner names is set here, however this flow was started
    # (the CLI, `stmem deploy`, or a worker loading flows/pipeline.py:pipeline from prefect.yaml)
    cfg = runs[-1][2]
    return with_task_runner(run_one_config, cfg.run)(cfg, tuple(force or ()))


def _stage_flow(name: str):
    @flow(name=f"stmem-{name}", flow_run_name=lambda: _run_name(f"-{name}"), log_prints=True)
    def run_stage_alone(config_path: str | None = None, overrides: list[str] | None = None,
                        force: bool = False) -> str:
        cfg = chain(config_path, with_deployment_overrides(overrides), (name,))[-1][2]
        layout = RunLayout(cfg.run_dir)
        with run_lock(cfg.run_dir, wait=cfg.run.lock_timeout, on_wait=get_run_logger().warning):
            for up in GRAPH[name].needs:  # stale upstream output is refused, never silently reused
                why = stale(cfg, up)
                if why:
                    raise MissingArtifactError(f"stage '{up}' is out of date ({why}); run it again "
                                               f"(stmem stage {up}) or the pipeline (stmem run)")
            dirs = {n: str(layout.stage_dir(n)) for n in GRAPH[name].needs}
            return run_stage_task(cfg, name, dirs, force=force)

    run_stage_alone.__doc__ = (f"Run stage '{name}' alone on the current outputs of the stages before it "
                               "(skipped when its output is current, unless forced).")
    return run_stage_alone


STAGE_FLOWS = {name: _stage_flow(name) for name in STAGES}
