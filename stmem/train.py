"""Stage 5: train ``MemoryQA`` (or, with ``model.head: causal_lm``, ``RecurrentMemoryLM``) on the dataset stage's examples.

Read top to bottom: set up the device (one process per device under
torchrun), load the examples, build the model (fresh, or from
``train.init_from``), the optimizer and the schedule, resume from a
checkpoint if asked, then the loop: AdamW with warmup and cosine decay,
gradient clipping and accumulation, validation exact-match after each epoch,
early stopping, and the best epoch's weights evaluated on the test split.

    python -m stmem.train --dataset-dir D --out-dir O [--kg-dir K] [--config C.yaml] [--set train.epochs=5]
    torchrun --nproc_per_node=N -m stmem.train ...   (the same arguments)
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import random
import shutil
import time
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors.torch import load_file
from tqdm import tqdm
from transformers import get_cosine_schedule_with_warmup

from stmem import distributed, resume
from stmem.batch import collate, collate_stories, story_batches
from stmem.checkpoint import ENTITY_INDEX, TOKENIZER, save_checkpoint
from stmem.config import TRAIN_SECTIONS, Config, ConfigError, TrainConfig, load_config
from stmem.dataset import ENTITY_ALIASES, load_tokenizer
from stmem.errors import TrainingDiverged
from stmem.evaluate import exact_match, majority_baseline, mean_loss, predict_answers, score, to_device
from stmem.examples import ParquetExamples, epoch_order
from stmem.init_from import init_from_checkpoint
from stmem.layout import SPLITS, split_file
from stmem.model import MemoryQA, Vocab
from stmem.recurrent_lm import RecurrentMemoryLM
from stmem.resume import CHECKPOINTS, LoopState
from stmem.transforms import build_transforms


PREDICTIONS = "test_predictions.parquet"  # example_id, task, answer, prediction: the test split as evaluated


def load_examples(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def build_model(cfg: Config, dataset_dir: Path, kg_dir: Path | None) -> MemoryQA | RecurrentMemoryLM:
    info = json.loads((dataset_dir / "dataset_info.json").read_text())
    entity_embeddings = None
    if cfg.model.kg_fusion:
        if kg_dir is None:
            raise ValueError("model.kg_fusion is on but no kg directory was given")
        entity_embeddings = load_file(str(Path(kg_dir) / "entity_embeddings.safetensors"))["entity_embeddings"]
    vocab = Vocab.from_dataset(info, entity_embeddings)
    if cfg.model.head == "causal_lm":
        if cfg.train.init_from:
            raise ValueError("train.init_from: not built for model.head: causal_lm yet")
        return RecurrentMemoryLM.build(cfg.model, vocab, entity_embeddings=entity_embeddings)
    model = MemoryQA(cfg.model, vocab, entity_embeddings)
    if cfg.train.init_from:
        carried = init_from_checkpoint(model, Path(cfg.train.init_from), dataset_dir / TOKENIZER)
        print(f"init_from {cfg.train.init_from}: {carried['tokens_carried']} token embeddings carried over, "
              f"{carried['tokens_new']} new" + (f"; fresh: {', '.join(carried['fresh'])}" if carried["fresh"] else ""))
    return model


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # As in nanoGPT: decay matrices, not biases, norms or the frozen KG table.
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
                              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}], lr=cfg.lr)


def fit(cfg: Config, *, dataset_dir: Path, out_dir: Path, kg_dir: Path | None = None,
        resume_from: Path | None = None, on_step: Callable[[int], None] | None = None,
        on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Train, keep the best validation epoch, write the checkpoint, ``eval.json`` and ``history.json``.

    ``resume_from``: a ``checkpoints/step-N`` directory, or a directory holding
    them, whose latest is taken. ``on_step(global_step)`` runs after every
    optimizer step and any checkpoint written at it; raising from it stops
    training. ``on_epoch(row)`` gets each epoch's history row (rank 0). Under torchrun every rank trains; only rank 0 evaluates, writes
    and returns the summary, the others return ``{}``.
    """
    tc, dataset_dir, out_dir = cfg.train, Path(dataset_dir), Path(out_dir)
    ranks = distributed.setup(tc.device)
    device = ranks.device
    if tc.precision == "bf16" and device.type != "cuda":
        raise ValueError(f"train.precision is 'bf16' but training runs on {device}: bf16 autocast is used "
                         "on CUDA only; set train.precision to 'fp32'")
    random.seed(cfg.run.seed)
    torch.manual_seed(cfg.run.seed + ranks.rank)  # dropout differs between ranks; DDP copies rank 0's weights
    shuffler = random.Random(cfg.run.seed)  # the same epoch orders on every rank, so they agree on the shards
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)

    tokenizer = load_tokenizer(dataset_dir / TOKENIZER)
    if ranks.main:  # what the model ships is fixed now, before the work, not copied from wherever it is later
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(dataset_dir / TOKENIZER, out_dir / TOKENIZER)
        if kg_dir is not None and cfg.model.kg_fusion:
            shutil.copy(Path(kg_dir) / ENTITY_INDEX, out_dir / ENTITY_INDEX)
            if (dataset_dir / ENTITY_ALIASES).is_file():  # KG names found in text by the extract stage
                shutil.copy(dataset_dir / ENTITY_ALIASES, out_dir / ENTITY_ALIASES)
    # read a row group at a time: never the whole split in memory unless it fits in one shuffle window
    splits = {s: ParquetExamples(split_file(dataset_dir, s), cache_groups=tc.shuffle_window) for s in SPLITS}
    train = splits["train"]
    if not train:
        raise ValueError(f"{split_file(dataset_dir, 'train')}: no training examples")
    transforms = build_transforms(cfg, tokenizer, train)
    model = build_model(cfg, dataset_dir, kg_dir).to(device)
    pad_id, bs, accum = model.vocab.pad_id, tc.batch_size, tc.grad_accum_steps
    by_story = tc.batch_by == "story"
    # What an epoch's order shuffles: examples, or (train.batch_by: story) stories, as many a micro-batch as
    # hold about batch_size questions on average
    stories = story_batches(pq.read_table(split_file(dataset_dir, "train"), columns=["story_id"])
                            .column("story_id").to_pylist(), 1) if by_story else None  # each story's rows
    units, per_batch = (len(stories), max(1, round(bs * len(stories) / len(train)))) if by_story else (len(train), bs)
    opt = build_optimizer(model, tc)
    steps_per_epoch = math.ceil(math.ceil(math.ceil(units / ranks.world) / per_batch) / accum)  # optimizer steps
    total = steps_per_epoch * tc.epochs
    sched = get_cosine_schedule_with_warmup(opt, int(tc.warmup_ratio * total), total)
    state = LoopState(order=list(range(units)))
    if resume_from is not None:
        ckpt = resume.latest(Path(resume_from))
        state = resume.load(ckpt, model, opt, sched, shuffler, ranks, cfg.model, tc)
        if ranks.main:
            print(f"resumed from {ckpt} at optimizer step {state.global_step} (epoch {state.epoch}, "
                  f"step {state.step})", flush=True)
    train_model = ranks.wrap(torch.compile(model) if tc.compile else model)
    # bf16 for the training steps only: evaluation runs in fp32, as inference does.
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if tc.precision == "bf16" else contextlib.nullcontext()
    evaluate = lambda split: exact_match(model, splits[split], tokenizer, batch_size=4 * bs, device=device,
                                         by_story=by_story)

    started = time.time()
    for epoch in range(state.epoch, tc.epochs + 1):
        state.epoch = epoch
        model.train()
        if state.step == 0:  # a fresh epoch; a resumed one keeps its order and losses
            if by_story:  # shuffled whole: the split is read a story at a time, its row groups in any order
                shuffler.shuffle(state.order)
            else:
                state.order = epoch_order(train, shuffler, tc.shuffle_window, state.order)
            state.losses = []
        mine = ranks.shard(state.order)
        # disable=None: tqdm draws on a terminal only; in a log file a bar is thousands of carriage-return
        # updates, and the epoch's line (end_of_epoch) says what a log needs
        bar = tqdm(range(state.step, steps_per_epoch), desc=f"epoch {epoch}/{tc.epochs}", leave=False,
                   disable=None if tc.progress and ranks.main else True, mininterval=1.0)
        epoch_started = time.time()
        for step in bar:
            batches = []
            for i in range(step * accum * per_batch, min((step + 1) * accum * per_batch, len(mine)), per_batch):
                if by_story:
                    examples = [train[j] for u in mine[i:i + per_batch] for j in stories[u]]
                    batch = collate_stories(examples, pad_id, model.vocab.segment_len)
                    tasks = [train[stories[u][0]]["task"] for u in mine[i:i + per_batch]]  # per story
                else:
                    examples = [train[j] for j in mine[i:i + bs]]
                    batch = collate(examples, pad_id, model.vocab.segment_len)
                    tasks = [e["task"] for e in examples]
                for transform in transforms:
                    batch = transform(batch, tasks=tasks, epoch=epoch)
                batches.append(to_device(batch, device))
            # Each micro-batch weighs by its answer tokens, so the accumulated
            # gradient is that of the mean loss over the whole step's tokens.
            answer_tokens = [int((b["answer_ids"] != pad_id).sum()) for b in batches]
            opt.zero_grad(set_to_none=True)
            step_loss = 0.0
            for i, batch in enumerate(batches):
                with ranks.no_sync(train_model, last=i == len(batches) - 1):
                    with amp:
                        loss = train_model(batch) * (answer_tokens[i] / sum(answer_tokens))
                    loss.backward()
                step_loss += loss.item()
                segments = batch["segments"] if model.cfg.slots else batch["segments"][:, -1:]
                state.tokens_seen += int((segments != pad_id).sum() + (batch["question"] != pad_id).sum())
            # Checked before the optimizer step and any checkpoint, so no weights from a NaN ever exist. The
            # gradient norm is taken after DDP's all-reduce: every rank sees the same one and stops together.
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip))
            if not (math.isfinite(step_loss) and math.isfinite(grad_norm)):
                what = f"loss is {step_loss}" if not math.isfinite(step_loss) else f"gradient norm is {grad_norm}"
                raise TrainingDiverged(
                    f"training diverged: the {what} at epoch {epoch}, step {step + 1} (optimizer step "
                    f"{state.global_step + 1}, train.lr {tc.lr:g}); stopped there, no checkpoint written from it "
                    "and nothing published; lower train.lr or check the data")
            opt.step()
            sched.step()
            state.global_step, state.step = state.global_step + 1, step + 1
            state.losses.append(step_loss)
            bar.set_postfix(loss=f"{step_loss:.3f}")
            if tc.checkpoint_every and state.global_step % tc.checkpoint_every == 0:
                state.seconds += time.time() - started
                started = time.time()
                resume.save(out_dir / CHECKPOINTS, model, opt, sched, state, shuffler, ranks, cfg.model, tc)
            if on_step is not None:
                on_step(state.global_step)
        state.step = 0
        loss_sum, count = ranks.sum(sum(state.losses), len(state.losses))
        stop = ranks.main and end_of_epoch(state, model, splits["val"], evaluate, loss_sum / count, tc, device,
                                           started=epoch_started)
        if ranks.main and on_epoch is not None:
            on_epoch(state.history[-1])
        if ranks.agree(stop):
            break
    state.seconds += time.time() - started
    del train_model  # DDP's reducer holds the process group: it goes while the group is still there
    state.tokens_seen = int(ranks.sum(state.tokens_seen)[0])
    if not ranks.main:
        ranks.barrier()  # rank 0 is writing the outputs
        ranks.close()
        return {}
    model.load_state_dict(state.best_state)
    predictions = predict_answers(model, splits["test"], tokenizer, batch_size=4 * bs, device=device,
                                  by_story=by_story)
    summary = write_outputs(cfg, model, out_dir, splits["test"], predictions, state, ranks,
                            train_split=split_file(dataset_dir, "train"))
    ranks.barrier()
    ranks.close()
    return summary


