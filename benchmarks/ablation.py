"""Ablations in one command: memory off, KG off and full context beside the full model.

Uses the corpus, extract, KG and dataset artifacts of an existing run
(``stmem run`` or ``stmem stage ...`` first) and trains one model per variant
and seed with the run's config:

    memory        the model as configured
    no_memory     model.memory={type: none}: only the last segment and the question
    no_kg         model.kg_fusion=false (and train.entity_word_dropout=0)
    full_context  one segment long enough for the longest context (the dataset
                  is rebuilt so, with the run's tokenizer), no memory: the upper bound

Prints test exact-match per variant (mean and range over seeds, per task) and
writes JSON.

    python benchmarks/ablation.py --config conf/babi-qa1.yaml --variants memory no_memory
"""
from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

import common
from stmem.artifacts import require
from stmem.config import Config, NoMemoryConfig
from stmem.dataset import build_dataset
from stmem.layout import RunLayout
from stmem.train import fit
from stmem.layout import split_file

VARIANTS = ("memory", "no_memory", "no_kg", "full_context")


def full_context_dataset(cfg: Config, layout: RunLayout, out: Path) -> int:
    """Rebuild the run's dataset with one segment holding the longest context; returns its length."""
    ds = layout.stage_dir("dataset")
    longest = max(max(pq.read_table(split_file(ds, s), columns=["context_tokens"]).column(0).to_pylist() or [0])
                  for s in ("train", "val", "test"))
    build_dataset(corpus_path=layout.corpus, mentions_path=layout.mentions,
                  entity_index_path=layout.stage_dir("kg") / "entity_index.parquet", out_dir=out,
                  **{**cfg.dataset.model_dump(), "segment_len": longest, "max_segments": 1,
                     "tokenizer": str(ds / "tokenizer.json")})
    return longest


def run_variant(cfg: Config, layout: RunLayout, variant: str, seed: int, work: Path) -> dict:
    dataset_dir, model_cfg, train_cfg = layout.stage_dir("dataset"), cfg.model, cfg.train
    if variant == "no_memory":
        model_cfg = model_cfg.model_copy(update={"memory": NoMemoryConfig()})
    elif variant == "no_kg":
        model_cfg = model_cfg.model_copy(update={"kg_fusion": False})
        train_cfg = train_cfg.model_copy(update={"entity_word_dropout": 0.0})  # without a KG it only hides words
    elif variant == "full_context":
        dataset_dir = work / "full_context_dataset"
        if not dataset_dir.is_dir():
            dataset_dir.mkdir()
            full_context_dataset(cfg, layout, dataset_dir)
        model_cfg = model_cfg.model_copy(update={"memory": NoMemoryConfig()})
    started = time.time()
    run = cfg.model_copy(update={"model": model_cfg, "train": train_cfg, "run": cfg.run.model_copy(update={"seed": seed})})
    summary = fit(run, dataset_dir=dataset_dir, kg_dir=layout.stage_dir("kg"), out_dir=work / f"{variant}-{seed}")
    return {**summary, "seed": seed, "wall_seconds": round(time.time() - started, 1)}


def main() -> int:
    ap = common.parser(__doc__)
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    args = ap.parse_args()
    cfg, layout = common.load(args)
    require(split_file(layout.stage_dir("dataset"), "train"), layout.corpus, stage="dataset")
    results: dict[str, dict] = {}
    report = {"config": args.config, "overrides": args.overrides, "seeds": args.seeds, "results": results}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.variants:
            runs = []
            for seed in args.seeds:
                runs.append(run_variant(cfg, layout, variant, seed, Path(tmp)))
                r = runs[-1]
                print(f"{variant:13s} seed {seed}: test exact-match {r['test_accuracy']:.3f} "
                      f"(best val {r['best_val_accuracy']:.3f}, {r['epochs_run']} epochs, "
                      f"{r['train_seconds']:.0f}s)", flush=True)
            accs = [r["test_accuracy"] for r in runs]
            results[variant] = {"mean": round(statistics.mean(accs), 4), "min": min(accs), "max": max(accs),
                                "per_task_mean": {t: round(statistics.mean(r["per_task"][t] for r in runs), 4)
                                                  for t in runs[0]["per_task"]},
                                "per_question_type_mean": {
                                    t: round(statistics.mean(r["per_question_type"][t]["accuracy"] for r in runs), 4)
                                    for t in runs[0]["per_question_type"]},
                                "runs": runs}
            if "memory" in results and "no_memory" in results:
                report["memory_gain_points"] = round(100 * (results["memory"]["mean"]
                                                            - results["no_memory"]["mean"]), 1)
            common.write_report(args, cfg.run.name, report)  # after every variant: a long run keeps what it has
    print(f"\n{'variant':13s} {'mean':>6s} {'min':>6s} {'max':>6s}")
    for variant, r in results.items():
        print(f"{variant:13s} {r['mean']:6.3f} {r['min']:6.3f} {r['max']:6.3f}")
    if "memory_gain_points" in report:
        print(f"memory on - off: {report['memory_gain_points']} points")
    pipeline_eval = layout.stage_dir("train") / "eval.json"
    if "memory" not in results and pipeline_eval.is_file():  # e.g. make demo: beside the pipeline's own model
        accuracy = json.loads(pipeline_eval.read_text())["test"]["accuracy"]
        print(f"the pipeline's model ({pipeline_eval}): {accuracy:.3f}, run seed {cfg.run.seed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
