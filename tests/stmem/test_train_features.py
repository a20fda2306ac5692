"""Training options: accumulation, truncated BPTT, segment curriculum, precision, compile, exact resume, word swap."""
import dataclasses
import json
import math

import pytest
import torch
from safetensors.torch import load_file

import stmem.train
from stmem.batch import collate
from stmem.checkpoint import init_from_checkpoint, load_checkpoint, save_checkpoint
from stmem.config import ModelConfig, TrainConfig
from stmem.dataset import load_tokenizer
from stmem.model import MemoryQA, Vocab
from stmem.train import fit, load_examples
from tests.conftest import make_dataset

TINY = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, memory_slots=2, kg_fusion=False)


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    torch.set_num_threads(1)
    return make_dataset(tmp_path_factory.mktemp("features"))


class Stop(Exception):
    pass


def stop_at(n):
    def on_step(step):
        if step == n:
            raise Stop
    return on_step


def train(ds, out, *, dropout=0.1, on_step=None, resume_from=None, **kw):
    cfg = TrainConfig(**{"epochs": 1, "batch_size": 8, "device": "cpu", "progress": False, "num_threads": 1, **kw})
    return fit(dataset_dir=ds, out_dir=out, model_cfg=ModelConfig(**TINY, dropout=dropout), train_cfg=cfg, seed=1,
               on_step=on_step, resume_from=resume_from)


def first_step_grads(ds, tmp_path, monkeypatch, **kw):
    grads = []

    def capture(params, max_norm):
        grads.extend(p.grad.clone() for p in params if p.grad is not None)
        raise Stop
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", capture)
    with pytest.raises(Stop):
        train(ds, tmp_path, dropout=0.0, **kw)
    return grads


def test_accumulated_micro_batches_give_the_big_batch_gradient(ds, tmp_path, monkeypatch):
    big = first_step_grads(ds, tmp_path, monkeypatch, batch_size=8)
    for bs, k in ((4, 2), (2, 4)):
        acc = first_step_grads(ds, tmp_path, monkeypatch, batch_size=bs, grad_accum_steps=k)
        assert len(acc) == len(big)
        for a, b in zip(acc, big):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_accumulation_counts_optimizer_steps(ds, tmp_path):
    steps = []
    train(ds, tmp_path, batch_size=4, grad_accum_steps=4, epochs=2, on_step=steps.append)
    n = len(load_examples(ds / "train.parquet"))
    assert steps == list(range(1, 2 * math.ceil(math.ceil(n / 4) / 4) + 1))


def test_bptt_truncation_stops_the_gradient_at_k_segments():
    vocab = Vocab(vocab_size=40, pad_id=0, bos_id=2, eos_id=3, segment_len=6, max_question_len=4, max_answer_len=2)
    torch.manual_seed(0)
    model = MemoryQA(ModelConfig(**{**TINY, "memory_slots": 4}, dropout=0.0), vocab)
    ex = {"segments": [[4, 5, 6, 7, 8, 9], [10, 11, 12, 13], [14, 15, 16], [17, 18]],
          "segment_entities": [[0] * 6, [0] * 4, [0] * 3, [0] * 2],
          "question": [20, 21], "question_entities": [0, 0], "answer_ids": [30, 3]}
    batch = collate([ex], 0, 6)

    def embedding_grads(k):
        """|gradient| of each embedded input, in the order the model embeds them (the first segment first)."""
        model.bptt_segments = k
        embedded = []
        embed = model._embed

        def record(ids, ent):
            x = embed(ids, ent)
            x.retain_grad()
            embedded.append(x)
            return x
        model._embed = record
        model(batch).backward()
        del model._embed
        model.zero_grad()
        return [0.0 if x.grad is None else x.grad.abs().sum().item() for x in embedded]

    full, one, two = embedding_grads(None), embedding_grads(1), embedding_grads(2)
    assert all(g > 0 for g in full)
    assert one[0] == 0.0 and two[0] == 0.0  # the first segment is beyond both windows
    assert one[-1] > 0 and sum(g > 0 for g in one) < sum(g > 0 for g in two) < len(full)