def fit_with_restarts(cfg: Config, *, dataset_dir: Path, out_dir: Path, kg_dir: Path | None = None,
                      on_epoch: Callable[[dict], None] | None = None) -> dict:
    """``fit``, then once per ``train.restarts`` entry again from the best weights so far; resumable.

    Round i (from 1) of n writes its model to ``out_dir/round-i`` (the last to
    ``out_dir``) and starts from the round before (the first from
    ``train.init_from``): a fresh optimizer and schedule, the same data. Run
    again on the same ``out_dir`` after a crash, it skips finished rounds and
    resumes the unfinished one from its latest checkpoint. The last round's
    checkpoints stay in ``out_dir/checkpoints`` for the caller to drop.
    ``on_epoch`` gets each epoch's history row with ``round`` added.
    """
    out_dir = Path(out_dir)
    rounds = [(cfg.train.epochs, cfg.train.lr)] + [(r.epochs, r.lr) for r in cfg.train.restarts]
    start, summary = cfg.train.init_from, {}
    for i, (epochs, lr) in enumerate(rounds, 1):
        d = out_dir if i == len(rounds) else out_dir / f"round-{i}"
        if d != out_dir and (d / "eval.json").is_file():
            start = str(d)  # finished before a crash
            continue
        if len(rounds) > 1:
            print(f"round {i}/{len(rounds)}: {epochs} epochs at lr {lr:g} from {start or 'fresh weights'}", flush=True)
        train = cfg.train.model_copy(update={"epochs": epochs, "lr": lr, "init_from": start})
        resume_from = d if resume.has_checkpoint(d / CHECKPOINTS) else None
        report = None if on_epoch is None else (lambda row, i=i: on_epoch({**row, "round": i}))
        summary = fit(cfg.model_copy(update={"train": train}), dataset_dir=dataset_dir, out_dir=d, kg_dir=kg_dir,
                      resume_from=resume_from, on_epoch=report)
        if d != out_dir:
            shutil.rmtree(d / CHECKPOINTS, ignore_errors=True)  # a finished round needs none
        start = str(d)
    return summary


