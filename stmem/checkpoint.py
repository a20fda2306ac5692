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

    Every tensor is carried over, with these exceptions for a model that
    differs from the checkpoint's:

    - another tokenizer: token embedding rows (tied to the output layer) are
      carried by token string; tokens only the new vocabulary has stay as
      built (so a qa2 model can start from a qa1 model and spell qa2's words
      whole);
    - other segment or question lengths: each part of the position table
      (memory slots, segment, question) moves to where that part now starts;
    - KG fusion: the KG table is always this run's (entity ids index this
      run's KG); fusion layers the checkpoint lacks, or has for a KG of
      another embedding size, stay as built; a model without fusion ignores
      the checkpoint's.
    - more decoder layers: the layers the checkpoint lacks go on top and
      start as the identity (their output projections zeroed; the layers are
      pre-norm residual blocks), so the grown model first answers as the
      checkpoint did and training finds a use for the new depth.
    - more memory slots: the checkpoint's slots keep their keys (or queries)
      and their position rows; the added slots start as built, and the
      segment and question positions move up behind them. Fewer slots than
      the checkpoint is an error: which facts a dropped slot held is unknown.
      Ring slots (``model.ring_slots``) grow the same way, behind the routed
      ones.

    Any other missing tensor or shape is an error that names it. Returns
    ``{"tokens_carried", "tokens_new", "fresh"}`` (fresh: tensors left as built).
    """
    ckpt_dir = Path(ckpt_dir)
    if not (ckpt_dir / WEIGHTS).is_file():
        raise FileNotFoundError(f"train.init_from: {ckpt_dir / WEIGHTS} not found")
    weights = load_file(str(ckpt_dir / WEIGHTS))
    weights.pop("fusion.table", None)
    saved = json.loads((ckpt_dir / CONFIG).read_text())
    mine = model.state_dict()
    old_vocab = load_tokenizer(ckpt_dir / TOKENIZER).get_vocab()
    new_vocab = load_tokenizer(tokenizer_path).get_vocab()
    shared = [t for t in new_vocab if t in old_vocab]
    words = "encoder." + next(n for n, p in model.encoder.named_parameters() if p is model.word_embeddings.weight)
    if old_vocab != new_vocab and words in weights:
        rows = mine[words].clone()
        rows[torch.tensor([new_vocab[t] for t in shared], dtype=torch.long)] = \
            weights[words][torch.tensor([old_vocab[t] for t in shared], dtype=torch.long)].to(rows.dtype)
        weights[words] = rows
    old_slots, slots = saved["model"]["memory_slots"], model.cfg.memory_slots
    old_ring, ring = saved["model"].get("ring_slots", 0), model.cfg.ring_slots
    for key, n, old_n in (("memory_slots", slots, old_slots), ("ring_slots", ring, old_ring)):
        if n < old_n:
            raise ValueError(f"train.init_from: model.{key} {n} is fewer than {ckpt_dir}'s {old_n}")
    for name in ("memory.slot_keys", "memory.slot_queries"):
        if slots > old_slots and name in weights and name in mine:
            weights[name] = torch.cat([weights[name], mine[name][old_slots:]])
    positions = "encoder.embeddings.position_embeddings.weight"
    if positions in weights and positions in mine and weights[positions].shape[1:] == mine[positions].shape[1:]:
        old, new = Vocab(**saved["vocab"]), model.vocab
        weights[positions] = _relayout_positions(
            weights[positions], mine[positions],
            [old_slots, old_ring, old.segment_len, old.max_question_len],
            [slots, ring, new.segment_len, new.max_question_len])
    fresh = sorted(k for k in mine.keys() - {"fusion.table"} if k.startswith("fusion.")
                   and (k not in weights or weights[k].shape != mine[k].shape))
    saved_depth = saved["model"]["decoder_layers"]
    grown = model.decoder.layers[saved_depth:]
    if len(grown):
        fresh += sorted(f"decoder.layers.{saved_depth + i}.{name}" for i, layer in enumerate(grown)
                        for name in layer.state_dict())
        with torch.no_grad():
            for layer in grown:
                for proj in (layer.self_attn.out_proj, layer.multihead_attn.out_proj, layer.linear2):
                    proj.weight.zero_()
                    proj.bias.zero_()
    weights = {k: v for k, v in weights.items()
               if k not in fresh and (model.fusion is not None or not k.startswith("fusion."))}
    expected = mine.keys() - {"fusion.table"} - set(fresh)
    wrong = sorted(weights.keys() ^ expected) + \
        sorted(k for k in weights if k in mine and weights[k].shape != mine[k].shape)
    if wrong:
        raise ValueError(f"train.init_from: {ckpt_dir} does not fit model config "
                         f"(differs in {', '.join(wrong[:5])}{' ...' if len(wrong) > 5 else ''})")
    model.load_state_dict(weights, strict=False)
    return {"tokens_carried": len(shared), "tokens_new": len(new_vocab) - len(shared), "fresh": fresh}


def _relayout_positions(saved: torch.Tensor, built: torch.Tensor, old_parts: list[int],
                        new_parts: list[int]) -> torch.Tensor:
    """The saved position table laid out for the new part sizes.

    The parts, in table order, are [routed slots ; ring slots ; segment ;
    question]. Rows a part has in both layouts are the saved ones; rows only
    the new layout has stay as built.
    """
    if old_parts == new_parts and saved.shape == built.shape:
        return saved
    out = built.clone()
    at_old = at_new = 0
    for o, n in zip(old_parts, new_parts):
        k = min(o, n)
        out[at_new:at_new + k] = saved[at_old:at_old + k]
        at_old, at_new = at_old + o, at_new + n
    return out.to(built.dtype)
