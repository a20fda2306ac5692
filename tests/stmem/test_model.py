"""The model's memory is written from the input, read in later segments, and learns."""
import random

import pytest
import torch

from stmem.batch import collate
from stmem.config import ModelConfig
from stmem.model import GatedSlotMemory, MemoryQA, RoutedSlotMemory, Vocab

VOCAB = Vocab(vocab_size=40, pad_id=0, bos_id=2, eos_id=3, segment_len=6, max_question_len=4, max_answer_len=2,
              num_entities=5, entity_dim=4)


def tiny(memory=True, kg_fusion=False, seed=0, **kw) -> MemoryQA:
    torch.manual_seed(seed)
    cfg = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, memory_slots=4, dropout=0.0,
                      memory=memory, kg_fusion=kg_fusion, **kw)
    return MemoryQA(cfg, VOCAB, torch.randn(5, 4) if kg_fusion else None).eval()


def example(first_segment, last_segment=(10, 11, 12, 13, 14, 15), question=(20, 21), answer=(30,)):
    return {"segments": [list(first_segment), list(last_segment)], "segment_entities": [[0] * 6, [0] * 6],
            "question": list(question), "question_entities": [0] * len(question), "answer_ids": [*answer, 3]}


BOTH_READS = pytest.mark.parametrize("sees_memory", [True, False], ids=["segment-sees-memory", "segments-batched"])


@pytest.mark.parametrize("sees_memory,memory_type", [(True, "routed"), (False, "routed"), (True, "gated")],
                         ids=["segment-sees-memory", "segments-batched", "gated"])
def test_memory_carries_earlier_segments(sees_memory, memory_type):
    model = tiny(segment_sees_memory=sees_memory, memory_type=memory_type)
    a = collate([example([4, 5, 6, 7, 8, 9])], 0, 6)
    b = collate([example([5, 5, 5, 5, 5, 5])], 0, 6)  # only the first segment differs
    mem_a = model.read_context(a["segments"], a["segment_entities"])
    mem_b = model.read_context(b["segments"], b["segment_entities"])
    assert not torch.allclose(mem_a, mem_b, atol=1e-5)
    assert not torch.allclose(model(a), model(b), atol=1e-5)


def test_memory_off_sees_only_the_last_segment():
    model = tiny(memory=False)
    a = collate([example([4, 5, 6, 7, 8, 9])], 0, 6)
    b = collate([example([5, 5, 5, 5, 5, 5])], 0, 6)
    assert torch.allclose(model(a), model(b))
    c = collate([example([4, 5, 6, 7, 8, 9], last_segment=[16] * 6)], 0, 6)
    assert not torch.allclose(model(a), model(c))


@BOTH_READS
def test_memory_starts_empty_and_empty_segments_leave_it_alone(sees_memory):
    model = tiny(segment_sees_memory=sees_memory)
    empty = torch.zeros(1, 3, 6, dtype=torch.long)
    # nothing read -> nothing in memory: no learned constant stands in for it
    assert torch.count_nonzero(model.read_context(empty, empty)) == 0
    short = collate([{**example([4] * 6), "segments": [[4] * 6]}, example([4] * 6)], 0, 6)
    # the first story has one segment, padded in front with an empty one
    assert short["segments"][0, 0].eq(0).all()
    alone = collate([{**example([4] * 6), "segments": [[4] * 6]}], 0, 6)
    mem_padded = model.read_context(short["segments"][:1], short["segment_entities"][:1])
    mem_alone = model.read_context(alone["segments"], alone["segment_entities"])
    assert torch.allclose(mem_padded, mem_alone, atol=1e-6)


@BOTH_READS
def test_an_empty_segment_inside_a_story_writes_nothing(sees_memory):
    model = tiny(segment_sees_memory=sees_memory)
    a, b, c = [4, 5, 6, 7, 8, 9], [9, 8, 7, 6, 5, 4], [7, 7, 6, 6, 5, 5]
    holed = torch.tensor([[a, [0] * 6, b], [c, a, b]])  # the second story has no hole
    whole = torch.tensor([[[0] * 6, a, b], [c, a, b]])
    mem_holed = model.read_context(holed, torch.zeros_like(holed))
    assert torch.allclose(mem_holed, model.read_context(whole, torch.zeros_like(whole)), atol=1e-6)
    assert not torch.isnan(mem_holed).any()


