"""Whole fresh runs over seeds (and tasks), memory on and off: the figures a generalisation claim needs.

Each run is one ``stmem run`` of the config in its own run directory (corpus,
dataset and all: nothing is shared between seeds), with ``run.seed`` set and,
for each ``--tasks`` entry, ``corpus.tasks`` set to that task alone (bAbI 1k
single-task: one model per task). ``--variants`` picks ``memory`` (the config
as it is) and ``no_memory`` (``model.memory={type: none}``). Prints test exact-match per task and variant
(mean and min over seeds, never the best one) beside the majority-answer
baseline, and writes JSON after every run. A run that fails is printed with its last error line and
kept under "failed" in the JSON; the sweep goes on and exits 1.

    python benchmarks/fresh_runs.py --config conf/demo.yaml --seeds 0 1 2 --variants memory no_memory
    python benchmarks/fresh_runs.py --config conf/babi1k.yaml --tasks qa1 qa2 qa3 --seeds 0 1 2
"""
from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import common
from stmem.config import load_config


VARIANTS = {"memory": [], "no_memory": ["model.memory={type: none}"]}  # variant -> its overrides


def fresh_run(config: str, overrides: list[str], root: Path, name: str) -> dict:
    """One ``stmem run`` from nothing; its test figures (``eval.json``) and wall seconds."""
    run_dir = root / name
    shutil.rmtree(run_dir, ignore_errors=True)  # a whole fresh run: nothing reused
    started = time.time()
    # the run's own root and name last: a --set run.name=X of the sweep is already in ``name`` (X-s0)
    cmd = [sys.executable, "-m", "flows.cli", "run", "--config", config, *(a for o in overrides for a in ("--set", o)),
           "--set", f"run.root={root}", "--set", f"run.name={name}"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:  # the sweep goes on; the failure is printed and kept in the JSON
        lines = res.stderr.strip().splitlines() or ["(no stderr)"]
        return {"name": name, "wall_seconds": round(time.time() - started, 1), "error": lines[-1],
                "command": " ".join(cmd)}
    test = json.loads((run_dir / "train" / "eval.json").read_text())["test"]
    return {"name": name, "wall_seconds": round(time.time() - started, 1), **test}


def main() -> int:
    ap = common.parser(__doc__, config_required=True)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--tasks", nargs="+", help="one run per task (corpus.tasks=[TASK]); default: the config's")
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=["memory"])
    ap.add_argument("--root", type=Path, default=Path("runs/fresh"), help="where the run directories go")
    args = ap.parse_args()
    base = load_config(args.config, args.overrides).run.name
    variants = {v: VARIANTS[v] for v in args.variants}
    results: dict[str, dict[str, dict]] = {}
    report = {"config": args.config, "overrides": args.overrides, "seeds": args.seeds, "results": results}
    for task in args.tasks or [None]:
        for variant, extra in variants.items():
            runs = []
            for seed in args.seeds:
                name = "-".join(p for p in (base, task, variant if variant != "memory" else None, f"s{seed}") if p)
                overrides = [*args.overrides, f"run.seed={seed}", *extra, *([f"corpus.tasks=[{task}]"] if task else [])]
                r = fresh_run(args.config, overrides, args.root, name)
                if "error" in r:
                    print(f"{task or base} {variant} seed {seed}: FAILED after {r['wall_seconds']:.0f}s: {r['error']}",
                          flush=True)
                    report.setdefault("failed", []).append(r)
                    common.write_report(args, base, report)
                    continue
                runs.append(r)
                parts = ", ".join(f"{t} {a:.4f}" + (f" ({r['per_task_story_accuracy'][t]:.3f} per story)"
                                                    if t in r.get("per_task_story_accuracy", {}) else "")
                                  for t, a in r["per_task"].items())  # dialog bAbI: tst and tst-OOV apart
                print(f"{task or base} {variant} seed {seed}: test {r['accuracy']:.4f} [{parts}] (majority baseline "
                      f"{r.get('majority_baseline', float('nan')):.4f}), {r['wall_seconds']:.0f}s", flush=True)
                accs = [x["accuracy"] for x in runs]
                results.setdefault(task or base, {})[variant] = {
                    "mean": round(statistics.mean(accs), 4), "min": min(accs), "max": max(accs),
                    "per_task_mean": {t: round(statistics.mean(x["per_task"][t] for x in runs), 4)
                                      for t in runs[0]["per_task"]},
                    "per_task_min": {t: min(x["per_task"][t] for x in runs) for t in runs[0]["per_task"]},
                    "runs": runs}
                common.write_report(args, base, report)  # after every run: a long sweep keeps what it has
    print(f"\n{'task':12s} {'variant':10s} {'mean':>7s} {'min':>7s} {'max':>7s}")
    for task, by_variant in results.items():
        for variant, r in by_variant.items():
            print(f"{task:12s} {variant:10s} {r['mean']:7.4f} {r['min']:7.4f} {r['max']:7.4f}")
    if args.tasks and "memory" in args.variants:
        errors = [1 - r["memory"]["mean"] for r in results.values()]
        print(f"mean error over {len(errors)} tasks: {100 * statistics.mean(errors):.2f}%, "
              f"{sum(e > 0.05 for e in errors)} failed (error > 5%)")
    return 1 if report.get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
