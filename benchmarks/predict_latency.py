"""Seconds a warm ``stmem predict`` call takes without a server: the champion of a run answers one question.

Every call is a fresh process, as a user runs it. The first call (its download
and trace into ``<run>/predict-cache/``) is reported apart; then ``--repeats``
calls are timed, wall and CPU (user + system) seconds. ``--baseline DIR``: a
checkout of other code (``git worktree add DIR <commit>``) asked the same
question, its calls alternating with this tree's, so both see the same load
and the ratio is measured in one run. The answers must agree.

    python benchmarks/predict_latency.py --config conf/demo.yaml --set run.root=/work/exp/demo --set run.name=demo-s0
    python benchmarks/predict_latency.py --config conf/demo.yaml --baseline /tmp/stmem-before   # before/after
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import load, parser, write_report

HERE = Path(__file__).resolve().parent.parent


def call(tree: Path, args, context: Path, question: str) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds, stdout) of one ``stmem predict`` run from ``tree``."""
    config = Path(args.config).resolve()
    cmd = [sys.executable, "-m", "flows.cli", "predict", "--config", str(config),
           *[x for o in args.overrides for x in ("--set", o)], "--context", str(context), "--question", question]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)})
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} (in {tree}) failed:\n{done.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout


def main() -> int:
    ap = parser(__doc__, config_required=True)
    ap.add_argument("--context", default="Mary went to the kitchen.\nJohn moved to the garden.")
    ap.add_argument("--question", default="Where is Mary?")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--baseline", type=Path, help="a checkout of other code, timed alternately with this one")
    args = ap.parse_args()
    cfg, _ = load(args)
    trees = {"this tree": HERE, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    with tempfile.TemporaryDirectory() as tmp:
        context = Path(tmp) / "context.txt"
        context.write_text(args.context + "\n")
        first = {name: call(tree, args, context, args.question) for name, tree in trees.items()}
        answers = {first[name][2] for name in trees}
        if len(answers) != 1:
            raise SystemExit(f"the trees answer differently: {answers}")
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
        for _ in range(args.repeats):
            for name, tree in trees.items():
                wall, cpu, out = call(tree, args, context, args.question)
                if out not in answers:
                    raise SystemExit(f"{name} answered {out!r}, not {answers}")
                times[name].append((wall, cpu))
    results = {}
    for name, runs in times.items():
        walls, cpus = [w for w, _ in runs], [c for _, c in runs]
        results[name] = {"first_call_seconds": round(first[name][0], 2), "wall_median": round(statistics.median(walls), 2),
                         "cpu_median": round(statistics.median(cpus), 2), "wall": [round(w, 2) for w in walls],
                         "cpu": [round(c, 2) for c in cpus]}
        print(f"{name}: warm call {results[name]['wall_median']:.2f} s wall, {results[name]['cpu_median']:.2f} s CPU "
              f"(median of {len(runs)}; first call {results[name]['first_call_seconds']:.2f} s)", flush=True)
    if args.baseline:
        ratio = results["this tree"]["wall_median"] / results["baseline"]["wall_median"]
        print(f"this tree / baseline: {ratio:.2f}x wall")
        results["ratio_wall"] = round(ratio, 3)
    write_report(args, cfg.run.name, {"answer": json.loads(answers.pop()), "results": results,
                                      "load_1min": os.getloadavg()[0]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
