"""Accuracy against context length, BABILong-style.

Takes a model trained by a run (``corpus.format: babilong`` or plain bAbI)
and evaluates it on the same bAbI test stories padded with distractor
sentences (corpora/babilong.py) so that the context before each story's
last question is 1x, 4x, 16x, 64x ... the segment length. Each length's
corpus goes through the library's own extract and dataset steps, with the
run's tokenizer and entity index, so the model sees exactly the encoding it
was trained on. Reports exact-match on every test question and on the last
question of each story (whose context is the full length).

    python benchmarks/long_context.py --config conf/babilong-qa1.yaml --factors 1 4 16 64
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import common
from corpora import add_distractors, read_babi, write_corpus
from kg_pipeline.extraction import extract
from stmem.checkpoint import load_checkpoint
from stmem.dataset import build_dataset, load_tokenizer
from stmem.evaluate import exact_match
from stmem.train import load_examples
from stmem.layout import split_file


def main() -> int:
    ap = common.parser(__doc__, config_required=True, model_dir=True)
    ap.add_argument("--factors", nargs="+", type=float, default=[1, 4, 16, 64])
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    cfg, layout = common.load(args)
    model_dir = common.model_dir(args, layout)
    device = common.device()
    model, _ = load_checkpoint(model_dir, device)
    tokenizer = load_tokenizer(model_dir / "tokenizer.json")
    entity_index = layout.stage_dir("kg") / "entity_index.parquet"
    words_per_segment = cfg.corpus.babilong.unit_words
    test = [s for s in read_babi(cfg.corpus.path, cfg.corpus.tasks, val_fraction=cfg.corpus.val_fraction,
                                 seed=cfg.run.seed) if s.split == "test"]
    rows = []
    for factor in args.factors:
        started = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            stories = add_distractors(test, unit_words=words_per_segment, factor=factor, seed=cfg.corpus.babilong.seed)
            write_corpus(stories, tmp / "corpus.parquet")
            extract(corpus_path=tmp / "corpus.parquet", out_dir=tmp, spacy_model=cfg.extract.spacy_model)
            # Room for every segment of the longest context: nothing is dropped.
            stats = build_dataset(corpus_path=tmp / "corpus.parquet", mentions_path=tmp / "mentions.parquet",
                                  entity_index_path=entity_index, out_dir=tmp,
                                  **{**cfg.dataset.model_dump(), "max_segments": 100_000,
                                     "tokenizer": str(model_dir / "tokenizer.json")})
            examples = load_examples(split_file(tmp, "test"))
        last_q = {}
        for e in examples:  # example ids are <story>/<question index>
            story, q = e["example_id"].rsplit("/", 1)
            if int(q) >= last_q.get(story, (-1, None))[0]:
                last_q[story] = (int(q), e)
        last = [e for _, e in last_q.values()]
        every = exact_match(model, examples, tokenizer, batch_size=args.batch_size, device=device)
        final = exact_match(model, last, tokenizer, batch_size=args.batch_size, device=device)
        segs = [len(e["segments"]) for e in last]
        row = {"factor": factor, "target_words": round(factor * words_per_segment),
               "last_question_mean_segments": round(sum(segs) / len(segs), 1), "last_question_max_segments": max(segs),
               "mean_context_tokens_all": stats["mean_context_tokens"],
               "accuracy_all": round(every["accuracy"], 4), "n_all": every["n"],
               "accuracy_last_question": round(final["accuracy"], 4), "n_last_question": final["n"],
               "per_task_all": every["per_task"], "per_task_last_question": final["per_task"],
               "seconds": round(time.time() - started, 1)}
        rows.append(row)
        print(f"{factor:g}x: {row['last_question_mean_segments']} segments (last question), "
              f"exact-match all {row['accuracy_all']:.3f}, last question {row['accuracy_last_question']:.3f} "
              f"({row['seconds']:.0f}s)", flush=True)
    report = {"config": args.config, "overrides": args.overrides, "model_dir": str(model_dir),
              "segment_len_tokens": cfg.dataset.segment_len, "unit_words": words_per_segment, "device": str(device),
              "results": rows}
    common.write_report(args, cfg.run.name, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
