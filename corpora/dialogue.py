"""Reader for dialogues: JSON Lines, one dialogue per line.

``{"id": ..., "turns": [{"speaker": "user" | "assistant", "text": ...}, ...]}``
and an optional ``"task"`` (default ``dialogue``) and ``"split"`` (``train``,
``val`` or ``test``; absent: the split the id hashes to). Every turn is one
sentence, its speaker kept as a prefix (``user: ...``), so the model sees who
said what.
Each assistant turn answers the user turn just before it: that user turn is
the question, and its context is the turns before it (the question turn is a
sentence only for later questions). The answer must come from what was said
earlier, which is what a memory is for.
"""
from __future__ import annotations

from pathlib import Path

from corpora.jsonl import Fields, jsonl_records, type_name
from corpora.schema import CorpusError, Story
from corpora.splits import SPLITS, story_split

FIELDS = ("id", "turns", "task", "split")
TURN_FIELDS = ("speaker", "text")
SPEAKERS = ("user", "assistant")
DEFAULT_TASK = "dialogue"


def read_dialogues(path: str | Path, *, val_fraction: float = 0.1, test_fraction: float = 0.1,
                   max_line_chars: int = 100_000) -> list[Story]:
    """One story per dialogue, in the split it gives or its id hashes to (``corpora.splits``)."""
    path = Path(path)
    stories: list[Story] = []
    seen: dict[str, str] = {}  # id -> the line that gave it
    for rec in jsonl_records(path, max_line_chars):
        rec.only(FIELDS)
        story_id = rec.text("id")
        task = rec.text("task", default=DEFAULT_TASK)
        turns = rec.items("turns")
        if story_id in seen:
            raise rec.error("id", f"{story_id!r} is also the id of the dialogue at {seen[story_id]}")
        seen[story_id] = rec.at
        split = story_split(rec.optional_choice("split", SPLITS), story_id, val_fraction, test_fraction)
        story = Story(story_id=story_id, task=task, split=split)
        speakers: list[str] = []
        texts: list[str] = []
        for j, raw in enumerate(turns):
            where = f"{rec.where}: turns[{j}]"
            if not isinstance(raw, dict):
                raise CorpusError(f"{where}: a turn must be a JSON object, got {type_name(raw)}")
            turn = Fields(raw, where, f"{rec.at} turns[{j}]")
            turn.only(TURN_FIELDS)
            speaker, text = turn.choice("speaker", SPEAKERS), turn.text("text")
            if speaker == "assistant":
                if not speakers or speakers[-1] != "user":
                    raise CorpusError(f"{where}: an assistant turn must follow a user turn (the question it "
                                      f"answers), got {'no turn' if not speakers else 'an assistant turn'} before it")
                story.questions.append(texts[-1])
                story.answers.append(text)
                story.question_positions.append(j - 1)
                story.supporting.append([])
            speakers.append(speaker)
            texts.append(text)
            story.sentences.append(f"{speaker}: {text}")
        if not story.questions:
            raise CorpusError(f"{rec.where}: dialogue {story_id!r} has no assistant turn (no question to answer)")
        stories.append(story)
    return stories
