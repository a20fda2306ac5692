"""Answer questions with a trained checkpoint, from raw text.

The context goes through the same path as in training: spaCy mentions (when
the model fuses KG entities, with the KG names the extract stage found), the
saved tokenizer, the same sentence-packed segments.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch

from stmem.batch import collate
from stmem.checkpoint import ENTITY_INDEX, TOKENIZER, load_checkpoint
from stmem.dataset import ENTITY_ALIASES, ContextEncoder, decode_answer, load_tokenizer, segment
from stmem.evaluate import to_device

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_sentences(context: str) -> list[str]:
    """One sentence per line, or several per line ending in . ! or ?"""
    return [s.strip() for line in context.splitlines() for s in _SENTENCE_END.split(line) if s.strip()]


def _read(path: Path):
    # one file: pq.read_table would import pyarrow.dataset, and with it pandas (0.3 s a call)
    return pq.ParquetFile(path).read()


class Predictor:
    def __init__(self, ckpt_dir: str | Path, device: str = "cpu", max_segments: int | None = None,
                 traced_backbone: Path | None = None):
        """``traced_backbone``: the checkpoint's backbone as TorchScript (``load_checkpoint``)."""
        ckpt_dir = Path(ckpt_dir)
        self.device = torch.device(device)
        self.model, config = load_checkpoint(ckpt_dir, self.device, traced_backbone)
        self.tokenizer = load_tokenizer(ckpt_dir / TOKENIZER)
        # as the dataset stage did for this model: the newest max_segments segments (a checkpoint from
        # before this was recorded reads the whole context)
        self.max_segments = max_segments or self.model.vocab.max_segments or 1_000_000
        entity_rows: dict[str, int] = {}
        self.extractor = None
        if self.model.fusion is not None:
            from kg_pipeline.extraction import MentionExtractor  # spaCy only when the model links entities

            table = _read(ckpt_dir / ENTITY_INDEX)
            entity_rows = dict(zip(table.column("entity").to_pylist(), table.column("row").to_pylist()))
            aliases = {}
            if (ckpt_dir / ENTITY_ALIASES).is_file():  # the KG names training found in text, found here too
                table = _read(ckpt_dir / ENTITY_ALIASES)
                aliases = dict(zip(table.column("alias").to_pylist(), table.column("entity").to_pylist()))
            self.extractor = MentionExtractor(config["spacy_model"], aliases=aliases)
        self.encoder = ContextEncoder(self.tokenizer, entity_rows)

    def _mentions(self, texts: list[str]) -> list[list[tuple[int, int, str]]]:
        if self.extractor is None:
            return [[] for _ in texts]
        return [[(m.start, m.end, m.entity) for m in mentions] for mentions, _ in self.extractor.parse(texts)]

    def encode(self, context: str, question: str) -> dict:
        sentences = split_sentences(context)
        if not sentences:
            raise ValueError("context is empty")
        if not question.strip():
            raise ValueError("question is empty")
        mentions = self._mentions(sentences + [question])
        encoded = [self.encoder.encode(text, ms) for text, ms in zip(sentences, mentions)]
        segs, seg_ents = segment(encoded, self.model.vocab.segment_len, self.max_segments,
                                 self.model.vocab.pack_sentences)
        q_ids, q_ents = self.encoder.encode(question, mentions[-1])
        n = self.model.vocab.max_question_len
        if len(q_ids) > n:  # cutting it would answer another question
            raise ValueError(f"question is {len(q_ids)} tokens, this model reads at most {n}")
        return {"segments": segs, "segment_entities": seg_ents, "question": q_ids, "question_entities": q_ents}

    def answer(self, contexts: list[str], questions: list[str], batch_size: int = 64) -> list[str]:
        return self.predict(contexts, questions, batch_size)[0]

    def predict(self, contexts: list[str], questions: list[str], batch_size: int = 64,
                deadline: float | None = None) -> tuple[list[str], list[float]]:
        """The answers, and for each the probability the model gives it (``MemoryQA.generate_scored``).

        ``deadline`` (``time.monotonic()``): past it, ``TimeoutError`` before the next row or batch, so a
        request its server has given up on stops using the CPU.
        """
        if len(contexts) != len(questions):
            raise ValueError("contexts and questions differ in length")

        def check(done: int, what: str) -> None:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"past its time budget after {done} of {len(contexts)} {what}")
        examples = []
        for row, (c, q) in enumerate(zip(contexts, questions)):
            check(len(examples), "rows read")
            try:
                examples.append(self.encode(c, q))
            except ValueError as e:
                raise ValueError(f"row {row}: {e}") from None
        answers: list[str] = []
        scores: list[float] = []
        for i in range(0, len(examples), batch_size):
            check(i, "rows answered")
            batch = collate(examples[i:i + batch_size], self.model.vocab.pad_id, self.model.vocab.segment_len)
            ids, probs = self.model.generate_scored(to_device(batch, self.device))
            answers += [decode_answer(self.tokenizer, a) for a in ids]
            scores += probs
        return answers, scores
