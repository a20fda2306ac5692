"""Reader for the bAbI v1.2 text format (Weston et al. 2015).

Each line is ``<id> <text>``; ids restart at 1 with a new story. A question
line is ``<id> <question>\\t<answer>\\t<supporting ids>``, and its context is
every statement of the story before it.
"""
from __future__ import annotations

import random
import re
from pathlib import Path

from corpora.schema import CorpusError, Story

_LINE = re.compile(r"^(\d+) (.+)$")


def text_lines(path: Path, max_line_chars: int):
    """``(line number, line)`` of a UTF-8 text file; a bad byte or an over-long line is a ``CorpusError``
    naming the file, the line and (for a bad byte) its offset in the file."""
    offset = 0
    with open(path, "rb") as f:
        # readline with a limit: a file with no newline is refused after max_line_chars + 1 bytes,
        # not after reading gigabytes into one line
        for lineno, raw in enumerate(iter(lambda: f.readline(max_line_chars + 1), b""), start=1):
            if len(raw) > max_line_chars:
                raise CorpusError(f"{path}:{lineno}: line over the limit of {max_line_chars:,} bytes "
                                  f"(corpus.max_line_chars)")
            try:
                yield lineno, raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise CorpusError(f"{path}:{lineno}: not UTF-8 (byte 0x{raw[exc.start]:02x} at offset "
                                  f"{offset + exc.start} in the file)") from None
            offset += len(raw)


def parse_babi_file(path: Path, task: str, split: str, max_line_chars: int = 100_000) -> list[Story]:
    """Parse one bAbI file; errors name the file and the line."""
    stories: list[Story] = []
    story: Story | None = None
    line_to_sentence: dict[int, int] = {}
    last_id = 0
    for lineno, line in text_lines(path, max_line_chars):
        if not line.strip():
            continue
        m = _LINE.match(line)
        if not m:
            raise CorpusError(f"{path}:{lineno}: malformed bAbI line, expected '<id> <text>': {line[:60]!r}")
        line_id, text = int(m.group(1)), m.group(2)
        if line_id == 1:
            story = Story(story_id=f"{task}/{split}/{len(stories)}", task=task, split=split)
            stories.append(story)
            line_to_sentence = {}
        elif story is None or line_id != last_id + 1:
            raise CorpusError(f"{path}:{lineno}: line id {line_id} does not follow {last_id}")
        last_id = line_id
        if "\t" not in text and text.rstrip().endswith("?"):
            # bAbI statements never end in "?": this is a question without its answer
            raise CorpusError(f"{path}:{lineno}: malformed bAbI question, expected "
                              f"'<question>\\t<answer>\\t<supporting ids>'")
        if "\t" not in text:
            line_to_sentence[line_id] = len(story.sentences)
            story.sentences.append(text.strip())
            continue
        parts = text.split("\t")
        if len(parts) != 3 or not parts[1].strip():
            raise CorpusError(f"{path}:{lineno}: malformed bAbI question, expected "
                              f"'<question>\\t<answer>\\t<supporting ids>'")
        try:
            support = [line_to_sentence[int(i)] for i in parts[2].split()]
        except (ValueError, KeyError):
            raise CorpusError(f"{path}:{lineno}: supporting fact ids {parts[2]!r} do not name "
                              f"earlier statements of the story") from None
        story.questions.append(parts[0].strip())
        story.answers.append(parts[1].strip())
        story.question_positions.append(len(story.sentences))
        story.supporting.append(support)
    stories = [s for s in stories if s.questions]
    if not stories:
        raise CorpusError(f"{path}: empty corpus (no questions)")
    return stories


def _task_file(directory: Path, task: str, split: str) -> Path:
    matches = sorted(directory.glob(f"{task}_*_{split}.txt"))
    if not matches:
        raise CorpusError(f"{directory}: no bAbI file for task '{task}' split '{split}' "
                          f"(expected {task}_<name>_{split}.txt)")
    return matches[0]


def read_babi(directory: str | Path, tasks: list[str], *, val_fraction: float = 0.1,
              seed: int = 0, max_line_chars: int = 100_000) -> list[Story]:
    """Read train and test files of `tasks` (e.g. ``["qa1", "qa2"]``).

    A seeded fraction of each task's training stories becomes the validation
    split, so the test file is only ever used for the final figures.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CorpusError(f"{directory}: bAbI directory not found")
    stories: list[Story] = []
    for task in tasks:
        train = parse_babi_file(_task_file(directory, task, "train"), task, "train", max_line_chars)
        rng = random.Random(f"{seed}/{task}")
        for s in train:
            if rng.random() < val_fraction:
                s.split = "val"
                s.story_id = s.story_id.replace("/train/", "/val/")
        stories += train
        stories += parse_babi_file(_task_file(directory, task, "test"), task, "test", max_line_chars)
    return stories
