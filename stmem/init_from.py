"""``train.init_from``: start training from a trained model's weights (fine-tuning).

Every tensor is carried over. Where this run's model differs from the
checkpoint's, one function below says how the saved tensors are fitted to it;
anything else that differs is an error that names it.

- another tokenizer: token embedding rows (tied to the output layer) are
  carried by token string (``carry_token_rows``);
- other segment or question lengths, more memory slots: each part of the
  position table moves to where that part now starts (``relayout_positions``);
- more memory slots: the trained slots keep their keys, the added ones start
  as built (``grow_slots``); fewer slots is an error: which facts a dropped
  slot held is unknown;
- more decoder layers: the new ones go on top and start as the identity
  (``grow_decoder``);
- KG fusion: the KG table is always this run's; fusion layers the checkpoint
  lacks, or has for a KG of another size, stay as built (``fresh_fusion``).
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from stmem.checkpoint import TOKENIZER, WEIGHTS, read_config
from stmem.dataset import load_tokenizer
from stmem.model import MemoryQA, Vocab

POSITIONS = "backbone.model.embeddings.position_embeddings.weight"
SLOT_KEYS = "memory.router.slot_keys"


def carry_token_rows(weights: dict, model: MemoryQA, old_vocab: dict[str, int], new_vocab: dict[str, int]) -> int:
    """Token embedding rows by token string; tokens only the new vocabulary has stay as built. Returns how many carried."""
    shared = [t for t in new_vocab if t in old_vocab]
    name = "backbone." + next(n for n, p in model.backbone.named_parameters() if p is model.word_embeddings.weight)
    if old_vocab != new_vocab and name in weights:
        rows = model.state_dict()[name].clone()
        rows[torch.tensor([new_vocab[t] for t in shared])] = \
            weights[name][torch.tensor([old_vocab[t] for t in shared])].to(rows.dtype)
        weights[name] = rows
    return len(shared)


def grow_slots(weights: dict, model: MemoryQA, old_slots: int) -> None:
    if model.cfg.slots < old_slots:
        raise ValueError(f"train.init_from: model.memory.slots {model.cfg.slots} is fewer than the checkpoint's {old_slots}")
    mine = model.state_dict()
    if model.cfg.slots > old_slots and SLOT_KEYS in weights and SLOT_KEYS in mine:
        weights[SLOT_KEYS] = torch.cat([weights[SLOT_KEYS], mine[SLOT_KEYS][old_slots:]])


def relayout_positions(weights: dict, model: MemoryQA, old_parts: list[int], new_parts: list[int]) -> None:
    """The position table laid out for the new [slots ; segment ; question] sizes.

    Rows a part has in both layouts are the saved ones; rows only the new
    layout has stay as built.
    """
    built = model.state_dict().get(POSITIONS)
    saved = weights.get(POSITIONS)
    if built is None or saved is None or saved.shape[1:] != built.shape[1:] or \
            (old_parts == new_parts and saved.shape == built.shape):
        return
    out = built.clone()
    at_old = at_new = 0
    for o, n in zip(old_parts, new_parts):
        k = min(o, n)
        out[at_new:at_new + k] = saved[at_old:at_old + k]
        at_old, at_new = at_old + o, at_new + n
    weights[POSITIONS] = out


def grow_decoder(model: MemoryQA, saved_depth: int) -> list[str]:
    """Zero the output projections of the layers above ``saved_depth``: pre-norm residual
    blocks then pass their input through, so the grown model first answers as the checkpoint did."""
    grown = model.decoder.layers[saved_depth:]
    with torch.no_grad():
        for layer in grown:
            for proj in (layer.self_attn.out_proj, layer.multihead_attn.out_proj, layer.linear2):
                proj.weight.zero_()
                proj.bias.zero_()
    return sorted(f"decoder.layers.{saved_depth + i}.{name}" for i, layer in enumerate(grown) for name in layer.state_dict())


def fresh_fusion(weights: dict, model: MemoryQA) -> list[str]:
    """Fusion tensors left as built: those the checkpoint lacks or has in another shape."""
    mine = model.state_dict()
    if model.fusion is None:
        for k in [k for k in weights if k.startswith("fusion.")]:
            del weights[k]
        return []
    return sorted(k for k in mine if k.startswith("fusion.") and k != "fusion.table"
                  and (k not in weights or weights[k].shape != mine[k].shape))


def init_from_checkpoint(model: MemoryQA, ckpt_dir: Path, tokenizer_path: Path) -> dict:
    """Load ``ckpt_dir``'s weights into ``model``, fitted as above.

    Returns ``{"tokens_carried", "tokens_new", "fresh"}`` (fresh: tensors left as built).
    """
    ckpt_dir = Path(ckpt_dir)
    if not (ckpt_dir / WEIGHTS).is_file():
        raise FileNotFoundError(f"train.init_from: {ckpt_dir / WEIGHTS} not found")
    saved = read_config(ckpt_dir)
    weights = load_file(str(ckpt_dir / WEIGHTS))
    weights.pop("fusion.table", None)  # entity ids index this run's KG
    new_vocab = load_tokenizer(tokenizer_path).get_vocab()
    carried = carry_token_rows(weights, model, load_tokenizer(ckpt_dir / TOKENIZER).get_vocab(), new_vocab)
    old_slots = saved["model"]["memory"].get("slots", 0)
    grow_slots(weights, model, old_slots)
    old, new = Vocab(**saved["vocab"]), model.vocab
    relayout_positions(weights, model, [old_slots, old.segment_len, old.max_question_len],
                       [model.cfg.slots, new.segment_len, new.max_question_len])
    fresh = fresh_fusion(weights, model) + grow_decoder(model, saved["model"]["decoder_layers"])
    weights = {k: v for k, v in weights.items() if k not in fresh}
    mine = model.state_dict()
    expected = mine.keys() - {"fusion.table"} - set(fresh)
    wrong = sorted(weights.keys() ^ expected) + sorted(k for k in weights if k in mine and weights[k].shape != mine[k].shape)
    if wrong:
        raise ValueError(f"train.init_from: {ckpt_dir} does not fit model config "
                         f"(differs in {', '.join(wrong[:5])}{' ...' if len(wrong) > 5 else ''})")
    model.load_state_dict(weights, strict=False)
    return {"tokens_carried": carried, "tokens_new": len(new_vocab) - carried, "fresh": fresh}
