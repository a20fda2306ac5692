"""The stage graph, declared once: what each stage reads, writes and is keyed on.

The end-to-end flow, the per-stage flows, ``stmem stage``, the manifests and
the CLI summary all derive from ``GRAPH``. A stage's key (``stage_key``) is a
hash of what ``stage_inputs`` returns, which its manifest keeps:

    upstream  the digest of each upstream output's files (from its manifest)
    files     files outside the run it reads, by content (not by path)
    config    its config sections' values by dotted name, without the
              execution-only settings (``stmem.config.EXECUTION_ONLY``)
    code      a hash per source file of the modules it imports, transitively
              within this repository (``code_files``)

An output whose manifest holds the same key, and whose files still match
their hashes, is reused; ``changes`` says what differs from an earlier one.
Nothing here imports a library: a stage's ``build`` is imported when it runs.
"""
from __future__ import annotations

import ast
import hashlib
import importlib
import json
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
    build: str  # "module:function", called as build(cfg, {upstream: dir}, out_dir) -> summary
    extra_inputs: str | None = None  # "module:function", (cfg) -> files outside the run it reads
    resumable: bool = False  # keep its temporary directory after a crash (training checkpoints)
    # packages whose whole source goes into its output, beyond the modules it imports
    ships: tuple[str, ...] = ()
    # "module:function", (cfg) -> None: raises ConfigError for what only an installed library can check
    # (a PyKEEN model name, a spaCy model), before any stage runs
    check: str | None = None

    @property
    def needs(self) -> tuple[str, ...]:
        return tuple(self.reads)


GRAPH: dict[str, Stage] = {s.name: s for s in (
    Stage("ingest", reads={}, writes=("corpus.parquet",), sections=("corpus", "run.seed"),
          build="tasks.ingest:build", extra_inputs="tasks.ingest:corpus_files"),
    Stage("extract", reads={"ingest": ("corpus.parquet",)},
          writes=("mentions.parquet", "triples.parquet", "entity_aliases.parquet"),
          sections=("extract",), build="tasks.extract:build",
          extra_inputs="tasks.kg:external_files", check="tasks.extract:check"),  # the KG's entity names are found in the text
    Stage("kg", reads={"extract": ("triples.parquet",)},
          writes=("entity_embeddings.safetensors", "entity_index.parquet", "kg_metrics.json"),
          sections=("kg", "model.kg_fusion"), build="tasks.kg:build",
          extra_inputs="tasks.kg:external_files", check="tasks.kg:check"),
    Stage("dataset", reads={"ingest": ("corpus.parquet",), "extract": ("mentions.parquet", "entity_aliases.parquet"),
                            "kg": ("entity_index.parquet",)},
          writes=(*map(split_path, SPLITS), "tokenizer.json", "dataset_info.json",
                  "dataset_card.json", "entity_aliases.parquet"),
          sections=("dataset", "corpus.word_classes"), build="tasks.dataset:build",
          extra_inputs="tasks.dataset:tokenizer_file"),
    Stage("train", reads={"dataset": (*map(split_path, SPLITS), "tokenizer.json",
                                      "entity_aliases.parquet"),
                          "kg": ("entity_embeddings.safetensors", "entity_index.parquet")},
          writes=("model.safetensors", "model_config.json", "tokenizer.json", "eval.json", "history.json",
                  "test_predictions.parquet", "mlflow_run.json"),
          sections=TRAIN_SECTIONS,
          build="tasks.train:build", extra_inputs="tasks.train:start_model",
          resumable=True, check="tasks.train:check"),
    Stage("register", reads={"train": ("model.safetensors", "eval.json", "history.json", "test_predictions.parquet"),
                             "kg": ("kg_metrics.json",), "ingest": ("corpus.parquet",),  # plots by distance
                             "dataset": (split_path("test"),),  # the test figure is recomputed before registering
                             "extract": ()},  # every manifest goes to MLflow
          writes=("registration.json",), sections=("register",), build="tasks.register:build",
          ships=("serving", "stmem", "corpora", "kg_pipeline")),  # the registered pyfunc's code_paths
)}
STAGES = tuple(GRAPH)
# the log line of a stage whose output is current (name, key); `stmem.log` is searched for it
SKIPPED = "%s: skipped, its inputs, config and code are unchanged (key %s)"


