"""Reader for the dialog bAbI tasks 1-6 (Bordes, Boureau and Weston 2017), with their official splits.

A directory holds ``dialog-babi-task<N>{trn,dev,tst,tst-OOV}.txt`` (task 6: no
``tst-OOV``). Dialogues are separated by blank lines; line ids start at 1 in
each. A line is ``<id> <user utterance>\\t<bot utterance>``, or, without a tab,
an API result: a KB fact ``<id> resto_x R_rating 6``, or (task 6)
``<id> api_call no result``.

Each dialogue is one story and each line one sentence: ``user: <u> bot: <b>``
for a turn, the fact's text for an API result. Every bot utterance is a
question: the question is the user utterance of its line, the answer is the
bot utterance, and its context is the lines before it (as in
``corpora.dialogue``). The files' own splits are kept (trn -> train, dev ->
val, tst -> test), so figures compare with the literature; the OOV test set is
test too, under its own task label (``dialog-t1-oov``), so it is reported
apart from the in-vocabulary one.
"""
from __future__ import annotations

import re
from pathlib import Path

from corpora.babi import text_lines
from corpora.config import DIALOG_BABI_TASKS
from corpora.schema import CorpusError, Story

_LINE = re.compile(r"^(\d+) (.*)$")
# a KB fact: one token each for the entity, the relation and the value (the files have no other kind)
_FACT = re.compile(r"^\S+ R_\w+ \S+$")
NO_RESULT = "api_call no result"  # task 6: the API call found nothing (no tab, no fact)
SILENCE = "<SILENCE>"  # the files' own filler for a missing user utterance (README.txt)
# (file suffix, also the story ids' middle part; split; the OOV test set?)
FILES = (("trn", "train", False), ("dev", "val", False), ("tst", "test", False), ("tst-OOV", "test", True))
_TURN = "'<id> <user utterance>\\t<bot utterance>' or '<id> <KB fact>'"


def task_label(task: str, oov: bool = False) -> str:
    """The task name a dialog bAbI story is reported under: ``dialog-t1``, or ``dialog-t1-oov`` for the OOV test."""
    return f"dialog-{task}{'-oov' if oov else ''}"


def parse_dialog_file(path: Path, task: str, split: str, id_prefix: str,
                      max_line_chars: int = 100_000) -> list[Story]:
    """One story per dialogue of one file, ids ``<id_prefix>-<n>`` (n from 0); errors name the file and line."""
    stories: list[Story] = []
    story: Story | None = None
    starts: list[int] = []  # the line each dialogue starts at, for the error about one with no bot utterance
    last_id = 0
    for lineno, line in text_lines(path, max_line_chars):
        if not line.strip():
            last_id = 0  # a blank line ends a dialogue: the next line must start one
            continue
        m = _LINE.match(line)
        if not m:
            raise CorpusError(f"{path}:{lineno}: malformed dialog bAbI line, expected {_TURN}: {line[:60]!r}")
        line_id, text = int(m.group(1)), m.group(2)
        if line_id == 1:  # ids restart at 1 with each dialogue (README.txt), blank line or not
            story = Story(story_id=f"{id_prefix}-{len(stories)}", task=task, split=split)
            stories.append(story)
            starts.append(lineno)
        elif line_id != last_id + 1:
            after = "a blank line (a dialogue starts at 1)" if last_id == 0 else str(last_id)
            raise CorpusError(f"{path}:{lineno}: line id {line_id} does not follow {after}")
        last_id = line_id
        if "\t" in text:
            parts = text.split("\t")
            if len(parts) != 2:
                raise CorpusError(f"{path}:{lineno}: {len(parts) - 1} tabs in a line, expected one between the "
                                  f"user and the bot utterance: {line[:60]!r}")
            # task 6 has a few turns with no user utterance ('17 \tOk , ...'): the same as <SILENCE>,
            # which the files use for it everywhere else; and bot utterances that start with a space
            user, bot = parts[0].strip() or SILENCE, parts[1].strip()
            if not bot:
                raise CorpusError(f"{path}:{lineno}: empty bot utterance (nothing to answer): {line[:60]!r}")
            story.questions.append(user)
            story.answers.append(bot)
            story.question_positions.append(len(story.sentences))  # the lines before this one
            story.supporting.append([])
            story.sentences.append(f"user: {user} bot: {bot}")
            continue
        fact = text.strip()
        if not (_FACT.match(fact) or fact == NO_RESULT):
            raise CorpusError(f"{path}:{lineno}: a line without a tab must be a KB fact '<entity> R_<relation> "
                              f"<value>' or '{NO_RESULT}', got {line[:60]!r} (expected {_TURN})")
        story.sentences.append(fact)
    for s, start in zip(stories, starts):
        if not s.questions:
            raise CorpusError(f"{path}:{start}: the dialogue starting here has no bot utterance (no question)")
    if not stories:
        raise CorpusError(f"{path}: empty file (no dialogues)")
    return stories


def dialog_file(directory: Path, task: str, suffix: str) -> Path:
    """``dialog-babi-task1trn.txt`` for task ``t1``, suffix ``trn``."""
    return directory / f"dialog-babi-task{task[1:]}{suffix}.txt"


def read_dialog_babi(directory: str | Path, tasks: list[str], *, oov_test: bool = True,
                     max_line_chars: int = 100_000) -> list[Story]:
    """The dialogues of ``tasks`` (``["t1", "t5"]``): trn, dev and tst, and tst-OOV when ``oov_test``
    (task 6 has none: it is left out without an error)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CorpusError(f"{directory}: dialog bAbI directory not found")
    stories: list[Story] = []
    for task in tasks:
        if task not in DIALOG_BABI_TASKS:
            raise CorpusError(f"{directory}: {task!r} is not a dialog bAbI task (expected one of "
                              f"{', '.join(DIALOG_BABI_TASKS)})")
        for suffix, split, oov in FILES:
            if oov and (not oov_test or task == "t6"):  # task 6 (DSTC2) has no OOV test set
                continue
            path = dialog_file(directory, task, suffix)
            if not path.is_file():
                raise CorpusError(f"{path}: dialog bAbI file not found (task {task}, {suffix} file)")
            stories += parse_dialog_file(path, task_label(task, oov), split, f"{task}-{suffix}", max_line_chars)
    return stories
