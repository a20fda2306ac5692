"""What a memory with ring slots holds about each sentence: linear probes.

For a model with ``model.ring_slots`` (a story's t-th sentence is written
whole to ring slot t mod ring_slots), each ring slot holds one sentence: the
last one written there (earlier ones it overwrote are not probed). For the
sentences of one bAbI task, a logistic regression learns from the slots of
training stories to read back each word position of the sentence (e.g. for
qa16's "lily is a frog": the name at word 0, the type at word 3), and is
scored on the slots of test stories. Two places are probed: the slot as
written, and the slot's state after the final encoder has read it beside the
question (what the decoder reads). A word the probe reads well is in the
slot; a word it cannot read was lost by the write.

    python benchmarks/slot_probe.py --model-dir runs/babi-joint-1k-finetune/train-ring24-hybrid \\
        --dataset-dir runs/babi-joint-1k-finetune/dataset --task qa16
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch
from sklearn.linear_model import LogisticRegression

from stmem.batch import collate
from stmem.checkpoint import load_checkpoint
from stmem.dataset import load_tokenizer
from stmem.train import load_examples


@torch.no_grad()
def slot_features(model, examples: list[dict], tokenizer) -> dict[tuple[int, int], tuple[list, list, list]]:
    """{(word count, word position): (written slots, read slots, words)} over every sentence of every story."""
    routed, ring = model.cfg.memory_slots, model.cfg.ring_slots
    out: dict = defaultdict(lambda: ([], [], []))
    written = []  # the memory the question read starts from, recorded as it is read (read once, not twice)
    read_context = model.read_context
    model.read_context = lambda *a: written.append(read_context(*a)) or written[-1]
    for i in range(0, len(examples), 64):
        chunk = examples[i:i + 64]
        batch = collate(chunk, model.vocab.pad_id, model.vocab.segment_len)
        read, _ = model.encode_question(batch)  # [memory ; last segment ; question]
        memory = written.pop()
        for b, e in enumerate(chunk):
            sentences = [tokenizer.decode(list(s)).replace(".", "").split() for s in e["segments"]]
            real = [t for t, s in enumerate(sentences) if s]
            for t in real:
                if t - real[-1] <= -ring:  # a later segment went to the same ring slot over it
                    continue
                slot = routed + (t - real[0]) % ring  # its index in the story (an empty one inside counts), mod K
                words = sentences[t]
                for pos, word in enumerate(words):
                    feats = out[(len(words), pos)]
                    feats[0].append(memory[b, slot].tolist())
                    feats[1].append(read[b, slot].tolist())
                    feats[2].append(word)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--dataset-dir", type=Path, required=True)
    ap.add_argument("--task", required=True)
    ap.add_argument("--out", help="default: benchmarks/results/slot_probe-<model dir name>-<task>.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, _ = load_checkpoint(args.model_dir)
    if not model.cfg.ring_slots:
        raise SystemExit(f"{args.model_dir}: model.ring_slots is 0; this probe reads ring slots")
    tokenizer = load_tokenizer(args.model_dir / "tokenizer.json")
    split = {s: [e for e in load_examples(args.dataset_dir / f"{s}.parquet") if e["task"] == args.task]
             for s in ("train", "test")}
    train, test = (slot_features(model, split[s], tokenizer) for s in ("train", "test"))
    print(f"{args.model_dir}, {args.task}: linear probe accuracy per word position (test stories)")
    print("| sentence length | word | distinct words | majority | slot as written | slot as read |\n|---|---|---|---|---|---|")
    report = []
    for key in sorted(train):
        if key not in test or len(set(train[key][2])) < 2:
            continue  # a word that never varies ("is") says nothing
        words = test[key][2]
        majority = max(words.count(w) for w in set(words)) / len(words)
        row = {"sentence_words": key[0], "position": key[1], "distinct": len(set(train[key][2])),
               "majority": round(majority, 4), "n_test": len(words)}
        for name, col in (("written", 0), ("read", 1)):
            probe = LogisticRegression(max_iter=2000).fit(train[key][col], train[key][2])
            row[name] = round(probe.score(test[key][col], words), 4)
        report.append(row)
        print(f"| {key[0]} | {key[1]} | {row['distinct']} | {100 * majority:.1f}% | {100 * row['written']:.1f}% "
              f"| {100 * row['read']:.1f}% |")
    out = Path(args.out or f"benchmarks/results/slot_probe-{args.model_dir.name}-{args.task}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": " ".join(["python", *sys.argv]), "probes": report}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