def test_segment_curriculum_limits_the_segments_per_epoch(ds, tmp_path, monkeypatch):
    seen = []
    forward = MemoryQA.forward

    def record(self, batch):
        if self.training:
            seen.append((batch["segments"].shape[1], self.bptt_segments))
        return forward(self, batch)
    monkeypatch.setattr(MemoryQA, "forward", record)
    train(ds, tmp_path, epochs=3, segment_curriculum=[1, 2], bptt_segments=3)
    per_epoch = math.ceil(len(load_examples(ds / "train.parquet")) / 8)
    assert len(seen) == 3 * per_epoch and {k for _, k in seen} == {3}
    epochs = [[s for s, _ in seen[i * per_epoch:(i + 1) * per_epoch]] for i in range(3)]
    assert set(epochs[0]) == {1} and set(epochs[1]) == {2} and max(epochs[2]) == 4


def test_bf16_on_cpu_is_an_error_naming_the_option(ds, tmp_path):
    with pytest.raises(ValueError, match="train.precision"):
        train(ds, tmp_path, precision="bf16")


@pytest.mark.parametrize("interrupt_at", [9, 11])  # after the checkpoint closing epoch 1; mid epoch 2
def test_resume_is_bit_identical(ds, tmp_path, interrupt_at):
    opts = dict(epochs=2, batch_size=4, grad_accum_steps=2, segment_curriculum=[2], checkpoint_every=2,
                swap_words=[["kitchen", "garden", "office"]])  # draws from the RNG the checkpoint keeps
    train(ds, tmp_path / "a", **opts)  # 8 optimizer steps an epoch, dropout on
    with pytest.raises(Stop):
        train(ds, tmp_path / "b", on_step=stop_at(interrupt_at), **opts)
    assert [d.name for d in (tmp_path / "b" / "checkpoints").iterdir()] == [f"step-{interrupt_at - 1:06d}"]
    train(ds, tmp_path / "b", resume_from=tmp_path / "b", **opts)

    last = "checkpoints/step-000016"
    for f in ("model.safetensors", f"{last}/model.safetensors", f"{last}/optimizer.safetensors",
              f"{last}/best.safetensors", f"{last}/rank-0.safetensors"):
        a, b = load_file(tmp_path / "a" / f), load_file(tmp_path / "b" / f)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f
    for f in ("history.json", f"{last}/state.json", f"{last}/rank-0.json"):
        a, b = json.loads((tmp_path / "a" / f).read_text()), json.loads((tmp_path / "b" / f).read_text())
        if f.endswith("state.json"):
            a.pop("seconds"), b.pop("seconds")  # wall time
        if f.endswith("rank-0.json"):
            # Training never draws from Python's global RNG (the shuffler is its
            # own), it only seeds, saves and restores it; but every thread of the
            # test process shares it, and threads that earlier tests leave behind
            # (Prefect, MLflow) can draw from it mid-run.
            a.pop("python_random"), b.pop("python_random")
        assert a == b, f
    ev_a, ev_b = (json.loads((tmp_path / r / "eval.json").read_text()) for r in "ab")
    assert ev_a["test"] == ev_b["test"] and ev_a["epochs_run"] == ev_b["epochs_run"] == 2


def test_resume_refuses_a_changed_config(ds, tmp_path):
    with pytest.raises(Stop):
        train(ds, tmp_path, checkpoint_every=1, on_step=stop_at(1))
    with pytest.raises(ValueError, match="train.batch_size"):
        train(ds, tmp_path, checkpoint_every=1, batch_size=4, resume_from=tmp_path)


