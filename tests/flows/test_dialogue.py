"""A users' corpus end to end: the dialogue corpus in tests/data through `stmem run`, then asked."""
import json

from tests.conftest import REPO, stmem_cli

DIALOGUE_CONFIG = REPO / "conf" / "dialogue.yaml"
SMALL = ["--set", "train.epochs=1", "--set", "train.num_threads=1", "--set", "train.progress=false",
         "--set", "model.backbone={type: bert, hidden_size: 32, num_layers: 1, num_heads: 2, intermediate_size: 64}",
         "--set", "kg.training_kwargs={num_epochs: 2, batch_size: 64}"]


def ask_where_i_live(tmp_path):
    """``stmem predict`` of the run's champion on a short dialogue: (the dialogue's file, the result)."""
    story = tmp_path / "dialogue.txt"
    story.write_text("user: I live in Lisbon.\nassistant: Noted.\nuser: What a nice day.\nassistant: Indeed.\n")
    return story, stmem_cli("predict", "--config", str(DIALOGUE_CONFIG), "--set", f"run.root={tmp_path}",
                            "--model", "models:/stmem-dialogue@champion", "--context", str(story), "--question",
                            "Where do I live?")


def test_dialogue_corpus_trains_end_to_end_and_the_registered_model_answers(tmp_path):
    from tests.data.make_dialogues import write

    write(tmp_path / "dialogues.jsonl", n=300)  # the shipped config's corpus, smaller
    res = stmem_cli("run", "--config", str(DIALOGUE_CONFIG), "--set", f"run.root={tmp_path}",
                    "--set", f"corpus.path={tmp_path / 'dialogues.jsonl'}", *SMALL, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "dialogue"
    corpus = json.loads((run / "corpus" / "manifest.json").read_text())["summary"]
    assert corpus["stories"] == 300 and corpus["test_questions"] > 0
    evaluation = json.loads((run / "train" / "eval.json").read_text())["test"]
    assert "what is" in evaluation["per_question_type"]  # "What is my dog called?"
    assert (run / ".pystow" / "pykeen").is_dir()  # PyKEEN's caches inside the run directory
    registration = json.loads((run / "register" / "registration.json").read_text())
    assert registration["alias"] == "champion"

    story, res = ask_where_i_live(tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    # the registered model answers as the trained checkpoint does (one epoch of a small model: maybe "")
    from serving.inference import Predictor

    expected = Predictor(run / "train").answer([story.read_text()], ["Where do I live?"])[0]
    assert json.loads(res.stdout.splitlines()[-1])["answer"] == expected


def test_without_kg_fusion_the_kg_stage_is_skipped_and_given_splits_are_kept(tmp_path):
    # a dialogue corpus gives a KG too small for PyKEEN to split; the model does not need one
    from tests.data.make_dialogues import write

    write(tmp_path / "all.jsonl", n=120)
    lines = (tmp_path / "all.jsonl").read_text().splitlines()
    given = ["test" if i % 4 == 0 else "train" for i in range(len(lines))]  # not where the ids hash to
    (tmp_path / "dialogues.jsonl").write_text("".join(
        json.dumps({**json.loads(line), "split": split}) + "\n" for line, split in zip(lines, given)))
    res = stmem_cli("run", "--config", str(DIALOGUE_CONFIG), "--set", f"run.root={tmp_path}",
                    "--set", f"corpus.path={tmp_path / 'dialogues.jsonl'}", "--set", "model.kg_fusion=false",
                    *SMALL, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "dialogue"
    kg = json.loads((run / "kg" / "kg_metrics.json").read_text())
    assert kg["skipped"].startswith("model.kg_fusion is false") and not (run / ".pystow").exists()  # no PyKEEN
    corpus = json.loads((run / "corpus" / "manifest.json").read_text())["summary"]
    assert corpus["val_questions"] == 0 and corpus["test_questions"] > 0
    card = json.loads((run / "dataset" / "dataset_card.json").read_text())
    assert card["examples"]["test"] == corpus["test_questions"] and card["linked_token_fraction"] == 0
    assert not (run / "train" / "entity_index.parquet").exists()  # the model carries no KG files
    assert json.loads((run / "register" / "registration.json").read_text())["alias"] == "champion"

    story, res = ask_where_i_live(tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
