"""A split's examples read from Parquet one row group at a time, and an epoch order that keeps it so.

Training picks examples by index in a shuffled order. ``ParquetExamples``
answers ``examples[i]`` from the row group holding row i, keeping the last
``cache_groups`` groups decoded; ``epoch_order`` shuffles the row groups,
then the examples within each window of ``window`` groups, so an epoch
decodes each group once and never holds more than a window. A split of at
most ``window`` groups is shuffled whole, as one list.
"""
from __future__ import annotations

import random
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Sequence
from itertools import accumulate
from pathlib import Path

import pyarrow.parquet as pq


class ParquetExamples(Sequence):
    """The rows of one Parquet file as dicts, decoded a row group at a time (at most ``cache_groups`` held)."""

    def __init__(self, path: str | Path, cache_groups: int = 8):
        self.path, self.cache_groups = Path(path), cache_groups
        self.file = pq.ParquetFile(self.path)
        sizes = [self.file.metadata.row_group(g).num_rows for g in range(self.file.num_row_groups)]
        self.starts = list(accumulate(sizes, initial=0))  # the first row of each group, then the row count
        self._held: OrderedDict[int, list[dict]] = OrderedDict()  # the decoded groups, least recent first
        self.groups_read = self.most_held = 0  # what streaming costs: decodes, and the most groups held at once

    def __len__(self) -> int:
        return self.starts[-1]

    @property
    def groups(self) -> list[range]:
        """The rows of each row group."""
        return [range(a, b) for a, b in zip(self.starts, self.starts[1:])]

    def _group(self, g: int) -> list[dict]:
        rows = self._held.get(g)
        if rows is None:
            rows = self._held[g] = self.file.read_row_group(g).to_pylist()
            self.groups_read += 1
            if len(self._held) > self.cache_groups:
                self._held.popitem(last=False)
            self.most_held = max(self.most_held, len(self._held))
        self._held.move_to_end(g)
        return rows

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"{self.path}: row {i} of {len(self)}")
        g = bisect_right(self.starts, i) - 1
        return self._group(g)[i - self.starts[g]]


def epoch_order(examples: ParquetExamples, rng: random.Random, window: int, previous: list[int]) -> list[int]:
    """This epoch's order of example indices.

    Up to ``window`` row groups: ``previous`` (the last epoch's order) shuffled
    in place, a plain shuffle of the whole split. More: the groups in random
    order, and the examples of each ``window`` consecutive groups shuffled
    among themselves, so the epoch reads the file a window at a time.
    """
    groups = examples.groups
    if len(groups) <= window:
        rng.shuffle(previous)
        return previous
    rng.shuffle(groups)
    order = []
    for w in range(0, len(groups), window):
        block = [i for g in groups[w:w + window] for i in g]
        rng.shuffle(block)
        order += block
    return order