def test_compile_flag_wraps_the_training_model(ds, tmp_path, monkeypatch):
    # The eager backend checks the wiring in a second; the inductor run is below.
    compiled = []
    real = torch.compile

    def eager(model):
        compiled.append(model)
        return real(model, backend="eager")
    monkeypatch.setattr(torch, "compile", eager)
    with pytest.raises(Stop):
        train(ds, tmp_path, compile=True, on_step=stop_at(1))
    assert len(compiled) == 1 and isinstance(compiled[0], MemoryQA)


@pytest.mark.slow  # inductor compiles C++ on CPU: about 100 s
def test_compile_with_inductor_runs_a_step(ds, tmp_path):
    with pytest.raises(Stop):
        train(ds, tmp_path, compile=True, on_step=stop_at(1))


def test_entity_word_dropout_reaches_training_batches_only(ds, tmp_path, monkeypatch):
    seen = []
    forward = MemoryQA.forward

    def record(self, batch):
        seen.append(batch)
        return forward(self, batch)
    monkeypatch.setattr(MemoryQA, "forward", record)

    def collate_linking_every_third_token(*args):  # the test dataset itself links no tokens
        batch = collate(*args)
        ids = batch["segments"]
        return {**batch, "segment_entities": ((ids % 3 == 0) & (ids > 3)).long()}
    monkeypatch.setattr(stmem.train, "collate", collate_linking_every_third_token)
    train(ds, tmp_path, entity_word_dropout=1.0)
    linked = [(b["segments"], b["segment_entities"] > 0) for b in seen]
    assert sum(int(m.sum()) for _, m in linked) > 100
    assert all(ids[m].eq(1).all() for ids, m in linked)  # 1 = [UNK] in the trained WordPiece


def test_word_swap_renames_places_in_training_batches_only(ds, tmp_path, monkeypatch):
    places = ["kitchen", "garden", "office", "bathroom", "bedroom", "hallway", "cellar", "garage"]  # the demo's
    tok = load_tokenizer(ds / "tokenizer.json")
    place_ids = {tok.token_to_id(p) for p in places}
    runs = {}
    for name, kw in (("plain", {}), ("swap", {"swap_words": [places]})):
        seen = runs[name] = []
        forward = MemoryQA.forward

        def record(self, batch, seen=seen, forward=forward):
            seen.append(batch)
            return forward(self, batch)
        monkeypatch.setattr(MemoryQA, "forward", record)
        train(ds, tmp_path / name, **kw)
        monkeypatch.undo()
    # 8 training steps, then the validation loss: the same examples in the same
    # order (the shuffler is its own generator); validation is not swapped
    assert len(runs["plain"]) == len(runs["swap"]) == 9
    assert all(torch.equal(runs["plain"][-1][k], runs["swap"][-1][k]) for k in runs["plain"][-1])
    changed = 0
    for a, b in zip(runs["plain"][:-1], runs["swap"][:-1]):
        for key in ("segments", "question", "answer_ids"):
            differ = a[key] != b[key]
            changed += int(differ.sum())
            assert all(int(x) in place_ids for x in a[key][differ]) and all(int(x) in place_ids for x in b[key][differ])
    assert changed > 100


def test_init_from_starts_at_the_trained_weights(ds, tmp_path, monkeypatch):
    train(ds, tmp_path / "first", epochs=2)
    first = load_file(str(tmp_path / "first" / "model.safetensors"))
    load = stmem.train.init_from_checkpoint

    def weights_at_start(init_from: bool) -> dict:
        """The model's weights once fit has built (and maybe initialised) it; training is cut off there."""
        seen = {}

        def spy(model, ckpt, tokenizer):
            if init_from:
                load(model, ckpt, tokenizer)
            seen.update({k: v.detach().clone() for k, v in model.state_dict().items()})
            raise Stop
        monkeypatch.setattr(stmem.train, "init_from_checkpoint", spy)
        with pytest.raises(Stop):
            train(ds, tmp_path / "again", init_from=str(tmp_path / "first"))
        return seen
    loaded, fresh = weights_at_start(True), weights_at_start(False)
    assert all(torch.equal(loaded[k], v) for k, v in first.items())
    assert not all(torch.equal(fresh[k], v) for k, v in first.items())


