"""Recipes: a config whose ``train.init_from`` is ``run:NAME`` starts from the model of run NAME.

The parent's config is ``NAME.yaml`` beside the child's (its ``run.name``
must be NAME). The child's ``--set`` options that say where and how to run,
not what to make (``INHERITED``), apply to the parent too; a seed given to
the child does not: the models a chain starts from are trained once. Every
run of a chain registers into the MLflow store of its first run (its
``register.tracking_uri``, else the SQLite store in its run directory), so
the lineage is followed in one store and the first run, made alone or as a
parent, is the same run.
"""
from __future__ import annotations

from pathlib import Path

from stmem.config import Config, ConfigError, load_config
from tasks.graph import STAGES, check_stages

PREFIX = "run:"
INHERITED = ("run.root", "train.num_threads", "train.progress", "train.device", "train.checkpoint_every",
             "register.tracking_uri")  # a chain reports to one registry


def parent_of(config_path: str | None, overrides: list[str], cfg: Config) -> tuple[str, list[str]] | None:
    """``(parent config path, parent overrides)`` when ``cfg`` starts from another run, else None."""
    start = cfg.train.init_from
    if not start or not start.startswith(PREFIX):
        return None
    name = start[len(PREFIX):]
    if config_path is None:
        raise ConfigError(f"train.init_from: {start!r} needs a config file: {name}.yaml is looked up beside it")
    path = Path(config_path).parent / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"train.init_from: {start!r}: no {path} to make that run")
    inherited = [o for o in overrides if o.split("=", 1)[0].strip() in INHERITED]
    parent = load_config(path, inherited)
    if parent.run.name != name:
        raise ConfigError(f"train.init_from: {start!r}: {path} makes run '{parent.run.name}', not '{name}'")
    return str(path), inherited


def chain(config_path: str | None, overrides: list[str],
          stages: tuple[str, ...] | None = STAGES) -> list[tuple[str | None, list[str], Config]]:
    """The runs to make, parents first, ending with this config's; each with its resolved config.

    Each config is checked for the ``stages`` that will run (``tasks.graph.check_stages``); None: not
    checked (the CLI checks only the stages that are not current).
    """
    out: list[tuple[str | None, list[str], Config]] = []
    seen: set[str] = set()
    path, over = config_path, list(overrides)
    while True:
        cfg = load_config(path, over)
        if stages is not None:
            check_stages(cfg, stages)
        if cfg.run.name in seen:
            raise ConfigError(f"train.init_from: run '{cfg.run.name}' starts, through its parents, from itself")
        seen.add(cfg.run.name)
        out.insert(0, (path, over, cfg))
        parent = parent_of(path, over, cfg)
        if parent is None:
            break
        path, over = parent
    if len(out) > 1:
        from serving.registry import mlflow_store

        store = mlflow_store(out[0][2].register.tracking_uri, out[0][2].run_dir)[0]
    # each child starts from its parent's trained model, and registers where the first run does, so the
    # whole lineage is in one MLflow store
    for i in range(1, len(out)):
        path, over, cfg = out[i]
        if cfg.register.tracking_uri not in (None, store):
            raise ConfigError(f"register.tracking_uri: run '{cfg.run.name}' names {cfg.register.tracking_uri}, but "
                              f"a recipe registers into one store, that of its first run '{out[0][2].run.name}' "
                              f"({store}); set it there, or for every run with --set")
        start = str(out[i - 1][2].run_dir / "train")
        out[i] = (path, over, cfg.model_copy(update={
            "train": cfg.train.model_copy(update={"init_from": start}),
            "register": cfg.register.model_copy(update={"tracking_uri": store})}))
    return out
