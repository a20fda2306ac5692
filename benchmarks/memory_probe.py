"""Is the fact in the memory? A linear probe on what a trained model's memory holds.

For the test questions whose answer starts with ``--answer-prefix``, the
model reads each context and a logistic regression learns word
``--answer-word`` of the answer (e.g. the cuisine of dialog bAbI's
``api_call <cuisine> <place> <size> <price>``) from the memory after every
segment, on two thirds of the questions, and is scored on the rest. The same
probe on the bag of the context's words says what a reader that kept
everything gets. A memory that holds the fact scores near that; one that
does not scores near the majority answer, however the decoder reads it.

    python benchmarks/memory_probe.py --config conf/dialog-babi-t1.yaml --answer-prefix api_call --answer-word 1
"""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import torch
from sklearn.linear_model import LogisticRegression

import common
from stmem.batch import collate
from stmem.checkpoint import load_checkpoint
from stmem.layout import split_file


def probe(features: np.ndarray, labels: np.ndarray) -> float:
    """Held-out accuracy of a logistic regression trained on the first two thirds."""
    n = len(labels) * 2 // 3
    clf = LogisticRegression(max_iter=3000).fit(features[:n], labels[:n])
    return float((clf.predict(features[n:]) == labels[n:]).mean())


def main() -> int:
    ap = common.parser(__doc__, config_required=True, model_dir=True)
    ap.add_argument("--answer-prefix", default="", help="only questions whose answer starts with this")
    ap.add_argument("--answer-word", type=int, default=0, help="the answer's word (from 0) to probe for")
    ap.add_argument("--segments", type=int, default=7, help="only contexts of this many segments, so that "
                    "'after segment t' means the same turn in each")
    ap.add_argument("--examples", type=int, default=900)
    args = ap.parse_args()
    cfg, layout = common.load(args)
    torch.set_num_threads(1)
    model, _ = load_checkpoint(common.model_dir(args, layout), torch.device("cpu"))
    model.eval()
    rows = [r for r in pq.read_table(split_file(layout.stage_dir("dataset"), "train")).to_pylist()
            if r["answer"].startswith(args.answer_prefix) and len(r["segments"]) == args.segments][:args.examples]
    if len(rows) < 30:
        raise SystemExit(f"only {len(rows)} training questions match; change --answer-prefix or --segments")
    labels = np.array([r["answer"].split()[args.answer_word] for r in rows])
    after: dict[int, list[np.ndarray]] = {}
    bow = np.zeros((len(rows), model.vocab.vocab_size))
    with torch.no_grad():
        for i in range(0, len(rows), 100):
            batch = collate([{k: r[k] for k in ("segments", "segment_entities", "question", "question_entities")}
                             for r in rows[i:i + 100]], model.vocab.pad_id, model.vocab.segment_len)
            for t in range(1, batch["segments"].shape[1] + 1):
                memory = model.read_context(batch["segments"][:, :t], batch["segment_entities"][:, :t])
                after.setdefault(t, []).append(memory.flatten(1).numpy())
    for j, r in enumerate(rows):
        for seg in r["segments"]:
            np.add.at(bow[j], seg, 1)
    majority = float(max((labels == v).mean() for v in set(labels)))
    report = {"run": cfg.run.name, "model": str(common.model_dir(args, layout)), "questions": len(rows),
              "answer_prefix": args.answer_prefix, "answer_word": args.answer_word, "majority": majority,
              "bag_of_words": probe(bow, labels),
              "memory_after_segment": {t: probe(np.concatenate(f), labels) for t, f in after.items()}}
    print(f"{len(rows)} questions; word {args.answer_word} of the answer: majority {majority:.2f}, "
          f"bag of the context's words {report['bag_of_words']:.2f}")
    for t, acc in report["memory_after_segment"].items():
        print(f"  memory after segment {t}: {acc:.2f}")
    common.write_report(args, f"{cfg.run.name}-word{args.answer_word}", report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