def test_batched_segments_write_as_if_read_one_by_one():
    """segment_sees_memory=false encodes all segments in one call; the write order stays the story's."""
    model = tiny(segment_sees_memory=False)
    batch = collate([example([4, 5, 6, 7, 8, 9]), {**example([7] * 6), "segments": [[7] * 6]}], 0, 6)
    memory = model.read_context(batch["segments"], batch["segment_entities"])
    for row in range(2):
        mem = torch.zeros(1, 4, 32)
        for t in range(2):
            ids = batch["segments"][row:row + 1, t]
            if ids.eq(0).all():
                continue
            states = model.encoder(inputs_embeds=model._embed(ids, batch["segment_entities"][row:row + 1, t]),
                                   attention_mask=ids.ne(0).long(),
                                   position_ids=torch.arange(4, 10)[None]).last_hidden_state  # after 4 slots
            mem = model.memory.write(mem, *model.memory.project(states), ids.eq(0))
        assert torch.allclose(memory[row:row + 1], mem, atol=1e-5)
    # swapping the two segments changes what is remembered: the order is kept
    swapped = batch["segments"][:1].flip(1)
    assert not torch.allclose(model.read_context(swapped, batch["segment_entities"][:1]), memory[:1], atol=1e-4)


def test_batched_segments_need_the_routed_memory():
    with pytest.raises(ValueError, match="segment_sees_memory"):
        ModelConfig(memory_type="gated", segment_sees_memory=False)


def test_segment_routing_needs_the_routed_memory():
    with pytest.raises(ValueError, match="memory_route"):
        ModelConfig(memory_type="rmt", memory_route="segment")


def test_gate_blends_candidate_and_previous_memory():
    torch.manual_seed(0)
    mem = GatedSlotMemory(hidden=8, slots=2, heads=2)
    prev, states = torch.randn(1, 2, 8), torch.randn(1, 5, 8)
    pad = torch.zeros(1, 5, dtype=torch.bool)
    with torch.no_grad():
        mem.gate.weight.zero_()
        mem.gate.bias.fill_(-30.0)  # g ~ 0: keep c_{t-1}
        assert torch.allclose(mem(prev, states, pad), prev, atol=1e-6)
        mem.gate.bias.fill_(30.0)  # g ~ 1: take the candidate written from the segment
        out = mem(prev, states, pad)
        assert not torch.allclose(out, prev, atol=1e-3)
        assert torch.allclose(out, mem(prev, states * 1.0, pad))


def _routed(hidden=8, slots=3):
    torch.manual_seed(0)
    mem = RoutedSlotMemory(hidden=hidden, slots=slots)
    with torch.no_grad():  # every token's key is u, so slot i's score is slot_keys[i] . u
        u = torch.ones(hidden)
        mem.k.weight.zero_()
        mem.k.bias.copy_(u)
        mem.q.weight.zero_()
        mem.q.bias.zero_()
        mem.slot_keys.copy_(torch.stack([30 * u, -30 * u, -30 * u]))
    return mem


def test_routed_write_changes_only_the_chosen_slot():
    mem = _routed()
    prev, states = torch.randn(1, 3, 8), torch.randn(1, 3 + 5, 8)  # 3 slots, then 5 tokens
    pad = torch.zeros(1, 8, dtype=torch.bool)
    with torch.no_grad():
        out = mem(prev, states, pad)
    assert not torch.allclose(out[:, 0], prev[:, 0], atol=1e-3)  # every token chose slot 0
    assert torch.equal(out[:, 1:], prev[:, 1:])  # no token chose these: kept exactly


def test_routed_write_can_write_nothing_and_ignores_padding():
    mem = _routed()
    prev, states = torch.randn(1, 3, 8), torch.randn(1, 3 + 5, 8)
    pad = torch.zeros(1, 8, dtype=torch.bool)
    with torch.no_grad():
        written = mem(prev, states, pad)
        padded = mem(prev, torch.cat([states, torch.randn(1, 2, 8)], 1), torch.cat([pad, torch.ones(1, 2, dtype=torch.bool)], 1))
        assert torch.allclose(written, padded, atol=1e-6)  # pad tokens write nothing
        mem.no_write.fill_(1e4)  # every token takes the no-write option
        assert torch.equal(mem(prev, states, pad), prev)


