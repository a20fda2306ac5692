"""Short-term memories: what carries earlier segments into later ones.

Every memory is a (B, slots, H) tensor that starts at zero, so everything in
it was written from the input, and offers the model two calls per segment:

    read(memory, x, pad)        the backbone's input: the memory in front of
                                the segment's (B, L, H) token embeddings
    write(memory, states, pad)  the memory after the segment, from the
                                backbone's states over what ``read`` gave it

``RoutedMemory`` (``{type: routed}``) writes through a gate; ``MemoryTokens``
(``{type: tokens}``, the Recurrent Memory Transformer) carries the memory
tokens' outputs over; ``NoMemory`` (``{type: none}``) is the ablation.
"""
from __future__ import annotations

import torch
from torch import nn

from stmem.config import MemoryConfig, NoMemoryConfig, RoutedMemoryConfig, TokenMemoryConfig


class Memory(nn.Module):
    slots: int

    def read(self, memory: torch.Tensor, x: torch.Tensor, pad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[memory ; tokens] and its padding mask: the segment's tokens attend to the slots."""
        return torch.cat([memory, x], dim=1), torch.cat([pad.new_zeros(pad.shape[0], memory.shape[1]), pad], dim=1)

    def write(self, memory: torch.Tensor, states: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class SlotRouter(nn.Module):
    """Each token's share for each slot: a softmax over the slots plus a learned option to write nowhere.

    score(slot, token) = (q(c) + slot_key) . key / sqrt(H), slot attention's
    competition, but free to write nothing. A module of its own so that a
    forward hook can read the routing (benchmarks/routing.py).
    """

    def __init__(self, hidden: int, slots: int, route: str, hard: bool = False):
        super().__init__()
        self.route, self.hard = route, hard
        self.slot_keys = nn.Parameter(torch.randn(slots, hidden))
        self.q = nn.Linear(hidden, hidden)  # from the slots: what each one holds
        self.no_write = nn.Parameter(torch.zeros(1))
        if hard:
            # a slot never written (exactly zero: the memory starts at zero) is preferred by this much, so the
            # first segments each take a slot of their own instead of overwriting one another
            self.empty_bias = nn.Parameter(torch.tensor(4.0))

    def prepare(self, keys: torch.Tensor, pad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The scores' terms that do not depend on the memory, for (..., L, H) token keys.

        score = c . (key W_q) / sqrt(H) + (b_q + slot_key) . key / sqrt(H): ``kq``
        (..., L, H) and ``base`` (..., K, L). Padding is scored -inf, so a pad
        token goes nowhere.
        """
        scale = keys.shape[-1] ** -0.5
        base = torch.einsum("kh,...lh->...kl", self.q.bias + self.slot_keys, keys) * scale
        return keys @ self.q.weight * scale, base.masked_fill(pad.unsqueeze(-2), float("-inf"))

    def forward(self, prev: torch.Tensor, kq: torch.Tensor, base: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """(B, K, L): what each token of the segment gives each of the (B, K, H) memory's slots."""
        scores = torch.baddbmm(base, prev, kq.transpose(1, 2))
        if self.hard:
            scores = scores + self.empty_bias * (prev == 0).all(-1, keepdim=True)
        scores = torch.cat([scores, self.no_write.expand(scores.shape[0], 1, scores.shape[2])], dim=1)
        if self.route == "segment":
            # One softmax of the segment's mean score, given by each of its real
            # tokens. (The mean of the tokens' own softmaxes stayed spread over
            # several slots on one qa1 seed in three: most tokens, "went", "to",
            # "the", say nothing of whom the sentence is about.)
            real = (~pad).unsqueeze(1)
            mean = scores.masked_fill(~real, 0).sum(-1, keepdim=True) / real.sum(-1, keepdim=True).clamp(min=1)
            return self._shares(mean)[:, :-1] * real
        return self._shares(scores)[:, :-1]  # each token's share per slot; the rest goes nowhere

    def _shares(self, scores: torch.Tensor) -> torch.Tensor:
        """The softmax over slots (dim 1) of (B, K + 1, L) scores; ``hard``: its argmax, one-hot, with the
        softmax's gradient (straight-through)."""
        soft = scores.softmax(dim=1)
        if not self.hard:
            return soft
        one_hot = torch.zeros_like(soft).scatter_(1, soft.argmax(dim=1, keepdim=True), 1.0)
        return one_hot + soft - soft.detach()


class RoutedMemory(Memory):
    """Slots that compete for each token of a segment, written through a gate.

    Each token's state goes to one slot, or nowhere (``SlotRouter``). Slot i's
    candidate c~_i is the mean of what was routed to it, and

        c_t = g * c~_t + (1 - g) * c_{t-1},   g = (1 - exp(-m_i)) * sigmoid(W_g [c~_t, c_{t-1}])

    with m_i the token mass routed to slot i: a slot no token chose keeps its
    content exactly, so a fact survives any number of segments about
    something else. ``route="segment"``: a segment's tokens share one routing
    (a softmax of their mean score), so a sentence is written whole to the slots it chose.
    """

    def __init__(self, hidden: int, slots: int, route: str = "token", hard: bool = False):
        super().__init__()
        self.slots = slots
        self.router = SlotRouter(hidden, slots, route, hard)
        self.k = nn.Linear(hidden, hidden)  # routing keys, from the tokens
        self.v = nn.Linear(hidden, hidden)  # what is written
        self.norm = nn.LayerNorm(hidden)
        self.gate = nn.Linear(2 * hidden, hidden)

    def write(self, memory: torch.Tensor, states: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        k = memory.shape[1]  # ``read`` put the slots first; the segment's tokens follow
        return self.step(memory, *self.prepare(states[:, k:], pad[:, k:]))

    def summary(self, states: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """What a segment routed whole writes: the normalised mean value of (..., L, H) token states
        (``reconstruct``'s input); an all-pad segment gives the norm of zero."""
        real = (~pad).unsqueeze(-1).to(states.dtype)
        return self.norm((self.v(states) * real).sum(-2) / real.sum(-2).clamp(min=1))

    def write_each(self, memory: torch.Tensor, states: torch.Tensor, pad: torch.Tensor,
                   every: bool = False) -> torch.Tensor:
        """Write (B, S, L, H) states of S segments read without the memory, in story order; ``every``: the
        memory after each of 0..S of them, (B, S + 1, K, H)."""
        # Everything that does not depend on the memory is computed for all
        # segments at once; unbind, not indexing per step: an indexed view's
        # backward writes a zero-filled gradient as large as the whole.
        after = [memory]
        for parts in zip(*(t.unbind(1) for t in self.prepare(states, pad))):
            memory = self.step(memory, *parts)
            after.append(memory)
        return torch.stack(after, dim=1) if every else memory

    def prepare(self, tokens: torch.Tensor, pad: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """What the write needs of (..., L, H) token states that does not depend on the memory."""
        return (*self.router.prepare(self.k(tokens), pad), self.v(tokens), pad)

    def step(self, prev: torch.Tensor, kq: torch.Tensor, base: torch.Tensor, values: torch.Tensor,
             pad: torch.Tensor) -> torch.Tensor:
        """The write: (B, K, H) memory and one segment's ``prepare``d terms -> the new memory."""
        route = self.router(prev, kq, base, pad)
        mass = route.sum(-1, keepdim=True)  # an all-pad segment: mass 0, g 0, the memory stays as it was
        cand = self.norm(route @ values / (mass + 1e-6))
        g = (1 - torch.exp(-mass)) * torch.sigmoid(self.gate(torch.cat([cand, prev], dim=-1)))
        return prev + g * (cand - prev)  # = g * cand + (1 - g) * prev


class MemoryTokens(Memory):
    """Recurrent Memory Transformer (Bulatov et al. 2022): the memory tokens' outputs are the next memory."""

    def __init__(self, slots: int):
        super().__init__()
        self.slots = slots

    def write(self, memory: torch.Tensor, states: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        return states[:, :memory.shape[1]]


class NoMemory(Memory):
    """Nothing carried over: the model reads the last segment and the question alone."""

    slots = 0

    def write(self, memory: torch.Tensor, states: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        return memory


def build_memory(cfg: MemoryConfig, hidden: int) -> Memory:
    if isinstance(cfg, RoutedMemoryConfig):
        return RoutedMemory(hidden, cfg.slots, cfg.route, cfg.hard)
    if isinstance(cfg, TokenMemoryConfig):
        return MemoryTokens(cfg.slots)
    assert isinstance(cfg, NoMemoryConfig)
    return NoMemory()
