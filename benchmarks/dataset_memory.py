"""Peak memory of the dataset stage, and of reading the train split as training does, for N and 10N stories.

Corpus N: the first ``--stories`` training stories of bAbI en-10k qa1, qa2 and
qa4, one story in ten to val and one to test, each story given one sentence of
its own ("Story number <k> begins."), so 10N is 10x the distinct text, not the
same text again. The extract stage runs first (not measured) for the
mentions; the entity index holds every entity it found.

Each measurement runs in a fresh interpreter; its peak is VmHWM after the
imports (reset through /proc/self/clear_refs), as in extract_throughput.py:

  dataset   ``build_dataset`` (streams the corpus and mentions, writes row groups)
  stream    one training epoch's reads: ``epoch_order`` + ``ParquetExamples`` with the
            default shuffle window (8 row groups), every example touched
  whole     the train split loaded whole (``load_examples``), the way training read it before

    python benchmarks/dataset_memory.py
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

import common
from extract_throughput import train_stories
from corpora.schema import write_corpus
from kg_pipeline.extraction import extract

_CHILD = r"""
import json, random, re, sys, time
from pathlib import Path


def status(field):
    return int(re.search(field + r":\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


args = json.loads(sys.argv[1])
from stmem.dataset import build_dataset
from stmem.examples import ParquetExamples, epoch_order
from stmem.layout import split_file
from stmem.train import load_examples
imported = status("VmRSS")
Path("/proc/self/clear_refs").write_text("5")  # the peak from here on
t = time.perf_counter()
d = Path(args["dir"])
out = {}
if args["mode"] == "dataset":
    (d / "ds").mkdir()
    out = build_dataset(corpus_path=d / "corpus.parquet", mentions_path=d / "mentions.parquet",
                        entity_index_path=d / "entity_index.parquet", out_dir=d / "ds", segment_len=24, max_segments=8)
elif args["mode"] == "stream":
    ex = ParquetExamples(split_file(d / "ds", "train"), cache_groups=8)
    order = epoch_order(ex, random.Random(0), 8, list(range(len(ex))))
    tokens = sum(len(ex[i]["question"]) for i in order)
    out = {"examples": len(ex), "row_groups": len(ex.groups), "groups_read": ex.groups_read, "most_held": ex.most_held}
else:
    whole = load_examples(split_file(d / "ds", "train"))
    out = {"examples": len(whole)}
print(json.dumps({"seconds": time.perf_counter() - t, "imported_rss_kib": imported, "peak_rss_kib": status("VmHWM"),
                  **out}))
"""


def child(mode: str, d: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps({"mode": mode, "dir": str(d)})],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    if proc.returncode:
        sys.exit(f"{mode} child failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def corpus(base: list, copies: int, d: Path) -> None:
    stories = []
    for r in range(copies):
        for s in base:
            k = len(stories)
            stories.append(type(s)(story_id=f"{s.story_id}/copy{r}", task=s.task,
                                   split=("test", "val", *["train"] * 8)[k % 10],
                                   sentences=[f"Story number {k} begins.", *s.sentences], questions=s.questions,
                                   answers=s.answers, question_positions=[p + 1 for p in s.question_positions],
                                   supporting=[[i + 1 for i in sup] for sup in s.supporting]))
    write_corpus(stories, d / "corpus.parquet")
    extract(corpus_path=d / "corpus.parquet", out_dir=d)
    entities = sorted(set(pq.read_table(d / "mentions.parquet", columns=["entity"]).column(0).to_pylist()))
    pq.write_table(pa.table({"entity": entities, "row": pa.array(range(len(entities)), pa.int32())}),
                   d / "entity_index.parquet")


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--tasks", nargs="+", default=["qa1", "qa2", "qa4"])
    ap.add_argument("--stories", type=int, default=5000, help="N")
    args = ap.parse_args()
    base = train_stories(args.tasks)[:args.stories]
    load_before, rows = os.getloadavg(), {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, copies in (("N", 1), ("10N", 10)):
            d = Path(tmp) / label
            d.mkdir()
            t = time.perf_counter()
            corpus(base, copies, d)
            print(f"{label}: corpus and mentions of {copies * len(base)} stories in {time.perf_counter() - t:.0f} s",
                  flush=True)
            rows[label] = {mode: child(mode, d) for mode in ("dataset", "stream", "whole")}
            for mode, r in rows[label].items():
                print(f"  {mode:8s} peak RSS {r['peak_rss_kib'] / 1024:7.0f} MiB (after imports "
                      f"{r['imported_rss_kib'] / 1024:.0f})  {r['seconds']:6.1f} s", flush=True)
    ratios = {mode: rows["10N"][mode]["peak_rss_kib"] / rows["N"][mode]["peak_rss_kib"] for mode in rows["N"]}
    print(f"\npeak RSS 10N / N ({args.stories} -> {10 * args.stories} stories; "
          f"{rows['N']['dataset']['train_examples']} -> {rows['10N']['dataset']['train_examples']} training examples):")
    for mode, r in ratios.items():
        print(f"  {mode:8s} {r:5.2f}x" + ("  (target < 1.5x: " + ("met" if r < 1.5 else "NOT met") + ")"
                                          if mode == "dataset" else ""))
    print(f"load average {load_before[0]:.2f} -> {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    common.write_report(args, "babi-" + "_".join(args.tasks),
                        {"stories": args.stories, "runs": rows, "ratio_10N_over_N": ratios,
                         "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0]}})


if __name__ == "__main__":
    main()
