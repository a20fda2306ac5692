"""Training: what fit writes, and each training option doing what it says (accumulation, curriculum,
precision, compile, entity word dropout, word swap); a diverged loss stops it; its log lines."""
import fcntl
import json
import math
import os
import re
import struct
import sys
import termios

import pytest
import pyarrow.parquet as pq
import torch

import stmem.train
from corpora import read_corpus
from serving.inference import Predictor, split_sentences
from stmem.batch import collate
from stmem.checkpoint import load_checkpoint
from stmem.dataset import load_tokenizer
from stmem.evaluate import predict_answers
from stmem.model import MemoryQA
from stmem.errors import TrainingDiverged
from stmem.train import fit, load_examples
from tests.conftest import make_dataset, tiny_config
from stmem.layout import split_file


class Stop(Exception):
    pass


def stop_at(n):
    def on_step(step):
        if step == n:
            raise Stop
    return on_step


def train(ds, out, *, model=None, corpus=None, on_step=None, resume_from=None, **kw):
    return fit(tiny_config(model, corpus, **kw), dataset_dir=ds, out_dir=out, on_step=on_step, resume_from=resume_from)


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    torch.set_num_threads(1)
    return make_dataset(tmp_path_factory.mktemp("train"))


@pytest.fixture(scope="module")
def trained(ds, tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt")
    return out, train(ds, out, epochs=2)


def test_fit_writes_checkpoint_and_eval(trained):
    out, summary = trained
    for f in ("model.safetensors", "model_config.json", "tokenizer.json", "eval.json", "history.json"):
        assert (out / f).is_file(), f
    ev = json.loads((out / "eval.json").read_text())
    assert ev["test"]["n"] == 12 and set(ev["test"]["per_task"]) == {"demo"}
    assert ev["epochs_run"] == 2 and summary["test_accuracy"] == ev["test"]["accuracy"]
    # the summary a benchmark keeps (benchmarks/ablation.py) has the figures per question type too
    assert summary["per_question_type"] == ev["test"]["per_question_type"] and summary["per_question_type"]
    history = json.loads((out / "history.json").read_text())
    assert history[1]["loss"] < history[0]["loss"]


def test_checkpoint_round_trip_and_raw_text_inference_match_training_encoding(ds, trained):
    out, _ = trained
    model, config = load_checkpoint(out)
    assert config["model"]["memory"] == {"type": "routed", "slots": 2, "route": "token", "segment_sees_memory": True,
                                         "hard": False, "reconstruct": 0.0}
    examples = load_examples(split_file(ds, "test"))
    expected = predict_answers(model, examples, load_tokenizer(out / "tokenizer.json"), batch_size=4, device="cpu")
    stories = {s.story_id: s for s in read_corpus(ds.parent / "corpus.parquet")}
    contexts, questions = [], []
    for e in examples:
        story, q = stories[e["story_id"]], int(e["example_id"].rsplit("/", 1)[1])
        contexts.append("\n".join(story.sentences[: story.question_positions[q]]))
        questions.append(story.questions[q])
    # max_segments as in the dataset, so inference sees exactly what evaluation saw
    assert Predictor(out, max_segments=4).answer(contexts, questions) == expected


def test_split_sentences():
    assert split_sentences("Mary went home. John left!\n\nWhere? ") == ["Mary went home.", "John left!", "Where?"]


def first_step_grads(ds, tmp_path, monkeypatch, **kw):
    grads = []

    def capture(params, max_norm):
        grads.extend(p.grad.clone() for p in params if p.grad is not None)
        raise Stop
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", capture)
    with pytest.raises(Stop):
        train(ds, tmp_path, model={"dropout": 0.0}, **kw)
    return grads


def test_accumulated_micro_batches_give_the_big_batch_gradient(ds, tmp_path, monkeypatch):
    big = first_step_grads(ds, tmp_path, monkeypatch, batch_size=8)
    for bs, k in ((4, 2), (2, 4)):
        acc = first_step_grads(ds, tmp_path, monkeypatch, batch_size=bs, grad_accum_steps=k)
        assert len(acc) == len(big)
        for a, b in zip(acc, big):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    # micro-batches of 4 without accumulation make another step: the test can tell them apart
    alone = first_step_grads(ds, tmp_path, monkeypatch, batch_size=4)
    assert not all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(alone, big))


