"""Pad tokenised examples into the tensors ``MemoryQA`` reads."""
from __future__ import annotations

import torch


def collate(examples: list[dict], pad_id: int, segment_len: int) -> dict[str, torch.Tensor]:
    """Stack examples into (B, S, L) segments, (B, Lq) questions, (B, A) answers.

    Stories with fewer segments are padded with empty segments at the *front*,
    so every story's last segment sits at index S-1 (that is what the
    memory-off ablation keeps) and the empty ones leave the memory untouched.
    L is the batch's longest segment, at most ``segment_len``: padding after
    the last token is masked everywhere, so reading it only costs time
    (dialog bAbI's lines: 44 allowed, at most 30 in a training batch).
    """
    B = len(examples)
    S = max(1, max(len(e["segments"]) for e in examples))
    L = max(1, min(segment_len, max((len(ids) for e in examples for ids in e["segments"]), default=1)))
    seg = torch.full((B, S, L), pad_id, dtype=torch.long)
    ent = torch.zeros((B, S, L), dtype=torch.long)
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


def collate_stories(examples: list[dict], pad_id: int, segment_len: int) -> dict[str, torch.Tensor]:
    """Examples grouped by story, each story's context read once (``train.batch_by: story``).

    ``examples`` hold every question of each of their stories that is asked
    here, a story's consecutive, and every question's context is the lines
    before it (dialog bAbI, bAbI). Each story's lines are its longest
    context, left-aligned in (N, S, L) ``segments``; question q reads its
    story ``question_story[q]`` up to ``question_segments[q]`` lines, so the
    memory after those lines is the one it would have read alone. Questions
    and answers are (Q, ·) as in ``collate``.
    """
    stories: list[list[list[int]]] = []  # per story: its lines
    story_ents: list[list[list[int]]] = []
    of, upto = [], []
    last_id = None
    for e in examples:
        if e["story_id"] != last_id:
            last_id = e["story_id"]
            stories.append([])
            story_ents.append([])
        lines, n = stories[-1], len(e["segments"])
        shared = min(n, len(lines))
        if e["segments"][:shared] != lines[:shared]:
            raise ValueError(f"train.batch_by: story: question {e['example_id']!r} does not read the lines before "
                             f"it from its story's first line (the dataset keeps only the newest lines? "
                             f"dataset.max_segments); use train.batch_by: example")
        if n > len(lines):
            lines += e["segments"][len(lines):]
            story_ents[-1] += e["segment_entities"][len(story_ents[-1]):]
        of.append(len(stories) - 1)
        upto.append(n)
    S = max(1, max(len(s) for s in stories))
    L = max(1, min(segment_len, max((len(ids) for s in stories for ids in s), default=1)))
    seg = torch.full((len(stories), S, L), pad_id, dtype=torch.long)
    ent = torch.zeros((len(stories), S, L), dtype=torch.long)
    for b, (lines, ents) in enumerate(zip(stories, story_ents)):
        for s, (ids, es) in enumerate(zip(lines, ents)):
            seg[b, s, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            ent[b, s, : len(es)] = torch.tensor(es, dtype=torch.long)
    batch = {"segments": seg, "segment_entities": ent, "question_story": torch.tensor(of),
             "question_segments": torch.tensor(upto)}
    batch["question"], batch["question_entities"] = _pad([e["question"] for e in examples], pad_id), \
        _pad([e["question_entities"] for e in examples], 0)
    if all("answer_ids" in e for e in examples):
        batch["answer_ids"] = _pad([e["answer_ids"] for e in examples], pad_id)
    return batch


def story_batches(story_ids: list[str], questions: int) -> list[list[int]]:
    """Example indices cut into batches of whole stories (a story's examples consecutive in ``story_ids``), a
    batch ending once it holds at least ``questions`` examples."""
    batches: list[list[int]] = [[]]
    for i, sid in enumerate(story_ids):
        if batches[-1] and len(batches[-1]) >= questions and sid != story_ids[i - 1]:
            batches.append([])
        batches[-1].append(i)
    return [b for b in batches if b]
