"""Which memory slot each token of a story is written to (routed memory).

Runs a trained model on one story and prints, for every token of every
segment, its share for each slot and for writing nowhere (the last column).
A memory that binds facts to people shows a person's name and their place
going to the same slot, and the person's next sentence to that slot again; a
memory that only keeps the latest place of anyone shows every place going to
one slot whoever moved (docs/benchmarks.md, KG value). With
``memory_route: segment`` every token of a segment shows the segment's
shared routing, which is what is written; with ``ring`` each segment goes
whole to the next slot in turn.

    python benchmarks/routing.py --model-dir runs/babi-qa1/train \\
        --context "Mary moved to the kitchen. John went to the garden. Mary went to the office." \\
        --question "Where is Mary?"
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from stmem.batch import collate
from stmem.dataset import decode_answer
from serving.inference import Predictor


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--context", required=True)
    ap.add_argument("--question", required=True)
    ap.add_argument("--out", help="JSON report (default: print only)")
    args = ap.parse_args()
    predictor = Predictor(args.model_dir)
    model = predictor.model
    if model.cfg.memory_type != "routed":
        raise SystemExit(f"{args.model_dir}: memory_type {model.cfg.memory_type!r} has no routing (routed only)")
    shares = []
    routing = model.memory.routing  # every write, segments read one by one or batched, routes through it

    def recording_routing(*args):
        route = routing(*args)  # (B, K, L) what is written; with segment routing the segment's mean
        # and the share for nowhere (what the routed slots left: ring slots take every token whole)
        shares.append(torch.cat([route[0], 1 - route[0][:model.cfg.memory_slots].sum(0, keepdim=True)]))
        return route
    model.memory.routing = recording_routing
    batch = collate([predictor.encode(args.context, args.question)], model.vocab.pad_id, model.vocab.segment_len)
    answer = decode_answer(predictor.tokenizer, model.generate(batch)[0])  # reads the story once: one write per segment
    segments = []
    for ids, share in zip(batch["segments"][0], shares):
        tokens = [(predictor.tokenizer.id_to_token(int(i)), share[:, j].tolist())
                  for j, i in enumerate(ids) if i != model.vocab.pad_id]
        segments.append(tokens)
    names = [f"s{k:<3}" for k in range(model.cfg.memory_slots)] + [f"r{k:<3}" for k in range(model.cfg.ring_slots)]
    print(f"answer: {answer}\n{'token':>14} " + " ".join(names) + " none")
    for tokens in segments:
        for token, share in tokens:
            print(f"{token:>14} " + " ".join(f"{x:4.2f}" for x in share))
        print()
    if args.out:
        Path(args.out).write_text(json.dumps({"command": " ".join(["python", *sys.argv]), "answer": answer,
                                              "segments": segments}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
