"""The registered dialogue models asked about facts said turns back, in dialogues they never saw.

Fresh dialogues come from the corpus's own generator (``tests/data/make_dialogues.py``)
with another seed; any whose turns equal a training dialogue's are dropped. The
dialogue reader turns them into questions as the pipeline does. Each question goes,
with the turns before it, to each run's champion loaded from that run's MLflow
registry, the model ``stmem predict`` and ``stmem serve`` load. A fact question
asks for something the user said earlier ("Where do I live?" -> "lisbon"). Its
distance is how many turns before the question the fact was said: 1 is the turn
just before it, the last segment, which a model without memory also reads.

Prints exact match per run on the fact questions, by distance and by kind of
fact, and on the other replies. Also prints a few dialogues with each run's
answers, and writes JSON.

    python benchmarks/dialogue_recall.py --config conf/dialogue.yaml --runs dialogue dialogue-no-memory
"""
from __future__ import annotations

import json
import runpy
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import common
from corpora.dialogue import read_dialogues
from stmem.config import load_config
from stmem.dataset import normalize_answer

GENERATOR = runpy.run_path(str(Path(__file__).resolve().parents[1] / "tests" / "data" / "make_dialogues.py"))
KIND = {value.lower(): kind for kind, (values, *_) in GENERATOR["FACTS"].items() for value in values}
MAX_ROWS = 256  # a request's row limit in serving


def fresh_dialogues(corpus: Path, n: int, seed: int, tmp: Path) -> Path:
    """``n`` generated dialogues (``seed``), less any whose turns a training dialogue has; as JSONL."""
    seen = {json.dumps(json.loads(line)["turns"]) for line in corpus.read_text(encoding="utf-8").splitlines()}
    kept = [d for d in GENERATOR["make_dialogues"](n, seed) if json.dumps(d["turns"]) not in seen]
    out = tmp / "fresh.jsonl"
    out.write_text("".join(json.dumps(d) + "\n" for d in kept), encoding="utf-8")
    return out


def questions(path: Path) -> list[dict]:
    """Every reply after the first turn, with its context as one turn a line and, for a fact, its distance."""
    rows = []
    for story in read_dialogues(path, val_fraction=0.0, test_fraction=0.0):
        for question, answer, pos in zip(story.questions, story.answers, story.question_positions):
            if pos == 0:  # a reply to the first turn has no context; a served model refuses an empty one
                continue
            said = [i for i, s in enumerate(story.sentences[:pos])
                    if s.startswith("user: ") and answer in s.lower().rstrip(".").split()]
            rows.append({"dialogue": story.story_id, "context": "\n".join(story.sentences[:pos]),
                         "question": question, "answer": normalize_answer(answer),
                         "turns_back": pos - said[-1] if said else None, "kind": KIND.get(answer)})
    return rows


def answers(cfg, rows: list[dict]) -> list[str]:
    """The run's champion (``models:/<register.model_name>@champion`` in its registry) on every row."""
    import mlflow
    import pandas as pd

    from serving.registry import mlflow_store

    mlflow.set_tracking_uri(mlflow_store(cfg.register.tracking_uri, cfg.run_dir)[0])
    model = mlflow.pyfunc.load_model(f"models:/{cfg.register.model_name}@champion")
    out: list[str] = []
    for i in range(0, len(rows), MAX_ROWS):
        part = rows[i:i + MAX_ROWS]
        frame = pd.DataFrame({"context": [r["context"] for r in part], "question": [r["question"] for r in part]})
        out += list(model.predict(frame)["answer"])
    return out


def accuracy(hits: list[bool]) -> dict:
    return {"accuracy": round(sum(hits) / len(hits), 4), "n": len(hits)} if hits else {"accuracy": None, "n": 0}


def figures(rows: list[dict], preds: list[str]) -> dict:
    by_distance, by_kind, facts, other = defaultdict(list), defaultdict(list), [], []
    for r, p in zip(rows, preds):
        hit = p == r["answer"]
        if r["turns_back"] is None:
            other.append(hit)
            continue
        facts.append(hit)
        by_distance[min(r["turns_back"], 5)].append(hit)  # 5: five or more turns back
        by_kind[r["kind"]].append(hit)  # city, pet, colour
    return {"facts": accuracy(facts),
            "facts_two_or_more_turns_back": accuracy([h for d, hs in by_distance.items() if d >= 2 for h in hs]),
            "facts_by_turns_back": {str(d) + ("+" if d == 5 else ""): accuracy(by_distance[d])
                                    for d in sorted(by_distance)},
            "facts_by_kind": {k: accuracy(v) for k, v in sorted(by_kind.items())},
            "other_replies": accuracy(other)}


def main() -> int:
    ap = common.parser(__doc__, config_required=True)
    ap.add_argument("--runs", nargs="+", required=True, help="run names under the config's run.root, each registered")
    ap.add_argument("--n", type=int, default=500, help="dialogues to generate")
    ap.add_argument("--seed", type=int, default=1, help="the generator's seed (the corpus is seed 0)")
    ap.add_argument("--show", type=int, default=3, help="dialogues to print with every run's answers")
    args = ap.parse_args()
    base = load_config(args.config, args.overrides)
    with tempfile.TemporaryDirectory() as tmp:
        rows = questions(fresh_dialogues(Path(base.corpus.path), args.n, args.seed, Path(tmp)))
    report = {"config": args.config, "overrides": args.overrides, "generator_seed": args.seed,
              "dialogues": len({r["dialogue"] for r in rows}), "questions": len(rows), "runs": {}}
    preds = {}
    for run in args.runs:
        cfg = load_config(args.config, [*args.overrides, f"run.name={run}"])
        preds[run] = answers(cfg, rows)
        memory = json.loads((cfg.run_dir / "train" / "eval.json").read_text())["memory"]
        report["runs"][run] = {"model": f"models:/{cfg.register.model_name}@champion", "memory": memory,
                               **figures(rows, preds[run])}
    print(f"{report['dialogues']} fresh dialogues, {report['questions']} replies")
    for run, r in report["runs"].items():
        distances = "  ".join(f"{d}: {v['accuracy']:.3f} ({v['n']})" for d, v in r["facts_by_turns_back"].items())
        print(f"{run} (memory {r['memory']}): facts {r['facts']['accuracy']:.3f} ({r['facts']['n']}), "
              f"2+ turns back {r['facts_two_or_more_turns_back']['accuracy']:.3f}, other replies "
              f"{r['other_replies']['accuracy']:.3f}\n  by turns back  {distances}")
    shown = [i for i, r in enumerate(rows) if (r["turns_back"] or 0) >= 3][:args.show]
    report["examples"] = [{**{k: rows[i][k] for k in ("context", "question", "answer", "turns_back")},
                           "answers": {run: preds[run][i] for run in args.runs}} for i in shown]
    for e in report["examples"]:
        print("\n" + e["context"] + f"\nuser: {e['question']}   (said {e['turns_back']} turns back: {e['answer']})")
        for run, a in e["answers"].items():
            print(f"  {run}: {a}")
    common.write_report(args, base.run.name, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
