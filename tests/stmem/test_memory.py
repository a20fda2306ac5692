"""Each memory component on its own: the routed write, memory tokens, no memory."""
import torch

from stmem.memory import MemoryTokens, NoMemory, RoutedMemory


def _routed(hidden=8, slots=3, route="token"):
    torch.manual_seed(0)
    mem = RoutedMemory(hidden=hidden, slots=slots, route=route)
    with torch.no_grad():  # every token's key is u, so slot i's score is slot_keys[i] . u
        u = torch.ones(hidden)
        mem.k.weight.zero_()
        mem.k.bias.copy_(u)
        mem.router.q.weight.zero_()
        mem.router.q.bias.zero_()
        mem.router.slot_keys.copy_(torch.stack([30 * u, -30 * u, -30 * u]))
    return mem


def test_read_puts_the_memory_in_front_of_the_segment_unmasked():
    mem = RoutedMemory(8, 3)
    memory, x = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    pad = torch.tensor([[False] * 5, [False, False, True, True, True]])
    seq, seq_pad = mem.read(memory, x, pad)
    assert torch.equal(seq, torch.cat([memory, x], 1))
    assert seq_pad[:, :3].eq(False).all() and torch.equal(seq_pad[:, 3:], pad)


def test_routed_write_changes_only_the_chosen_slot():
    mem = _routed()
    prev, states = torch.randn(1, 3, 8), torch.randn(1, 3 + 5, 8)  # 3 slots, then 5 tokens
    pad = torch.zeros(1, 8, dtype=torch.bool)
    with torch.no_grad():
        out = mem.write(prev, states, pad)
    assert not torch.allclose(out[:, 0], prev[:, 0], atol=1e-3)  # every token chose slot 0
    assert torch.equal(out[:, 1:], prev[:, 1:])  # no token chose these: kept exactly


def test_routed_write_can_write_nothing_and_ignores_padding():
    mem = _routed()
    prev, states = torch.randn(1, 3, 8), torch.randn(1, 3 + 5, 8)
    pad = torch.zeros(1, 8, dtype=torch.bool)
    with torch.no_grad():
        written = mem.write(prev, states, pad)
        padded = mem.write(prev, torch.cat([states, torch.randn(1, 2, 8)], 1),
                           torch.cat([pad, torch.ones(1, 2, dtype=torch.bool)], 1))
        assert torch.allclose(written, padded, atol=1e-6)  # pad tokens write nothing
        all_pad = mem.write(prev, states, torch.ones(1, 8, dtype=torch.bool))
        assert torch.equal(all_pad, prev)  # an empty segment leaves the memory exactly as it was
        mem.router.no_write.fill_(1e4)  # every token takes the no-write option
        assert torch.equal(mem.write(prev, states, pad), prev)


def test_routed_write_is_the_gated_blend_of_candidate_and_previous_slot():
    """c_t = g * c~ + (1 - g) * c_{t-1}, g = (1 - exp(-m)) * sigmoid(W_g [c~, c_{t-1}]), computed by hand."""
    torch.manual_seed(0)
    for route in ("token", "segment"):
        mem = RoutedMemory(8, 3, route=route)
        prev, tokens = torch.randn(1, 3, 8), torch.randn(1, 5, 8)
        pad = torch.tensor([[False, False, False, True, True]])
        with torch.no_grad():
            keys, values = mem.k(tokens), mem.v(tokens)
            r = mem.router
            scores = torch.einsum("bkh,blh->bkl", r.q(prev) + r.slot_keys, keys) / 8 ** 0.5
            scores = torch.cat([scores, r.no_write.expand(1, 1, 5)], 1)[..., :3]  # the real tokens
            share = scores.softmax(1)[:, :3]
            if route == "segment":  # one shared routing: the softmax of the real tokens' mean score
                share = scores.mean(-1, keepdim=True).softmax(1)[:, :3].expand(1, 3, 3)
            mass = share.sum(-1, keepdim=True)
            cand = mem.norm(share @ values[:, :3] / mass)
            g = (1 - torch.exp(-mass)) * torch.sigmoid(mem.gate(torch.cat([cand, prev], -1)))
            expected = g * cand + (1 - g) * prev
            got = mem.write(prev, torch.cat([prev, tokens], 1), torch.cat([torch.zeros(1, 3, dtype=torch.bool), pad], 1))
        assert torch.allclose(got, expected, atol=1e-5), route


