"""The backbone: a ``transformers`` model that reads one segment at a time.

It takes embeddings, not token ids, because a memory puts its slots in front
of the segment's tokens (``stmem/memory.py``). Built from sizes
(``model.backbone.type`` names any transformers model type) or loaded from a
local pretrained directory; saved checkpoints rebuild it from its config alone.
"""
from __future__ import annotations

import inspect

import torch
from torch import nn
from transformers import AutoConfig, AutoModel

from stmem.config import BackboneConfig


def _from_config(config) -> nn.Module:
    # BERT's pooler would be an unused head (and DDP would complain about it)
    return AutoModel.from_config(config, **({"add_pooling_layer": False} if config.model_type == "bert" else {}))


class Backbone(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.hidden_size = model.config.hidden_size
        self.num_heads = model.config.num_attention_heads
        # Encoders with rotary positions (roformer) take no position ids.
        self._takes_position_ids = "position_ids" in inspect.signature(model.forward).parameters

    @classmethod
    def build(cls, cfg: BackboneConfig, *, vocab_size: int, pad_id: int, max_positions: int,
              dropout: float) -> "Backbone":
        if cfg.path:
            kind = AutoConfig.from_pretrained(cfg.path).model_type
            # safetensors only: a pytorch_model.bin is a pickle, and unpickling can run code
            return cls(AutoModel.from_pretrained(cfg.path, use_safetensors=True,
                                                 **({"add_pooling_layer": False} if kind == "bert" else {})))
        config = AutoConfig.for_model(
            cfg.type, vocab_size=vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
            hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
            max_position_embeddings=max_positions, pad_token_id=pad_id)
        return cls(_from_config(config))

    @classmethod
    def from_saved(cls, saved: dict) -> "Backbone":
        """Rebuild from ``saved_config()``: the checkpoint never needs the original directory."""
        conf = dict(saved)
        return cls(_from_config(AutoConfig.for_model(conf.pop("model_type"), **conf)))

    def saved_config(self) -> dict:
        return self.model.config.to_diff_dict()

    @property
    def word_embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def forward(self, x: torch.Tensor, pad: torch.Tensor, first_position: int = 0) -> torch.Tensor:
        """(B, N, H) states of (B, N, H) input embeddings; ``pad`` (B, N) True where padding.

        ``first_position``: the position of the first input, for a segment read
        without the memory in front of it that must keep the positions it has
        with the memory there.
        """
        where = {}
        if first_position and self._takes_position_ids:
            n = x.shape[1]
            where["position_ids"] = torch.arange(first_position, first_position + n, device=x.device).expand(len(x), n)
        return self.model(inputs_embeds=x, attention_mask=(~pad).long(), **where).last_hidden_state
