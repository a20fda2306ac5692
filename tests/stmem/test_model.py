"""The model reads the context through its memory, and with memory learns what only memory can answer."""
import random

import pytest
import torch

from stmem.batch import collate, collate_stories, story_batches
from stmem.config import ModelConfig
from stmem.model import MemoryQA, Vocab

VOCAB = Vocab(vocab_size=40, pad_id=0, bos_id=2, eos_id=3, segment_len=6, max_question_len=4, max_answer_len=2,
              num_entities=5, entity_dim=4)
ROUTED = {"type": "routed", "slots": 4}
BATCHED = {"type": "routed", "slots": 4, "segment_sees_memory": False}
TOKENS = {"type": "tokens", "slots": 4}
MEMORIES = pytest.mark.parametrize("memory", [ROUTED, BATCHED, TOKENS], ids=["routed", "routed-batched", "tokens"])


def tiny(memory=ROUTED, kg_fusion=False, seed=0) -> MemoryQA:
    torch.manual_seed(seed)
    cfg = ModelConfig(backbone={"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64},
                      memory=memory, dropout=0.0, kg_fusion=kg_fusion)
    return MemoryQA(cfg, VOCAB, torch.randn(5, 4) if kg_fusion else None).eval()


def example(first_segment, last_segment=(10, 11, 12, 13, 14, 15), question=(20, 21), answer=(30,)):
    return {"segments": [list(first_segment), list(last_segment)], "segment_entities": [[0] * 6, [0] * 6],
            "question": list(question), "question_entities": [0] * len(question), "answer_ids": [*answer, 3]}


@MEMORIES
def test_memory_carries_earlier_segments(memory):
    model = tiny(memory)
    a = collate([example([4, 5, 6, 7, 8, 9])], 0, 6)
    b = collate([example([5, 5, 5, 5, 5, 5])], 0, 6)  # only the first segment differs
    assert (model.read_context(a["segments"], a["segment_entities"]) -
            model.read_context(b["segments"], b["segment_entities"])).abs().max() > 1e-4
    assert (model(a) - model(b)).abs() > 1e-6


def test_memory_off_sees_only_the_last_segment():
    model = tiny({"type": "none"})
    a = collate([example([4, 5, 6, 7, 8, 9])], 0, 6)
    b = collate([example([5, 5, 5, 5, 5, 5])], 0, 6)
    assert torch.equal(model(a), model(b))
    c = collate([example([4, 5, 6, 7, 8, 9], last_segment=[16] * 6)], 0, 6)
    assert (model(a) - model(c)).abs() > 1e-6


@MEMORIES
def test_memory_starts_empty_and_empty_segments_leave_it_alone(memory):
    model = tiny(memory)
    empty = torch.zeros(1, 3, 6, dtype=torch.long)
    # nothing read -> nothing in memory: no learned constant stands in for it
    assert torch.count_nonzero(model.read_context(empty, empty)) == 0
    short = collate([{**example([4] * 6), "segments": [[4] * 6]}, example([4] * 6)], 0, 6)
    assert short["segments"][0, 0].eq(0).all()  # the first story has one segment, padded in front
    alone = collate([{**example([4] * 6), "segments": [[4] * 6]}], 0, 6)
    mem_padded = model.read_context(short["segments"], short["segment_entities"])[:1]
    mem_alone = model.read_context(alone["segments"], alone["segment_entities"])
    assert torch.count_nonzero(mem_alone) > 0
    assert torch.allclose(mem_padded, mem_alone, atol=1e-6)


@MEMORIES
def test_an_empty_segment_inside_a_story_writes_nothing(memory):
    model = tiny(memory)
    a, b, c = [4, 5, 6, 7, 8, 9], [9, 8, 7, 6, 5, 4], [7, 7, 6, 6, 5, 5]
    holed = torch.tensor([[a, [0] * 6, b], [c, a, b]])  # the second story has no hole
    whole = torch.tensor([[[0] * 6, a, b], [c, a, b]])
    mem_holed = model.read_context(holed, torch.zeros_like(holed))
    assert torch.allclose(mem_holed, model.read_context(whole, torch.zeros_like(whole)), atol=1e-6)


def test_batched_segments_write_as_if_read_one_by_one():
    """segment_sees_memory=false reads every segment in one backbone call; the write order stays the story's."""
    model = tiny(BATCHED)
    batch = collate([example([4, 5, 6, 7, 8, 9]), {**example([7] * 6), "segments": [[7] * 6]}], 0, 6)
    memory = model.read_context(batch["segments"], batch["segment_entities"])
    for row in range(2):
        mem = torch.zeros(1, 4, 32)
        for t in range(2):
            ids = batch["segments"][row:row + 1, t]
            if ids.eq(0).all():
                continue
            x = model.embed(ids, batch["segment_entities"][row:row + 1, t])
            states = model.backbone(x, ids.eq(0), first_position=4)  # the positions it has after 4 slots
            mem = model.memory.write(mem, torch.cat([mem, states], 1), torch.cat([torch.zeros(1, 4, dtype=torch.bool),
                                                                                   ids.eq(0)], 1))
        assert torch.allclose(memory[row:row + 1], mem, atol=1e-5)
    # swapping the two segments changes what is remembered: the order is kept
    swapped = batch["segments"][:1].flip(1)
    assert not torch.allclose(model.read_context(swapped, batch["segment_entities"][:1]), memory[:1], atol=1e-4)


def test_kg_fusion_changes_only_linked_tokens():
    model = tiny(kg_fusion=True)
    ids = torch.tensor([[4, 5, 6]])
    x0 = model.embed(ids, torch.tensor([[0, 0, 0]]))
    x1 = model.embed(ids, torch.tensor([[0, 2, 0]]))
    assert torch.equal(x0, model.word_embeddings(ids))  # unlinked tokens are untouched
    assert torch.equal(x0[:, [0, 2]], x1[:, [0, 2]])
    assert (x0[:, 1] - x1[:, 1]).abs().max() > 1e-4


def _memory_task(n, seed):
    """The answer is the token at a random place in segment 1 of 3; later segments are noise."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        key = rng.randint(30, 37)
        first = [rng.randint(10, 19) for _ in range(6)]
        first[rng.randrange(6)] = key
        noise = [[rng.randint(10, 19) for _ in range(6)] for _ in range(2)]
        rows.append({"segments": [first, *noise], "segment_entities": [[0] * 6] * 3, "question": [20, 21],
                     "question_entities": [0, 0], "answer_ids": [key, 3]})
    return rows


def _accuracy_after_training(memory: dict) -> float:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same float sums, so the same run, on every machine
    try:
        torch.manual_seed(0)
        model = tiny(memory).train()
        train, test = _memory_task(2048, 0), _memory_task(128, 1)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        for epoch in range(16):
            for i in range(0, len(train), 32):
                loss = model(collate(train[i:i + 32], 0, 6))
                opt.zero_grad()
                loss.backward()
                opt.step()
        model.eval()
        preds = model.generate(collate(test, 0, 6))
        return sum(p == r["answer_ids"][:-1] for p, r in zip(preds, test)) / len(test)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.timeout(300)
def test_memory_model_learns_what_only_memory_can_answer():
    # 8 possible answers: chance is 12.5%
    assert _accuracy_after_training(ROUTED) >= 0.9
    assert _accuracy_after_training({"type": "none"}) <= 0.3


# Memory tokens ({type: tokens}) are left out: they learn this task from one init in three. From
# tiny(seed=0) they sit at 85% from epoch 10 to 25, then reach 100% at 26 (AMD EPYC; another CPU passed
# 90% by 16). From seeds 1 and 2 they stay at chance for 36 epochs. No shipped config uses them.
@pytest.mark.timeout(300)
def test_the_batched_segment_routed_memory_learns_it_too():
    assert _accuracy_after_training({**BATCHED, "route": "segment"}) >= 0.9


def test_reconstruction_loss_is_the_segments_words_from_what_they_write_and_only_in_training():
    """model.memory.reconstruct: each segment's summary predicts its own words, added to the loss while training."""
    memory = {**ROUTED, "route": "segment", "hard": True}
    plain, recon = tiny(memory), tiny({**memory, "reconstruct": 0.5})
    batch = collate([example([4, 5, 6, 7, 0, 0]), example([8, 9, 9, 0, 0, 0])], 0, 6)
    assert torch.equal(plain(batch), recon(batch))  # eval: the answer's loss alone
    recon.train(), plain.train()
    torch.manual_seed(1)
    with_recon = recon(batch)
    torch.manual_seed(1)
    answer_only = plain(batch)
    # by hand: segment by segment, -log p(word | summary) over its real words, the mean over segments
    terms = []
    memory_state = torch.zeros(2, 4, 32)
    with torch.no_grad():  # (dropout is 0: nothing here is random)
        for t in range(2):
            ids = batch["segments"][:, t]
            states, pad = recon.read_segment(memory_state, ids, batch["segment_entities"][:, t])
            terms.append(recon.reconstruction_loss(states[:, 4:], ids))
            memory_state = recon.memory.write(memory_state, states, pad)
        logits = recon.memory.summary(states[:, 4:], ids == 0) @ recon.word_embeddings.weight.T
        words = [(b, w) for b in range(2) for w in ids[b].tolist() if w]
        by_hand = -sum(float(logits[b].log_softmax(-1)[w]) for b, w in words) / len(words)
    assert float(terms[-1]) == pytest.approx(by_hand, rel=1e-5)
    assert float((with_recon - answer_only).detach()) == pytest.approx(0.5 * float(torch.stack(terms).mean()), rel=1e-4)


def test_decoder_reading_the_slots_changes_only_the_decoders_input():
    a = tiny({**ROUTED, "route": "segment"})
    torch.manual_seed(0)
    b = MemoryQA(a.cfg.model_copy(update={"decoder_reads_slots": True}), VOCAB).eval()
    b.load_state_dict(a.state_dict())  # no parameter of its own
    batch = collate([example([4, 5, 6, 7, 8, 9])], 0, 6)
    enc_a, pad_a = a.encode_question(batch)
    enc_b, pad_b = b.encode_question(batch)
    memory = a.read_context(batch["segments"], batch["segment_entities"])
    assert torch.equal(enc_b, torch.cat([enc_a, memory], 1)) and not pad_b[:, enc_a.shape[1]:].any()
    assert (a(batch) - b(batch)).abs() > 1e-6


@MEMORIES
def test_padding_after_the_last_token_changes_nothing(memory):
    # collate pads segments only to the batch's longest: wider padding must read the same
    model = tiny(memory)
    def short(first, last):
        e = example(first, last_segment=last)
        return {**e, "segment_entities": [[0] * len(first), [0] * len(last)]}

    batch = collate([short([4, 5, 6], (10, 11)), short([7, 8, 9, 10], (12,))], 0, 6)
    assert batch["segments"].shape[2] == 4
    wide = dict(batch)
    for key in ("segments", "segment_entities"):  # padded to segment_len, as collate did before
        x = batch[key]
        wide[key] = torch.cat([x, torch.zeros((*x.shape[:2], 2), dtype=x.dtype)], dim=2)
    with torch.no_grad():
        assert torch.allclose(model.read_context(batch["segments"], batch["segment_entities"]),
                              model.read_context(wide["segments"], wide["segment_entities"]), atol=1e-5)
        assert torch.allclose(model(batch), model(wide), atol=1e-5)


def _story(sid: str, lines: list[list[int]], asked_after: list[int]) -> list[dict]:
    """Examples of one story: a question after each of ``asked_after`` lines (0: before any), its context
    the lines before it."""
    return [{**example([4] * 6), "story_id": sid, "example_id": f"{sid}/{q}", "segments": lines[:n],
             "segment_entities": [[0] * len(line) for line in lines[:n]], "question": [20 + q, 21],
             "question_entities": [0, 0], "answer_ids": [30 + q, 3]} for q, n in enumerate(asked_after)]


@pytest.mark.parametrize("memory", [ROUTED, BATCHED, TOKENS, {"type": "none"}],
                         ids=["routed", "routed-batched", "tokens", "none"])
def test_story_batches_answer_as_each_question_read_alone(memory):
    """train.batch_by: story reads a story's lines once; every question still gets the memory after the
    lines before it, its last line beside it, and so the same loss and answers."""
    model = tiny(memory)
    lines = [[4, 5, 6, 7, 8, 9], [9, 8, 7], [7, 7, 6, 6, 5, 5], [11, 12, 13, 14]]
    examples = _story("a", lines, [0, 1, 3, 4]) + _story("b", [[5, 6], [16, 17, 18]], [2, 1])
    stories = collate_stories(examples, 0, 6)
    assert stories["segments"].shape[:2] == (2, 4) and stories["question_segments"].tolist() == [0, 1, 3, 4, 2, 1]
    alone = collate(examples, 0, 6)
    assert torch.allclose(model(stories), model(alone), atol=1e-6)
    assert model.generate(stories) == model.generate(alone)
    enc_s, pad_s = model.encode_question(stories)
    enc_a, pad_a = model.encode_question(alone)
    assert torch.equal(pad_s, pad_a) and torch.allclose(enc_s, enc_a, atol=1e-5)


def test_story_batches_refuse_a_context_that_is_not_the_lines_before_the_question():
    lines = [[4, 5, 6, 7, 8, 9], [9, 8, 7], [7, 7, 6]]
    cut = _story("a", lines, [1, 3])
    cut[1] = {**cut[1], "segments": lines[1:], "segment_entities": [[0] * len(x) for x in lines[1:]]}  # newest 2
    with pytest.raises(ValueError, match="'a/1'.*dataset.max_segments.*train.batch_by: example"):
        collate_stories(cut, 0, 6)


def test_story_batches_hold_whole_stories_of_about_the_batch_size():
    ids = ["a"] * 3 + ["b"] * 5 + ["c"] + ["d"] * 2
    assert story_batches(ids, 4) == [[0, 1, 2, 3, 4, 5, 6, 7], [8, 9, 10]]
    assert story_batches(ids, 1) == [[0, 1, 2], [3, 4, 5, 6, 7], [8], [9, 10]]
