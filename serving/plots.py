"""Plots of a training for its MLflow run: loss and validation accuracy by epoch, test accuracy by task."""
from __future__ import annotations

import json
from pathlib import Path


def training_plots(train_dir: Path, out_dir: Path) -> list[Path]:
    """PNGs from ``history.json`` and ``eval.json`` of a train stage's output, written to ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    history = json.loads((Path(train_dir) / "history.json").read_text())
    test = json.loads((Path(train_dir) / "eval.json").read_text())["test"]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    epochs = range(1, len(history) + 1)

    fig, (loss, acc) = plt.subplots(1, 2, figsize=(10, 3.5))
    loss.plot(epochs, [h["loss"] for h in history], label="train")
    loss.plot(epochs, [h["val_loss"] for h in history], label="validation")
    loss.set(xlabel="epoch (of the last round)", ylabel="loss", title="loss")
    loss.legend()
    acc.plot(epochs, [h["val_accuracy"] for h in history])
    acc.set(xlabel="epoch (of the last round)", ylabel="exact match", title="validation accuracy", ylim=(0, 1.02))
    fig.tight_layout()
    curves = out_dir / "training_curves.png"
    fig.savefig(curves, dpi=100)
    plt.close(fig)

    tasks = sorted(test["per_task"])
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(tasks) + 2), 3.5))
    ax.bar(tasks, [test["per_task"][t] for t in tasks])
    ax.set(ylabel="test exact match", title=f"test accuracy by task (all: {test['accuracy']:.3f})", ylim=(0, 1.02))
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    per_task = out_dir / "accuracy_by_task.png"
    fig.savefig(per_task, dpi=100)
    plt.close(fig)
    return [curves, per_task]
