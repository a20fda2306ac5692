"""What every benchmark script shares: its arguments, the device, and the JSON report it writes.

Scripts run as ``python benchmarks/<name>.py``, so this module is imported as ``common``.
Each report records the command that made it and the machine it ran on.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from stmem.config import Config, load_config
from stmem.layout import RunLayout

RESULTS = Path("benchmarks/results")


def parser(doc: str, *, config_required: bool = False, model_dir: bool = False) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=config_required, help="the run's YAML config (its run directory is read)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override one config value (repeatable)")
    ap.add_argument("--out", type=Path, help="JSON report (default: benchmarks/results/<script>-<run name>.json)")
    if model_dir:
        ap.add_argument("--model-dir", type=Path, help="a trained model directory (default: the run's train stage)")
    return ap


def load(args: argparse.Namespace) -> tuple[Config, RunLayout]:
    cfg = load_config(args.config, args.overrides)
    return cfg, RunLayout(cfg.run_dir)


def model_dir(args: argparse.Namespace, layout: RunLayout) -> Path:
    return args.model_dir or layout.stage_dir("train")


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def machine() -> str:
    """Taken when the report is written, after training has set its thread count."""
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads{gpu}"


def write_report(args: argparse.Namespace, name: str, report: dict) -> Path:
    """``report`` with the command and machine, as JSON at ``--out`` (or the default name)."""
    script = Path(sys.argv[0]).stem
    out = args.out or RESULTS / f"{script}-{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": " ".join(["python", *sys.argv]), "machine": machine(), **report},
                              indent=2) + "\n")
    print(f"written to {out}")
    return out


def alternate_training(models: dict[str, torch.nn.Module], batches: list[dict], device: torch.device,
                       count: Callable[[dict], int], lr: float) -> dict[str, float]:
    """Training tokens/s of each of two ``models`` (name -> module whose forward gives the loss) on the same
    ``batches``: one AdamW step each a batch, in alternating order, so a busy machine slows both alike.
    The first two batches warm up and are not timed; ``count`` gives a batch's tokens."""
    opts = {name: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=lr)
            for name, m in models.items()}
    names = list(models)
    seconds = dict.fromkeys(names, 0.0)
    counted = 0
    for i, batch in enumerate(batches):
        batch = {k: v.to(device) for k, v in batch.items()}
        for name in (names if i % 2 else names[::-1]):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            loss = models[name](batch)
            opts[name].zero_grad()
            loss.backward()
            opts[name].step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= 2:
                seconds[name] += time.perf_counter() - t
        if i >= 2:
            counted += count(batch)
    return {k: counted / v for k, v in seconds.items()}
