"""A trained model beside the recency baseline, per bAbI task.

The baseline answers each question with the last word of the story that is
one of the task's answers (as seen in the training split), or, if the story
names none, with the task's most frequent training answer. A task the model
gets right no more often than this baseline, with its wrong answers mostly
the baseline's, is being answered by recency, not by the reasoning the task
asks for (e.g. qa16, basic induction: the colour named last).

Prints, per task, the questions, the baseline's and the model's exact match,
and how many of the model's wrong answers are the baseline's; writes JSON.

    python benchmarks/recency_baseline.py --model-dir runs/babi-joint-1k-finetune/train-slots32-dec3-round2 \\
        --dataset-dir runs/babi-joint-1k-finetune/dataset --tasks qa16 [--split train]
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

import torch

from stmem.checkpoint import load_checkpoint
from stmem.dataset import load_tokenizer
from stmem.evaluate import predict_answers
from stmem.train import load_examples


def recency_answers(examples: list[dict], train: list[dict], tokenizer) -> list[str]:
    answers: dict[str, Counter] = defaultdict(Counter)
    for e in train:
        answers[e["task"]][e["answer"]] += 1
    out = []
    for e in examples:
        words = " ".join(tokenizer.decode(list(s)) for s in e["segments"]).replace(".", " ").split()
        named = [w for w in words if w in answers[e["task"]]]
        out.append(named[-1] if named else answers[e["task"]].most_common(1)[0][0])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--dataset-dir", type=Path, required=True, help="the dataset stage's output the model was trained on")
    ap.add_argument("--tasks", nargs="*", help="default: every task in the split")
    ap.add_argument("--split", default="test", choices=["train", "val", "test"])
    ap.add_argument("--out", help="default: benchmarks/results/recency_baseline-<model dir name>-<split>.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, _ = load_checkpoint(args.model_dir)
    tokenizer = load_tokenizer(args.model_dir / "tokenizer.json")
    train = load_examples(args.dataset_dir / "train.parquet")  # the baseline's answer vocabulary
    split = train if args.split == "train" else load_examples(args.dataset_dir / f"{args.split}.parquet")
    examples = [e for e in split if not args.tasks or e["task"] in args.tasks]
    if not examples:
        raise SystemExit(f"{args.dataset_dir / (args.split + '.parquet')}: no questions of tasks {args.tasks}")
    baseline = recency_answers(examples, train, tokenizer)
    predicted = predict_answers(model, examples, tokenizer, batch_size=64, device=torch.device("cpu"))
    rows: dict[str, Counter] = defaultdict(Counter)
    for e, b, p in zip(examples, baseline, predicted):
        r = rows[e["task"]]
        r["n"] += 1
        r["baseline_right"] += b == e["answer"]
        r["model_right"] += p == e["answer"]
        r["model_wrong_as_baseline"] += p != e["answer"] and p == b
    tasks = sorted(rows, key=lambda t: int(t[2:]) if t[2:].isdigit() else t)
    print(f"{args.model_dir}, {args.split} split\n| task | n | recency baseline | model | model's wrong answers that are the baseline's |")
    print("|---|---|---|---|---|")
    report = {}
    for t in tasks:
        r = rows[t]
        wrong = r["n"] - r["model_right"]
        report[t] = {"n": r["n"], "baseline_accuracy": round(r["baseline_right"] / r["n"], 4),
                     "model_accuracy": round(r["model_right"] / r["n"], 4),
                     "model_wrong": wrong, "model_wrong_as_baseline": r["model_wrong_as_baseline"]}
        print(f"| {t} | {r['n']} | {100 * r['baseline_right'] / r['n']:.1f}% | {100 * r['model_right'] / r['n']:.1f}% "
              f"| {r['model_wrong_as_baseline']} of {wrong} |")
    out = Path(args.out or f"benchmarks/results/recency_baseline-{args.model_dir.name}-{args.split}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": " ".join(["python", *sys.argv]), "model_dir": str(args.model_dir),
                               "split": args.split, "per_task": report}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
