"""Batches: padding layout, and the training-batch transforms (curriculum, entity word dropout, word swap)."""
import pytest
import torch

from corpora.config import CorpusConfig
from stmem.batch import collate, collate_stories
from stmem.config import ConfigError, load_config
from stmem.transforms import EntityWordDropout, SegmentCurriculum, WordSwap
from stmem.dataset import train_tokenizer


def _batch():
    return collate([{"segments": [[5, 6, 7], [8, 9]], "segment_entities": [[0, 3, 3], [0, 4]],
                     "question": [10, 11], "question_entities": [0, 4], "answer_ids": [12, 3]},
                    {"segments": [[5, 6]], "segment_entities": [[0, 0]],
                     "question": [10], "question_entities": [0], "answer_ids": [12, 3]}], 0, 4)


def test_collate_right_aligns_stories():
    b = _batch()
    assert b["segments"].shape == (2, 2, 3)  # as wide as the batch's longest segment, not segment_len (4)
    assert b["segments"][1, 0].eq(0).all() and b["segments"][1, 1, :2].tolist() == [5, 6]


def test_entity_word_dropout_replaces_only_linked_tokens():
    b = _batch()
    all_out = EntityWordDropout(1.0, unk_id=1)(b, tasks=[], epoch=1)
    linked = b["segment_entities"] > 0
    assert all_out["segments"][linked].eq(1).all()
    assert torch.equal(all_out["segments"][~linked], b["segments"][~linked])
    assert all_out["question"].tolist() == [[10, 1], [10, 0]]
    # entity ids stay: the KG embedding is what the model reads instead
    assert torch.equal(all_out["segment_entities"], b["segment_entities"])
    none_out = EntityWordDropout(0.0, unk_id=1)(b, tasks=[], epoch=1)
    assert torch.equal(none_out["segments"], b["segments"]) and torch.equal(none_out["question"], b["question"])
    torch.manual_seed(0)
    half = [EntityWordDropout(0.5, unk_id=1)(b, tasks=[], epoch=1)["segments"][linked].eq(1).float().mean().item() for _ in range(200)]
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
        out = swap(batch, tasks=["a", "b", "c"], epoch=1)
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


def test_word_swap_trains_class_words_no_training_example_says():
    # "bill" and "cellar" are in no training example (dialog bAbI's OOV words, named by its KB):
    # every task that uses the class swaps them in, task b's single words too
    tok, examples, _ = _swap_world()
    tok = train_tokenizer(["mary went to the kitchen .", "john went to the garden .", "where is mary ?",
                           "where is john ?"], 60, words=["bill", "cellar"])
    swap = WordSwap([["mary", "john", "bill"], ["kitchen", "garden", "cellar"]], tok, examples, tasks=["a", "b"])
    # class words said only by tasks left out of swapping (here a and c: "john", "garden") stay theirs
    only_c = WordSwap([["mary", "john"], ["kitchen", "garden"]], tok, examples, tasks=["b"])
    assert [m.tolist() for m in only_c.members["b"]] == []
    batch = collate(examples, 0, 8)
    torch.manual_seed(0)
    said = {b: set() for b in (0, 1)}
    for _ in range(60):
        out = swap(batch, tasks=["a", "b", "c"], epoch=1)
        for b in (0, 1):
            said[b] |= {tok.id_to_token(i) for i in out["segments"][b].flatten().tolist() if i}
        assert torch.equal(out["segments"][2], batch["segments"][2])  # task c is not swapped
    assert {"bill", "cellar"} <= said[0] and {"bill", "cellar"} <= said[1]


def test_word_swap_refuses_split_words_unknown_tasks_and_bad_classes():
    tok, examples, _ = _swap_world()
    with pytest.raises(ValueError, match=r"corpus.word_classes: 'sandrine' is not one token"):
        WordSwap([["mary", "sandrine"]], tok, examples)
    with pytest.raises(ValueError, match=r"corpus.word_class_tasks: 'qa21' has no training examples"):
        WordSwap([["mary", "john"]], tok, examples, tasks=["a", "qa21"])
    with pytest.raises(ValueError, match=r"corpus.word_classes: 'mary' is listed twice"):
        CorpusConfig(word_classes=[["mary", "john"], ["mary", "kitchen"]])
    with pytest.raises(ValueError, match=r"corpus.word_classes\[0\] needs at least two words"):
        CorpusConfig(word_classes=[["mary"]])
    with pytest.raises(ConfigError, match="train.swap_words is true but corpus.word_classes is empty"):
        load_config(None, ["train.swap_words=true"])


def test_segment_curriculum_keeps_the_newest_segments_in_its_epochs_only():
    b = collate([{"segments": [[5], [6], [7]], "segment_entities": [[0], [0], [1]], "question": [9],
                  "question_entities": [0], "answer_ids": [3]}], 0, 1)
    curriculum = SegmentCurriculum([1, 2])
    assert curriculum(b, tasks=["x"], epoch=1)["segments"].tolist() == [[[7]]]
    assert curriculum(b, tasks=["x"], epoch=2)["segment_entities"].tolist() == [[[0], [1]]]
    assert curriculum(b, tasks=["x"], epoch=3) is b


def test_word_swap_in_story_batches_gives_every_question_its_storys_permutation():
    """train.batch_by: story: a story's lines are read once for all its questions, so all of them must
    see the one permutation its lines got."""
    tok, examples, encode = _swap_world()
    a = examples[0]
    story = [{**a, "story_id": "s", "example_id": "s/0", "segments": a["segments"][:1],
              "segment_entities": a["segment_entities"][:1]},
             {**a, "story_id": "s", "example_id": "s/1"},
             {**examples[2], "story_id": "s", "example_id": "s/2"}]
    swap = WordSwap([["mary", "john"], ["kitchen", "garden"]], tok, examples, tasks=["a", "c"])
    batch = collate_stories(story, 0, 8)
    torch.manual_seed(0)
    seen = set()
    for _ in range(20):
        out = swap(batch, tasks=["a"], epoch=1)
        lines = [[tok.id_to_token(i) for i in s.tolist() if i] for s in out["segments"][0]]
        (p1, g1), (p2, g2) = (lines[0][0], lines[0][-2]), (lines[1][0], lines[1][-2])
        seen.add(p1)
        for q, (person, place) in enumerate([(p1, g1), (p1, g1), (p2, g2)]):  # questions 0 and 1 ask about
            assert out["question"][q].tolist() == encode(f"where is {person} ?")[0]  # line 0, 2 about line 1
            assert out["answer_ids"][q].tolist() == [tok.token_to_id(place), 3]
    assert seen == {"mary", "john"}