def end_of_epoch(state: LoopState, model: MemoryQA, val: list[dict], evaluate, epoch_loss: float,
                 tc: TrainConfig, device: torch.device, started: float) -> bool:
    """Validate, record the epoch, keep the best weights; True when training should stop.

    Prints one line per epoch (``started``: when the epoch began, for its seconds with validation).

    Stop only when neither accuracy nor loss has improved for ``patience``
    epochs: memory models sit on a plateau of chance accuracy while the loss
    still falls, before they learn to use the memory.
    """
    accuracy = evaluate("val")["accuracy"] if val else 0.0
    val_loss = mean_loss(model, val, batch_size=4 * tc.batch_size, device=device,
                         by_story=tc.batch_by == "story") if val else float("nan")
    state.history.append({"epoch": state.epoch, "loss": epoch_loss, "val_loss": val_loss, "val_accuracy": accuracy})
    print(f"epoch {state.epoch}: loss {epoch_loss:.4f}  val loss {val_loss:.4f}  val exact-match {accuracy:.3f}  "
          f"{time.time() - started:.1f} s", flush=True)
    if accuracy > state.best:
        state.best, state.best_state = accuracy, copy.deepcopy(model.state_dict())
    improved = accuracy >= state.best or val_loss < state.best_loss - 1e-4
    state.stale = 0 if improved else state.stale + 1
    state.best_loss = min(state.best_loss, val_loss)
    return state.stale >= tc.patience


