"""Memory on vs memory off (only the last segment visible) on one dataset.

Uses the dataset and KG artifacts of an existing run (``stmem run`` first),
trains the model twice with the same config and seed, and prints and writes
test exact-match for both.

    python benchmarks/memory_ablation.py --config conf/demo.yaml
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from stmem.artifacts import require
from stmem.config import load_config
from stmem.layout import RunLayout
from stmem.train import fit


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--out", default="benchmarks/results/memory_ablation.json")
    args = ap.parse_args()
    cfg = load_config(args.config, args.overrides)
    layout = RunLayout(cfg.run_dir)
    ds, kg = layout.stage_dir("dataset"), layout.stage_dir("kg")
    require(ds / "train.parquet", stage="dataset")
    results = {}
    for memory in (True, False):
        with tempfile.TemporaryDirectory() as out:
            started = time.time()
            summary = fit(dataset_dir=ds, kg_dir=kg, out_dir=Path(out),
                          model_cfg=cfg.model.model_copy(update={"memory": memory}),
                          train_cfg=cfg.train.model_copy(update={"progress": False}),
                          spacy_model=cfg.extract.spacy_model, seed=cfg.run.seed)
            summary["wall_seconds"] = round(time.time() - started, 1)
        results["memory_on" if memory else "memory_off"] = summary
        print(f"memory {'on ' if memory else 'off'}: test exact-match {summary['test_accuracy']:.3f} "
              f"(best val {summary['best_val_accuracy']:.3f}, {summary['epochs_run']} epochs, "
              f"{summary['train_seconds']:.0f}s)", flush=True)
    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "config": args.config,
              "overrides": args.overrides, "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
              "results": results,
              "difference_points": round(100 * (results["memory_on"]["test_accuracy"]
                                                - results["memory_off"]["test_accuracy"]), 1)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"difference: {report['difference_points']} points; written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