def test_accumulation_counts_optimizer_steps(ds, tmp_path):
    steps = []
    train(ds, tmp_path, batch_size=4, grad_accum_steps=4, epochs=2, on_step=steps.append)
    n = len(load_examples(split_file(ds, "train")))
    assert steps == list(range(1, 2 * math.ceil(math.ceil(n / 4) / 4) + 1))


def record_forward(monkeypatch) -> list:
    seen = []
    forward = MemoryQA.forward

    def record(self, batch):
        seen.append((self.training, batch))
        return forward(self, batch)
    monkeypatch.setattr(MemoryQA, "forward", record)
    return seen


def test_segment_curriculum_limits_the_segments_per_epoch(ds, tmp_path, monkeypatch):
    seen = record_forward(monkeypatch)
    train(ds, tmp_path, epochs=3, segment_curriculum=[1, 2])
    per_epoch = math.ceil(len(load_examples(split_file(ds, "train"))) / 8)
    widths = [b["segments"].shape[1] for training, b in seen if training]
    assert len(widths) == 3 * per_epoch
    assert set(widths[:per_epoch]) == {1} and set(widths[per_epoch:2 * per_epoch]) == {2}
    assert max(widths[2 * per_epoch:]) == 4
    assert all(b["segments"].shape[1] > 1 for training, b in seen if not training)  # validation sees all


def test_bf16_on_cpu_is_an_error_naming_the_option(ds, tmp_path):
    with pytest.raises(ValueError, match="train.precision"):
        train(ds, tmp_path, precision="bf16")


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
    seen = record_forward(monkeypatch)

    def collate_linking_every_third_token(*args):  # the test dataset itself links no tokens
        batch = collate(*args)
        ids = batch["segments"]
        return {**batch, "segment_entities": ((ids % 3 == 0) & (ids > 3)).long()}
    monkeypatch.setattr(stmem.train, "collate", collate_linking_every_third_token)
    train(ds, tmp_path, entity_word_dropout=1.0)
    linked = [(b["segments"], b["segment_entities"] > 0) for training, b in seen if training]
    assert sum(int(m.sum()) for _, m in linked) > 100
    assert all(ids[m].eq(1).all() for ids, m in linked)  # 1 = [UNK] in the trained WordPiece
    # validation (not through stmem.train's collate) keeps every word
    assert all(not b["segments"].eq(1).any() for training, b in seen if not training)


def test_word_swap_renames_places_in_training_batches_only(ds, tmp_path, monkeypatch):
    places = ["kitchen", "garden", "office", "bathroom", "bedroom", "hallway"]  # the demo's
    tok = load_tokenizer(ds / "tokenizer.json")
    place_ids = {tok.token_to_id(p) for p in places}
    runs = {}
    for name, kw in (("plain", {}), ("swap", {"swap_words": True, "corpus": {"word_classes": [places]}})):
        runs[name] = record_forward(monkeypatch)
        train(ds, tmp_path / name, **kw)
        monkeypatch.undo()
    # 8 training steps, then the validation batches: the same examples in the
    # same order (the shuffler is its own generator); validation is not swapped
    plain, swap = runs["plain"], runs["swap"]
    assert [t for t, _ in plain] == [t for t, _ in swap] and sum(t for t, _ in plain) == 8
    for (training, a), (_, b) in zip(plain, swap):
        if not training:
            assert all(torch.equal(a[k], b[k]) for k in a)
    changed = 0
    for (training, a), (_, b) in zip(plain, swap):
        if training:
            for key in ("segments", "question", "answer_ids"):
                differ = a[key] != b[key]
                changed += int(differ.sum())
                assert all(int(x) in place_ids for x in a[key][differ]) and all(int(x) in place_ids for x in b[key][differ])
    assert changed > 100