def test_init_from_carries_shared_tokens_across_tokenizers_and_refuses_another_shape(ds, tmp_path):
    train(ds, tmp_path / "first")
    other = tmp_path / "other"  # the same model, its tokenizer spelling [UNK] differently
    other.mkdir()
    for f in ("model.safetensors", "model_config.json"):
        (other / f).write_bytes((tmp_path / "first" / f).read_bytes())
    (other / "tokenizer.json").write_text((tmp_path / "first" / "tokenizer.json").read_text().replace("[UNK]", "[UNKNOWN]"))
    trained = load_checkpoint(tmp_path / "first")[0].word_embeddings.weight.detach()
    model = load_checkpoint(tmp_path / "first")[0]
    with torch.no_grad():
        model.word_embeddings.weight.zero_()
    carried = init_from_checkpoint(model, other, ds / "tokenizer.json")
    unk = load_tokenizer(ds / "tokenizer.json").token_to_id("[UNK]")
    rows = model.word_embeddings.weight.detach()
    assert carried == {"tokens_carried": len(rows) - 1, "tokens_new": 1, "fresh": []}
    assert torch.equal(rows[unk], torch.zeros_like(rows[unk]))  # only the new vocabulary has it: left as built
    keep = torch.arange(len(rows)) != unk
    assert torch.equal(rows[keep], trained[keep])
    # A model that adds KG fusion: its fusion layers start fresh, the rest is the checkpoint's;
    # the same from a fused checkpoint whose KG has another embedding size.
    fused = MemoryQA(ModelConfig(**{**TINY, "kg_fusion": True}), model.vocab, torch.randn(5, 8))
    carried = init_from_checkpoint(fused, tmp_path / "first", ds / "tokenizer.json")
    assert carried["fresh"] and all(k.startswith("fusion.") for k in carried["fresh"])
    assert torch.equal(fused.word_embeddings.weight, trained)
    (tmp_path / "fused").mkdir()
    save_checkpoint(fused, tmp_path / "fused", spacy_model="none")
    (tmp_path / "fused" / "tokenizer.json").write_bytes((ds / "tokenizer.json").read_bytes())
    other_kg = MemoryQA(ModelConfig(**{**TINY, "kg_fusion": True}), model.vocab, torch.randn(5, 4))
    assert init_from_checkpoint(other_kg, tmp_path / "fused", ds / "tokenizer.json")["fresh"] == ["fusion.proj.weight"]
    assert init_from_checkpoint(model, tmp_path / "fused", ds / "tokenizer.json")["fresh"] == []  # no fusion: left out
    same_kg = MemoryQA(ModelConfig(**{**TINY, "kg_fusion": True}), model.vocab, torch.randn(5, 8))
    init_from_checkpoint(same_kg, tmp_path / "fused", ds / "tokenizer.json")
    assert torch.equal(same_kg.fusion.proj.weight, fused.fusion.proj.weight)
    # Longer segments: slot, segment and question positions each move to where that part now starts.
    saved = load_checkpoint(tmp_path / "first")[0].encoder.embeddings.position_embeddings.weight.detach()
    v = model.vocab
    longer = MemoryQA(model.cfg, dataclasses.replace(v, segment_len=v.segment_len + 4))
    init_from_checkpoint(longer, tmp_path / "first", ds / "tokenizer.json")
    table, k, lo = longer.encoder.embeddings.position_embeddings.weight.detach(), model.cfg.memory_slots, v.segment_len
    assert table.shape[0] == saved.shape[0] + 4
    assert torch.equal(table[:k + lo], saved[:k + lo])
    assert torch.equal(table[k + lo + 4:], saved[k + lo:])
    assert not torch.equal(table[k + lo:k + lo + 4], saved[k + lo:k + lo + 4])
    # A deeper decoder: the new layer goes on top as the identity, so the grown model answers as the checkpoint.
    deeper = MemoryQA(model.cfg.model_copy(update={"decoder_layers": 2}), v).eval()
    carried = init_from_checkpoint(deeper, tmp_path / "first", ds / "tokenizer.json")
    assert carried["fresh"] and all(k.startswith("decoder.layers.1.") for k in carried["fresh"])
    batch = collate(load_examples(ds / "val.parquet")[:8], v.pad_id, v.segment_len)
    checkpoint_model = load_checkpoint(tmp_path / "first")[0].eval()
    with torch.no_grad():
        assert torch.allclose(deeper(batch), checkpoint_model(batch), atol=1e-5)
    assert deeper.generate(batch) == checkpoint_model.generate(batch)
    # More memory slots: the checkpoint's slots keep their keys and positions, the segment and
    # question positions move up behind the added slots; fewer slots is refused by name.
    wider = MemoryQA(model.cfg.model_copy(update={"memory_slots": k + 3}), v)
    built = wider.memory.slot_keys.detach().clone()
    assert init_from_checkpoint(wider, tmp_path / "first", ds / "tokenizer.json")["fresh"] == []
    keys = load_checkpoint(tmp_path / "first")[0].memory.slot_keys.detach()
    assert torch.equal(wider.memory.slot_keys[:k], keys) and torch.equal(wider.memory.slot_keys[k:], built[k:])
    table = wider.encoder.embeddings.position_embeddings.weight.detach()
    assert torch.equal(table[:k], saved[:k]) and torch.equal(table[k + 3:], saved[k:])
    with pytest.raises(ValueError, match="memory_slots 1 is fewer than"):
        init_from_checkpoint(MemoryQA(model.cfg.model_copy(update={"memory_slots": 1}), v),
                             tmp_path / "first", ds / "tokenizer.json")
    # Ring slots go behind the routed ones and grow the same way: from a checkpoint without
    # them, and from one with them into more routed slots, where its ring rows move up.
    ringed = MemoryQA(ModelConfig(**{**TINY, "memory_route": "segment", "ring_slots": 2}), v)
    assert init_from_checkpoint(ringed, tmp_path / "first", ds / "tokenizer.json")["fresh"] == []
    table = ringed.encoder.embeddings.position_embeddings.weight.detach()
    assert torch.equal(table[:k], saved[:k]) and torch.equal(table[k + 2:], saved[k:])
    (tmp_path / "ringed").mkdir()
    save_checkpoint(ringed, tmp_path / "ringed", spacy_model="none")
    (tmp_path / "ringed" / "tokenizer.json").write_bytes((ds / "tokenizer.json").read_bytes())
    both = MemoryQA(ModelConfig(**{**TINY, "memory_route": "segment", "memory_slots": k + 1, "ring_slots": 3}), v)
    init_from_checkpoint(both, tmp_path / "ringed", ds / "tokenizer.json")
    grown = both.encoder.embeddings.position_embeddings.weight.detach()
    assert torch.equal(grown[:k], table[:k]) and torch.equal(grown[k + 1:k + 3], table[k:k + 2])
    assert torch.equal(grown[k + 4:], table[k + 2:])
    with pytest.raises(ValueError, match="ring_slots 1 is fewer than"):
        init_from_checkpoint(MemoryQA(ModelConfig(**{**TINY, "memory_route": "segment", "ring_slots": 1}), v),
                             tmp_path / "ringed", ds / "tokenizer.json")
    cfg = TrainConfig(epochs=1, batch_size=8, progress=False, num_threads=1, init_from=str(tmp_path / "first"))
    with pytest.raises(ValueError, match="does not fit model config"):
        fit(dataset_dir=ds, out_dir=tmp_path / "b", model_cfg=ModelConfig(**{**TINY, "hidden_size": 48}),
            train_cfg=cfg, seed=1)
