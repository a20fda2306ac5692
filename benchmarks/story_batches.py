"""Training speed of story batches against example batches, on one dataset stage's examples.

``train.batch_by: example`` reads every question's context on its own: in
dialog bAbI T3 each bot turn re-reads the ~29 lines before it. ``story``
reads each story's lines once and answers all its questions from the memory
after their lines (stmem/batch.py, ``collate_stories``). Both train the same
fresh model on the same questions, alternately in one process; the report
gives answered questions per second for each, their ratio, and the largest
difference in eval-mode loss between the two layouts on the first stories
(they compute the same thing).

    python benchmarks/story_batches.py --config conf/dialog-babi-t3.yaml --steps 20
"""
from __future__ import annotations

import time

import torch

import common
from stmem.batch import collate, collate_stories, story_batches
from stmem.examples import ParquetExamples
from stmem.layout import split_file
from stmem.train import build_model


def main() -> int:
    ap = common.parser(__doc__, config_required=True)
    ap.add_argument("--steps", type=int, default=20, help="optimizer steps timed per layout")
    args = ap.parse_args()
    cfg, layout = common.load(args)
    torch.manual_seed(cfg.run.seed)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    dataset = layout.stage_dir("dataset")
    model = build_model(cfg, dataset, None)
    train = ParquetExamples(split_file(dataset, "train"))
    examples = [train[i] for i in range(len(train))]
    pad, seg_len, bs = model.vocab.pad_id, model.vocab.segment_len, cfg.train.batch_size
    by_story = [[examples[i] for i in rows] for rows in story_batches([e["story_id"] for e in examples], bs)]
    by_example = [examples[i:i + bs] for i in range(0, len(examples), bs)]
    layouts = {"example": (by_example, collate), "story": (by_story, collate_stories)}

    model.eval()
    with torch.no_grad():
        sample = by_story[0] + by_story[1]
        gap = abs(float(model(collate(sample, pad, seg_len))) - float(model(collate_stories(sample, pad, seg_len))))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    seconds = {name: 0.0 for name in layouts}
    questions = {name: 0 for name in layouts}
    for step in range(args.steps):
        for name, (batches, collate_fn) in layouts.items():
            batch_examples = batches[step % len(batches)]
            started = time.perf_counter()
            loss = model(collate_fn(batch_examples, pad, seg_len))
            opt.zero_grad()
            loss.backward()
            opt.step()
            seconds[name] += time.perf_counter() - started
            questions[name] += len(batch_examples)
    rate = {name: questions[name] / seconds[name] for name in layouts}
    report = {"steps": args.steps, "batch_size": bs, "questions_per_second": rate,
              "story_over_example": rate["story"] / rate["example"], "eval_loss_gap": gap,
              "mean_segments": sum(len(e["segments"]) for e in examples) / len(examples)}
    print(f"questions/s: example {rate['example']:.1f}, story {rate['story']:.1f} "
          f"({report['story_over_example']:.2f}x); eval loss gap {gap:.2e}")
    common.write_report(args, cfg.run.name, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
