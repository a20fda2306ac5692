"""The memory-augmented QA model.

Reading order: ``MemoryQA.forward`` walks the context segment by segment.
For each segment the encoder sees [memory slots ; segment tokens], so the
tokens read the memory by self-attention; then the memory writes what the
segment said into the slots, always as

    c_t = g_t * c~_t + (1 - g_t) * c_{t-1}

``RoutedSlotMemory`` (the default, ``memory_type: routed``) routes each
token to one slot or to none; slot i's candidate c~ is the mean of what it
received and g = (1 - exp(-m_i)) * sigmoid(W_g [c~, c_{t-1}]), m_i the token
mass it received, so an unchosen slot keeps its content exactly.
``GatedSlotMemory`` (``gated``) lets every slot read the whole segment by
attention, c~_t = Attn(slot queries + c_{t-1}, segment), g_t = sigmoid(W_g
[c~_t, c_{t-1}]); it forgets within a few segments (docs/benchmarks.md).

With ``segment_sees_memory: false`` (routed only) the encoder reads each
segment alone, all segments of a batch in one call, and the routed write then
runs over their states in story order: the same recurrence, without the
memory's view inside the encoder, at close to a plain encoder's cost.

c_0 is zero: everything in memory was written from the input. With
``memory_type: rmt`` the slots are Recurrent Memory Transformer tokens
instead: their encoder outputs are the next segment's memory, no gate.

After the last segment is written, the question is encoded as [memory ;
last segment ; question]: recent facts are visible directly, older ones only
through the memory. A small transformer decoder generates the answer from
those states, reading the question first so its queries know what was asked. Tokens linked to a KG
entity get that entity's (frozen) embedding projected and added through a
learned gate before the encoder.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel

from stmem.config import ModelConfig


@dataclass(frozen=True)
class Vocab:
    """What the model needs to know about the tokenizer and the KG."""

    vocab_size: int
    pad_id: int
    bos_id: int
    eos_id: int
    segment_len: int
    max_question_len: int
    max_answer_len: int
    num_entities: int = 0
    entity_dim: int = 0
    pack_sentences: bool = True  # how the dataset made segments; inference does the same

    @classmethod
    def from_dataset(cls, info: dict, entity_embeddings: torch.Tensor | None) -> "Vocab":
        """From the dataset stage's ``dataset_info.json`` and the KG stage's embeddings (if fused)."""
        return cls(vocab_size=info["vocab_size"], pad_id=info["pad_id"], bos_id=info["bos_id"],
                   eos_id=info["eos_id"], segment_len=info["segment_len"],
                   max_question_len=info["max_question_len"], max_answer_len=info["max_answer_len"],
                   num_entities=0 if entity_embeddings is None else entity_embeddings.shape[0],
                   entity_dim=0 if entity_embeddings is None else entity_embeddings.shape[1],
                   pack_sentences=info.get("pack_sentences", True))


class GatedSlotMemory(nn.Module):
    """Memory slots written from a segment's hidden states through a gate."""

    def __init__(self, hidden: int, slots: int, heads: int):
        super().__init__()
        # Slot queries say *where* each slot looks; content only comes from input.
        self.slot_queries = nn.Parameter(torch.randn(slots, hidden) * 0.02)
        self.read = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.norm = nn.LayerNorm(hidden)
        self.gate = nn.Linear(2 * hidden, hidden)

    def forward(self, prev: torch.Tensor, states: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        """``states``: encoder outputs of [memory slots ; segment tokens], the slots first."""
        k = prev.shape[1]
        attended, _ = self.read(self.slot_queries + prev, states, states, key_padding_mask=pad_mask,
                                need_weights=False)
        # The encoder output at each slot's own position is that slot after it
        # read the segment: adding it gives old content a short path forward,
        # which is what lets facts survive many segments.
        cand = self.norm(states[:, :k] + attended)
        g = torch.sigmoid(self.gate(torch.cat([cand, prev], dim=-1)))
        return g * cand + (1 - g) * prev


class RoutedSlotMemory(nn.Module):
    """Memory slots that compete for each token of a segment.

    Each token's state is routed to one slot, or to "nowhere", by a softmax
    over the slots plus a learned no-write option (slot attention's
    competition, but also free to write nothing). Slot i's candidate is the
    mean of what was routed to it, and its gate is

        g_i = (1 - exp(-m_i)) * sigmoid(W_g [c~_i, c_{i,t-1}])

    where m_i is the token mass routed to slot i: a slot no token chose keeps
    its content exactly, so a fact survives any number of segments about
    something else.

    ``route``: "token" routes each token on its own. "segment": a segment's
    tokens share one routing, the mean of their own, so a sentence (one per
    segment with ``pack_sentences: false``) is written whole to the slots it
    chose: its place cannot go to another slot than its person. "ring": the
    t-th segment of a story is written whole to slot t mod K, whatever it
    says, so up to K sentences are each kept apart in order (the layout of
    MemN2N's memory, through the same gated write); which of them answers a
    question is left to the read.

    ``ring_slots``: that many more slots after the ``slots`` routed ones,
    written as a ring beside the routing: the memory is then (B, slots +
    ring_slots, H).
    """

    def __init__(self, hidden: int, slots: int, route: str = "token", ring_slots: int = 0):
        super().__init__()
        self.route_by, self.ring_slots = route, ring_slots
        self.slot_keys = nn.Parameter(torch.randn(slots, hidden))
        self.q = nn.Linear(hidden, hidden)  # from the slots: what each one holds
        self.k = nn.Linear(hidden, hidden)  # from the tokens
        self.v = nn.Linear(hidden, hidden)
        self.no_write = nn.Parameter(torch.zeros(1))
        self.norm = nn.LayerNorm(hidden)
        self.gate = nn.Linear(2 * hidden, hidden)

    def forward(self, prev: torch.Tensor, states: torch.Tensor, pad_mask: torch.Tensor,
                index: torch.Tensor | None = None) -> torch.Tensor:
        """``states``: encoder outputs of [memory slots ; segment tokens], the slots first;
        ``index``: (B,) each row's segment index in its story (for a ring)."""
        k_slots = prev.shape[1]
        return self.write(prev, *self.project(states[:, k_slots:]), pad_mask[:, k_slots:], index)

    def project(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token keys and values; independent of the memory, so any number of segments can go at once."""
        return self.k(tokens), self.v(tokens)

    def prepare(self, keys: torch.Tensor, pad: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The routing scores' terms that do not depend on the memory, for (..., L, H) keys.

        score(slot, token) = (q(c) + slot_key) . key / sqrt(H) = c . (key W_q) / sqrt(H)
        + (b_q + slot_key) . key / sqrt(H): ``kq`` (..., L, H) and ``base`` (..., K, L)
        are computed once for every segment of a batch, so the sequential write
        is left with one batched product per segment. Padding is scored -inf, so a
        pad token goes nowhere.
        """
        scale = keys.shape[-1] ** -0.5
        kq = keys @ self.q.weight * scale
        base = torch.einsum("kh,...lh->...kl", self.q.bias + self.slot_keys, keys) * scale
        if pad is not None:
            base = base.masked_fill(pad.unsqueeze(-2), float("-inf"))
        return kq, base

    def shares(self, prev: torch.Tensor, kq: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """(B, K+1, L): each token's share for each slot and, last, for writing nowhere."""
        scores = torch.baddbmm(base, prev, kq.transpose(1, 2))
        scores = torch.cat([scores, self.no_write.expand(scores.shape[0], 1, scores.shape[2])], dim=1)
        return scores.softmax(dim=1)

    def route(self, prev: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """(B, K+1, L) shares of one segment's (B, L, H) keys, padding not masked."""
        return self.shares(prev, *self.prepare(keys))

    def write(self, prev: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, pad: torch.Tensor,
              index: torch.Tensor | None = None) -> torch.Tensor:
        """One segment's write: (B, K, H) memory, (B, L, H) token keys/values, (B, L) padding."""
        return self.step(prev, *self.prepare(keys, pad), values, pad, index)

    @property
    def needs_index(self) -> bool:
        """Whether a write needs each row's segment index in its story (a ring does)."""
        return self.route_by == "ring" or self.ring_slots > 0

    def routing(self, prev: torch.Tensor, kq: torch.Tensor, base: torch.Tensor, pad: torch.Tensor,
                index: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K, L): what each token of one segment gives each slot (the rest goes nowhere)."""
        real = (~pad).unsqueeze(1)
        if self.needs_index and index is None:
            raise ValueError("ring routing needs each row's segment index in its story")
        if self.route_by == "ring":
            return F.one_hot(index % prev.shape[1], prev.shape[1]).to(prev.dtype).unsqueeze(-1) * real
        routed = prev[:, :prev.shape[1] - self.ring_slots]
        # each token's share per slot; ``prepare`` scored padding -inf, so its share is 0
        route = self.shares(routed, kq, base)[:, :routed.shape[1]]
        if self.route_by == "segment":
            route = route.sum(-1, keepdim=True) / real.sum(-1, keepdim=True).clamp(min=1) * real
        if self.ring_slots:
            ring = F.one_hot(index % self.ring_slots, self.ring_slots).to(prev.dtype).unsqueeze(-1) * real
            route = torch.cat([route, ring], dim=1)
        return route

    def step(self, prev: torch.Tensor, kq: torch.Tensor, base: torch.Tensor, values: torch.Tensor,
             pad: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """One segment's write from its ``prepare``d keys."""
        route = self.routing(prev, kq, base, pad, index)
        mass = route.sum(-1, keepdim=True)  # an all-pad segment: mass 0, g 0, the memory stays as it was
        cand = self.norm(route @ values / (mass + 1e-6))
        g = (1 - torch.exp(-mass)) * torch.sigmoid(self.gate(torch.cat([cand, prev], dim=-1)))
        return prev + g * (cand - prev)  # = g * cand + (1 - g) * prev


class EntityFusion(nn.Module):
    """Adds projected KG entity embeddings to linked tokens through a gate."""

    def __init__(self, entity_embeddings: torch.Tensor, hidden: int):
        super().__init__()
        # Row 0 is "no entity". The KG embeddings stay frozen: they are the KG
        # stage's output, and unseen entities must keep their KG meaning.
        table = torch.cat([torch.zeros(1, entity_embeddings.shape[1]), entity_embeddings.float()])
        self.register_buffer("table", table)
        self.proj = nn.Linear(table.shape[1], hidden)
        self.gate = nn.Linear(2 * hidden, hidden)

    def forward(self, x: torch.Tensor, ent: torch.Tensor) -> torch.Tensor:
        # Only linked tokens are computed: the gate is as wide as an encoder
        # layer's projections, and most positions (other words, padding) are
        # not linked.
        linked = (ent > 0).nonzero(as_tuple=True)
        xs = x[linked]
        e = self.proj(self.table[ent[linked]])
        g = torch.sigmoid(self.gate(torch.cat([xs, e], dim=-1)))
        return x.index_put(linked, xs + g * e)


class MemoryQA(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab: Vocab, entity_embeddings: torch.Tensor | None = None,
                 encoder_config: dict | None = None):
        """``encoder_config`` rebuilds a saved encoder without its weights or directory."""
        super().__init__()
        self.cfg, self.vocab = cfg, vocab
        if encoder_config is not None:
            conf = dict(encoder_config)
            model_type = conf.pop("model_type")
            self.encoder = AutoModel.from_config(AutoConfig.for_model(model_type, **conf),
                                                 **({"add_pooling_layer": False} if model_type == "bert" else {}))
        elif cfg.pretrained_encoder:
            self.encoder = AutoModel.from_pretrained(cfg.pretrained_encoder, add_pooling_layer=False)
        else:
            conf = AutoConfig.for_model(
                cfg.encoder_type, vocab_size=vocab.vocab_size, hidden_size=cfg.hidden_size,
                num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                intermediate_size=cfg.intermediate_size, hidden_dropout_prob=cfg.dropout,
                attention_probs_dropout_prob=cfg.dropout,
                max_position_embeddings=cfg.slots + vocab.segment_len + vocab.max_question_len,
                pad_token_id=vocab.pad_id)
            self.encoder = AutoModel.from_config(conf, **({"add_pooling_layer": False} if cfg.encoder_type == "bert" else {}))
        hidden = self.encoder.config.hidden_size
        heads = self.encoder.config.num_attention_heads
        self.memory = (GatedSlotMemory(hidden, cfg.memory_slots, heads) if cfg.memory_type == "gated" else
                       RoutedSlotMemory(hidden, cfg.memory_slots, cfg.memory_route, cfg.ring_slots)
                       if cfg.memory_type == "routed" else None)
        self.fusion = None
        if cfg.kg_fusion:
            if entity_embeddings is None:
                entity_embeddings = torch.zeros(vocab.num_entities, vocab.entity_dim)
            self.fusion = EntityFusion(entity_embeddings, hidden)
        self.answer_pos = nn.Embedding(vocab.max_question_len + vocab.max_answer_len + 1, hidden)
        layer = nn.TransformerDecoderLayer(hidden, heads, 2 * hidden, cfg.dropout, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, cfg.decoder_layers)
        self.out_norm = nn.LayerNorm(hidden)
        # Encoders with rotary positions (roformer) take no position ids.
        self._takes_position_ids = "position_ids" in inspect.signature(self.encoder.forward).parameters
        # Truncated backpropagation through segments, set by stmem.train
        # (train.bptt_segments): None lets the gradient run back through all segments.
        self.bptt_segments: int | None = None

    @property
    def word_embeddings(self) -> nn.Embedding:
        return self.encoder.get_input_embeddings()

    def _embed(self, ids: torch.Tensor, ent: torch.Tensor) -> torch.Tensor:
        x = self.word_embeddings(ids)
        return self.fusion(x, ent) if self.fusion is not None else x

    def _encode(self, memory: torch.Tensor, ids: torch.Tensor, ent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder over [memory ; tokens]; returns states and their padding mask."""
        pad = ids == self.vocab.pad_id
        pad = torch.cat([torch.zeros_like(pad[:, :1]).expand(-1, memory.shape[1]), pad], dim=1)
        x = torch.cat([memory, self._embed(ids, ent)], dim=1)
        states = self.encoder(inputs_embeds=x, attention_mask=(~pad).long()).last_hidden_state
        return states, pad

    def read_context(self, segments: torch.Tensor, seg_ents: torch.Tensor) -> torch.Tensor:
        """Run the memory over (B, S, L) segments; empty (all-pad) segments leave it unchanged."""
        if not self.cfg.memory:
            # Ablation: nothing is carried over from earlier segments.
            segments, seg_ents = segments[:, -1:], seg_ents[:, -1:]
        B, S, _ = segments.shape
        hidden = self.encoder.config.hidden_size
        memory = segments.new_zeros(B, self.cfg.slots, hidden, dtype=self.word_embeddings.weight.dtype)
        if not self.cfg.segment_sees_memory:
            return self._write_encoded_segments(memory, segments, seg_ents)
        # only a ring needs each row's place in its story
        start = self._story_starts(segments) if getattr(self.memory, "needs_index", False) else None
        for t in range(S):
            memory = self._truncate(memory, t, S)
            ids = segments[:, t]
            rows = (ids != self.vocab.pad_id).any(dim=1).nonzero().squeeze(1)
            if len(rows) == 0:
                continue
            # Stories differ in length: only the rows whose segment t holds
            # tokens are encoded, the others keep their memory as it is.
            part = len(rows) < B
            prev = memory[rows] if part else memory
            states, pad = self._encode(prev, ids[rows] if part else ids, seg_ents[rows, t] if part else seg_ents[:, t])
            if self.cfg.memory_type == "rmt":
                written = states[:, : memory.shape[1]]  # RMT: memory tokens' outputs carry on
            elif self.cfg.memory_type == "gated":
                written = self.memory(prev, states, pad)
            else:  # routed; a ring writes by the row's segment index in its story
                written = self.memory(prev, states, pad, None if start is None else t - start[rows])
            memory = memory.index_copy(0, rows, written) if part else written
        return memory

    def _story_starts(self, segments: torch.Tensor) -> torch.Tensor:
        """(B,) the index of each story's first non-empty segment (S for an empty story)."""
        real = (segments != self.vocab.pad_id).any(dim=2)
        return torch.where(real.any(dim=1), real.int().argmax(dim=1), segments.shape[1])

    def _truncate(self, memory: torch.Tensor, t: int, S: int) -> torch.Tensor:
        """Detach the memory before segment t when truncated BPTT says so."""
        k = self.bptt_segments
        if k and t and (S - t) % k == 0:
            # The loss comes after the last segment read here, so detaching
            # every k segments, counted back from it, lets the gradient reach
            # only the last k memory writes (stories are right-aligned).
            return memory.detach()
        return memory

    def _write_encoded_segments(self, memory: torch.Tensor, segments: torch.Tensor,
                                seg_ents: torch.Tensor) -> torch.Tensor:
        """``segment_sees_memory: false``: encode every segment at once, then write them in order.

        The encoder never sees the memory here, so the (B*S) segments go through
        it as one batch, as a plain encoder would read them; only the routed
        write, a few small matrix products per segment, runs one segment after
        another.
        """
        B, S, L = segments.shape
        K = memory.shape[1]
        # Rows sorted by where their story starts (stories are right-aligned, so
        # short ones start late): the rows with anything to write at segment t
        # are then the first n_t, and the segments go through the encoder in
        # story order, segment t of rows 0..n_t-1, so each step's share of the
        # encoder output is one contiguous block.
        start = self._story_starts(segments)
        order = start.argsort(stable=True)
        start = start[order]
        active = (start[None, :] <= torch.arange(S, device=start.device)[:, None]).sum(1).tolist()
        if not sum(active):
            return memory
        memory = memory[order]
        pick = torch.cat([order[:n] * S + t for t, n in enumerate(active) if n])
        ids, ents = segments.flatten(0, 1)[pick], seg_ents.flatten(0, 1)[pick]
        pad = ids == self.vocab.pad_id  # a segment left empty inside a story is read too, and writes nothing
        # Tokens take the positions they have when the memory sits in front of
        # them, as in the question read, so a position means the same in both.
        where = {"position_ids": torch.arange(K, K + L, device=ids.device).expand(len(ids), L)} \
            if self._takes_position_ids else {}
        states = self.encoder(inputs_embeds=self._embed(ids, ents), attention_mask=(~pad).long(),
                              **where).last_hidden_state
        keys, values = self.memory.project(states)
        kq, base = self.memory.prepare(keys, pad)  # every segment's routing terms in one go
        # split, not indexing per step: an indexed view's backward writes a
        # zero-filled gradient as large as the whole, once per segment.
        ring = self.memory.needs_index  # only a ring needs each row's place in its story per step
        sizes = [n for n in active if n]
        steps = zip(kq.split(sizes), base.split(sizes), values.split(sizes), pad.split(sizes))
        for t, n in enumerate(active):
            if not n:
                continue
            parts = next(steps)
            memory = self._truncate(memory, t, S)
            new = self.memory.step(memory[:n], *parts, t - start[:n] if ring else None)
            memory = new if n == B else torch.cat([new, memory[n:]])
        return memory[order.argsort()]

    def _decode(self, enc: torch.Tensor, enc_pad: torch.Tensor, question: torch.Tensor,
                prefix: torch.Tensor) -> torch.Tensor:
        """Logits after each token of ``prefix`` (BOS + answer so far).

        The decoder reads [question ; prefix] causally, so its queries into the
        encoder states already know what was asked: with the question only on
        the encoder side, a one-layer decoder's first query would be the same
        for every question.
        """
        # BOS and the answer always take the positions after max_question_len,
        # whatever the question lengths in the batch, so a question padded to
        # the batch's longest reads the same as one padded to the maximum.
        seq = torch.cat([question, prefix], dim=1)
        n = seq.shape[1]
        positions = torch.cat([torch.arange(question.shape[1], device=seq.device),
                               self.vocab.max_question_len + torch.arange(prefix.shape[1], device=seq.device)])
        x = self.word_embeddings(seq) + self.answer_pos(positions)
        pad = torch.cat([question == self.vocab.pad_id, torch.zeros_like(prefix, dtype=torch.bool)], dim=1)
        causal = torch.ones(n, n, dtype=torch.bool, device=seq.device).triu(1)  # True = may not attend
        y = self.decoder(x, enc, tgt_mask=causal, tgt_is_causal=True, tgt_key_padding_mask=pad,
                         memory_key_padding_mask=enc_pad)[:, question.shape[1]:]
        # output projection tied to the input embeddings
        return self.out_norm(y) @ self.word_embeddings.weight.T

    def encode_question(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode [memory ; last segment ; question] once the memory has read every segment.

        The last segment is written to memory like the others (a slot holds a
        fact as one vector, which is easy to match against the question) and
        is also visible token by token beside the question.
        """
        seg, ents = batch["segments"], batch["segment_entities"]
        memory = self.read_context(seg, ents)
        ids = torch.cat([seg[:, -1], batch["question"]], dim=1)
        return self._encode(memory, ids, torch.cat([ents[:, -1], batch["question_entities"]], dim=1))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean token cross-entropy of the answer (teacher forcing)."""
        enc, enc_pad = self.encode_question(batch)
        target = batch["answer_ids"]  # (B, A) answer tokens + EOS, pad after
        bos = torch.full_like(target[:, :1], self.vocab.bos_id)
        logits = self._decode(enc, enc_pad, batch["question"], torch.cat([bos, target[:, :-1]], dim=1))
        return F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=self.vocab.pad_id)

    @torch.no_grad()
    def generate(self, batch: dict[str, torch.Tensor]) -> list[list[int]]:
        """Greedy answer token ids (without BOS/EOS) for each example."""
        enc, enc_pad = self.encode_question(batch)
        B = enc.shape[0]
        out = torch.full((B, 1), self.vocab.bos_id, dtype=torch.long, device=enc.device)
        done = torch.zeros(B, dtype=torch.bool, device=enc.device)
        for _ in range(self.vocab.max_answer_len):
            nxt = self._decode(enc, enc_pad, batch["question"], out)[:, -1].argmax(-1)
            nxt = torch.where(done, self.vocab.pad_id, nxt)
            out = torch.cat([out, nxt[:, None]], dim=1)
            done |= nxt == self.vocab.eos_id
            if done.all():
                break
        result = []
        for row in out[:, 1:].tolist():
            toks = []
            for t in row:
                if t in (self.vocab.eos_id, self.vocab.pad_id):
                    break
                toks.append(t)
            result.append(toks)
        return result
