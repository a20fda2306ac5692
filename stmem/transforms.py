"""Training-batch transforms: each takes a collated batch and returns a changed one.

Only training batches go through them; validation, test and inference see
the examples as they are. Every random draw comes from torch's global
generator, which resumable checkpoints save, so a resumed run draws the same.

    SegmentCurriculum   train.segment_curriculum: early epochs see only the newest segments
    WordSwap            train.swap_words: corpus.word_classes permuted per example
    EntityWordDropout   train.entity_word_dropout: KG-linked words hidden as [UNK]
"""
from __future__ import annotations

from collections import Counter
from typing import Protocol

import torch
from tokenizers import Tokenizer

from stmem.config import Config
from stmem.dataset import UNK

Batch = dict[str, torch.Tensor]


class Transform(Protocol):
    def __call__(self, batch: Batch, *, tasks: list[str], epoch: int) -> Batch: ...


class SegmentCurriculum:
    """Epoch i (from 1) sees only the newest ``keep[i-1]`` segments of each story; later epochs see all."""

    def __init__(self, keep: list[int]):
        self.keep = keep

    def __call__(self, batch: Batch, *, tasks: list[str], epoch: int) -> Batch:
        if epoch > len(self.keep):
            return batch
        k = self.keep[epoch - 1]  # stories are right-aligned: the last columns are the newest segments
        return {**batch, "segments": batch["segments"][:, -k:], "segment_entities": batch["segment_entities"][:, -k:]}


class EntityWordDropout:
    """Replace each KG-linked token of the context and question by [UNK] with probability p.

    The model then has to read the entity from its KG embedding, which is all
    it has for an entity no training text named.
    """

    def __init__(self, p: float, unk_id: int):
        self.p, self.unk_id = p, unk_id

    def __call__(self, batch: Batch, *, tasks: list[str], epoch: int) -> Batch:
        out = dict(batch)
        for ids_key, ent_key in (("segments", "segment_entities"), ("question", "question_entities")):
            ids, ent = batch[ids_key], batch[ent_key]
            out[ids_key] = ids.masked_fill((ent > 0) & (torch.rand(ids.shape) < self.p), self.unk_id)
        return out


class WordSwap:
    """Permute the words of each class at random, per training example (per story, in story batches).

    Each example gets its own permutation of each class, applied to its story,
    question and answer alike, so the example stays true: only the names
    change, and the model cannot learn answers by name. A class is permuted
    among the words that the example's task uses in its training examples,
    so a task keeps its own vocabulary, and the class words that no training
    example uses: swapping is what trains them (dialog bAbI's OOV cuisines
    and places, named by its KB). Each word's usual KG entity in that
    task follows it: every token linked to the old word's entity (the "the"
    of "the kitchen" too) is linked to the new one's. ``tasks``: only
    examples of these tasks are swapped (None: all).
    """

    def __init__(self, classes: list[list[str]], tokenizer: Tokenizer, train_examples: list[dict],
                 tasks: list[str] | None = None):
        ids = [[self._token(tokenizer, w) for w in words] for words in classes]
        used: dict[str, set[int]] = {}  # per swapped task: the token ids its training examples use
        linked: dict[str, dict[int, Counter]] = {}  # per swapped task: token id -> its entity ids
        top_entity = 0  # the table must map every entity id a batch holds, of any task
        said: set[int] = set()  # the token ids of every training example, of any task
        for e in train_examples:
            top_entity = max([top_entity, *e["question_entities"], *(x for row in e["segment_entities"] for x in row)])
            said.update(e["question"], e["answer_ids"], *e["segments"])
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
            raise ValueError(f"corpus.word_class_tasks: {missing[0]!r} has no training examples (tasks: {sorted(used)})")
        self.vocab, self.entities = tokenizer.get_vocab_size(), top_entity + 1
        unsaid = {t for row in ids for t in row} - said  # no training example says them, swapped or not
        # per task: the classes with at least two words to permute there, and
        # each word's usual entity id there (0: none)
        self.members: dict[str, list[torch.Tensor]] = {}
        self.entity_of: dict[str, torch.Tensor] = {}
        for task, words in used.items():
            self.members[task] = [torch.tensor(m) for m in ([t for t in row if t in words or t in unsaid] for row in ids)
                                  if len(m) > 1]
            self.entity_of[task] = torch.zeros(self.vocab, dtype=torch.long)
            for t, counts in linked[task].items():
                self.entity_of[task][t] = counts.most_common(1)[0][0]

    @staticmethod
    def _token(tokenizer: Tokenizer, word: str) -> int:
        enc = tokenizer.encode(word, add_special_tokens=False)
        if len(enc.ids) != 1 or enc.ids[0] == tokenizer.token_to_id(UNK):
            raise ValueError(f"corpus.word_classes: {word!r} is not one token of the dataset's tokenizer "
                             f"(it reads {enc.tokens}); only single-token words can be swapped")
        return enc.ids[0]

    def __call__(self, batch: Batch, *, tasks: list[str], epoch: int) -> Batch:
        B = len(tasks)
        words = torch.arange(self.vocab).repeat(B, 1)  # row b: token id -> its new id
        entities = torch.arange(self.entities).repeat(B, 1)  # row b: entity id -> its new id
        for b, task in enumerate(tasks):
            for m in self.members.get(task, []):
                new = m[torch.randperm(len(m))]
                words[b, m] = new
                old_ent, new_ent = self.entity_of[task][m], self.entity_of[task][new]
                linked = old_ent > 0
                entities[b, old_ent[linked]] = new_ent[linked]
        out = dict(batch)
        story = batch.get("question_story")  # story batches (``tasks`` per story): a question takes its story's
        for key, table in (("segments", words), ("question", words), ("answer_ids", words),
                           ("segment_entities", entities), ("question_entities", entities)):
            if story is not None and not key.startswith("segment"):
                table = table[story]
            ids = batch[key]
            out[key] = table.gather(1, ids.reshape(len(table), -1)).reshape(ids.shape)
        return out


def build_transforms(cfg: Config, tokenizer: Tokenizer, train_examples: list[dict]) -> list[Transform]:
    """The configured transforms, in the order they apply: curriculum, swap, dropout."""
    tc, out = cfg.train, []
    if tc.segment_curriculum:
        out.append(SegmentCurriculum(tc.segment_curriculum))
    if tc.swap_words:
        out.append(WordSwap(cfg.corpus.word_classes, tokenizer, train_examples, cfg.corpus.word_class_tasks))
    if tc.entity_word_dropout:
        unk_id = tokenizer.token_to_id(UNK)
        if unk_id is None:
            raise ValueError(f"train.entity_word_dropout needs a {UNK} token, and the dataset's tokenizer has none")
        out.append(EntityWordDropout(tc.entity_word_dropout, unk_id))
    return out