def test_routed_by_segment_writes_the_segment_whole_with_one_routing():
    torch.manual_seed(0)
    mem = RoutedSlotMemory(8, 3, route="segment")
    prev, keys, values = torch.randn(1, 3, 8), torch.randn(1, 5, 8), torch.randn(1, 5, 8)
    pad = torch.tensor([[False, False, False, True, True]])
    with torch.no_grad():
        share = mem.route(prev, keys)[:, :, :3].mean(-1)  # the real tokens' mean routing
        mass = 3 * share[:, :3, None]
        cand = mem.norm(values[:, :3].mean(1, keepdim=True)).expand(1, 3, 8)  # every slot gets the segment's mean
        g = (1 - torch.exp(-mass)) * torch.sigmoid(mem.gate(torch.cat([cand, prev], -1)))
        assert torch.allclose(mem.write(prev, keys, values, pad), g * cand + (1 - g) * prev, atol=1e-5)
        mem.route_by = "token"  # routed token by token, the write differs
        assert not torch.allclose(mem.write(prev, keys, values, pad), g * cand + (1 - g) * prev, atol=1e-3)


@BOTH_READS
def test_ring_routing_writes_a_story_s_t_th_segment_to_slot_t_mod_k(sees_memory):
    model = tiny(memory_route="ring", segment_sees_memory=sees_memory)  # 4 slots
    seg = [[4, 5, 6, 7, 8, 9], [9, 8, 7, 6, 5, 4], [7, 7, 6, 6, 5, 5], [5, 6, 7, 5, 6, 7], [8, 8, 9, 9, 4, 4]]
    empty = [0] * 6
    stories = torch.tensor([[empty, empty, seg[0], seg[1], seg[2]],   # three segments: slots 0-2, slot 3 untouched
                            [seg[0], seg[1], seg[2], seg[3], seg[4]],  # five: the fifth goes back to slot 0
                            [empty, seg[0], empty, seg[1], seg[2]]])   # a hole: counted, written nowhere
    memory = model.read_context(stories, torch.zeros_like(stories))
    written = memory.abs().sum(-1) > 0
    assert written.tolist() == [[True, True, True, False], [True] * 4, [True, False, True, True]]
    first_four = model.read_context(stories[1:2, :4], torch.zeros_like(stories[1:2, :4]))
    assert torch.allclose(memory[1, 1:], first_four[0, 1:], atol=1e-6)  # the fifth segment touched slot 0 only
    assert not torch.allclose(memory[1, 0], first_four[0, 0], atol=1e-4)
    if not sees_memory:  # segments read alone: a slot holds its segment whatever came before it
        assert torch.allclose(memory[2, [0, 2, 3]], memory[0, :3], atol=1e-6)
    with pytest.raises(ValueError, match="memory_route=ring needs model.memory_type=routed"):
        ModelConfig(memory_type="gated", memory_route="ring")


def test_ring_slots_beside_the_routed_ones_take_each_segment_whole_in_turn():
    torch.manual_seed(0)
    mem = RoutedSlotMemory(8, 3, route="segment", ring_slots=2)
    plain = RoutedSlotMemory(8, 3, route="segment")
    plain.load_state_dict(mem.state_dict())
    prev, keys, values = torch.randn(2, 5, 8), torch.randn(2, 4, 8), torch.randn(2, 4, 8)
    pad = torch.tensor([[False, False, False, True], [False] * 4])
    index = torch.tensor([0, 3])  # each row's segment index in its story: ring slots 0 and 1
    with torch.no_grad():
        route = mem.routing(prev, *mem.prepare(keys, pad), pad, index)
        # the routed slots route as they would alone, reading only the routed slots' memory
        assert torch.allclose(route[:, :3], plain.routing(prev[:, :3], *plain.prepare(keys, pad), pad), atol=1e-6)
        real = (~pad).float()
        assert torch.equal(route[:, 3:], torch.stack([torch.stack([real[0], 0 * real[0]]),
                                                      torch.stack([0 * real[1], real[1]])]))
        written = mem.write(prev, keys, values, pad, index)
        assert torch.allclose(written[:, :3], plain.write(prev[:, :3], keys, values, pad), atol=1e-6)
        assert torch.equal(written[0, 4], prev[0, 4]) and torch.equal(written[1, 3], prev[1, 3])
        assert not torch.allclose(written[0, 3], prev[0, 3]) and not torch.allclose(written[1, 4], prev[1, 4])
    with pytest.raises(ValueError, match="segment index"):
        mem.write(prev, keys, values, pad)
    with pytest.raises(ValueError, match="model.ring_slots needs"):
        ModelConfig(memory_route="ring", ring_slots=2)


