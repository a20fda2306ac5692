"""Batches: padding layout and the training-time augmentations (entity word dropout, word swap)."""
import pytest
import torch

from stmem.batch import WordSwap, collate, drop_entity_words
from stmem.config import TrainConfig
from stmem.dataset import train_tokenizer


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


def _swap_world():
    """Three tasks' examples over a small tokenizer; a word's entity also links the "the" before it."""
    tok = train_tokenizer(["mary went to the kitchen .", "john went to the garden .", "where is mary ?",
                           "where is john ?"], 60)
    entity = {"mary": 1, "john": 2, "kitchen": 3, "garden": 4}

    def encode(text):
        words = text.split()
        ents = [entity.get(w, entity.get(words[i + 1], 0) if w == "the" else 0) for i, w in enumerate(words)]
        return [tok.token_to_id(w) for w in words], ents

    def example(task, sentences, question, answer):
        segs = [encode(s) for s in sentences]
        q = encode(question)
        return {"task": task, "segments": [s[0] for s in segs], "segment_entities": [s[1] for s in segs],
                "question": q[0], "question_entities": q[1], "answer_ids": [tok.token_to_id(answer), 3]}

    both = ["mary went to the kitchen .", "john went to the garden ."]
    examples = [example("a", both, "where is mary ?", "kitchen"),
                example("b", ["mary went to the kitchen ."], "where is mary ?", "kitchen"),
                example("c", both, "where is john ?", "garden")]
    return tok, examples, encode


def test_word_swap_renames_story_question_answer_and_entities_alike():
    tok, examples, encode = _swap_world()
    swap = WordSwap([["mary", "john"], ["kitchen", "garden"]], tok, examples, tasks=["a", "b"])
    batch = collate(examples, 0, 8)
    torch.manual_seed(0)
    firsts = set()
    for _ in range(40):
        out = swap(batch, ["a", "b", "c"])
        story = [" ".join(tok.id_to_token(i) for i in s.tolist() if i) for s in out["segments"][0]]
        person, place = story[0].split()[0], story[0].split()[-2]
        firsts.add((person, place))
        # one permutation per example: the question asks about the first sentence's
        # person, and the answer is where that person went
        q_ids, q_ents = encode(f"where is {person} ?")
        assert out["question"][0].tolist() == q_ids and out["question_entities"][0].tolist() == q_ents
        assert out["answer_ids"][0].tolist() == [tok.token_to_id(place), 3]
        assert sorted(s.split()[0] for s in story) == ["john", "mary"]
        # every token is linked to its new word's entity, the "the" before a place too
        for s, (ids, ents) in enumerate(zip(out["segments"][0], out["segment_entities"][0])):
            want_ids, want_ents = encode(story[s])
            assert ids[:len(want_ids)].tolist() == want_ids and ents[:len(want_ents)].tolist() == want_ents
        # task b uses one word of each class, task c is not swapped: both untouched
        for b in (1, 2):
            assert all(torch.equal(out[k][b], batch[k][b]) for k in batch)
    assert firsts == {(p, q) for p in ("mary", "john") for q in ("kitchen", "garden")}  # classes drawn apart


def test_word_swap_refuses_split_words_unknown_tasks_and_bad_classes():
    tok, examples, _ = _swap_world()
    with pytest.raises(ValueError, match=r"train.swap_words: 'sandrine' is not one token"):
        WordSwap([["mary", "sandrine"]], tok, examples)
    with pytest.raises(ValueError, match=r"train.swap_tasks: 'qa21' has no training examples"):
        WordSwap([["mary", "john"]], tok, examples, tasks=["a", "qa21"])
    with pytest.raises(ValueError, match=r"train.swap_words: 'mary' is listed twice"):
        TrainConfig(swap_words=[["mary", "john"], ["mary", "kitchen"]])
    with pytest.raises(ValueError, match=r"train.swap_words\[0\] needs at least two words"):
        TrainConfig(swap_words=[["mary"]])
