"""Plots of a training for its MLflow run: loss and validation accuracy by epoch, test accuracy by task,
by question type and (where the corpus says which sentences answer a question) by how far back the
answer lies."""
from __future__ import annotations

import json
from pathlib import Path


def training_plots(train_dir: Path, corpus_path: Path, out_dir: Path) -> list[Path]:
    """PNGs from a train stage's output (``history.json``, ``eval.json``, test predictions) and the
    corpus it was trained on (how far back each question's facts lie), written to ``out_dir``."""
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

    plots = [curves, per_task]
    types = test.get("per_question_type", {})
    if 1 < len(types) <= 30:  # one bar says nothing the task plot does not; more is unreadable (eval.json has it)
        names = sorted(types)
        fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(names) + 2), 3.5))
        ax.bar(names, [types[t]["accuracy"] for t in names])
        ax.set(ylabel="test exact match", title="test accuracy by question type (its first two words)",
               ylim=(0, 1.02))
        ax.tick_params(axis="x", rotation=45)
        fig.tight_layout()
        plots.append(out_dir / "accuracy_by_question_type.png")
        fig.savefig(plots[-1], dpi=100)
        plt.close(fig)

    import pyarrow.parquet as pq

    from corpora.schema import support_distances

    back = support_distances(corpus_path)
    hits: dict[int, list[bool]] = {}
    for row in pq.read_table(Path(train_dir) / "test_predictions.parquet").to_pylist():
        hits.setdefault(back[row["example_id"]], []).append(row["prediction"] == row["answer"])
    hits.pop(0, None)  # 0: the corpus does not say which sentences answer the question
    if hits:  # only where the distance is known (bAbI's supporting facts): never one bar at 0
        ds = sorted(hits)
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.bar([str(d) for d in ds], [sum(hits[d]) / len(hits[d]) for d in ds])
        ax.set(xlabel="sentences from the oldest supporting fact to the question", ylabel="test exact match",
               title="test accuracy by how far back the answer lies", ylim=(0, 1.02))
        fig.tight_layout()
        plots.append(out_dir / "accuracy_by_distance.png")
        fig.savefig(plots[-1], dpi=100)
        plt.close(fig)
    return plots
