"""A resumed run goes on from its checkpoint's step, and ends exactly as an uninterrupted run."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.conftest import make_dataset
from tests.stmem.test_train import Stop, stop_at, train


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    torch.set_num_threads(1)
    return make_dataset(tmp_path_factory.mktemp("resume"))


# a curriculum and a word swap, so the data order and the random draws are part of what must resume
OPTS = dict(epochs=2, batch_size=4, grad_accum_steps=2, segment_curriculum=[2], checkpoint_every=2,
            swap_words=True, corpus={"word_classes": [["kitchen", "garden", "office"]]})


@pytest.mark.parametrize("interrupt_at", [9, 11])  # after the checkpoint closing epoch 1; mid epoch 2
def test_resume_starts_after_the_checkpoint_and_is_bit_identical(ds, tmp_path, interrupt_at):
    train(ds, tmp_path / "a", **OPTS)  # 8 optimizer steps an epoch, dropout on
    with pytest.raises(Stop):
        train(ds, tmp_path / "b", on_step=stop_at(interrupt_at), **OPTS)
    saved = interrupt_at - 1
    assert [d.name for d in (tmp_path / "b" / "checkpoints").iterdir()] == [f"step-{saved:06d}"]
    steps = []
    train(ds, tmp_path / "b", resume_from=tmp_path / "b", on_step=steps.append, **OPTS)
    # the resumed run's first optimizer step is the checkpoint's + 1: a run that
    # ignored the checkpoint would start again at step 1
    assert steps == list(range(saved + 1, 17))

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
            # own); threads that earlier tests leave behind (Prefect, MLflow) can.
            a.pop("python_random"), b.pop("python_random")
        assert a == b, f


def test_resume_takes_the_checkpoint_weights(ds, tmp_path):
    """Resumed after the last step, the run only evaluates: its model is the checkpoint's best weights."""
    train(ds, tmp_path, **OPTS)
    best = tmp_path / "checkpoints" / "step-000016" / "best.safetensors"
    weights = load_file(best)
    weights["out_norm.weight"] = weights["out_norm.weight"] + 1.0  # a mark no training run would make
    save_file(weights, str(best))
    steps = []
    train(ds, tmp_path, resume_from=tmp_path, on_step=steps.append, **OPTS)
    assert steps == []
    assert torch.equal(load_file(tmp_path / "model.safetensors")["out_norm.weight"], weights["out_norm.weight"])


def test_resume_refuses_a_changed_config(ds, tmp_path):
    with pytest.raises(Stop):
        train(ds, tmp_path, checkpoint_every=1, on_step=stop_at(1))
    with pytest.raises(ValueError, match="train.batch_size"):
        train(ds, tmp_path, checkpoint_every=1, batch_size=4, resume_from=tmp_path)
