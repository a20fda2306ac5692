"""Training reads a split a row group at a time: the epoch order keeps to a window of row groups,
and training holds no more than that window (stmem/examples.py)."""
import random

import pytest
import torch

import stmem.train
from stmem.examples import ParquetExamples, epoch_order
from stmem.layout import split_file
from stmem.train import fit, load_examples
from tests.conftest import make_dataset, tiny_config


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    torch.set_num_threads(1)
    return make_dataset(tmp_path_factory.mktemp("stream"), row_group_rows=8)  # 60 training examples: 8 groups


def test_examples_are_read_a_row_group_at_a_time(ds):
    whole = load_examples(split_file(ds, "train"))
    ex = ParquetExamples(split_file(ds, "train"), cache_groups=2)
    assert len(ex) == len(whole) == 60 and [len(g) for g in ex.groups] == [8] * 7 + [4]
    assert ex[61 - 62] == whole[-1] and ex[3:5] == whole[3:5] and ex.groups_read == 2
    with pytest.raises(IndexError, match="row 60 of 60"):
        ex[60]


def test_an_epoch_reads_each_row_group_once_and_holds_a_window(ds):
    whole = load_examples(split_file(ds, "train"))
    ex = ParquetExamples(split_file(ds, "train"), cache_groups=2)
    order = epoch_order(ex, random.Random(0), 2, list(range(len(ex))))
    assert sorted(order) == list(range(60)) and order != sorted(order)
    assert [ex[i] for i in order] == [whole[i] for i in order]
    assert ex.groups_read == 8 and ex.most_held == 2
    # a split within one window is shuffled whole, in place, as training always did
    previous = list(range(60))
    expected = previous.copy()
    random.Random(1).shuffle(expected)
    assert epoch_order(ex, random.Random(1), 8, previous) is previous and previous == expected


def test_training_streams_the_split_instead_of_loading_it(ds, tmp_path, monkeypatch):
    opened = {}

    class Recorded(ParquetExamples):
        def __init__(self, path, cache_groups):
            super().__init__(path, cache_groups)
            opened[path.parent.name] = self

    monkeypatch.setattr(stmem.train, "ParquetExamples", Recorded)
    summary = fit(tiny_config(epochs=2, shuffle_window=2), dataset_dir=ds, out_dir=tmp_path)
    assert summary["epochs_run"] == 2
    train = opened["split=train"]
    assert train.most_held == 2 and train.groups_read == 2 * 8  # each group decoded once an epoch
    assert all(e.most_held <= 2 for e in opened.values())
