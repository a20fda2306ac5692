"""Reader for documents with questions about them.

``corpus.path`` is a directory of UTF-8 ``.txt`` files (a document's id is its
file name without ``.txt``); ``corpus.questions`` is a JSON Lines file of
``{"doc", "question", "answer"}`` and an optional ``"task"`` (default
``documents``) and ``"split"`` (``train``, ``val`` or ``test``, the same for
every question of a document; absent: the split the document's id hashes to). Each document with at least one question is one story: its
text split into sentences by spaCy's sentencizer, the questions asked after
all of it. Blank lines separate paragraphs, and a sentence never runs across
one; lines within a paragraph are joined, so wrapped text is read whole.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from corpora.babi import text_lines
from corpora.jsonl import jsonl_records
from corpora.schema import CorpusError, Story
from corpora.sentences import sentencizer
from corpora.splits import SPLITS, story_split

FIELDS = ("doc", "question", "answer", "task", "split")
DEFAULT_TASK = "documents"

log = logging.getLogger(__name__)


def document_sentences(path: Path, split: Callable[[str], list[str]], max_line_chars: int) -> list[str]:
    """The sentences of one document, paragraph by paragraph."""
    sentences: list[str] = []
    paragraph: list[str] = []
    for lineno, line in text_lines(path, max_line_chars):
        if lineno == 1:
            line = line.removeprefix("\ufeff")  # a byte-order mark is not text
        if line.strip():
            paragraph.append(line.strip())
        elif paragraph:
            sentences += split(" ".join(paragraph))
            paragraph = []
    if paragraph:
        sentences += split(" ".join(paragraph))
    return sentences


def read_documents(directory: str | Path, questions: str | Path, *, val_fraction: float = 0.1,
                   test_fraction: float = 0.1, max_line_chars: int = 100_000) -> list[Story]:
    """One story per asked-about document (in file-name order), in the split given or its id hashes to."""
    directory, questions = Path(directory), Path(questions)
    if not directory.is_dir():
        raise CorpusError(f"{directory}: documents directory not found")
    docs = {p.stem: p for p in sorted(directory.glob("*.txt")) if p.is_file()}
    if not docs:
        raise CorpusError(f"{directory}: no .txt documents in the directory")
    stories: dict[str, Story] = {}
    first: dict[str, str] = {}  # doc -> the line of its first question
    first_split: dict[str, str | None] = {}  # doc -> the split its first question gave (None: hashed)
    for rec in jsonl_records(questions, max_line_chars):
        rec.only(FIELDS)
        doc = rec.text("doc")
        question, answer = rec.text("question"), rec.text("answer")
        task = rec.text("task", default=DEFAULT_TASK)
        given = rec.optional_choice("split", SPLITS)
        if doc not in docs:
            raise rec.error("doc", f"names no document: {directory / (doc + '.txt')} does not exist")
        story = stories.get(doc)
        if story is None:
            story = stories[doc] = Story(story_id=doc, task=task,
                                         split=story_split(given, doc, val_fraction, test_fraction))
            first[doc] = rec.at
            first_split[doc] = given
        elif task != story.task:
            raise rec.error("task", f"is {task!r}, but the question about {doc!r} at {first[doc]} has "
                                    f"{story.task!r} (a document is one story, of one task)")
        elif given != first_split[doc]:
            raise rec.error("split", f"is {given or 'not given'!r}, but the question about {doc!r} at {first[doc]} has "
                                     f"{first_split[doc] or 'not given'!r} (a document is one story, in one split)")
        story.questions.append(question)
        story.answers.append(answer)
        story.supporting.append([])
    split = sentencizer()
    out = []
    for doc, path in docs.items():  # sorted by file name
        story = stories.get(doc)
        if story is None:
            continue
        story.sentences = document_sentences(path, split, max_line_chars)
        if not story.sentences:
            raise CorpusError(f"{path}: empty document (no sentences), asked about at {questions}:"
                              f"{first[doc].removeprefix('line ')}")
        story.question_positions = [len(story.sentences)] * len(story.questions)
        out.append(story)
    skipped = len(docs) - len(out)
    if skipped:
        log.info("%d of %d documents in %s have no question and are skipped", skipped, len(docs), directory)
    return out
