"""The fixed cost of a command: a cold ``stmem run``, then warm ``stmem run`` and ``stmem stage train``.

Every command runs in a fresh process, as a user runs it. After the first
run (cold, on a fresh run root, unless ``--root`` names one already made),
each warm command runs ``--repeats`` times without a Prefect server (each
command would start Prefect's temporary server if it needed one) and as many
times with one: a ``prefect server start`` on 127.0.0.1 that this script
starts, with its own PREFECT_HOME, and stops. Reported: every time and the
median. A warm command must reuse every stage, or the script fails.

    python benchmarks/warm_run.py --config conf/demo.yaml
    python benchmarks/warm_run.py --config tests/tiny.yaml --root /tmp/runs   # a run root kept between uses
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import load, parser, write_report

COMMANDS = {"run": ["run"], "stage train": ["stage", "train"]}


def timed(args, root: Path, command: list[str], env: dict) -> tuple[float, list[str]]:
    cmd = [sys.executable, "-m", "flows.cli", *command, *(["--config", args.config] if args.config else []),
           *[x for o in args.overrides for x in ("--set", o)], "--set", f"run.root={root}"]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"stmem {' '.join(command)} failed:\n{done.stderr[-3000:]}")
    stages = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("  ") and len(line.split()) > 2]
    return seconds, stages


@contextlib.contextmanager
def prefect_server():
    """A ``prefect server start`` on a free port of 127.0.0.1, in a fresh PREFECT_HOME: its API URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="stmem-prefect-") as home:
        env = {**os.environ, "PREFECT_HOME": home, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        env.pop("PREFECT_API_URL", None)
        server = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start", "--host",
                                   "127.0.0.1", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        url = f"http://127.0.0.1:{port}/api"
        try:
            for _ in range(600):  # a fresh database is migrated first: up to a few minutes on a loaded machine
                with contextlib.suppress(OSError):
                    urllib.request.urlopen(f"{url}/health", timeout=2)
                    break
                if server.poll() is not None:
                    sys.exit(f"prefect server start exited with {server.returncode}")
                time.sleep(0.5)
            else:
                sys.exit(f"prefect server start: no answer at {url}/health after 5 minutes")
            yield url
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)


def warm(args, root: Path, env: dict) -> dict:
    out = {}
    for label, command in COMMANDS.items():
        times = []
        for _ in range(args.repeats):
            seconds, stages = timed(args, root, command, env)
            if set(stages) != {"reused"}:
                sys.exit(f"stmem {label} was not warm: {stages}")
            times.append(round(seconds, 2))
        out[label] = {"seconds": times, "median": statistics.median(times)}
    return out


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--root", type=Path, help="run root to use and keep (default: a fresh temporary one)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cfg, _ = load(args)
    no_server = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    with contextlib.ExitStack() as stack:
        root = args.root or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stmem-warm-")))
        first, first_stages = timed(args, root, COMMANDS["run"], no_server)
        report = {"first_seconds": round(first, 1), "first_stages": first_stages,
                  "no_server": warm(args, root, no_server)}
        with prefect_server() as url:
            report["server"] = warm(args, root, {**no_server, "PREFECT_API_URL": url})
        report["train_seconds"] = json.loads((root / cfg.run.name / "train" / "manifest.json").read_text())["seconds"]
    report["warm_over_first"] = round(report["no_server"]["run"]["median"] / first, 4)
    print(f"first run {first:.1f} s ({', '.join(first_stages)})")
    for where in ("no_server", "server"):
        print(f"{where}: " + ", ".join(f"{label} {r['median']:.2f} s (median of {r['seconds']})"
                                       for label, r in report[where].items()))
    write_report(args, cfg.run.name, report)


if __name__ == "__main__":
    main()
