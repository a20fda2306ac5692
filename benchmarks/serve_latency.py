"""Latency and throughput of ``stmem serve`` against the same model called in-process.

Starts ``stmem serve`` on the config's champion, sends the run's test
questions as raw text, one per request (p50/p95 latency) and 32 per request
(questions answered per second), then stops the server and calls the same
model, loaded with ``mlflow.pyfunc.load_model``, in this process on the same
inputs. Reports served / in-process ratios, both measured in one run. Server
and client share the machine, so the server is measured alone first.

    python benchmarks/serve_latency.py --config conf/demo.yaml
"""
from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from common import load, parser, write_report

BATCH = 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_questions(corpus: Path, n: int) -> tuple[list[str], list[str]]:
    """The first ``n`` test questions of the run's corpus, with their stories as raw text."""
    from corpora import read_corpus

    contexts, questions = [], []
    for story in read_corpus(corpus):
        if story.split == "test":
            for question, pos in zip(story.questions, story.question_positions):
                contexts.append("\n".join(story.sentences[:pos]))
                questions.append(question)
    if len(contexts) < n:
        sys.exit(f"{corpus}: {len(contexts)} test questions, fewer than the {n} asked for")
    return contexts[:n], questions[:n]


def percentiles(seconds: list[float]) -> dict[str, float]:
    q = statistics.quantiles(seconds, n=100)
    return {"p50_ms": round(1000 * q[49], 2), "p95_ms": round(1000 * q[94], 2)}


def measure(answer, contexts: list[str], questions: list[str]) -> dict:
    """Single-question latencies and 32-question batch throughput of ``answer(contexts, questions)``."""
    answer(contexts[:BATCH], questions[:BATCH])  # warm-up: first-call costs are not latency
    singles = []
    for c, q in zip(contexts, questions):
        started = time.perf_counter()
        answer([c], [q])
        singles.append(time.perf_counter() - started)
    started = time.perf_counter()
    for i in range(0, len(contexts) - BATCH + 1, BATCH):
        answer(contexts[i:i + BATCH], questions[i:i + BATCH])
    batched = len(contexts) // BATCH * BATCH
    return {**percentiles(singles), "batch_questions_per_s": round(batched / (time.perf_counter() - started), 1)}


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--questions", type=int, default=256, help="test questions sent (a multiple of 32)")
    args = ap.parse_args()
    cfg, layout = load(args)
    contexts, questions = test_questions(layout.corpus, args.questions)

    port = free_port()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "flows.cli", "serve", *(["--config", args.config] if args.config else []),
           *[x for o in args.overrides for x in ("--set", o)], "--port", str(port)]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=120) as http:
            deadline = time.monotonic() + 180
            while True:
                if server.poll() is not None or time.monotonic() > deadline:
                    sys.exit(f"stmem serve did not start: {' '.join(cmd)}")
                try:
                    if http.get(f"{url}/ping").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.5)

            def served(cs: list[str], qs: list[str]) -> list[str]:
                r = http.post(f"{url}/invocations", json={"dataframe_split": {
                    "columns": ["context", "question"], "data": [list(x) for x in zip(cs, qs)]}})
                r.raise_for_status()
                return [p["answer"] for p in r.json()["predictions"]]

            over_http = measure(served, contexts, questions)
            answers_http = served(contexts[:BATCH], questions[:BATCH])
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)

    import mlflow
    import pandas as pd

    from serving.registry import mlflow_store

    mlflow.set_tracking_uri(mlflow_store(cfg.register.tracking_uri, cfg.run_dir)[0])
    model = mlflow.pyfunc.load_model(f"models:/{cfg.register.model_name}@champion")

    def in_process(cs: list[str], qs: list[str]) -> list[str]:
        return model.predict(pd.DataFrame({"context": cs, "question": qs}))["answer"].tolist()

    local = measure(in_process, contexts, questions)
    same = answers_http == in_process(contexts[:BATCH], questions[:BATCH])
    ratios = {"p50_served_over_in_process": round(over_http["p50_ms"] / local["p50_ms"], 2),
              "p95_served_over_in_process": round(over_http["p95_ms"] / local["p95_ms"], 2),
              "batch_throughput_served_over_in_process":
                  round(over_http["batch_questions_per_s"] / local["batch_questions_per_s"], 2)}
    for name, m in (("stmem serve", over_http), ("in-process", local)):
        print(f"{name:12s} single question p50 {m['p50_ms']:7.1f} ms  p95 {m['p95_ms']:7.1f} ms  "
              f"32-question batches {m['batch_questions_per_s']:7.1f} questions/s")
    print("ratios (served / in-process): " + ", ".join(f"{k} {v}" for k, v in ratios.items()))
    print(f"same answers over HTTP and in-process: {same}")
    write_report(args, cfg.run.name, {"questions": len(contexts), "batch": BATCH, "served": over_http,
                                      "in_process": local, "ratios": ratios, "same_answers": same})


if __name__ == "__main__":
    main()
