"""Cold against warm ``stmem run``: the second run on unchanged inputs must skip every stage.

Both runs are ``stmem`` commands in fresh processes on a fresh run root, so
each pays the whole fixed cost (imports, Prefect's temporary server). Target:
warm at most 10% of cold, measured in one run of this script.

    python benchmarks/warm_run.py --config conf/demo.yaml
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import load, parser, write_report


def timed_run(args, root: Path) -> tuple[float, list[str]]:
    cmd = [sys.executable, "-m", "flows.cli", "run", *(["--config", args.config] if args.config else []),
           *[x for o in args.overrides for x in ("--set", o)], "--set", f"run.root={root}"]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"stmem run failed:\n{done.stderr[-3000:]}")
    stages = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("  ") and len(line.split()) > 2]
    return seconds, stages


def main() -> None:
    args = parser(__doc__).parse_args()
    cfg, _ = load(args)
    with tempfile.TemporaryDirectory(prefix="stmem-warm-") as tmp:
        cold, cold_stages = timed_run(args, Path(tmp))
        warm, warm_stages = timed_run(args, Path(tmp))
        manifest = json.loads((Path(tmp) / cfg.run.name / "train" / "manifest.json").read_text())
    report = {"cold_seconds": round(cold, 1), "warm_seconds": round(warm, 1), "warm_over_cold": round(warm / cold, 4),
              "cold_stages": cold_stages, "warm_stages": warm_stages, "train_seconds": manifest["seconds"]}
    print(f"cold {cold:.1f} s ({', '.join(cold_stages)}), warm {warm:.1f} s ({', '.join(warm_stages)}): "
          f"warm/cold {warm / cold:.3f}")
    write_report(args, cfg.run.name, report)


if __name__ == "__main__":
    main()
