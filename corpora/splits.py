"""Train/val/test by a hash of the story id, for corpora that come in one file.

A story's split depends on its id alone, never on its position in the file or
on a seed: a story is never in two splits, and adding or removing other records
does not move it (a story seen in training never turns up in a later test set).
A record that names its ``split`` keeps it (``story_split``): a corpus with an
official split is read with that split.
"""
from __future__ import annotations

import hashlib


def hash_fraction(story_id: str) -> float:
    """A number in [0, 1) fixed by ``story_id``: the first 8 bytes of its SHA-256, over 2**64."""
    return int.from_bytes(hashlib.sha256(story_id.encode("utf-8")).digest()[:8], "big") / 2**64


SPLITS = ("train", "val", "test")


def story_split(given: str | None, story_id: str, val_fraction: float, test_fraction: float) -> str:
    """The split a record gave, else the one its story id hashes to."""
    return given if given is not None else split_of(story_id, val_fraction, test_fraction)


def split_of(story_id: str, val_fraction: float, test_fraction: float) -> str:
    """``test`` for a ``test_fraction`` share of ids, ``val`` for the next ``val_fraction``, else ``train``."""
    if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction < 1):
        raise ValueError(f"val_fraction {val_fraction} + test_fraction {test_fraction} must lie in [0, 1)")
    h = hash_fraction(story_id)
    if h < test_fraction:
        return "test"
    if h < test_fraction + val_fraction:
        return "val"
    return "train"
