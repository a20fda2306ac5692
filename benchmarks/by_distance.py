"""Where a trained model goes wrong: exact match by how far back the facts lie.

For each question of a split, the distance is the number of sentences from
the oldest supporting fact to the question (1 = the sentence just before
it, which the question read also sees token by token; more = only through
the memory). Reports exact match per task and per distance, so a memory that
forgets shows as accuracy falling with distance, and a model that cannot map
what it remembers to the answer (KG value) shows as low accuracy at
distance 1 too.

    python benchmarks/by_distance.py --config conf/babi-qa2-finetune.yaml
"""
from __future__ import annotations

import sys
from collections import defaultdict

import torch

import common
from corpora.schema import support_distances
from stmem.checkpoint import load_checkpoint
from stmem.dataset import load_tokenizer
from stmem.evaluate import predict_answers
from stmem.train import load_examples
from stmem.layout import split_file


def main() -> int:
    ap = common.parser(__doc__, config_required=True, model_dir=True)
    ap.add_argument("--split", default="test", choices=["train", "val", "test"])
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    cfg, layout = common.load(args)
    model_dir = common.model_dir(args, layout)
    model, _ = load_checkpoint(model_dir)
    examples = load_examples(split_file(layout.stage_dir("dataset"), args.split))
    preds = predict_answers(model, examples, load_tokenizer(model_dir / "tokenizer.json"),
                            batch_size=args.batch_size, device=torch.device("cpu"))
    back = support_distances(layout.corpus)
    hits: dict[str, dict[int, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for e, p in zip(examples, preds):
        hits[e["task"]][back[e["example_id"]]].append(p == e["answer"])
    report = {"model_dir": str(model_dir), "split": args.split,
              "per_task": {}}
    for task, by_d in sorted(hits.items()):
        rows = {d: {"n": len(h), "accuracy": round(sum(h) / len(h), 4)} for d, h in sorted(by_d.items())}
        total = [x for h in by_d.values() for x in h]
        report["per_task"][task] = {"accuracy": round(sum(total) / len(total), 4), "by_distance": rows}
        print(f"{task}: {sum(total) / len(total):.1%} of {len(total)}")
        for d, r in rows.items():
            print(f"  {d:3d} back: {r['accuracy']:6.1%}  (n={r['n']})")
    common.write_report(args, cfg.run.name, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