def write_outputs(cfg: Config, model: MemoryQA, out_dir: Path, test_examples: list[dict], predictions: list[str],
                  state: LoopState, ranks: distributed.Ranks, train_split: Path) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, out_dir, spacy_model=cfg.extract.spacy_model)  # tokenizer and entity index: at the start
    test = score(test_examples, predictions)
    test["majority_baseline"] = majority_baseline(train_split, test_examples)
    pq.write_table(pa.table({"example_id": [e["example_id"] for e in test_examples],
                             "task": [e["task"] for e in test_examples],
                             "answer": [e["answer"] for e in test_examples], "prediction": predictions}),
                   out_dir / PREDICTIONS)
    result = {"test": test, "best_val_accuracy": state.best, "epochs_run": len(state.history),
              "device": str(ranks.device), "world_size": ranks.world, "train_seconds": round(state.seconds, 1),
              "tokens_per_second": round(state.tokens_seen / max(state.seconds, 1e-9), 1),
              "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
              "memory": cfg.model.memory.type, "kg_fusion": cfg.model.kg_fusion}
    (out_dir / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "history.json").write_text(json.dumps(state.history, indent=2) + "\n")
    return {"test_accuracy": test["accuracy"], "majority_baseline": test["majority_baseline"],
            "per_task": test["per_task"],
            "per_question_type": test["per_question_type"], "best_val_accuracy": state.best,
            "epochs_run": len(state.history), "device": str(ranks.device), "train_seconds": round(state.seconds, 1),
            "history": state.history}


