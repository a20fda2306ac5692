"""train.init_from: a run starts from a trained model, each difference fitted as stmem/init_from.py says."""
import dataclasses

import pytest
import torch
from safetensors.torch import load_file

import stmem.train
from stmem.batch import collate
from stmem.checkpoint import load_checkpoint, save_checkpoint
from stmem.config import ModelConfig, RoutedMemoryConfig
from stmem.dataset import load_tokenizer
from stmem.init_from import init_from_checkpoint
from stmem.model import MemoryQA
from stmem.train import load_examples
from tests.conftest import TINY_MODEL, make_dataset
from tests.stmem.test_train import Stop, train
from stmem.layout import split_file

TINY_CFG = ModelConfig.model_validate(TINY_MODEL)


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    torch.set_num_threads(1)
    return make_dataset(tmp_path_factory.mktemp("init_from"))


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
    fused = MemoryQA(TINY_CFG.model_copy(update={"kg_fusion": True}), model.vocab, torch.randn(5, 8))
    carried = init_from_checkpoint(fused, tmp_path / "first", ds / "tokenizer.json")
    assert carried["fresh"] and all(k.startswith("fusion.") for k in carried["fresh"])
    assert torch.equal(fused.word_embeddings.weight, trained)
    (tmp_path / "fused").mkdir()
    save_checkpoint(fused, tmp_path / "fused", spacy_model="none")
    (tmp_path / "fused" / "tokenizer.json").write_bytes((ds / "tokenizer.json").read_bytes())
    other_kg = MemoryQA(TINY_CFG.model_copy(update={"kg_fusion": True}), model.vocab, torch.randn(5, 4))
    assert init_from_checkpoint(other_kg, tmp_path / "fused", ds / "tokenizer.json")["fresh"] == ["fusion.proj.weight"]
    assert init_from_checkpoint(model, tmp_path / "fused", ds / "tokenizer.json")["fresh"] == []  # no fusion: left out
    same_kg = MemoryQA(TINY_CFG.model_copy(update={"kg_fusion": True}), model.vocab, torch.randn(5, 8))
    init_from_checkpoint(same_kg, tmp_path / "fused", ds / "tokenizer.json")
    assert torch.equal(same_kg.fusion.proj.weight, fused.fusion.proj.weight)
    # Longer segments: slot, segment and question positions each move to where that part now starts.
    saved = load_checkpoint(tmp_path / "first")[0].backbone.model.embeddings.position_embeddings.weight.detach()
    v = model.vocab
    longer = MemoryQA(model.cfg, dataclasses.replace(v, segment_len=v.segment_len + 4))
    init_from_checkpoint(longer, tmp_path / "first", ds / "tokenizer.json")
    table, k, lo = longer.backbone.model.embeddings.position_embeddings.weight.detach(), model.cfg.slots, v.segment_len
    assert table.shape[0] == saved.shape[0] + 4
    assert torch.equal(table[:k + lo], saved[:k + lo])
    assert torch.equal(table[k + lo + 4:], saved[k + lo:])
    assert not torch.equal(table[k + lo:k + lo + 4], saved[k + lo:k + lo + 4])
    # A deeper decoder: the new layer goes on top as the identity, so the grown model answers as the checkpoint.
    deeper = MemoryQA(model.cfg.model_copy(update={"decoder_layers": 2}), v).eval()
    carried = init_from_checkpoint(deeper, tmp_path / "first", ds / "tokenizer.json")
    assert carried["fresh"] and all(k.startswith("decoder.layers.1.") for k in carried["fresh"])
    batch = collate(load_examples(split_file(ds, "val"))[:8], v.pad_id, v.segment_len)
    checkpoint_model = load_checkpoint(tmp_path / "first")[0].eval()
    with torch.no_grad():
        assert torch.allclose(deeper(batch), checkpoint_model(batch), atol=1e-5)
    assert deeper.generate(batch) == checkpoint_model.generate(batch)
    # More memory slots: the checkpoint's slots keep their keys and positions, the segment and
    # question positions move up behind the added slots; fewer slots is refused by name.
    wider = MemoryQA(model.cfg.model_copy(update={"memory": RoutedMemoryConfig(slots=k + 3)}), v)
    built = wider.memory.router.slot_keys.detach().clone()
    assert init_from_checkpoint(wider, tmp_path / "first", ds / "tokenizer.json")["fresh"] == []
    keys = load_checkpoint(tmp_path / "first")[0].memory.router.slot_keys.detach()
    assert torch.equal(wider.memory.router.slot_keys[:k], keys) and torch.equal(wider.memory.router.slot_keys[k:], built[k:])
    table = wider.backbone.model.embeddings.position_embeddings.weight.detach()
    assert torch.equal(table[:k], saved[:k]) and torch.equal(table[k + 3:], saved[k:])
    with pytest.raises(ValueError, match="model.memory.slots 1 is fewer than"):
        init_from_checkpoint(MemoryQA(model.cfg.model_copy(update={"memory": RoutedMemoryConfig(slots=1)}), v),
                             tmp_path / "first", ds / "tokenizer.json")
    with pytest.raises(ValueError, match="does not fit model config"):
        train(ds, tmp_path / "b", init_from=str(tmp_path / "first"),
              model={"backbone": {**TINY_MODEL["backbone"], "hidden_size": 48}})
