"""Two CPU processes under torchrun (gloo) train through ``python -m stmem.train`` and through the
pipeline's train stage; rank 0 writes."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.conftest import TINY_CONFIG, error_lines, make_dataset, stmem_cli

REPO = Path(__file__).resolve().parents[2]
SETTINGS = ["model.backbone={hidden_size: 32, num_layers: 1, num_heads: 2, intermediate_size: 64}",
            "model.memory.slots=2", "model.kg_fusion=false", "train.epochs=2", "train.batch_size=4",
            "train.grad_accum_steps=2", "train.device=cpu", "train.num_threads=1", "train.progress=false",
            "train.checkpoint_every=4", "run.seed=1"]


def torchrun(ds: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "stmem.train", "--dataset-dir", str(ds), "--out-dir", str(out), *extra]
    for s in SETTINGS:
        cmd += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")
def test_torchrun_two_ranks_trains_checkpoints_and_resumes(tmp_path):
    ds = make_dataset(tmp_path)
    out = tmp_path / "out"
    run = torchrun(ds, out, "--in-place")
    assert run.returncode == 0, run.stderr[-3000:]
    ev = json.loads((out / "eval.json").read_text())
    assert ev["world_size"] == 2 and ev["epochs_run"] == 2 and ev["test"]["n"] == 12
    # 60 examples: 30 a rank, 8 micro-batches of 4, 4 optimizer steps an epoch
    ckpt = out / "checkpoints" / "step-000008"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000008"]
    assert {"rank-0.json", "rank-1.json", "rank-0.safetensors", "rank-1.safetensors", "model.safetensors",
            "optimizer.safetensors", "state.json"} <= {p.name for p in ckpt.iterdir()}
    assert json.loads(run.stdout[run.stdout.index("{"):])["epochs_run"] == 2  # only rank 0 printed the summary

    # Resuming from the last step re-runs the final evaluation only, each rank from its own RNG file:
    # the model written is the checkpoint's best weights, here marked so that no training run would make them.
    best = load_file(ckpt / "best.safetensors")
    best["out_norm.weight"] = best["out_norm.weight"] + 1.0
    save_file(best, str(ckpt / "best.safetensors"))
    run = torchrun(ds, out, "--in-place")  # finds the checkpoint in out/checkpoints
    assert run.returncode == 0, run.stderr[-3000:]
    assert "resumed from" in run.stdout and "at optimizer step 8 (epoch 2, step 4)" in run.stdout
    after = load_file(out / "model.safetensors")
    assert all(torch.equal(best[k], after[k]) for k in best)

    # without --in-place the output is published whole, with a manifest, and without checkpoints
    published = tmp_path / "published"
    run = torchrun(ds, published)
    assert run.returncode == 0, run.stderr[-3000:]
    manifest = json.loads((published / "manifest.json").read_text())
    assert manifest["stage"] == "train" and "model.safetensors" in manifest["outputs"]
    assert not (published / "checkpoints").exists() and not list(tmp_path.glob(".published.tmp-*"))


def test_pipeline_train_stage_runs_under_torchrun(tmp_path):
    res = stmem_cli("run", "--config", str(TINY_CONFIG), "--set", f"run.root={tmp_path}",
                    "--set", "train.processes=2")
    assert res.returncode == 0, res.stderr[-3000:]
    ev = json.loads((tmp_path / "tiny" / "train" / "eval.json").read_text())
    assert ev["world_size"] == 2 and ev["epochs_run"] == 2
    assert (tmp_path / "tiny" / "register" / "registration.json").is_file()
    # diverged under torchrun: the same one line as in one process, never retried
    res = stmem_cli("stage", "train", "--config", str(TINY_CONFIG), "--set", f"run.root={tmp_path}",
                    "--set", "train.processes=2", "--set", "train.lr=1.0e+30", "--set", "train.warmup_ratio=0",
                    "--set", "run.retries=2", "--set", "run.retry_delay=0")
    assert res.returncode == 2
    assert error_lines(res.stderr) == [
        "stmem: error: training diverged: the loss is nan at epoch 1, step 2 (optimizer step 2, train.lr 1e+30); "
        "stopped there, no checkpoint written from it and nothing published; lower train.lr or check the data"]
    assert "Retrying" not in (tmp_path / "tiny" / "stmem.log").read_text()
    assert json.loads((tmp_path / "tiny" / "train" / "eval.json").read_text()) == ev  # the model before stays
