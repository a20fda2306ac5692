"""Resumable training checkpoints: everything the loop needs to go on as if never stopped.

<out_dir>/checkpoints/step-NNNNNN/ holds
    model.safetensors       the weights now
    best.safetensors        the best validation epoch's weights (once there is one)
    optimizer.safetensors   AdamW's per-parameter tensors, "<param index>.<name>"
    state.json              the loop's state (LoopState), optimizer groups,
                            scheduler, and the model and train configs
    rank-R.safetensors      rank R's torch (and CUDA) RNG states
    rank-R.json             rank R's Python RNG state, tokens seen, this epoch's losses
No pickles. Written into a temporary directory renamed into place, so a crash
leaves the previous checkpoint whole; then older ones are removed.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from stmem.config import ModelConfig, TrainConfig
from stmem.distributed import Ranks

CHECKPOINTS = "checkpoints"
# Train options a resumed run may change: they do not decide which examples
# are seen when, nor the update. (device, num_threads and compile can still
# change the floating-point result, so the run is then not bit-identical.)
RESUME_MAY_CHANGE = {"progress", "checkpoint_every", "num_threads", "device", "compile"}


@dataclass
class LoopState:
    """Where the training loop is; a checkpoint holds all of it."""

    epoch: int = 1
    step: int = 0  # the next step of this epoch
    global_step: int = 0  # optimizer steps taken
    order: list[int] = field(default_factory=list)  # this epoch's example order
    history: list[dict] = field(default_factory=list)  # one row per finished epoch
    best: float = -1.0  # best validation accuracy
    best_loss: float = float("inf")
    stale: int = 0  # epochs without validation gain
    seconds: float = 0.0  # training time before this process
    # per rank
    tokens_seen: int = 0
    losses: list[float] = field(default_factory=list)  # this epoch's step losses
    best_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    SHARED = ("epoch", "step", "global_step", "order", "history", "best", "best_loss", "stale", "seconds")


def save(root: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, sched, state: LoopState,
         shuffler: random.Random, ranks: Ranks, model_cfg: ModelConfig, train_cfg: TrainConfig) -> Path:
    final = root / f"step-{state.global_step:06d}"
    tmp = root / f".tmp-{final.name}"
    if ranks.main:
        shutil.rmtree(tmp, ignore_errors=True)  # left by a crash
        tmp.mkdir(parents=True)
    ranks.barrier()
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    save_file(rng, str(tmp / f"rank-{ranks.rank}.safetensors"))
    (tmp / f"rank-{ranks.rank}.json").write_text(json.dumps(
        {"python_random": random.getstate(), "tokens_seen": state.tokens_seen, "losses": state.losses}))
    ranks.barrier()
    if not ranks.main:
        return final
    save_model(model, str(tmp / "model.safetensors"))
    if state.best_state is not None:
        save_file(_unshared(state.best_state), str(tmp / "best.safetensors"))
    sd = opt.state_dict()
    save_file({f"{i}.{k}": v for i, s in sd["state"].items() for k, v in s.items() if torch.is_tensor(v)},
              str(tmp / "optimizer.safetensors"))
    scalars = {f"{i}.{k}": v for i, s in sd["state"].items() for k, v in s.items() if not torch.is_tensor(v)}
    loop = {k: getattr(state, k) for k in LoopState.SHARED}
    (tmp / "state.json").write_text(json.dumps({
        "format_version": 2, **loop, "shuffler": shuffler.getstate(), "world_size": ranks.world,
        "optimizer": {"param_groups": sd["param_groups"], "scalars": scalars}, "scheduler": sched.state_dict(),
        "model_config": model_cfg.model_dump(mode="json"), "train_config": train_cfg.model_dump(mode="json"),
    }) + "\n")
    os.rename(tmp, final)
    for old in root.glob("step-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``tensors`` with a copy of each one whose storage an earlier one holds: safetensors refuses shared
    tensors, and a state dict copy keeps tied weights tied (a causal LM's embeddings and output head)."""
    seen, out = set(), {}
    for k, v in tensors.items():
        ptr = v.untyped_storage().data_ptr()
        out[k] = v.contiguous().clone() if ptr in seen else v.contiguous()
        seen.add(ptr)
    return out


def has_checkpoint(path: Path) -> bool:
    root = Path(path)
    return (root / "state.json").is_file() or any((d / "state.json").is_file() for d in root.glob("step-*"))


def latest(path: Path) -> Path:
    """``path`` itself if it is a checkpoint, else the newest one under it (or its ``checkpoints/``)."""
    if (path / "state.json").is_file():
        return path
    root = path / CHECKPOINTS if (path / CHECKPOINTS).is_dir() else path
    steps = [d for d in root.glob("step-*") if (d / "state.json").is_file()]
    if not steps:
        raise FileNotFoundError(f"{path}: no checkpoint to resume from (no state.json, no {CHECKPOINTS}/step-*)")
    return max(steps, key=lambda d: int(d.name.split("-")[1]))


def _check_configs(ckpt: Path, saved: dict, model_cfg: ModelConfig, train_cfg: TrainConfig) -> None:
    for section, before, now, free in (("model", saved["model_config"], model_cfg.model_dump(mode="json"), set()),
                                       ("train", saved["train_config"], train_cfg.model_dump(mode="json"),
                                        RESUME_MAY_CHANGE)):
        for key in sorted(set(before) | set(now)):
            if key not in free and before.get(key) != now.get(key):
                raise ValueError(f"{ckpt}: written with {section}.{key}={before.get(key)!r}, "
                                 f"this run has {now.get(key)!r}")


def load(ckpt: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, sched, shuffler: random.Random,
         ranks: Ranks, model_cfg: ModelConfig, train_cfg: TrainConfig) -> LoopState:
    """Restore weights, optimizer, scheduler and RNGs in place; return the loop's state."""
    saved = json.loads((ckpt / "state.json").read_text())
    if saved["world_size"] != ranks.world:
        raise ValueError(f"{ckpt}: written by {saved['world_size']} process(es), this run has {ranks.world}; "
                         "the data shards would differ")
    _check_configs(ckpt, saved, model_cfg, train_cfg)
    device = str(ranks.device)
    load_model(model, str(ckpt / "model.safetensors"), device=device)
    opt_state: dict[int, dict] = {}
    for key, v in {**load_file(str(ckpt / "optimizer.safetensors")), **saved["optimizer"]["scalars"]}.items():
        i, name = key.split(".", 1)
        opt_state.setdefault(int(i), {})[name] = v
    groups = [{**g, "betas": tuple(g["betas"])} for g in saved["optimizer"]["param_groups"]]
    opt.load_state_dict({"state": opt_state, "param_groups": groups})
    sched.load_state_dict(saved["scheduler"])
    v, internal, gauss = saved["shuffler"]
    shuffler.setstate((v, tuple(internal), gauss))
    rng = load_file(str(ckpt / f"rank-{ranks.rank}.safetensors"))
    torch.set_rng_state(rng["torch"])
    cuda = [rng[f"cuda.{i}"] for i in range(torch.cuda.device_count()) if f"cuda.{i}" in rng]
    if cuda and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    mine = json.loads((ckpt / f"rank-{ranks.rank}.json").read_text())
    v, internal, gauss = mine["python_random"]
    random.setstate((v, tuple(internal), gauss))
    best = ckpt / "best.safetensors"
    return LoopState(**{k: saved[k] for k in LoopState.SHARED}, tokens_seen=mine["tokens_seen"],
                     losses=mine["losses"], best_state=load_file(str(best), device=device) if best.is_file() else None)
