"""A causal language model with a recurrent memory, read segment by segment (issue 26, first part).

The Recurrent Memory Transformer's layout (Bulatov et al., booydar/recurrent-memory-transformer):
each segment is read as

    [memory ; segment ; memory]    positions 0..k-1, k..k+n-1, k+n..2k+n-1

and the LM's last hidden states at the k write positions at the end, which
under causal attention have seen the memory and the whole segment, are the
new memory's candidate h_t. It is combined with the memory before it through
the gate g_t = sigmoid(W_g [h_t ; c_{t-1}]): c_t = g_t * h_t + (1 - g_t) * c_{t-1}.
The memory before the first segment is learned (as RMT's); after every
segment it is what that segment wrote. The question is answered by the LM
itself, generating after [memory ; last segment ; question ; BOS].

Every sequence is left-padded, so the write positions are the last k and
``generate`` continues right after the prompt; rotary positions count real
tokens only (``positions``), so a row's positions do not depend on how much
padding its batch needed. Empty segments (stories are right-aligned in a
batch) leave a row's memory as it was. ``bptt``: the gradient passes through
the newest ``bptt`` segments' writes only (truncated backpropagation through
the segments); None: through all of them.

Tokens linked to a KG entity get the entity's embedding fused into their input embedding through a gate
(``EntityFusion``, as in the encoder model), in every segment and in the question.

``model.head: causal_lm`` trains it in the pipeline (``RecurrentMemoryLM.build``):
the same batches (``stmem/batch.py``), loss, ``generate`` and checkpoint as
``MemoryQA``, so training, evaluation, registration and serving take either.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stmem.model import EntityFusion


def tiny_llama(vocab_size: int, *, hidden_size: int = 32, num_layers: int = 2, num_heads: int = 4,
               intermediate_size: int = 64, max_positions: int = 256, pad_id: int = 0, bos_id: int = 2,
               eos_id: int = 3, dropout: float = 0.0) -> nn.Module:
    """A randomly initialised ``LlamaForCausalLM`` built from sizes (tests, and CPU experiments).

    Weights start at std 0.1, not Llama's 0.02: in a 32-wide model 0.02 gives token embeddings of
    norm 0.1, and recalling a word one segment back through the memory (two attention hops, in two
    reads) stayed at chance for ~1,500 steps; with 0.1 it is learnt within 100.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=max_positions, pad_token_id=pad_id, bos_token_id=bos_id, eos_token_id=eos_id,
        tie_word_embeddings=True, initializer_range=0.1, attention_dropout=dropout))


def keep_first_layers(lm: nn.Module, n: int) -> None:
    """Drop every decoder layer of ``lm`` (a ``*ForCausalLM``) after the first ``n``; its config says so,
    so a checkpoint rebuilds the short model (``saved_backbone``)."""
    layers = lm.model.layers
    if n > len(layers):
        raise ValueError(f"model.backbone.keep_layers: {n}, but the model has {len(layers)} layers")
    lm.model.layers = nn.ModuleList(layers[:n])
    lm.config.num_hidden_layers = n
    if getattr(lm.config, "layer_types", None):
        lm.config.layer_types = lm.config.layer_types[:n]


def finetune(lm: nn.Module, mode: str, lora) -> None:
    """Set what of ``lm`` trains (``model.finetune``): "full" all of it; "lora" LoRA adapters (peft), put
    into ``lm`` in place on ``lora.target_modules`` (``model.lora``), and nothing else of it; "frozen" none
    of it. The memory and its gate, outside ``lm``, always train."""
    if mode == "full":
        return
    lm.requires_grad_(False)
    if mode == "lora":
        from peft import LoraConfig, inject_adapter_in_model

        # in place, not get_peft_model's wrapper: lm stays a *ForCausalLM, its state dict gains the
        # adapters' tensors, and a checkpoint rebuilt through build() gets the same names
        inject_adapter_in_model(LoraConfig(r=lora.r, lora_alpha=lora.alpha, target_modules=list(lora.target_modules),
                                           lora_dropout=0.0, bias="none"), lm)
        for name, p in lm.named_parameters():
            p.requires_grad_("lora_" in name)


