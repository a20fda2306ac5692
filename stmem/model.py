"""The memory-augmented QA model.

``MemoryQA.forward`` in reading order:

1. ``read_context`` walks the context segment by segment, oldest first. For
   each segment the memory is put in front of its tokens (``memory.read``), the
   backbone reads them, and the memory writes what the segment said
   (``memory.write``; stmem/memory.py). The memory starts at zero, so
   everything in it was written from the input.
2. The question is read as [memory ; last segment ; question]: recent facts
   are visible directly, older ones only through the memory
   (``model.decoder_reads_slots``: the decoder also reads the slots as written).
3. A small transformer decoder generates the answer from those states,
   reading the question first so its queries know what was asked.

Tokens linked to a KG entity get that entity's (frozen) embedding projected
and added through a learned gate before the backbone (``EntityFusion``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from stmem.backbone import Backbone
from stmem.config import ModelConfig, RoutedMemoryConfig
from stmem.memory import build_memory


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
    max_segments: int | None = None  # the newest segments the dataset kept; inference keeps as many

    @classmethod
    def from_dataset(cls, info: dict, entity_embeddings: torch.Tensor | None) -> "Vocab":
        """From the dataset stage's ``dataset_info.json`` and the KG stage's embeddings (if fused)."""
        return cls(vocab_size=info["vocab_size"], pad_id=info["pad_id"], bos_id=info["bos_id"],
                   eos_id=info["eos_id"], segment_len=info["segment_len"],
                   max_question_len=info["max_question_len"], max_answer_len=info["max_answer_len"],
                   num_entities=0 if entity_embeddings is None else entity_embeddings.shape[0],
                   entity_dim=0 if entity_embeddings is None else entity_embeddings.shape[1],
                   pack_sentences=info.get("pack_sentences", True), max_segments=info.get("max_segments"))


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
        # Only linked tokens are computed: most positions are other words or padding.
        linked = (ent > 0).nonzero(as_tuple=True)
        xs = x[linked]
        e = self.proj(self.table[ent[linked]])
        g = torch.sigmoid(self.gate(torch.cat([xs, e], dim=-1)))
        return x.index_put(linked, xs + g * e)


class MemoryQA(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab: Vocab, entity_embeddings: torch.Tensor | None = None,
                 backbone: dict | nn.Module | None = None):
        """``backbone``: a saved backbone config (``Backbone.saved_config``), to rebuild a checkpoint, or a
        backbone already built (a ``TracedBackbone``, to answer without transformers)."""
        super().__init__()
        self.cfg, self.vocab = cfg, vocab
        self.backbone = backbone if isinstance(backbone, nn.Module) else Backbone.from_saved(backbone) \
            if backbone is not None else Backbone.build(
            cfg.backbone, vocab_size=vocab.vocab_size, pad_id=vocab.pad_id, dropout=cfg.dropout,
            max_positions=cfg.slots + vocab.segment_len + vocab.max_question_len)
        hidden, heads = self.backbone.hidden_size, self.backbone.num_heads
        self.memory = build_memory(cfg.memory, hidden)
        # false: every segment is read alone in one backbone call; only the writes are sequential
        self.segments_see_memory = not isinstance(cfg.memory, RoutedMemoryConfig) or cfg.memory.segment_sees_memory
        self.fusion = None
        if cfg.kg_fusion:
            if entity_embeddings is None:
                entity_embeddings = torch.zeros(vocab.num_entities, vocab.entity_dim)
            self.fusion = EntityFusion(entity_embeddings, hidden)
        self.answer_pos = nn.Embedding(vocab.max_question_len + vocab.max_answer_len + 1, hidden)
        layer = nn.TransformerDecoderLayer(hidden, heads, 2 * hidden, cfg.dropout, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, cfg.decoder_layers)
        self.out_norm = nn.LayerNorm(hidden)

    @property
    def word_embeddings(self) -> nn.Embedding:
        return self.backbone.word_embeddings

    def saved_backbone(self) -> dict:
        """What ``backbone=`` takes to rebuild this model's backbone (the checkpoint's ``backbone``)."""
        return self.backbone.saved_config()

    def embed(self, ids: torch.Tensor, ent: torch.Tensor) -> torch.Tensor:
        x = self.word_embeddings(ids)
        return self.fusion(x, ent) if self.fusion is not None else x

    def read_segment(self, memory: torch.Tensor, ids: torch.Tensor,
                     ent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The backbone's states over [memory ; tokens] and their padding mask."""
        x, pad = self.memory.read(memory, self.embed(ids, ent), ids == self.vocab.pad_id)
        return self.backbone(x, pad), pad

    def reconstruction_loss(self, states: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Mean over the real tokens of (N, L) segments of -log p(token | the segment's ``summary``),
        p a softmax over the vocabulary through the tied output embeddings: what a segment writes
        must hold its words (``model.memory.reconstruct``)."""
        pad = ids == self.vocab.pad_id
        logits = self.memory.summary(states, pad) @ self.word_embeddings.weight.T  # (N, V)
        nll = -logits.log_softmax(-1).gather(1, ids)  # (N, L)
        return nll.masked_fill(pad, 0).sum() / (~pad).sum().clamp(min=1)

    def read_context(self, segments: torch.Tensor, seg_ents: torch.Tensor,
                     recon: list | None = None, every: bool = False) -> torch.Tensor:
        """The (B, slots, H) memory after (B, S, L) segments; empty (all-pad) segments leave it unchanged.

        ``recon``: a list to which each segment read appends its ``reconstruction_loss``. ``every``: the
        memory after each of 0..S segments instead, (B, S + 1, slots, H).
        """
        B, S, L = segments.shape
        memory = self.word_embeddings.weight.new_zeros(B, self.memory.slots, self.backbone.hidden_size)
        if self.memory.slots == 0:
            return memory[:, None].expand(-1, S + 1, -1, -1) if every else memory
        after = [memory]  # ``every``: the memory after 0, 1, ... segments
        if not self.segments_see_memory:
            # Only segments holding tokens are read; stories are right-aligned (left-aligned in story
            # batches), so short ones start (end) with empty segments. Tokens take the
            # positions they have with the memory in front of them.
            pad = segments == self.vocab.pad_id
            real = (~pad).any(dim=2)
            if not real.any():
                return memory[:, None].expand(-1, S + 1, -1, -1) if every else memory
            states = memory.new_zeros(B, S, L, memory.shape[2])
            states[real] = self.backbone(self.embed(segments[real], seg_ents[real]), pad[real],
                                         first_position=memory.shape[1]).to(states.dtype)
            if recon is not None:
                recon.append(self.reconstruction_loss(states[real], segments[real]))
            return self.memory.write_each(memory, states, pad, every=every)
        k = memory.shape[1]
        for t in range(S):
            if every:  # the memory after t segments: the one now (an empty segment leaves it as it was)
                after += [memory] * (t + 1 - len(after))
            ids, ents = segments[:, t], seg_ents[:, t]
            rows = (ids != self.vocab.pad_id).any(dim=1).nonzero().squeeze(1)
            if not len(rows):
                continue
            full = len(rows) == B  # else only rows whose segment t holds tokens are read; the others keep theirs
            prev, ids, ents = (memory, ids, ents) if full else (memory[rows], ids[rows], ents[rows])
            states, pad = self.read_segment(prev, ids, ents)
            if recon is not None:
                recon.append(self.reconstruction_loss(states[:, k:], ids))
            written = self.memory.write(prev, states, pad)
            memory = written if full else memory.index_copy(0, rows, written)
        if every:
            after += [memory] * (S + 1 - len(after))
            return torch.stack(after, dim=1)
        return memory

    def encode_question(self, batch: dict[str, torch.Tensor],
                        recon: list | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Read [memory ; last segment ; question] once the memory has read every segment.

        The last segment is written to memory like the others (a slot holds a
        fact as one vector, which is easy to match against the question) and
        is also visible token by token beside the question.
        """
        seg, ents = batch["segments"], batch["segment_entities"]
        if "question_story" in batch:  # collate_stories: each story read once, each question at its line
            story, upto = batch["question_story"], batch["question_segments"]
            memory = self.read_context(seg, ents, recon, every=True)[story, upto]
            before = (upto - 1).clamp(min=0)  # the line before the question; none before the first line
            last = seg[story, before].masked_fill((upto == 0)[:, None], self.vocab.pad_id)
            last_ents = ents[story, before].masked_fill((upto == 0)[:, None], 0)
        else:
            memory = self.read_context(seg, ents, recon)
            last, last_ents = seg[:, -1], ents[:, -1]
        # the question takes the positions it has after a segment_len-wide segment, however wide this
        # batch's segments are (collate pads them only to the batch's longest)
        if last.shape[1] < self.vocab.segment_len:
            last = F.pad(last, (0, self.vocab.segment_len - last.shape[1]), value=self.vocab.pad_id)
            last_ents = F.pad(last_ents, (0, self.vocab.segment_len - last_ents.shape[1]))
        ids = torch.cat([last, batch["question"]], dim=1)
        enc, pad = self.read_segment(memory, ids, torch.cat([last_ents, batch["question_entities"]], dim=1))
        if not self.cfg.decoder_reads_slots:
            return enc, pad
        return torch.cat([enc, memory], dim=1), torch.cat([pad, pad.new_zeros(memory.shape[:2])], dim=1)

    def _decode(self, enc: torch.Tensor, enc_pad: torch.Tensor, question: torch.Tensor,
                prefix: torch.Tensor) -> torch.Tensor:
        """Logits after each token of ``prefix`` (BOS + answer so far).

        The decoder reads [question ; prefix] causally, so its queries into the
        encoder states already know what was asked: with the question only on
        the encoder side, a one-layer decoder's first query would be the same
        for every question.
        """
        # BOS and the answer always take the positions after max_question_len,
        # whatever the question lengths in the batch.
        seq = torch.cat([question, prefix], dim=1)
        n = seq.shape[1]
        positions = torch.cat([torch.arange(question.shape[1], device=seq.device),
                               self.vocab.max_question_len + torch.arange(prefix.shape[1], device=seq.device)])
        x = self.word_embeddings(seq) + self.answer_pos(positions)
        pad = torch.cat([question == self.vocab.pad_id, torch.zeros_like(prefix, dtype=torch.bool)], dim=1)
        causal = torch.ones(n, n, dtype=torch.bool, device=seq.device).triu(1)  # True = may not attend
        # Padding goes into the attention masks, one (n, keys) mask per row and head, rather than in
        # *_key_padding_mask: torch checks those with torch._check_with, whose first call imports sympy
        # (about 0.4 s of every `stmem predict`). The attention is the same: torch adds both to one mask.
        heads = self.decoder.layers[0].self_attn.num_heads
        self_mask = (causal | pad[:, None, :]).repeat_interleave(heads, dim=0)
        cross_mask = enc_pad[:, None, :].expand(-1, n, -1).repeat_interleave(heads, dim=0)
        y = self.decoder(x, enc, tgt_mask=self_mask, memory_mask=cross_mask)[:, question.shape[1]:]
        return self.out_norm(y) @ self.word_embeddings.weight.T  # output projection tied to the input embeddings

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean token cross-entropy of the answer (teacher forcing), plus ``model.memory.reconstruct`` times
        the mean ``reconstruction_loss`` of the segments read while training."""
        weight = getattr(self.cfg.memory, "reconstruct", 0.0) if self.training else 0.0
        recon = [] if weight else None
        enc, enc_pad = self.encode_question(batch, recon)
        target = batch["answer_ids"]  # (B, A) answer tokens + EOS, pad after
        bos = torch.full_like(target[:, :1], self.vocab.bos_id)
        logits = self._decode(enc, enc_pad, batch["question"], torch.cat([bos, target[:, :-1]], dim=1))
        loss = F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=self.vocab.pad_id)
        return loss + weight * torch.stack(recon).mean() if recon else loss

    @torch.no_grad()
    def generate(self, batch: dict[str, torch.Tensor]) -> list[list[int]]:
        """Greedy answer token ids (without BOS/EOS) for each example."""
        return self.generate_scored(batch)[0]

    def generate_scored(self, batch: dict[str, torch.Tensor]) -> tuple[list[list[int]], list[float]]:
        """Greedy answer token ids (without BOS/EOS) for each example, and the probability the model gives
        that answer: the product over its tokens and the EOS (what a served answer reports as its score)."""
        enc, enc_pad = self.encode_question(batch)
        B = enc.shape[0]
        out = torch.full((B, 1), self.vocab.bos_id, dtype=torch.long, device=enc.device)
        done = torch.zeros(B, dtype=torch.bool, device=enc.device)
        log_prob = torch.zeros(B, device=enc.device)
        for _ in range(self.vocab.max_answer_len):
            step = self._decode(enc, enc_pad, batch["question"], out)[:, -1].float().log_softmax(-1)
            best, nxt = step.max(-1)
            log_prob = log_prob + torch.where(done, 0.0, best)
            nxt = torch.where(done, self.vocab.pad_id, nxt)
            out = torch.cat([out, nxt[:, None]], dim=1)
            done |= nxt == self.vocab.eos_id
            if done.all():
                break
        answers = []
        for row in out[:, 1:].tolist():
            stop = [i for i, t in enumerate(row) if t in (self.vocab.eos_id, self.vocab.pad_id)]
            answers.append(row[:stop[0]] if stop else row)
        return answers, log_prob.exp().tolist()
