"""Per-task bAbI error of a trained model beside published systems.

Reads the ``eval.json`` a train stage writes (test exact-match per task) and
prints a Markdown table of error per task, mean error and failed tasks
(error > 5%), with the published 1k-joint figures for MemN2N and the
Universal Transformer (Dehghani et al. 2019, Table 1; see
../shared/data/README.md). Writes the same as JSON.

    python benchmarks/babi_table.py runs/babi-joint-1k/train/eval.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import common

PUBLISHED_1K_JOINT = {"MemN2N": {"mean_error": 0.124, "failed_tasks": 11},
                      "Universal Transformer + ACT": {"mean_error": 0.0778, "failed_tasks": 5}}


def main() -> int:
    ap = common.parser(__doc__)
    ap.add_argument("eval_json", type=Path)
    args = ap.parse_args()
    test = json.loads(args.eval_json.read_text())["test"]
    tasks = sorted(test["per_task"], key=lambda t: int(t[2:]) if t[2:].isdigit() else t)
    print("| task | error |\n|---|---|")
    for t in tasks:
        err = 1 - test["per_task"][t]
        print(f"| {t} | {100 * err:.1f}%{' (failed)' if err > 0.05 else ''} |")
    print(f"| **mean error** | **{100 * test['mean_error']:.1f}%**, {test['failed_tasks']} failed |")
    for name, p in PUBLISHED_1K_JOINT.items():
        print(f"| {name} (published) | {100 * p['mean_error']:.2f}%, {p['failed_tasks']} failed |")
    report = {"eval_json": str(args.eval_json),
              "per_task_error": {t: round(1 - test["per_task"][t], 4) for t in tasks},
              "mean_error": round(test["mean_error"], 4), "failed_tasks": test["failed_tasks"],
              "published_1k_joint": PUBLISHED_1K_JOINT}
    common.write_report(args, args.eval_json.parent.parent.name, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