# Where a torchrun rank 0 writes why training diverged, so that the train stage raises TrainingDiverged
# (one line, never retried) instead of a failed torchrun.
DIVERGED_FILE = "STMEM_DIVERGED_FILE"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m stmem.train", description="Train MemoryQA on a dataset directory "
                                 "(one process, or one per device under torchrun --nproc_per_node=N -m stmem.train).")
    ap.add_argument("--dataset-dir", type=Path, required=True, help="the dataset stage's output")
    ap.add_argument("--out-dir", type=Path, required=True, help="the model, eval.json and history.json go here")
    ap.add_argument("--kg-dir", type=Path, help="the KG stage's output (needed when model.kg_fusion is on)")
    ap.add_argument("--config", help="YAML config; its model, train, run.seed, corpus.word_classes and "
                    "extract.spacy_model are used")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override one config value, e.g. --set train.epochs=5 (repeatable)")
    ap.add_argument("--in-place", action="store_true", help="write into --out-dir as it is (the pipeline's train "
                    "stage, which publishes it); otherwise the output is written atomically with a manifest")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as err:
        ap.error(str(err))
    try:
        if args.in_place:
            summary = fit_with_restarts(cfg, dataset_dir=args.dataset_dir, out_dir=args.out_dir, kg_dir=args.kg_dir)
        else:
            summary = _fit_published(cfg, args.dataset_dir, args.out_dir, args.kg_dir)
    except TrainingDiverged as err:
        if os.environ.get(DIVERGED_FILE) and int(os.environ.get("RANK", "0")) == 0:
            Path(os.environ[DIVERGED_FILE]).write_text(str(err))  # for the stage that started torchrun
        ap.exit(2, f"{ap.prog}: error: {err}\n")
    if summary:
        print(json.dumps({k: v for k, v in summary.items() if k != "history"}, indent=2))


def _fit_published(cfg: Config, dataset_dir: Path, out_dir: Path, kg_dir: Path | None) -> dict:
    """Train into a temporary directory named after the inputs, then rename it to ``out_dir`` with a manifest.

    Killed and run again with the same inputs and config, it resumes from the
    temporary directory's checkpoints. Under torchrun rank 0 publishes.
    """
    from stmem.artifacts import digest, file_sha256, stage_output, work_dir

    files = [*(split_file(dataset_dir, s) for s in SPLITS), dataset_dir / TOKENIZER]
    if kg_dir is not None and cfg.model.kg_fusion:
        files += [Path(kg_dir) / f for f in ("entity_embeddings.safetensors", ENTITY_INDEX)]
        files += [f for f in (dataset_dir / ENTITY_ALIASES,) if f.is_file()]
    if cfg.train.init_from:
        files += [Path(cfg.train.init_from) / f for f in ("model.safetensors", "model_config.json", TOKENIZER)]
    inputs = {"files": {str(f): file_sha256(f) for f in files},
              "config": cfg.section_hash(*TRAIN_SECTIONS)}
    key = digest({"stage": "train", **inputs})
    if int(os.environ.get("RANK", "0")) != 0:
        return fit_with_restarts(cfg, dataset_dir=dataset_dir, out_dir=work_dir(out_dir, key), kg_dir=kg_dir)
    with stage_output(out_dir, stage="train", key=key, inputs=inputs, config_hash=inputs["config"],
                      resumable=True) as (tmp, summary):
        summary.update(fit_with_restarts(cfg, dataset_dir=dataset_dir, out_dir=tmp, kg_dir=kg_dir))
        shutil.rmtree(tmp / CHECKPOINTS, ignore_errors=True)  # finished: the output needs none
    return summary


if __name__ == "__main__":
    main()
