"""``model.init: mimetic``: attention weights that start out matching a token to tokens like it.

Trockman & Kolter, "Mimetic Initialization of Self-Attention Layers" (ICML 2023): trained attention heads
have W_q W_k^T close to a multiple of the identity plus noise, and W_v W_o close to minus one. Starting
there lets a transformer trained on little data learn as one trained on much more. Here the reason is
specific: under BERT's initialisation (weights of std 0.02) every attention is uniform, so the question's
"Mary" finds no slot that holds a sentence about Mary until the matching is learnt, and on 1,000 bAbI
questions when that happens is luck (docs/results.md, "Issue 24"). With W_q W_k^T ~ I a token attends to
states that share its words from the first step, which is MemN2N's read: a dot product of bags of words.

For each head: A = alpha1 Z / sqrt(D) + beta1 I, Z standard normal (D x D); its top head_dim singular
directions give W_q and W_k (q . k = x^T A_h y). W_v W_o = alpha2 Z' / sqrt(D) - beta2 I the same way,
over all heads at once. The memory's value projection starts as the identity, so a slot holds its
sentence in the space the question's queries match against.
"""
from __future__ import annotations

import torch
from torch import nn

# the paper's values for vision transformers (its Table 5 keeps them for language)
import os
ALPHA1, BETA1, ALPHA2, BETA2 = map(float, os.environ.get("STMEM_MIMETIC", "0.7,0.7,0.4,0.4").split(","))


def _factors(dim: int, rank: int, alpha: float, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """L (dim, rank) and R (rank, dim) with L R the best rank-``rank`` approximation of alpha Z/sqrt(dim) + beta I."""
    a = alpha * torch.randn(dim, dim) / dim ** 0.5 + beta * torch.eye(dim)
    u, s, vh = torch.linalg.svd(a)
    root = s[:rank].sqrt()
    return u[:, :rank] * root, root[:, None] * vh[:rank]


@torch.no_grad()
def mimetic_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor, heads: int) -> None:
    """Set (D, D) nn.Linear-layout weights in place: q = W_q x, so W_q^T W_k plays the paper's W_q W_k^T."""
    dim = q.shape[1]
    hd = dim // heads
    for h in range(heads):
        left, right = _factors(dim, hd, ALPHA1, BETA1)
        rows = slice(h * hd, (h + 1) * hd)
        q[rows] = left.T  # (q x) . (k y) = x^T left right y
        k[rows] = right
    left, right = _factors(dim, dim, ALPHA2, -BETA2)
    v.copy_(right)  # o(v(x)) = left right x
    o.copy_(left)


def mimetic_init(backbone: nn.Module, heads: int, decoder: nn.TransformerDecoder | None,
                 memory_value: nn.Linear | None) -> None:
    """Every self-attention of a BERT-style ``backbone`` (``query``/``key``/``value`` and the output
    projection), the ``decoder``'s self- and cross-attention, and ``memory_value`` as the identity."""
    found = 0
    for module in backbone.modules():
        if all(hasattr(module, n) for n in ("self", "output")) and hasattr(module.self, "query"):
            s = module.self
            mimetic_attention(s.query.weight, s.key.weight, s.value.weight, module.output.dense.weight, heads)
            found += 1
    if not found:
        raise ValueError(f"model.init: mimetic knows BERT-style attention (query, key, value); "
                         f"{type(backbone).__name__} has none")
    for layer in decoder.layers if decoder is not None else ():
        for attn in (layer.self_attn, layer.multihead_attn):
            q, k, v = attn.in_proj_weight.data.chunk(3)
            mimetic_attention(q, k, v, attn.out_proj.weight.data, attn.num_heads)
    if memory_value is not None:
        with torch.no_grad():
            memory_value.weight.copy_(torch.eye(memory_value.weight.shape[0]))
            memory_value.bias.zero_()