def test_write_each_is_the_write_segment_by_segment():
    torch.manual_seed(0)
    mem = RoutedMemory(8, 3, route="segment")
    prev, states = torch.randn(2, 3, 8), torch.randn(2, 4, 5, 8)  # 4 segments of 5 tokens
    pad = torch.rand(2, 4, 5) < 0.3
    pad[0, 0] = True  # an empty segment
    expected = prev
    for t in range(4):
        expected = mem.write(expected, torch.cat([expected, states[:, t]], 1),
                             torch.cat([torch.zeros(2, 3, dtype=torch.bool), pad[:, t]], 1))
    assert torch.allclose(mem.write_each(prev, states, pad), expected, atol=1e-6)


def test_memory_tokens_carry_their_outputs_over_and_no_memory_carries_nothing():
    memory, states = torch.randn(2, 3, 8), torch.randn(2, 3 + 4, 8)
    pad = torch.zeros(2, 7, dtype=torch.bool)
    assert torch.equal(MemoryTokens(3).write(memory, states, pad), states[:, :3])
    none = NoMemory()
    empty = torch.zeros(2, 0, 8)
    x = torch.randn(2, 4, 8)
    assert torch.equal(none.read(empty, x, pad[:, :4])[0], x)  # nothing in front of the segment
    assert none.write(empty, states, pad).shape == (2, 0, 8)


def test_hard_routing_writes_each_segment_whole_to_its_best_slot_and_still_learns_the_routing():
    torch.manual_seed(0)
    mem = RoutedMemory(8, 4, route="segment", hard=True)
    with torch.no_grad():
        mem.router.no_write.fill_(-1e4)  # a slot is always best here (writing nowhere is tested above)
    prev, tokens = torch.zeros(3, 4, 8), torch.randn(3, 5, 8, requires_grad=True)
    pad = torch.tensor([[False] * 5, [False, False, True, True, True], [False] * 5])
    shares = mem.router(prev, *mem.router.prepare(mem.k(tokens), pad), pad)  # (B, K, L)
    soft = RoutedMemory(8, 4, route="segment")
    soft.load_state_dict(mem.state_dict(), strict=False)  # (without the empty-slot bias: no slot is written yet)
    best = soft.router(prev, *soft.router.prepare(soft.k(tokens), pad), pad)[:, :, 0].argmax(1)
    for b in range(3):  # the best slot takes every real token whole, padding goes nowhere
        real = ~pad[b]
        taken = shares[b][:, real].detach()
        one_hot = torch.zeros_like(taken)
        one_hot[best[b]] = 1
        assert torch.allclose(taken, one_hot, atol=1e-6) and shares[b][:, ~real].abs().sum() == 0
    out = mem.step(prev, *mem.prepare(tokens, pad))
    for b in range(3):
        assert (out[b].abs().sum(-1) > 0).sum() == 1  # the chosen slot changed, the others are kept exactly
    out.pow(2).sum().backward()
    assert mem.router.slot_keys.grad.abs().sum() > 0  # the softmax's gradient reaches the routing


def test_hard_routing_gives_a_segment_an_empty_slot_before_overwriting_one():
    torch.manual_seed(0)
    mem = RoutedMemory(8, 3, route="segment", hard=True)
    with torch.no_grad():
        mem.router.no_write.fill_(-1e4)
    tokens, pad = torch.randn(1, 5, 8), torch.zeros(1, 5, dtype=torch.bool)
    memory = torch.zeros(1, 3, 8)
    written = []
    with torch.no_grad():
        for _ in range(4):  # the same segment four times
            memory = mem.step(memory, *mem.prepare(tokens, pad))
            written.append(int((memory.abs().sum(-1) > 0).sum()))
        assert written == [1, 2, 3, 3]  # a slot of its own while one is empty, then the best one again
        mem.router.empty_bias.fill_(0)  # without the preference the same segment takes the same slot each time
        memory = torch.zeros(1, 3, 8)
        for _ in range(4):
            memory = mem.step(memory, *mem.prepare(tokens, pad))
        assert int((memory.abs().sum(-1) > 0).sum()) == 1
