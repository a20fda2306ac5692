"""Pad tokenised examples into the tensors ``MemoryQA`` reads; training-time batch augmentations."""
from __future__ import annotations

from collections import Counter

import torch
from tokenizers import Tokenizer

from stmem.dataset import UNK


def collate(examples: list[dict], pad_id: int, segment_len: int) -> dict[str, torch.Tensor]:
    """Stack examples into (B, S, L) segments, (B, Lq) questions, (B, A) answers.

    Stories with fewer segments are padded with empty segments at the *front*,
    so every story's last segment sits at index S-1 (that is what the
    memory-off ablation keeps) and the empty ones leave the memory untouched.
    """
    B = len(examples)
    S = max(1, max(len(e["segments"]) for e in examples))
    seg = torch.full((B, S, segment_len), pad_id, dtype=torch.long)
    ent = torch.zeros((B, S, segment_len), dtype=torch.long)
    for b, e in enumerate(examples):
        offset = S - len(e["segments"])
        for s, (ids, ents) in enumerate(zip(e["segments"], e["segment_entities"])):
            seg[b, offset + s, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            ent[b, offset + s, : len(ents)] = torch.tensor(ents, dtype=torch.long)
    batch = {"segments": seg, "segment_entities": ent}
    batch["question"], batch["question_entities"] = _pad([e["question"] for e in examples], pad_id), \
        _pad([e["question_entities"] for e in examples], 0)
    if all("answer_ids" in e for e in examples):
        batch["answer_ids"] = _pad([e["answer_ids"] for e in examples], pad_id)
    return batch


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    out = torch.full((len(rows), max(1, max(len(r) for r in rows))), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def drop_entity_words(batch: dict[str, torch.Tensor], p: float, unk_id: int) -> dict[str, torch.Tensor]:
    """Replace each KG-linked token (entity id > 0) of the context and question by ``unk_id`` with probability p.

    Draws from torch's global generator, which training checkpoints save, so a
    resumed run draws the same masks.
    """
    out = dict(batch)
    for ids_key, ent_key in (("segments", "segment_entities"), ("question", "question_entities")):
        ids, ent = batch[ids_key], batch[ent_key]
        out[ids_key] = ids.masked_fill((ent > 0) & (torch.rand(ids.shape) < p), unk_id)
    return out


class WordSwap:
    """Permute the words of each class at random, per training example (``train.swap_words``).

    Every example gets its own permutation of each class, drawn from torch's
    global generator (which checkpoints save), and applied to its story,
    question and answer alike, so the example stays true: only the names
    change. A class is permuted among the words that the example's task uses in
    its training examples, so a task keeps its own vocabulary (qa1's people are
    not renamed to qa16's). Each word's usual KG entity in that task follows
    it: every token linked to the old word's entity is linked to the new
    one's. ``tasks``: only examples of these tasks are swapped (None: all).
    """

    def __init__(self, classes: list[list[str]], tokenizer: Tokenizer, train_examples: list[dict],
                 tasks: list[str] | None = None):
        ids = []
        for words in classes:
            row = []
            for w in words:
                enc = tokenizer.encode(w, add_special_tokens=False)
                if len(enc.ids) != 1 or enc.ids[0] == tokenizer.token_to_id(UNK):
                    raise ValueError(f"train.swap_words: {w!r} is not one token of the dataset's tokenizer "
                                     f"(it reads {enc.tokens}); only single-token words can be swapped")
                row.append(enc.ids[0])
            ids.append(row)
        used: dict[str, set[int]] = {}  # per swapped task: the token ids its training examples use
        linked: dict[str, dict[int, Counter]] = {}  # per swapped task: token id -> its entity ids
        top_entity = 0  # the table must map every entity id a batch holds, of any task
        for e in train_examples:
            top_entity = max([top_entity, *e["question_entities"], *(x for row in e["segment_entities"] for x in row)])
            if tasks is not None and e["task"] not in tasks:
                continue
            words, links = used.setdefault(e["task"], set()), linked.setdefault(e["task"], {})
            for tokens, ents in (*zip(e["segments"], e["segment_entities"]), (e["question"], e["question_entities"])):
                words.update(tokens)
                for t, x in zip(tokens, ents):
                    if x:
                        links.setdefault(t, Counter())[x] += 1
            words.update(e["answer_ids"])
        missing = sorted(set(tasks or []) - set(used))
        if missing:
            raise ValueError(f"train.swap_tasks: {missing[0]!r} has no training examples (tasks: {sorted(used)})")
        self.vocab = tokenizer.get_vocab_size()
        self.entities = top_entity + 1
        # per task: the classes with at least two words to permute there, and
        # each word's usual entity id there (0: none)
        self.members: dict[str, list[torch.Tensor]] = {}
        self.entity_of: dict[str, torch.Tensor] = {}
        for task, words in used.items():
            self.members[task] = [torch.tensor(m) for m in ([t for t in row if t in words] for row in ids)
                                  if len(m) > 1]
            self.entity_of[task] = torch.zeros(self.vocab, dtype=torch.long)
            for t, counts in linked[task].items():
                self.entity_of[task][t] = counts.most_common(1)[0][0]

    def __call__(self, batch: dict[str, torch.Tensor], tasks: list[str]) -> dict[str, torch.Tensor]:
        B = len(tasks)
        words = torch.arange(self.vocab).repeat(B, 1)  # row b: token id -> its new id
        entities = torch.arange(self.entities).repeat(B, 1)  # row b: entity id -> its new id
        for b, task in enumerate(tasks):
            for m in self.members.get(task, []):
                new = m[torch.randperm(len(m))]
                words[b, m] = new
                # the entity follows its word: every token linked to it (the
                # "the" of "the kitchen" too) is relinked
                old_ent, new_ent = self.entity_of[task][m], self.entity_of[task][new]
                linked = old_ent > 0
                entities[b, old_ent[linked]] = new_ent[linked]
        out = dict(batch)
        for key, table in (("segments", words), ("question", words), ("answer_ids", words),
                           ("segment_entities", entities), ("question_entities", entities)):
            ids = batch[key]
            out[key] = table.gather(1, ids.reshape(B, -1)).reshape(ids.shape)
        return out