def left_align(x: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N, ...) ``x`` with each row's ``real`` (B, N) items moved to its end, in their order; and the mask."""
    order = torch.argsort(real.int(), dim=1, stable=True)  # padding (0) first, then the real items as they were
    index = order.view(*order.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, index), real.gather(1, order)


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Rotary position ids of a left-padded (B, N) mask: 0, 1, ... over the real items, 0 on padding."""
    return (mask.long().cumsum(1) - 1).clamp(min=0)


class RecurrentMemoryLM(nn.Module):
    def __init__(self, lm: nn.Module, *, slots: int, pad_id: int, bos_id: int, eos_id: int,
                 bptt: int | None = None, max_answer_len: int = 8, entity_embeddings: torch.Tensor | None = None):
        """``lm``: a transformers ``*ForCausalLM``; ``slots`` 0 reads the last segment alone (memory off).
        ``entity_embeddings``: the KG stage's (N, D) table, fused into the LM's input embeddings of linked
        tokens through a gate (``EntityFusion``, as the encoder model does); None: no KG fusion."""
        super().__init__()
        self.fusion = None if entity_embeddings is None else EntityFusion(entity_embeddings, lm.config.hidden_size)
        self.lm, self.slots, self.bptt = lm, slots, bptt
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.max_answer_len = max_answer_len
        hidden = lm.config.hidden_size
        self.init_memory = nn.Parameter(torch.randn(slots, hidden) * 0.02)
        self.gate = nn.Linear(2 * hidden, hidden)

    @classmethod
    def build(cls, cfg, vocab, saved: dict | None = None,
              entity_embeddings: torch.Tensor | None = None) -> "RecurrentMemoryLM":
        """From ``model`` (a ``ModelConfig`` with ``head: causal_lm``) and the dataset's ``Vocab``; ``saved``:
        a checkpoint's LM config (``saved_backbone``), so a checkpoint never needs the original directory.
        ``entity_embeddings``: the KG's, with ``model.kg_fusion`` (a checkpoint's come with its weights)."""
        from transformers import AutoConfig, AutoModelForCausalLM

        b = cfg.backbone
        if saved is not None:
            conf = dict(saved)
            lm = AutoModelForCausalLM.from_config(AutoConfig.for_model(conf.pop("model_type"), **conf))
        elif b.path:
            lm = AutoModelForCausalLM.from_pretrained(b.path, use_safetensors=True)  # never a pickle
            if b.keep_layers is not None:
                keep_first_layers(lm, b.keep_layers)
        else:
            # the longest sequence read: [memory ; segment ; memory], or [memory ; segment ; question ; BOS ; answer]
            longest = vocab.segment_len + max(2 * cfg.slots, cfg.slots + vocab.max_question_len + vocab.max_answer_len + 1)
            lm = tiny_llama(vocab.vocab_size, hidden_size=b.hidden_size, num_layers=b.num_layers,
                            num_heads=b.num_heads, intermediate_size=b.intermediate_size, max_positions=longest,
                            pad_id=vocab.pad_id, bos_id=vocab.bos_id, eos_id=vocab.eos_id, dropout=cfg.dropout)
        finetune(lm, cfg.finetune, cfg.lora)
        if cfg.kg_fusion and entity_embeddings is None:  # a checkpoint: its table is in the weights
            entity_embeddings = torch.zeros(vocab.num_entities, vocab.entity_dim)
        model = cls(lm, slots=cfg.slots, pad_id=vocab.pad_id, bos_id=vocab.bos_id, eos_id=vocab.eos_id,
                    max_answer_len=vocab.max_answer_len, entity_embeddings=entity_embeddings if cfg.kg_fusion else None)
        model.cfg, model.vocab = cfg, vocab
        return model

    def saved_backbone(self) -> dict:
        return self.lm.config.to_diff_dict()

    @property
    def embeddings(self) -> nn.Embedding:
        return self.lm.get_input_embeddings()

    def embed(self, ids: torch.Tensor, ents: torch.Tensor | None) -> torch.Tensor:
        """The LM's input embeddings of ``ids``, KG entity embeddings fused into the linked ones (``ents`` > 0)."""
        x = self.embeddings(ids)
        return self.fusion(x, ents) if self.fusion is not None and ents is not None else x

    def _states(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.lm.model(inputs_embeds=x, attention_mask=mask.long(), position_ids=positions(mask)).last_hidden_state

    def write(self, memory: torch.Tensor, ids: torch.Tensor, ents: torch.Tensor | None = None) -> torch.Tensor:
        """The memory after reading (B, L) right-padded segment ``ids`` (``ents``: their entity ids):
        [memory ; segment ; memory], gated."""
        k = self.slots
        x = torch.cat([memory, self.embed(ids, ents), memory], dim=1)
        real = torch.cat([ids.new_ones(len(ids), k, dtype=torch.bool), ids != self.pad_id,
                          ids.new_ones(len(ids), k, dtype=torch.bool)], dim=1)
        x, mask = left_align(x, real)
        h = self._states(x, mask)[:, -k:]  # the write positions: they have seen the memory and the segment
        g = torch.sigmoid(self.gate(torch.cat([h, memory], dim=-1)))
        return g * h + (1 - g) * memory

    def read_context(self, segments: torch.Tensor, seg_ents: torch.Tensor | None = None) -> torch.Tensor:
        """The (B, slots, H) memory after (B, S, L) segments, oldest first; empty segments write nothing."""
        B, S, _ = segments.shape
        memory = self.init_memory.unsqueeze(0).expand(B, -1, -1)
        if self.slots == 0:
            return memory
        for t in range(S):
            if self.bptt is not None and t == S - self.bptt:
                memory = memory.detach()  # the cut: only the newest bptt writes get a gradient
            ids = segments[:, t]
            rows = (ids != self.pad_id).any(dim=1)
            if not rows.any():
                continue
            written = self.write(memory[rows], ids[rows], None if seg_ents is None else seg_ents[:, t][rows])
            memory = memory.clone()
            memory[rows] = written
        return memory

    def _prompt(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded embeddings and mask of [memory ; last segment ; question ; BOS]."""
        memory = self.read_context(batch["segments"], batch["segment_entities"])
        last, question = batch["segments"][:, -1], batch["question"]
        bos = question.new_full((len(question), 1), self.bos_id)
        ids = torch.cat([last, question, bos], dim=1)
        ents = torch.cat([batch["segment_entities"][:, -1], batch["question_entities"], torch.zeros_like(bos)], dim=1)
        x = torch.cat([memory, self.embed(ids, ents)], dim=1)
        real = torch.cat([ids.new_ones(len(ids), self.slots, dtype=torch.bool), ids != self.pad_id], dim=1)
        return left_align(x, real)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean cross-entropy of ``answer_ids`` (answer tokens, EOS, right-padded), teacher-forced."""
        x, mask = self._prompt(batch)
        answer = batch["answer_ids"]
        inputs = torch.cat([x, self.embeddings(answer[:, :-1])], dim=1)  # after BOS: the answer so far
        full = torch.cat([mask, answer[:, :-1] != self.pad_id], dim=1)
        logits = self.lm.lm_head(self._states(inputs, full)[:, x.shape[1] - 1:])  # from BOS on
        return F.cross_entropy(logits.transpose(1, 2), answer, ignore_index=self.pad_id)

    @torch.no_grad()
    def generate(self, batch: dict[str, torch.Tensor]) -> list[list[int]]:
        return self.generate_scored(batch)[0]

    @torch.no_grad()
    def generate_scored(self, batch: dict[str, torch.Tensor], max_new_tokens: int | None = None
                        ) -> tuple[list[list[int]], list[float]]:
        """Greedy answers (token ids before EOS) by the LM's ``generate``, and each one's probability."""
        x, mask = self._prompt(batch)
        out = self.lm.generate(inputs_embeds=x, attention_mask=mask.long(),
                               max_new_tokens=max_new_tokens or self.max_answer_len,
                               do_sample=False, eos_token_id=self.eos_id, pad_token_id=self.pad_id,
                               output_scores=True, return_dict_in_generate=True)
        ids, scores = out.sequences.tolist(), torch.stack(out.scores, dim=1).log_softmax(-1)  # (B, T, V)
        answers, probs = [], []
        for b, row in enumerate(ids):
            n = row.index(self.eos_id) if self.eos_id in row else len(row)
            answers.append(row[:n])
            taken = row[:min(n + 1, len(row))]  # the answer and its EOS
            probs.append(scores[b, torch.arange(len(taken)), torch.tensor(taken)].sum().exp().item())
        return answers, probs
