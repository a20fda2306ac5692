"""Training writes a checkpoint that inference reloads and answers with identically."""
import json

import pytest

from stmem.checkpoint import load_checkpoint
from stmem.config import ModelConfig, TrainConfig
from stmem.corpus import read_corpus
from stmem.dataset import load_tokenizer
from stmem.evaluate import predict_answers
from stmem.inference import Predictor, split_sentences
from stmem.train import fit, load_examples
from tests.conftest import make_dataset


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    make_dataset(d)
    (d / "ckpt").mkdir()
    summary = fit(dataset_dir=d / "ds", out_dir=d / "ckpt",
                  model_cfg=ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                                        memory_slots=2, kg_fusion=False),
                  train_cfg=TrainConfig(epochs=2, batch_size=8, progress=False), seed=1)
    return d, summary


def test_fit_writes_checkpoint_and_eval(trained):
    d, summary = trained
    for f in ("model.safetensors", "model_config.json", "tokenizer.json", "eval.json", "history.json"):
        assert (d / "ckpt" / f).is_file(), f
    ev = json.loads((d / "ckpt" / "eval.json").read_text())
    assert ev["test"]["n"] == 12 and set(ev["test"]["per_task"]) == {"demo"}
    assert ev["epochs_run"] == 2 and summary["test_accuracy"] == ev["test"]["accuracy"]
    history = json.loads((d / "ckpt" / "history.json").read_text())
    assert history[1]["loss"] < history[0]["loss"]


def test_checkpoint_round_trip_and_raw_text_inference_match_training_encoding(trained):
    d, _ = trained
    model, config = load_checkpoint(d / "ckpt")
    assert config["model"]["memory_slots"] == 2 and config["vocab"]["segment_len"] == 12
    examples = load_examples(d / "ds" / "test.parquet")
    tok = load_tokenizer(d / "ckpt" / "tokenizer.json")
    expected = predict_answers(model, examples, tok, batch_size=4, device="cpu")
    stories = {s.story_id: s for s in read_corpus(d / "corpus.parquet")}
    contexts, questions = [], []
    for e in examples:
        story, q = stories[e["story_id"]], int(e["example_id"].rsplit("/", 1)[1])
        contexts.append("\n".join(story.sentences[: story.question_positions[q]]))
        questions.append(story.questions[q])
    # max_segments as in the dataset, so inference sees exactly what evaluation saw
    assert Predictor(d / "ckpt", max_segments=4).answer(contexts, questions) == expected


def test_split_sentences():
    assert split_sentences("Mary went home. John left!\n\nWhere? ") == ["Mary went home.", "John left!", "Where?"]