def test_a_non_finite_loss_stops_training_at_once_and_writes_nothing_from_it(ds, tmp_path):
    # lr 1e30: the first step's weights are ~1e30, still finite (checkpointed at step 1); the second loss is NaN
    steps = []
    with pytest.raises(TrainingDiverged) as e:
        train(ds, tmp_path, lr=1e30, warmup_ratio=0.0, epochs=3, checkpoint_every=1, on_step=steps.append)
    assert str(e.value) == ("training diverged: the loss is nan at epoch 1, step 2 (optimizer step 2, train.lr 1e+30); "
                            "stopped there, no checkpoint written from it and nothing published; lower train.lr or "
                            "check the data")
    assert steps == [1]  # no optimizer step was taken on the NaN loss
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-000001"]
    assert not [f for f in ("model.safetensors", "eval.json", "history.json") if (tmp_path / f).exists()]


EPOCH_LINE = re.compile(r"epoch \d+: loss \d+\.\d{4}  val loss \d+\.\d{4}  val exact-match \d\.\d{3}  \d+\.\d s")


def test_without_a_terminal_training_writes_one_line_per_epoch_and_no_bar(ds, tmp_path, capfd):
    train(ds, tmp_path, epochs=2, progress=True)
    out, err = capfd.readouterr()
    assert "\r" not in out + err
    assert [EPOCH_LINE.fullmatch(line) is not None for line in out.splitlines()] == [True, True], out
    assert err == ""


def test_on_a_terminal_the_progress_bar_is_drawn(ds, tmp_path, monkeypatch):
    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))  # tqdm draws nothing 0 wide
    with open(follower, "w") as tty:
        monkeypatch.setattr(sys, "stderr", tty)
        train(ds, tmp_path, progress=True)
        tty.flush()
        os.set_blocking(leader, False)  # what was drawn is there now; nothing drawn fails, not hangs
        drawn = os.read(leader, 1 << 16).decode()  # while the terminal is open (then its buffer goes)
    os.close(leader)
    assert "epoch 1/1" in drawn and "\r" in drawn


def test_story_batches_train_on_whole_stories_and_answer_as_example_batches(tmp_path, monkeypatch):
    """train.batch_by: story: each training batch is whole stories, read once; the test answers it writes
    are those the same model gives each question read alone."""
    from corpora import generate_demo

    stories = generate_demo(train_stories=12, val_stories=2, test_stories=3, sentences_per_story=4,
                            questions_per_story=2, seed=3)  # one line a segment, never cut: contexts are prefixes
    ds = make_dataset(tmp_path, stories=stories, pack_sentences=False)
    seen = record_forward(monkeypatch)
    steps = []
    out = tmp_path / "out"
    train(ds, out, batch_by="story", batch_size=4, epochs=2, on_step=steps.append)
    assert steps == list(range(1, 2 * 6 + 1))  # 12 stories of 2 questions, 2 stories a batch of about 4
    for training, batch in seen:
        assert "question_story" in batch
        if training:
            assert batch["segments"].shape[0] == 2 and batch["question_story"].tolist() == [0, 0, 1, 1]
    model, _ = load_checkpoint(out)
    test = load_examples(split_file(ds, "test"))
    alone = predict_answers(model, test, load_tokenizer(out / "tokenizer.json"), batch_size=4, device="cpu")
    written = pq.read_table(out / stmem.train.PREDICTIONS).column("prediction").to_pylist()
    assert written == alone


def test_story_batches_refuse_a_dataset_that_cuts_contexts(ds, tmp_path):
    with pytest.raises(ValueError, match="dataset.max_segments"):  # ds keeps the newest 4 of 10 sentences
        train(ds, tmp_path, batch_by="story")
