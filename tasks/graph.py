"""The stage graph, declared once: what each stage reads, writes and is keyed on.

The end-to-end flow, the per-stage flows, ``stmem stage``, the manifests and
the CLI summary all derive from ``GRAPH``. A stage's key (``stage_key``) is a
hash of its upstream outputs (by their manifests), its config sections, extra
input files and the source of the code it runs; an output whose manifest
holds the same key, and whose files still match their hashes, is reused.
Nothing here imports a library: a stage's ``build`` is imported when it runs.
"""
from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Callable

from stmem.artifacts import MissingArtifactError, altered, digest, file_sha256, read_manifest
from stmem.config import TRAIN_SECTIONS, Config
from stmem.layout import SPLITS, RunLayout, split_path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Stage:
    name: str
    reads: dict[str, tuple[str, ...]]  # upstream stage -> files of its output this stage reads
    writes: tuple[str, ...]  # files it must leave in its output
    sections: tuple[str, ...]  # config sections ("train") or fields ("run.seed") its output depends on
    code: tuple[str, ...]  # packages whose source decides its output
    build: str  # "module:function", called as build(cfg, {upstream: dir}, out_dir) -> summary
    extra_inputs: str | None = None  # "module:function", (cfg) -> files outside the run it reads
    resumable: bool = False  # keep its temporary directory after a crash (training checkpoints)

    @property
    def needs(self) -> tuple[str, ...]:
        return tuple(self.reads)


GRAPH: dict[str, Stage] = {s.name: s for s in (
    Stage("ingest", reads={}, writes=("corpus.parquet",), sections=("corpus", "run.seed"),
          code=("corpora",), build="tasks.ingest:build"),
    Stage("extract", reads={"ingest": ("corpus.parquet",)},
          writes=("mentions.parquet", "triples.parquet", "entity_aliases.parquet"),
          sections=("extract", "kg.external_kg"), code=("corpora", "kg_pipeline"), build="tasks.extract:build",
          extra_inputs="tasks.kg:external_files"),  # the KG's entity names are found in the text
    Stage("kg", reads={"extract": ("triples.parquet",)},
          writes=("entity_embeddings.safetensors", "entity_index.parquet", "kg_metrics.json"),
          sections=("kg", "model.kg_fusion"), code=("corpora", "kg_pipeline"), build="tasks.kg:build",
          extra_inputs="tasks.kg:external_files"),
    Stage("dataset", reads={"ingest": ("corpus.parquet",), "extract": ("mentions.parquet", "entity_aliases.parquet"),
                            "kg": ("entity_index.parquet",)},
          writes=(*map(split_path, SPLITS), "tokenizer.json", "dataset_info.json",
                  "dataset_card.json", "entity_aliases.parquet"),
          sections=("dataset",), code=("corpora", "stmem"), build="tasks.dataset:build",
          extra_inputs="tasks.dataset:tokenizer_file"),
    Stage("train", reads={"dataset": (*map(split_path, SPLITS), "tokenizer.json",
                                      "entity_aliases.parquet"),
                          "kg": ("entity_embeddings.safetensors", "entity_index.parquet")},
          writes=("model.safetensors", "model_config.json", "tokenizer.json", "eval.json", "history.json",
                  "test_predictions.parquet", "mlflow_run.json"),
          sections=TRAIN_SECTIONS,
          code=("corpora", "stmem"), build="tasks.train:build", extra_inputs="tasks.train:start_model",
          resumable=True),
    Stage("register", reads={"train": ("model.safetensors", "eval.json", "history.json", "test_predictions.parquet"),
                             "kg": ("kg_metrics.json",), "ingest": ("corpus.parquet",),  # plots by distance
                             "dataset": (split_path("test"),),  # the test figure is recomputed before registering
                             "extract": ()},  # every manifest goes to MLflow
          writes=("registration.json",), sections=("register",), code=("serving", "stmem", "corpora"),
          build="tasks.register:build"),
)}
STAGES = tuple(GRAPH)


def downstream(stages: tuple[str, ...] | list[str]) -> set[str]:
    """The named stages and every stage that depends on them."""
    out = set(stages)
    for s in GRAPH.values():  # GRAPH is in dependency order
        if out & set(s.needs):
            out.add(s.name)
    return out


def load(ref: str) -> Callable:
    module, _, fn = ref.partition(":")
    return getattr(importlib.import_module(module), fn)


@cache
def source_hash(*packages: str) -> str:
    """Hash of the Python source of ``packages``: a code change re-runs the stages that use it."""
    h = hashlib.sha256()
    for pkg in packages:
        for f in sorted((REPO / pkg).rglob("*.py")):
            h.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def stage_inputs(cfg: Config, stage: Stage, dirs: dict[str, Path]) -> dict:
    """What the stage's output depends on, as recorded in its manifest; its hash is the key.

    Each upstream output counts by the digest of its files' hashes, read from
    its manifest after checking that the files still match it.
    """
    upstream = {}
    for name, files in stage.reads.items():
        d = Path(dirs[name])
        for f in files:
            if not (d / f).is_file():
                raise MissingArtifactError(f"{d / f}: missing; run stage '{name}' first")
        m = read_manifest(d)
        if m is None:
            raise MissingArtifactError(f"{d}: no manifest; run stage '{name}' again")
        why = altered(d, m)
        if why:
            raise MissingArtifactError(f"{why} after stage '{name}' wrote it; run stage '{name}' again")
        upstream[name] = digest(m["outputs"])
    extra = load(stage.extra_inputs)(cfg) if stage.extra_inputs else []
    return {"upstream": upstream, "files": {str(p): file_sha256(p) for p in extra},
            "config": cfg.section_hash(*stage.sections), "code": source_hash(*stage.code, "tasks")}


def stage_key(stage: Stage, inputs: dict) -> str:
    # Files from outside the run count by content, not by path (the manifest still names them): a parent
    # model retrained in place changes the key, the same parent found under another run root does not.
    return digest({"stage": stage.name, **inputs, "files": list(inputs["files"].values())})


def stale(cfg: Config, name: str) -> str | None:
    """Why stage ``name``'s output in the run directory is not what its inputs now make; None if current."""
    stage, layout = GRAPH[name], RunLayout(cfg.run_dir)
    d = layout.stage_dir(name)
    m = read_manifest(d)
    if m is None:
        return f"{d} has no output"
    why = altered(d, m)
    if why:
        return why
    for up in stage.needs:
        why = stale(cfg, up)
        if why:
            return why
    try:
        key = stage_key(stage, stage_inputs(cfg, stage, {n: layout.stage_dir(n) for n in stage.needs}))
    except MissingArtifactError as exc:
        return str(exc)
    return None if m.get("key") == key else f"stage '{name}' ran on other inputs, config or code"
