"""Which memory slot each token of a story is written to (routed memory).

Runs a trained model on one story and prints, for every token of every
segment, its share for each slot and for writing nowhere (the last column).
A memory that binds facts to people shows a person's name and their place
going to the same slot, and the person's next sentence to that slot again; a
memory that only keeps the latest place of anyone shows every place going to
one slot whoever moved. With ``model.memory.route: segment`` every token of a
segment shows the segment's shared routing, which is what is written. The
shares are read with a forward hook on the memory's router.

    python benchmarks/routing.py --model-dir runs/babi-qa1/train \\
        --context "Mary moved to the kitchen. John went to the garden. Mary went to the office." \\
        --question "Where is Mary?"
"""
from __future__ import annotations

import sys

import common
from serving.inference import Predictor
from stmem.batch import collate
from stmem.dataset import decode_answer
from stmem.memory import RoutedMemory


def main() -> int:
    ap = common.parser(__doc__, model_dir=True)
    ap.add_argument("--context", required=True)
    ap.add_argument("--question", required=True)
    args = ap.parse_args()
    if args.model_dir is None:
        ap.error("--model-dir is required")
    predictor = Predictor(args.model_dir)
    model = predictor.model
    if not isinstance(model.memory, RoutedMemory):
        raise SystemExit(f"{args.model_dir}: memory type {model.cfg.memory.type!r} has no routing (routed only)")
    shares = []  # one (K, L) routing per segment written, in story order
    hook = model.memory.router.register_forward_hook(lambda module, inputs, route: shares.append(route[0].detach()))
    batch = collate([predictor.encode(args.context, args.question)], model.vocab.pad_id, model.vocab.segment_len)
    answer = decode_answer(predictor.tokenizer, model.generate(batch)[0])  # reads the story once: one write per segment
    hook.remove()
    segments = []
    for ids, share in zip(batch["segments"][0], shares):
        segments.append([(predictor.tokenizer.id_to_token(int(i)), [*share[:, j].tolist(), 1 - float(share[:, j].sum())])
                         for j, i in enumerate(ids) if i != model.vocab.pad_id])
    print(f"answer: {answer}\n{'token':>14} " + " ".join(f"s{k:<3}" for k in range(model.memory.slots)) + " none")
    for tokens in segments:
        for token, share in tokens:
            print(f"{token:>14} " + " ".join(f"{x:4.2f}" for x in share))
        print()
    if args.out:
        common.write_report(args, args.model_dir.parent.name, {"model_dir": str(args.model_dir), "answer": answer,
                                                              "segments": segments})
    return 0


if __name__ == "__main__":
    sys.exit(main())