def downstream(stages: tuple[str, ...] | list[str]) -> set[str]:
    """The named stages and every stage that depends on them."""
    out = set(stages)
    for s in GRAPH.values():  # GRAPH is in dependency order
        if out & set(s.needs):
            out.add(s.name)
    return out


def check_stages(cfg: Config, names: tuple[str, ...] | list[str]) -> None:
    """The ``check`` of each named stage: a misspelt component is a ConfigError now, not a failed task."""
    for name in names:
        if GRAPH[name].check:
            load(GRAPH[name].check)(cfg)


def load(ref: str) -> Callable:
    module, _, fn = ref.partition(":")
    return getattr(importlib.import_module(module), fn)


def _module_file(root: Path, name: str) -> Path | None:
    base = root.joinpath(*name.split("."))
    return next((f for f in (base.with_suffix(".py"), base / "__init__.py") if f.is_file()), None)


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return tree


def _imported(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Module names ``tree`` may import: import statements anywhere (libraries are imported inside
    functions), and each name a ``from`` import takes as ``package.name`` (a submodule, or a name the
    package imports on first use: ``_lazy_names``)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package this module is in
                package = module.split(".")[:len(module.split(".")) - (node.level - is_package)]
                base = ".".join([*package, *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    # importing a.b.c runs a/__init__.py and a/b/__init__.py first
    return {".".join(n.split(".")[:i]) for n in names for i in range(1, n.count(".") + 2)}


def _lazy_names(tree: ast.AST) -> dict[str, str]:
    """A package's names imported on first use (``corpora``, ``kg_pipeline``: ``_WHERE``), name -> module:
    the ``"name": "module"`` entries and ``dict.fromkeys((names), "module")`` of its dicts."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            out.update({k.value: v.value for k, v in zip(node.keys, node.values) if isinstance(k, ast.Constant)
                        and isinstance(v, ast.Constant) and isinstance(k.value, str) and isinstance(v.value, str)})
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "fromkeys"
              and len(node.args) == 2 and isinstance(node.args[0], (ast.Tuple, ast.List))
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
            out.update(dict.fromkeys((e.value for e in node.args[0].elts if isinstance(e, ast.Constant)),
                                     node.args[1].value))
    return out


@cache
def code_files(modules: tuple[str, ...], root: Path = REPO) -> dict[str, str]:
    """Each source file of ``modules`` and what they import, transitively, within ``root``: its hash.

    A file counts by its syntax tree without docstrings (``ast.dump``), not its
    bytes: a comment, a docstring or a reformatting changes no key. Libraries
    (modules outside ``root``) are not counted: upgrading one re-runs nothing.
    """
    out: dict[str, str] = {}
    lazy: dict[str, dict[str, str]] = {}  # package -> its lazy names
    todo = list(modules)
    while todo:
        name = todo.pop()
        f = _module_file(root, name)
        if f is None:  # a name, not a module: maybe one its package imports on first use
            package, _, attr = name.rpartition(".")
            if attr in lazy.get(package, {}):
                todo.append(lazy[package][attr])
            continue
        if (rel := str(f.relative_to(root))) in out:
            continue
        out[rel], imported, lazy[name] = _source(f.read_bytes(), str(f), name, f.name == "__init__.py")
        # a package's __init__ before the names taken from it: parents are popped last, so push them last
        todo += sorted(imported, key=lambda n: -n.count("."))
    return dict(sorted(out.items()))


@cache
def _source(source: bytes, filename: str, module: str, is_package: bool) -> tuple[str, frozenset[str], dict]:
    """One source file's hash, the modules it may import and its lazy names; by content, so each file
    is parsed once in a process however many stages' keys it is in (most of a warm command's checks)."""
    tree = ast.parse(source, filename=filename)
    lazy = _lazy_names(tree) if is_package else {}
    imported = frozenset(_imported(tree, module, is_package))
    return hashlib.sha256(ast.dump(_strip_docstrings(tree)).encode()).hexdigest()[:16], imported, lazy


def stage_code(stage: Stage, root: Path = REPO) -> dict[str, str]:
    """The source files that decide ``stage``'s output, with their hashes (``code_files``): its build's
    module and what that imports, and what it ships. (Not its extra_inputs' module: which files it reads
    is in the key as those files.)"""
    modules = [stage.build.partition(":")[0]]
    modules += [str(f.relative_to(root).with_suffix("")).replace("/", ".").removesuffix(".__init__")
                for pkg in stage.ships for f in sorted((root / pkg).rglob("*.py"))]
    return code_files(tuple(modules), root)


def stage_inputs(cfg: Config, stage: Stage, dirs: dict[str, Path]) -> dict:
    """What the stage's output depends on, as recorded in its manifest; ``stage_key`` hashes it.

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
            "config": cfg.key_values(*stage.sections), "code": stage_code(stage)}


def stage_key(stage: Stage, inputs: dict) -> str:
    # files by content, in the order extra_inputs lists them (a KG's train/valid/test): the path a config
    # spells them with is recorded, not keyed
    return digest({"stage": stage.name, **inputs, "files": list(inputs["files"].values())})


def changes(before: dict | None, now: dict, limit: int = 6) -> str:
    """What differs between the inputs an earlier output was made from (its manifest's) and ``now``'s."""
    if before is None:
        return "no earlier output"
    if not all(isinstance(before.get(k), dict) for k in ("upstream", "files", "config", "code")):
        return "its manifest predates the record of what its key was made of"
    found = [f"output of stage '{n}' changed" for n in now["upstream"] if before["upstream"].get(n) !=
             now["upstream"][n]]
    old_shas, new_shas = set(before["files"].values()), set(now["files"].values())
    found += [f"input {p} changed" for p, sha in now["files"].items() if sha not in old_shas]
    found += [f"input {p} no longer read" for p, sha in before["files"].items()
              if sha not in new_shas and p not in now["files"]]
    unset = "(unset)"
    found += [f"config key `{k}` {json.dumps(before['config'].get(k, unset))} -> "
              f"{json.dumps(now['config'].get(k, unset))}"
              for k in sorted(before["config"].keys() | now["config"].keys())
              if before["config"].get(k, unset) != now["config"].get(k, unset)]
    for f in sorted(before["code"].keys() | now["code"].keys()):
        if before["code"].get(f) != now["code"].get(f):
            found.append(f"code file {f} " + ("changed" if f in before["code"] and f in now["code"] else
                                              "added" if f in now["code"] else "no longer used"))
    if not found:
        return "its key was made otherwise"
    return "; ".join(found[:limit]) + (f"; and {len(found) - limit} more" if len(found) > limit else "")


def stale(cfg: Config, name: str, known: dict[str, str | None] | None = None) -> str | None:
    """Why stage ``name``'s output in the run directory is not what its inputs now make; None if current.

    ``known``: the answers already found for ``cfg`` (stage -> answer), added to; asking for several
    stages with one dict checks each stage once, not once per stage that depends on it.
    """
    if known is None:
        known = {}
    if name not in known:
        known[name] = _stale(cfg, name, known)
    return known[name]


def _stale(cfg: Config, name: str, known: dict[str, str | None]) -> str | None:
    stage, layout = GRAPH[name], RunLayout(cfg.run_dir)
    d = layout.stage_dir(name)
    m = read_manifest(d)
    if m is None:
        return f"{d} has no output"
    why = altered(d, m)
    if why:
        return why
    for up in stage.needs:
        why = stale(cfg, up, known)
        if why:
            return why
    try:
        inputs = stage_inputs(cfg, stage, {n: layout.stage_dir(n) for n in stage.needs})
        key = stage_key(stage, inputs)
    except MissingArtifactError as exc:
        return str(exc)
    return None if m.get("key") == key else \
        f"stage '{name}' ran on other inputs, config or code: {changes(m.get('inputs', {}), inputs)}"
