"""The canonical corpus table: one row per story."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq


class CorpusError(ValueError):
    """A corpus that is missing, empty or malformed; the message names where."""


@dataclass
class Story:
    story_id: str
    task: str
    split: str  # train | val | test
    sentences: list[str] = field(default_factory=list)
    questions: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    # question i is asked after the first question_positions[i] sentences
    question_positions: list[int] = field(default_factory=list)
    # indices into `sentences` of the facts that answer question i
    supporting: list[list[int]] = field(default_factory=list)


CORPUS_SCHEMA = pa.schema([
    ("story_id", pa.string()),
    ("task", pa.string()),
    ("split", pa.string()),
    ("sentences", pa.list_(pa.string())),
    ("questions", pa.list_(pa.string())),
    ("answers", pa.list_(pa.string())),
    ("question_positions", pa.list_(pa.int32())),
    ("supporting", pa.list_(pa.list_(pa.int32()))),
])


def write_corpus(stories: list[Story], path: Path) -> dict:
    if not stories:
        raise CorpusError(f"{path}: empty corpus (no stories)")
    cols = {name: [getattr(s, name) for s in stories] for name in CORPUS_SCHEMA.names}
    # row groups of a few thousand stories, so the stages after can read it a chunk at a time
    pq.write_table(pa.table(cols, schema=CORPUS_SCHEMA), path, row_group_size=4096)
    counts = {"stories": len(stories), "questions": sum(len(s.questions) for s in stories),
              "sentences": sum(len(s.sentences) for s in stories)}
    for split in ("train", "val", "test"):
        counts[f"{split}_questions"] = sum(len(s.questions) for s in stories if s.split == split)
    return counts


def read_corpus(path: Path) -> list[Story]:
    table = pq.read_table(path, schema=CORPUS_SCHEMA)
    return [Story(**row) for row in table.to_pylist()]


def iter_corpus(path: Path, stories_per_chunk: int = 4096,
                rows: tuple[int, int] | None = None) -> Iterator[list[Story]]:
    """The corpus (its rows ``[start, stop)`` if given) ``stories_per_chunk`` stories at a time, in order:
    never the whole table in memory."""
    f = pq.ParquetFile(path)
    if f.schema_arrow.remove_metadata() != CORPUS_SCHEMA:
        raise CorpusError(f"{path}: not a corpus table (schema differs from corpora.schema.CORPUS_SCHEMA)")
    start, stop = rows or (0, f.metadata.num_rows)
    at = 0  # the corpus row the next batch starts at
    for batch in f.iter_batches(batch_size=stories_per_chunk):
        lo, hi = max(start, at) - at, min(stop, at + batch.num_rows) - at
        at += batch.num_rows
        if hi > lo:
            yield [Story(**row) for row in batch.slice(lo, hi - lo).to_pylist()]
        if at >= stop:
            break


def support_distances(path: Path) -> dict[str, int]:
    """example_id -> sentences from a question's oldest supporting fact to the question (0: none given).

    1 is the sentence just before the question; more lies only in the memory.
    """
    out = {}
    for row in pq.read_table(path, columns=["story_id", "question_positions", "supporting"]).to_pylist():
        for q, (pos, support) in enumerate(zip(row["question_positions"], row["supporting"])):
            out[f"{row['story_id']}/{q}"] = pos - min(support) if support else 0
    return out
