"""What a user reads first about a model: the majority-answer baseline beside its accuracy, and plots that
show only what is known."""
import json

import pyarrow as pa
import pyarrow.parquet as pq

from corpora import Story, write_corpus
from serving.model_card import model_card
from serving.plots import training_plots
from stmem.evaluate import majority_baseline, score


def test_majority_baseline_guesses_each_question_types_most_frequent_training_answer(tmp_path):
    train = [("t", "where is", "kitchen")] * 3 + [("t", "where is", "garden"), ("t", "is mary", "yes"),
                                                   ("u", "what is", "red")]
    pq.write_table(pa.table(dict(zip(("task", "question_type", "answer"), zip(*train)))), tmp_path / "train.parquet")
    test = [{"task": "t", "question_type": "where is", "answer": "kitchen"},
            {"task": "t", "question_type": "where is", "answer": "garden"},
            {"task": "t", "question_type": "is mary", "answer": "yes"},
            {"task": "t", "question_type": "who has", "answer": "kitchen"},  # an unseen type: the task's answer
            {"task": "v", "question_type": "what is", "answer": "red"}]  # an unseen task: no guess
    assert majority_baseline(tmp_path / "train.parquet", test) == 3 / 5


def _train_dir(tmp_path, supporting: list[list[int]]):
    stories = [Story(f"s{i}", "t", "test", ["Mary went to the kitchen.", "John went home."], ["Where is Mary?"],
                     ["kitchen"], [2], [supporting[i]]) for i in range(len(supporting))]
    write_corpus(stories, tmp_path / "corpus.parquet")
    train = tmp_path / "train"
    train.mkdir(exist_ok=True)
    examples = [{"example_id": f"s{i}/0", "task": "t", "answer": "kitchen", "question_type": qt}
                for i, qt in enumerate(["where is", "who is"] * (len(supporting) // 2))]
    test = score(examples, ["kitchen", "garden"] * (len(supporting) // 2))
    (train / "eval.json").write_text(json.dumps({"test": {**test, "majority_baseline": 0.25}}))
    (train / "history.json").write_text(json.dumps([{"loss": 1.0, "val_loss": 1.0, "val_accuracy": 0.5}]))
    pq.write_table(pa.table({"example_id": [e["example_id"] for e in examples], "task": ["t"] * len(examples),
                             "answer": ["kitchen"] * len(examples),
                             "prediction": ["kitchen", "garden"] * (len(supporting) // 2)}),
                   train / "test_predictions.parquet")
    return train, test


def test_plots_by_question_type_and_by_distance_only_where_the_corpus_gives_it(tmp_path):
    train, _ = _train_dir(tmp_path, [[0], [1]])  # bAbI-like: the supporting sentence is known
    names = [p.name for p in training_plots(train, tmp_path / "corpus.parquet", tmp_path / "plots")]
    assert names == ["training_curves.png", "accuracy_by_task.png", "accuracy_by_question_type.png",
                     "accuracy_by_distance.png"]
    assert all((tmp_path / "plots" / n).stat().st_size > 1000 for n in names)

    train, _ = _train_dir(tmp_path, [[], []])  # records, dialogues: no supporting facts, so no distance
    names = [p.name for p in training_plots(train, tmp_path / "corpus.parquet", tmp_path / "plots2")]
    assert "accuracy_by_distance.png" not in names and "accuracy_by_question_type.png" in names


def test_model_card_puts_the_baseline_beside_the_accuracy(tmp_path):
    _, test = _train_dir(tmp_path, [[0], [1]])
    card = model_card({"test": {**test, "majority_baseline": 0.25}}, {"run": "r"})
    assert card.startswith("Test exact match **0.5000** on 2 questions") and "baseline" in card
    assert "scores 0.2500." in card.splitlines()[0]
