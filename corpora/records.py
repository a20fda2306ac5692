"""Reader for question-answer records: JSON Lines (``.jsonl``) or Parquet (``.parquet``), by the file's suffix.

Each record is ``{"id", "context", "question", "answer"}`` and an optional
``"task"`` (default ``records``), ``"split"`` (``train``, ``val`` or ``test``;
absent: the split the id hashes to) and ``"supporting"`` (the indices, from 0,
of the context sentences that answer the question; what accuracy by distance
is drawn from). ``context`` is a string, split into sentences
by spaCy's sentencizer, or a list of strings taken as the sentences. Records
that share an ``id`` are one story (one context, one task); its questions are
all asked after the whole context, in file order.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from corpora.jsonl import Fields, jsonl_records
from corpora.schema import CorpusError, Story
from corpora.splits import SPLITS, story_split
from corpora.sentences import sentencizer

REQUIRED = ("id", "context", "question", "answer")
FIELDS = REQUIRED + ("task", "split", "supporting")
DEFAULT_TASK = "records"


def parquet_records(path: Path, batch_size: int = 4096) -> Iterator[Fields]:
    """Each row of a Parquet file as ``Fields`` (``file: row N: column 'x'``, rows counted from 0 as in pandas)."""
    if not path.is_file():
        raise CorpusError(f"{path}: file not found")
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise CorpusError(f"{path}: not a readable Parquet file ({exc})") from None
    names = pf.schema_arrow.names
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise CorpusError(f"{path}: missing column {missing[0]!r} (has {', '.join(names) or 'no columns'})")
    unknown = [c for c in names if c not in FIELDS]
    if unknown:
        # e.g. pandas' __index_level_0__: write the table with index=False
        raise CorpusError(f"{path}: unknown column {unknown[0]!r} (expected {', '.join(FIELDS)})")
    if pf.metadata.num_rows == 0:
        raise CorpusError(f"{path}: empty file (no records)")
    row = 0
    for batch in pf.iter_batches(batch_size=batch_size):
        for record in batch.to_pylist():
            yield Fields(record, f"{path}: row {row}", f"row {row}", noun="column")
            row += 1


def read_records(path: str | Path, *, val_fraction: float = 0.1, test_fraction: float = 0.1,
                 max_line_chars: int = 100_000) -> list[Story]:
    """The stories of a records file, each in the split its records give or its id hashes to (``corpora.splits``)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        rows = jsonl_records(path, max_line_chars)
    elif path.suffix == ".parquet":
        rows = parquet_records(path)
    else:
        raise CorpusError(f"{path}: records must be a .jsonl or .parquet file (got suffix {path.suffix!r})")
    split_sentences = sentencizer()
    stories: dict[str, Story] = {}
    first: dict[str, tuple[str | list[str], str]] = {}  # id -> (its context as given, where it was first given)
    first_split: dict[str, str | None] = {}  # id -> the split its first record gave (None: hashed)
    for rec in rows:
        rec.only(FIELDS)
        story_id = rec.text("id")
        context = rec.text_or_texts("context")
        question, answer = rec.text("question"), rec.text("answer")
        task = rec.text("task", default=DEFAULT_TASK)
        given = rec.optional_choice("split", SPLITS)
        story = stories.get(story_id)
        if story is None:
            sentences = context if isinstance(context, list) else split_sentences(context)
            story = stories[story_id] = Story(story_id=story_id, task=task,
                                              split=story_split(given, story_id, val_fraction, test_fraction),
                                              sentences=sentences)
            first[story_id] = (context, rec.at)
            first_split[story_id] = given
        else:
            given_context, at = first[story_id]
            if task != story.task:
                raise rec.error("task", f"is {task!r}, but the record of id {story_id!r} at {at} has {story.task!r} "
                                        f"(records sharing an id are one story)")
            if given != first_split[story_id]:
                raise rec.error("split", f"is {given or 'not given'!r}, but the record of id {story_id!r} at {at} has "
                                         f"{first_split[story_id] or 'not given'!r} (records sharing an id are one story)")
            if context != given_context and (context if isinstance(context, list) else split_sentences(context)) != story.sentences:
                raise rec.error("context", f"differs from the context of id {story_id!r} at {at} "
                                           f"(records sharing an id are one story)")
        story.questions.append(question)
        story.answers.append(answer)
        story.question_positions.append(len(story.sentences))
        story.supporting.append(_supporting(rec, len(story.sentences)))
    return list(stories.values())


def _supporting(rec: Fields, n_sentences: int) -> list[int]:
    """The optional ``supporting`` field: distinct sentence indices in [0, n_sentences); [] when absent or null."""
    value = rec.record.get("supporting")
    if value is None:
        return []
    if not isinstance(value, list) or not value:
        raise rec.error("supporting", f"must be a non-empty list of sentence indices, got {value!r}")
    for i in value:
        # bool is an int in Python; a true/false here is a mistake, not sentence 1 or 0
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < n_sentences:
            raise rec.error("supporting", f"has {i!r}: a sentence index must be an integer from 0 to "
                                          f"{n_sentences - 1} (the context has {n_sentences} sentences)")
    if len(set(value)) != len(value):
        raise rec.error("supporting", f"repeats a sentence index: {value!r}")
    return sorted(value)
