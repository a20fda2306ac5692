"""Exact-match evaluation, per task, as the bAbI literature reports it."""
from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import torch
from tokenizers import Tokenizer

from stmem.batch import collate, collate_stories, story_batches
from stmem.dataset import decode_answer
from stmem.model import MemoryQA


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def batches(model: MemoryQA, examples: list[dict], batch_size: int, by_story: bool = False):
    """``examples`` collated in order, ``batch_size`` at a time, or (``by_story``) in whole stories of about
    ``batch_size`` questions a batch, each story's lines read once (``train.batch_by: story``)."""
    pad_id, segment_len = model.vocab.pad_id, model.vocab.segment_len
    if not by_story:
        for i in range(0, len(examples), batch_size):
            yield collate(examples[i:i + batch_size], pad_id, segment_len)
        return
    for rows in story_batches([e["story_id"] for e in examples], batch_size):
        yield collate_stories([examples[i] for i in rows], pad_id, segment_len)


def predict_answers(model: MemoryQA, examples: list[dict], tokenizer: Tokenizer, *, batch_size: int,
                    device: torch.device, by_story: bool = False) -> list[str]:
    was_training = model.training
    model.eval()
    answers: list[str] = []
    for batch in batches(model, examples, batch_size, by_story):
        for ids in model.generate(to_device(batch, device)):
            answers.append(decode_answer(tokenizer, ids))
    model.train(was_training)
    return answers


@torch.no_grad()
def mean_loss(model: MemoryQA, examples: list[dict], *, batch_size: int, device: torch.device,
              by_story: bool = False) -> float:
    """Teacher-forced answer cross-entropy, averaged over batches."""
    was_training = model.training
    model.eval()
    losses = []
    for batch in batches(model, examples, batch_size, by_story):
        losses.append(model(to_device(batch, device)).item())
    model.train(was_training)
    return sum(losses) / max(1, len(losses))


def exact_match(model: MemoryQA, examples: list[dict], tokenizer: Tokenizer, *, batch_size: int,
                device: torch.device, by_story: bool = False) -> dict:
    """``{"accuracy", "per_task": {task: acc}, "mean_error", "failed_tasks", "n", "per_question_type",
    "per_task_story_accuracy": {task: acc}}``.

    A task fails when its error is above 5%, the threshold Weston et al. use.
    """
    return score(examples, predict_answers(model, examples, tokenizer, batch_size=batch_size, device=device,
                                           by_story=by_story))


def majority_baseline(train_split: Path, examples: list[dict]) -> float:
    """Exact match of a guess that reads nothing: the training split's most frequent answer to questions of
    the same task and type (its first two words), else of the task. A model's accuracy means little until
    it is set beside this: a corpus whose answers are mostly "yes" scores well without any memory."""
    import pyarrow.parquet as pq

    train = pq.read_table(train_split, columns=["task", "question_type", "answer"]).to_pylist()
    by_type = defaultdict(Counter)
    by_task = defaultdict(Counter)
    for e in train:
        by_type[e["task"], e["question_type"]][e["answer"]] += 1
        by_task[e["task"]][e["answer"]] += 1
    hits = 0
    for e in examples:
        counts = by_type.get((e["task"], e.get("question_type"))) or by_task.get(e["task"])
        hits += bool(counts) and counts.most_common(1)[0][0] == e["answer"]
    return hits / max(1, len(examples))


def _story_of(example: dict, i: int) -> str:
    """The story an example asks about: its ``story_id``, else its ``example_id`` (``<story_id>/<q>``) less the
    question number; an example with neither is a story of its own."""
    if example.get("story_id"):
        return example["story_id"]
    return example["example_id"].rsplit("/", 1)[0] if example.get("example_id") else f"#{i}"


def score(examples: list[dict], preds: list[str]) -> dict:
    """``exact_match``'s figures for given predictions, accuracy per question type (its first two words), and
    per task the share of stories whose every question is answered exactly: ``per_task_story_accuracy``,
    the dialog bAbI papers' per-dialog accuracy (a dialogue is a story), and per-story accuracy for bAbI."""
    hits: dict[str, list[bool]] = defaultdict(list)
    by_type: dict[str, list[bool]] = defaultdict(list)
    stories: dict[str, dict[str, bool]] = defaultdict(dict)  # task -> story -> all its questions right so far
    for i, (e, p) in enumerate(zip(examples, preds)):
        hits[e["task"]].append(p == e["answer"])
        by_type[e.get("question_type") or "?"].append(p == e["answer"])
        story = _story_of(e, i)
        stories[e["task"]][story] = stories[e["task"]].get(story, True) and p == e["answer"]
    per_task = {t: sum(h) / len(h) for t, h in sorted(hits.items())}
    errors = [1 - a for a in per_task.values()]
    n = sum(len(h) for h in hits.values())
    return {
        "accuracy": sum(sum(h) for h in hits.values()) / max(1, n),
        "per_task": per_task,
        "mean_error": sum(errors) / max(1, len(errors)),
        "failed_tasks": sum(e > 0.05 for e in errors),
        "n": n,
        "per_question_type": {t: {"accuracy": sum(h) / len(h), "n": len(h)} for t, h in sorted(by_type.items())},
        "per_task_story_accuracy": {t: sum(ok.values()) / len(ok) for t, ok in sorted(stories.items())},
    }