@BOTH_READS
def test_a_model_with_ring_slots_keeps_each_segment_of_a_story_in_its_own_ring_slot(sees_memory):
    model = tiny(memory_route="segment", ring_slots=3, segment_sees_memory=sees_memory)  # 4 routed + 3 ring
    seg = [[4, 5, 6, 7, 8, 9], [9, 8, 7, 6, 5, 4], [7, 7, 6, 6, 5, 5]]
    stories = torch.tensor([[[0] * 6, seg[0], seg[1]], seg])
    memory = model.read_context(stories, torch.zeros_like(stories))
    assert memory.shape[1] == 7
    assert (memory[:, 4:].abs().sum(-1) > 0).tolist() == [[True, True, False], [True, True, True]]
    if not sees_memory:  # segments read alone: a ring slot holds its segment whatever else the story says
        assert torch.allclose(memory[0, 4:6], memory[1, 4:6], atol=1e-6)


def test_routing_scores_split_into_a_memory_term_and_a_precomputed_token_term():
    """prepare() + shares() (what the write runs) is the routing softmax over (q(c) + slot key) . key."""
    torch.manual_seed(0)
    mem = RoutedSlotMemory(8, 3)
    prev, keys = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    pad = torch.tensor([[False] * 5, [False, False, False, True, True]])
    with torch.no_grad():
        scores = torch.einsum("bkh,blh->bkl", mem.q(prev) + mem.slot_keys, keys) / 8 ** 0.5
        direct = torch.cat([scores, mem.no_write.expand(2, 1, 5)], 1).softmax(1)
        assert torch.allclose(mem.route(prev, keys), direct, atol=1e-6)
        masked = mem.shares(prev, *mem.prepare(keys, pad))
    assert torch.allclose(masked[0], direct[0], atol=1e-6)
    assert torch.allclose(masked[1, :, :3], direct[1, :, :3], atol=1e-6)
    assert torch.equal(masked[1, :, 3:], torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [1.0, 1.0]]))  # pad goes nowhere


def test_kg_fusion_changes_only_linked_tokens():
    model = tiny(kg_fusion=True)
    ids = torch.tensor([[4, 5, 6]])
    x0 = model._embed(ids, torch.tensor([[0, 0, 0]]))
    x1 = model._embed(ids, torch.tensor([[0, 2, 0]]))
    assert torch.allclose(x0[:, [0, 2]], x1[:, [0, 2]])
    assert not torch.allclose(x0[:, 1], x1[:, 1])
    assert torch.equal(x0, model.word_embeddings(ids))  # unlinked tokens are untouched


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


def _accuracy_after_training(memory: bool, **kw) -> float:
    # One thread: the same float sums, so the same run, on every machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_and_score(memory, **kw)
    finally:
        torch.set_num_threads(threads)


def _train_and_score(memory: bool, **kw) -> float:
    torch.manual_seed(0)
    model = tiny(memory=memory, **kw).train()
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


@pytest.mark.timeout(300)
def test_memory_model_learns_what_only_memory_can_answer():
    with_memory = _accuracy_after_training(memory=True)
    without = _accuracy_after_training(memory=False)
    # 8 possible answers: chance is 12.5%
    assert with_memory >= 0.9, with_memory
    assert without <= 0.3, without


@pytest.mark.timeout(300)
@pytest.mark.parametrize("route,ring_slots", [("token", 0), ("ring", 0), ("segment", 2)])
def test_memory_learns_with_segments_encoded_in_one_batch(route, ring_slots):
    assert _accuracy_after_training(memory=True, segment_sees_memory=False, memory_route=route,
                                    ring_slots=ring_slots) >= 0.9


def test_rmt_memory_tokens_carry_earlier_segments():
    model = tiny(memory_type="rmt")
    assert model.memory is None
    a = collate([example([4, 5, 6, 7, 8, 9])], 0, 6)
    b = collate([example([5, 5, 5, 5, 5, 5])], 0, 6)
    mem_a = model.read_context(a["segments"], a["segment_entities"])
    mem_b = model.read_context(b["segments"], b["segment_entities"])
    # at initialisation the weights are small (std 0.02), and so is the difference
    assert (mem_a - mem_b).abs().max() > 1e-4
    empty = torch.zeros(1, 2, 6, dtype=torch.long)
    assert torch.count_nonzero(model.read_context(empty, empty)) == 0
