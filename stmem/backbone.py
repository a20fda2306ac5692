"""The backbone: a ``transformers`` model that reads one segment at a time.

It takes embeddings, not token ids, because a memory puts its slots in front
of the segment's tokens (``stmem/memory.py``). Built from sizes
(``model.backbone.type`` names any transformers model type) or loaded from a
local pretrained directory; saved checkpoints rebuild it from its config alone.
``TracedBackbone`` is the same forward as TorchScript, for answering without
importing transformers (``stmem predict``).

transformers is imported where a model is built, not with this module: its
model code pulls in torch._dynamo, torch.distributed.tensor and sympy, seconds
that a process answering from a traced backbone does not need to spend.
"""
from __future__ import annotations

import inspect
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from stmem.config import BackboneConfig


def _from_config(config) -> nn.Module:
    from transformers import AutoModel

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
        from transformers import AutoConfig, AutoModel

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
        from transformers import AutoConfig

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

    def save_traced(self, path: Path) -> None:
        """Write this backbone's forward as TorchScript (eval mode: no dropout), checked on other shapes.

        Traced on a padded batch, so the graph keeps the attention mask (transformers drops an
        all-ones mask, and a trace of that would ignore padding); position ids are always given.
        ``RuntimeError`` when the traced graph does not reproduce the model on a batch of another size.
        """
        from transformers.utils import logging as hf_logging

        was_training = self.training
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # tracing reads every attribute: the loss_type notice is noise here
        self.eval()
        try:
            limit = self.model.config.max_position_embeddings
            example = _probe(2, min(8, limit), self.hidden_size, self._takes_position_ids)
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # TracerWarning for the branches a fixed-rank input settles
                traced = torch.jit.trace(self.model, example_kwarg_inputs=example, strict=False, check_trace=False)
                check = _probe(3, min(13, limit), self.hidden_size, self._takes_position_ids, first=min(2, limit - 13))
                want = self.model(**check).last_hidden_state
                got = traced(**check)["last_hidden_state"]
            if not torch.allclose(want, got, atol=1e-5, rtol=1e-4):
                raise RuntimeError(f"the traced {self.model.config.model_type} backbone differs from the model by "
                                   f"{(want - got).abs().max().item():.2e} on a batch of another shape")
            embedding = next(n for n, p in self.model.named_parameters() if p is self.word_embeddings.weight)
            meta = {"hidden_size": self.hidden_size, "num_heads": self.num_heads, "embedding": embedding,
                    "takes_position_ids": self._takes_position_ids}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # see TracedBackbone: why not torch.export
                torch.jit.save(traced, str(path), _extra_files={"stmem.json": json.dumps(meta)})
        finally:
            self.train(was_training)
            hf_logging.set_verbosity(verbosity)


def _probe(batch: int, n: int, hidden: int, positions: bool, first: int = 0) -> dict[str, torch.Tensor]:
    """Random backbone inputs with the last row half padding."""
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(batch, n, dtype=torch.long)
    mask[-1, max(1, n // 2):] = 0
    out = {"inputs_embeds": torch.randn(batch, n, hidden, generator=g), "attention_mask": mask}
    if positions:
        out["position_ids"] = torch.arange(max(first, 0), max(first, 0) + n).expand(batch, n)
    return out


class TracedBackbone(nn.Module):
    """``Backbone.save_traced``'s file, loaded: the backbone's forward for inference, without transformers.

    Its parameters keep the backbone's names (``model.embeddings...``), so a
    checkpoint's weights load into it as into the ``Backbone``. TorchScript,
    though torch deprecates it for ``torch.export``: loading an exported
    program imports torch._dynamo and sympy, the seconds this class saves.
    """

    def __init__(self, path: Path):
        super().__init__()
        extra = {"stmem.json": ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            self.model = torch.jit.load(str(path), _extra_files=extra)
        meta = json.loads(extra["stmem.json"])
        self.hidden_size, self.num_heads = meta["hidden_size"], meta["num_heads"]
        self._takes_position_ids = meta["takes_position_ids"]
        self._embedding = dict(self.model.named_parameters())[meta["embedding"]]

    @property
    def word_embeddings(self) -> nn.Embedding:
        # the traced graph never calls its embedding (it takes embeddings): an nn.Embedding over its weight
        return nn.Embedding.from_pretrained(self._embedding, freeze=True)

    def forward(self, x: torch.Tensor, pad: torch.Tensor, first_position: int = 0) -> torch.Tensor:
        inputs = {"inputs_embeds": x, "attention_mask": (~pad).long()}
        if self._takes_position_ids:
            n = x.shape[1]
            inputs["position_ids"] = torch.arange(first_position, first_position + n, device=x.device).expand(len(x), n)
        return self.model(**inputs)["last_hidden_state"]
