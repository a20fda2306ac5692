"""dialog bAbI's API calls word by word: which slot of the call a trained run gets right.

Every dialog bAbI task 1, 2 and 5 dialogue ends its search with "api_call <cuisine> <place> <size>
<price>"; per-dialogue accuracy is bounded by it. Reads each run's ``train/test_predictions.parquet``
(written by the train stage) and prints, per test set (tst and tst-OOV), the share of API calls whose
cuisine, place, party size and price are right, and of whole calls; writes JSON.

    python benchmarks/api_call_words.py runs/dialog-babi-t2 runs/dialog-babi-t2-no-memory --out t2-words.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from stmem.train import PREDICTIONS

WORDS = ("cuisine", "place", "size", "price")


def api_call_words(run_dir: Path) -> dict[str, dict[str, float]]:
    """{test set: {word: share right, "whole call": share right, "n": API calls}} for one run directory."""
    path = run_dir / "train" / PREDICTIONS
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found (a finished train stage writes it)")
    preds = pd.read_parquet(path)
    calls = preds[preds["answer"].str.startswith("api_call ")]
    out = {}
    for task, rows in calls.groupby("task"):
        want = rows["answer"].str.split().tolist()
        got = rows["prediction"].fillna("").str.split().tolist()
        shares = {w: sum(len(g) > i + 1 and g[i + 1] == a[i + 1] for a, g in zip(want, got)) / len(want)
                  for i, w in enumerate(WORDS)}
        out[task] = {**{w: round(v, 4) for w, v in shares.items()},
                     "whole call": round(float((rows["answer"] == rows["prediction"]).mean()), 4), "n": len(rows)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run directories (run.root/run.name)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    result = {str(run): api_call_words(run) for run in args.runs}
    for run, tasks in result.items():
        for task, row in tasks.items():
            print(f"{run}  {task}: " + ", ".join(f"{k} {v:.1%}" if k != "n" else f"n {v}" for k, v in row.items()))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
