"""Batches: padding layout and the training-time entity word dropout."""
import torch

from stmem.batch import collate, drop_entity_words


def _batch():
    return collate([{"segments": [[5, 6, 7], [8, 9]], "segment_entities": [[0, 3, 3], [0, 4]],
                     "question": [10, 11], "question_entities": [0, 4], "answer_ids": [12, 3]},
                    {"segments": [[5, 6]], "segment_entities": [[0, 0]],
                     "question": [10], "question_entities": [0], "answer_ids": [12, 3]}], 0, 4)


def test_collate_right_aligns_stories():
    b = _batch()
    assert b["segments"].shape == (2, 2, 4)
    assert b["segments"][1, 0].eq(0).all() and b["segments"][1, 1, :2].tolist() == [5, 6]


def test_entity_word_dropout_replaces_only_linked_tokens():
    b = _batch()
    all_out = drop_entity_words(b, 1.0, unk_id=1)
    linked = b["segment_entities"] > 0
    assert all_out["segments"][linked].eq(1).all()
    assert torch.equal(all_out["segments"][~linked], b["segments"][~linked])
    assert all_out["question"].tolist() == [[10, 1], [10, 0]]
    # entity ids stay: the KG embedding is what the model reads instead
    assert torch.equal(all_out["segment_entities"], b["segment_entities"])
    none_out = drop_entity_words(b, 0.0, unk_id=1)
    assert torch.equal(none_out["segments"], b["segments"]) and torch.equal(none_out["question"], b["question"])
    torch.manual_seed(0)
    half = [drop_entity_words(b, 0.5, unk_id=1)["segments"][linked].eq(1).float().mean().item() for _ in range(200)]
    assert 0.4 < sum(half) / len(half) < 0.6
