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
