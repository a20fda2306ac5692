"""A trained model on disk: safetensors weights + JSON config + tokenizer.

No pickles: ``model.safetensors`` holds tensors only, ``model_config.json``
holds everything needed to rebuild the module, so a checkpoint can be loaded
by any process (MLflow serving included) without trusting executable data.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, load_model, save_model

from stmem.config import ModelConfig
from stmem.dataset import load_tokenizer
from stmem.model import MemoryQA, Vocab

WEIGHTS, CONFIG, TOKENIZER, ENTITY_INDEX = "model.safetensors", "model_config.json", "tokenizer.json", "entity_index.parquet"


def save_checkpoint(model: MemoryQA, out_dir: Path, *, spacy_model: str) -> None:
    save_model(model, str(out_dir / WEIGHTS))
    config = {"format_version": 1, "model": model.cfg.model_dump(mode="json"), "vocab": asdict(model.vocab),
              "encoder": model.encoder.config.to_diff_dict(), "spacy_model": spacy_model}
    (out_dir / CONFIG).write_text(json.dumps(config, indent=2) + "\n")


def load_checkpoint(ckpt_dir: Path, device: str | torch.device = "cpu") -> tuple[MemoryQA, dict]:
    """Rebuild the model from ``model_config.json`` and load its weights."""
    ckpt_dir = Path(ckpt_dir)
    config = json.loads((ckpt_dir / CONFIG).read_text())
    cfg = ModelConfig.model_validate(config["model"])
    vocab = Vocab(**config["vocab"])
    # The weights file holds the whole (fine-tuned) encoder, so it is rebuilt
    # from its saved config: the checkpoint never needs the original directory.
    model = MemoryQA(cfg, vocab, encoder_config=config["encoder"])
    load_model(model, str(ckpt_dir / WEIGHTS), device=str(device))
    return model.to(device).eval(), config


def init_from_checkpoint(model: MemoryQA, ckpt_dir: Path, tokenizer_path: Path) -> dict:
    """Start training from a trained model's weights (fine-tuning).

    Token ids index the tokenizer, so with another tokenizer than the
    checkpoint's the word embedding (tied to the output layer) is carried
    over row by row: a token both vocabularies hold keeps its trained vector,
    a token only the new one holds keeps its fresh initialisation. That lets
    a qa2 model start from a qa1 model while spelling qa2's words whole. The
    KG table stays the current run's: entity ids index this run's KG, and only
    the learned projection of it is carried over; a checkpoint without KG
    fusion, or with a KG of another embedding size, leaves the fusion layers
    fresh, and a model without fusion leaves the checkpoint's out. Every
    other tensor must be there,
    with the same shape. Returns ``{"tokens_carried", "tokens_new", "fresh"}``
    (the tensors left as built). A model with other segment or question
    lengths gets each part of the position table (memory slots, segment,
    question) where that part now starts.
    """
    ckpt_dir = Path(ckpt_dir)
    if not (ckpt_dir / WEIGHTS).is_file():
        raise FileNotFoundError(f"train.init_from: {ckpt_dir / WEIGHTS} not found")
    weights = load_file(str(ckpt_dir / WEIGHTS))
    weights.pop("fusion.table", None)
    mine = model.state_dict()
    words = "encoder." + next(n for n, p in model.encoder.named_parameters()
                              if p is model.word_embeddings.weight)
    old_vocab = load_tokenizer(ckpt_dir / TOKENIZER).get_vocab()
    new_vocab = load_tokenizer(tokenizer_path).get_vocab()
    shared = [t for t in new_vocab if t in old_vocab]
    if old_vocab != new_vocab and words in weights:
        rows = mine[words].clone()
        rows[torch.tensor([new_vocab[t] for t in shared], dtype=torch.long)] = \
            weights[words][torch.tensor([old_vocab[t] for t in shared], dtype=torch.long)].to(rows.dtype)
        weights[words] = rows
    positions = "encoder.embeddings.position_embeddings.weight"
    saved = json.loads((ckpt_dir / CONFIG).read_text())
    if positions in weights and positions in mine \
            and saved["model"]["memory_slots"] == model.cfg.memory_slots:  # else the slot shapes differ: refused below
        weights[positions] = _relayout_positions(weights[positions], mine[positions], Vocab(**saved["vocab"]),
                                                 model.vocab, model.cfg.memory_slots)
    # A model that adds KG fusion to a checkpoint trained without it, or fuses
    # a KG of another embedding size: the fusion layers start fresh.
    fresh = sorted(k for k in mine.keys() - {"fusion.table"} if k.startswith("fusion.")
                   and (k not in weights or weights[k].shape != mine[k].shape))
    for k in fresh:
        weights.pop(k, None)
    if model.fusion is None:  # a model without KG fusion has no use for the checkpoint's
        weights = {k: v for k, v in weights.items() if not k.startswith("fusion.")}
    wrong = sorted(k for k in weights.keys() ^ (mine.keys() - {"fusion.table"} - set(fresh))) + \
        sorted(k for k in weights if k in mine and weights[k].shape != mine[k].shape)
    if wrong:
        raise ValueError(f"train.init_from: {ckpt_dir} does not fit model config "
                         f"(differs in {', '.join(wrong[:5])}{' ...' if len(wrong) > 5 else ''})")
    model.load_state_dict(weights, strict=False)
    return {"tokens_carried": len(shared), "tokens_new": len(new_vocab) - len(shared), "fresh": fresh}


def _relayout_positions(saved: torch.Tensor, built: torch.Tensor, old: Vocab, new: Vocab, slots: int) -> torch.Tensor:
    """The saved position table laid out as [slots ; segment ; question] for the new lengths.

    Rows a part has in both layouts are the saved ones; rows only the new
    layout has stay as built.
    """
    if (old.segment_len, old.max_question_len) == (new.segment_len, new.max_question_len) \
            and saved.shape == built.shape:
        return saved
    out = built.clone()
    out[:slots] = saved[:slots]
    n = min(old.segment_len, new.segment_len)
    out[slots:slots + n] = saved[slots:slots + n]
    q = min(old.max_question_len, new.max_question_len)
    out[slots + new.segment_len:slots + new.segment_len + q] = saved[slots + old.segment_len:slots + old.segment_len + q]
    return out.to(built.dtype)
