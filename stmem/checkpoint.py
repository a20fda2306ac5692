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
from safetensors.torch import load_model, save_model

from stmem.backbone import TracedBackbone
from stmem.config import ModelConfig
from stmem.model import MemoryQA, Vocab
from stmem.recurrent_lm import RecurrentMemoryLM

WEIGHTS, CONFIG, TOKENIZER, ENTITY_INDEX = "model.safetensors", "model_config.json", "tokenizer.json", "entity_index.parquet"


def save_checkpoint(model: MemoryQA | RecurrentMemoryLM, out_dir: Path, *, spacy_model: str) -> None:
    save_model(model, str(out_dir / WEIGHTS))
    config = {"format_version": 2, "model": model.cfg.model_dump(mode="json"), "vocab": asdict(model.vocab),
              "backbone": model.saved_backbone(), "spacy_model": spacy_model}
    (out_dir / CONFIG).write_text(json.dumps(config, indent=2) + "\n")


def read_config(ckpt_dir: Path) -> dict:
    config = json.loads((Path(ckpt_dir) / CONFIG).read_text())
    if config.get("format_version") != 2:
        raise ValueError(f"{ckpt_dir / CONFIG}: format_version {config.get('format_version')} was written before "
                         "the backbone/memory redesign; retrain the model")
    return config


def load_checkpoint(ckpt_dir: Path, device: str | torch.device = "cpu",
                    traced_backbone: Path | None = None) -> tuple[MemoryQA | RecurrentMemoryLM, dict]:
    """Rebuild the model from ``model_config.json`` and load its weights.

    ``traced_backbone``: this checkpoint's backbone as ``Backbone.save_traced`` wrote it, used in
    place of the transformers model (inference only; transformers is then never imported).
    """
    config = read_config(ckpt_dir)
    # The weights file holds the whole (fine-tuned) backbone, so it is rebuilt
    # from its saved config: the checkpoint never needs the original directory.
    cfg, vocab = ModelConfig.model_validate(config["model"]), Vocab(**config["vocab"])
    if cfg.head == "causal_lm":
        model = RecurrentMemoryLM.build(cfg, vocab, saved=config["backbone"])
    else:
        backbone = TracedBackbone(traced_backbone) if traced_backbone else config["backbone"]
        model = MemoryQA(cfg, vocab, backbone=backbone)
    missing, unexpected = load_model(model, str(Path(ckpt_dir) / WEIGHTS), device=str(device), strict=False)
    # a traced graph also holds the buffers transformers leaves out of its state dict
    missing = [k for k in missing if not (traced_backbone and k in _traced_buffers(model))]
    if missing or unexpected:
        raise ValueError(f"{Path(ckpt_dir) / WEIGHTS}: does not fit the model of {CONFIG} "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.to(device).eval(), config


def _traced_buffers(model: MemoryQA) -> set[str]:
    return {f"backbone.model.{name}" for name, _ in model.backbone.model.named_buffers()}
