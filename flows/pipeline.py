"""The end-to-end flow and the single-stage flows.

Stages pass only paths: each task returns its output directory, which the
next task takes as input. A single-stage flow finds its inputs in the run
directory, so ``stmem stage train`` re-runs training alone on what the
earlier stages left there.
"""
from __future__ import annotations

from prefect import flow

from stmem.config import Config, load_config
from stmem.layout import RunLayout
from tasks import dataset_task, extract_task, ingest_task, kg_task, register_task, train_task


def _with_retries(cfg: Config, *tasks):
    return [t.with_options(retries=cfg.run.retries) for t in tasks]


@flow(name="stmem-pipeline", log_prints=True)
def pipeline(config_path: str | None = None, overrides: list[str] | None = None) -> dict[str, str]:
    """ingest -> extract -> kg -> dataset -> train -> register."""
    cfg = load_config(config_path, overrides or [])
    ingest, extract, kg, dataset, train, register = _with_retries(
        cfg, ingest_task, extract_task, kg_task, dataset_task, train_task, register_task)
    out = {"ingest": ingest(cfg)}
    out["extract"] = extract(cfg, out["ingest"])
    out["kg"] = kg(cfg, out["extract"])
    out["dataset"] = dataset(cfg, out["ingest"], out["extract"], out["kg"])
    out["train"] = train(cfg, out["dataset"], out["kg"])
    out["register"] = register(cfg, out["train"])
    return out


def _stage_flow(stage: str, make_args):
    task = {"ingest": ingest_task, "extract": extract_task, "kg": kg_task, "dataset": dataset_task,
            "train": train_task, "register": register_task}[stage]

    @flow(name=f"stmem-{stage}", log_prints=True)
    def run_one(config_path: str | None = None, overrides: list[str] | None = None) -> str:
        cfg = load_config(config_path, overrides or [])
        layout = RunLayout(cfg.run_dir)
        return task.with_options(retries=cfg.run.retries)(cfg, *make_args(layout))

    run_one.__doc__ = f"Run stage '{stage}' alone from the artifacts already in the run directory."
    return run_one


STAGE_FLOWS = {
    "ingest": _stage_flow("ingest", lambda L: ()),
    "extract": _stage_flow("extract", lambda L: (str(L.stage_dir("ingest")),)),
    "kg": _stage_flow("kg", lambda L: (str(L.stage_dir("extract")),)),
    "dataset": _stage_flow("dataset", lambda L: tuple(str(L.stage_dir(s)) for s in ("ingest", "extract", "kg"))),
    "train": _stage_flow("train", lambda L: (str(L.stage_dir("dataset")), str(L.stage_dir("kg")))),
    "register": _stage_flow("register", lambda L: (str(L.stage_dir("train")),)),
}
