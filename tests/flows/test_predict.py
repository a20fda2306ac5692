"""`stmem predict` for operators: many questions a call, each answer with its score, from a running
`stmem serve` or from the checkpoint itself; bad input is one line, exit 2, and creates nothing."""
import json
import sys
from pathlib import Path

import pytest

from corpora import read_corpus
from serving.inference import Predictor
from stmem.layout import RunLayout
from tests.conftest import TINY_CONFIG, stmem_cli
from tests.servers import free_port, start, stop, wait_http


def tiny_questions(run_dir: Path, n: int = 5) -> list[tuple[str, str]]:
    """(context, question) of the tiny run's first ``n`` test questions, as raw text."""
    rows = []
    for story in read_corpus(RunLayout(run_dir).corpus):
        if story.split == "test":
            rows += [("\n".join(story.sentences[:pos]), q) for q, pos in zip(story.questions, story.question_positions)]
    return rows[:n]


def write_jsonl(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"context": c, "question": q}) + "\n" for c, q in rows))
    return path


def expected(run_dir: Path, rows: list[tuple[str, str]]) -> tuple[list[str], list[float]]:
    """What the trained checkpoint answers, in this process."""
    return Predictor(run_dir / "train").predict([c for c, _ in rows], [q for _, q in rows])


def imported(stderr: str) -> set[str]:
    """The modules a command imported, from its PYTHONPROFILEIMPORTTIME lines."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def predict(run_dir: Path, *args: str, env: dict | None = None):
    return stmem_cli("predict", "--config", str(TINY_CONFIG), "--set", f"run.root={run_dir.parent}", *args, env=env)


def test_a_file_of_questions_is_answered_with_scores_by_the_champion(run_dir, tmp_path):
    rows = tiny_questions(run_dir)
    res = predict(run_dir, "--input", str(write_jsonl(tmp_path / "q.jsonl", rows)),
                  env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    got = [json.loads(line) for line in res.stdout.splitlines()]
    answers, scores = expected(run_dir, rows)
    assert [g["question"] for g in got] == [q for _, q in rows]  # one line per question, in input order
    assert [g["answer"] for g in got] == answers
    assert [g["score"] for g in got] == pytest.approx(scores, rel=1e-5) and all(0 < s <= 1 for s in scores)
    # the model loaded here (models:/stmem-tiny@champion: MLflow, or the copy an earlier call kept); no Prefect
    modules = imported(res.stderr)
    assert "torch" in modules and "prefect" not in modules



def test_a_second_call_loads_the_kept_copy_until_the_store_changes(run_dir, tmp_path):
    import shutil

    from mlflow import MlflowClient

    shutil.copytree(run_dir, tmp_path / "runs" / "tiny")  # its store is changed below
    run = tmp_path / "runs" / "tiny"
    q = write_jsonl(tmp_path / "q.jsonl", tiny_questions(run_dir, 2))

    def ask():
        return predict(run, "--input", str(q), env={"PYTHONPROFILEIMPORTTIME": "1"})

    first, second = ask(), ask()
    assert first.returncode == second.returncode == 0, first.stderr[-3000:] + second.stderr[-3000:]
    assert first.stdout == second.stdout
    assert "mlflow" in imported(first.stderr) and "mlflow" not in imported(second.stderr)
    # the kept copy answers through its backbone traced to TorchScript: transformers' model code (seconds of
    # imports) is not loaded; its answers are the transformers model's (the first test compares them)
    assert list((run / "predict-cache").glob("*/artifacts/checkpoint/backbone.torchscript.pt"))
    assert "transformers" in imported(first.stderr) and "transformers" not in imported(second.stderr)
    assert "sympy" not in imported(second.stderr) and "pandas" not in imported(second.stderr)
    # the champion alias removed (any write to the store): MLflow is asked again, and says there is none
    store = f"sqlite:///{run / 'mlflow.db'}"  # (the registry too: this process's default is the fixture's)
    MlflowClient(store, registry_uri=store).delete_registered_model_alias("stmem-tiny", "champion")
    res = predict(run, "--input", str(q))
    assert res.returncode == 2 and res.stdout == "" and res.stderr.count("\n") == 1, res.stderr[-3000:]
    assert res.stderr.startswith("stmem: error: models:/stmem-tiny@champion: cannot load from sqlite:///")

def test_several_questions_about_one_context_and_a_question_too_long_for_the_model(run_dir, tmp_path):
    (context, q1), (_, q2) = tiny_questions(run_dir, 2)
    story = tmp_path / "story.txt"
    story.write_text(context + "\n")
    # --model: a checkpoint directory is read as it is
    res = predict(run_dir, "--model", str(run_dir / "train"), "--context", str(story), "--question", q1,
                  "--question", q2)
    assert res.returncode == 0, res.stderr[-3000:]
    assert [json.loads(line)["answer"] for line in res.stdout.splitlines()] == expected(run_dir, [(context, q1),
                                                                                                  (context, q2)])[0]
    n = json.loads((run_dir / "train" / "model_config.json").read_text())["vocab"]["max_question_len"]
    res = predict(run_dir, "--context", str(story), "--question", q1, "--question", "where " * (n + 1) + "?")
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.startswith("stmem: error: --question 2: question is ") and res.stderr.endswith(
        f" tokens, this model reads at most {n}\n") and res.stderr.count("\n") == 1


def test_bad_input_is_refused_in_one_line_before_any_model_loads(tmp_path):
    root = tmp_path / "runs"
    q = tmp_path / "q.jsonl"
    q.write_text(json.dumps({"context": "Mary went home.", "question": "Where is Mary?"}) + "\n"
                 + json.dumps({"context": "Mary went home. " * 30, "question": "Where is Mary?"}) + "\n")
    no_question = tmp_path / "no_question.jsonl"
    no_question.write_text(json.dumps({"context": "Mary went home."}) + "\n")
    story = tmp_path / "story.txt"
    story.write_text("Mary went home.\n" * 30)  # 480 characters in lines of 16
    new_db = tmp_path / "new" / "path.db"
    port = free_port()  # nothing listens there
    limit = ["--set", "corpus.max_line_chars=300"]
    cases = [
        (["--input", str(q), *limit], f"{q}:2: line over the limit of 300 bytes (corpus.max_line_chars)"),
        (["--context", str(story), "--question", "Where?", *limit],
         f"{story}: context over the limit of 300 characters (corpus.max_line_chars)"),
        (["--input", str(no_question)], f"{no_question}:1: field 'question' is missing"),
        (["--input", str(q), "--question", "Where?"], "--question goes with --context; a --input file holds its "
                                                      "questions"),
        (["--context", str(story)], "--context needs at least one --question"),
        (["--input", str(q), "--tracking-uri", f"sqlite:///{new_db}"],
         f"{new_db}: no MLflow store there; check --tracking-uri"),
        (["--input", str(q), "--url", f"http://127.0.0.1:{port}"],
         f"http://127.0.0.1:{port}/invocations: no answer ([Errno 111] Connection refused); is `stmem serve` "
         "running there?"),
    ]
    for args, message in cases:
        res = stmem_cli("predict", "--config", str(TINY_CONFIG), "--set", f"run.root={root}", *args)
        assert (res.returncode, res.stdout, res.stderr) == (2, "", f"stmem: error: {message}\n"), args
    assert not root.exists() and not new_db.parent.exists()  # no store, no run directory was created by asking


@pytest.mark.slow
def test_a_running_stmem_serve_answers_and_nothing_heavy_is_loaded(run_dir, tmp_path):
    rows = tiny_questions(run_dir)
    port, log = free_port(), tmp_path / "serve.log"
    proc = start([sys.executable, "-m", "flows.cli", "serve", "--config", str(TINY_CONFIG),
                  "--set", f"run.root={run_dir.parent}", "--port", str(port)], log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(proc, f"{url}/ping", log)
        res = predict(run_dir, "--url", url, "--input", str(write_jsonl(tmp_path / "q.jsonl", rows)),
                      env={"PYTHONPROFILEIMPORTTIME": "1"})
        assert res.returncode == 0, res.stderr[-3000:]
        got = [json.loads(line) for line in res.stdout.splitlines()]
        answers, scores = expected(run_dir, rows)
        assert [g["answer"] for g in got] == answers
        assert [g["score"] for g in got] == pytest.approx(scores, rel=1e-5)
        assert not {"torch", "mlflow", "prefect"} & imported(res.stderr)  # the server has the model

        # a context the server refuses (over its limit of characters a row; this config reads it):
        # one line that names the input line, and no answer printed, not even the first line's
        big = write_jsonl(tmp_path / "big.jsonl", [rows[0], (rows[0][0] + "\n" + "Mary went home. " * 8000,
                                                             rows[0][1])])
        res = predict(run_dir, "--url", url, "--input", str(big), "--set", "corpus.max_line_chars=1000000")
        assert res.returncode == 2 and res.stdout == "" and res.stderr.count("\n") == 1, res.stderr[-3000:]
        assert res.stderr.startswith(f"stmem: error: {big}:2: {url}/invocations refused it: column 'context': ")

        # no --url, the config's champion: the running server is found and asked, nothing is loaded here
        record = run_dir / "serving.json"
        assert json.loads(record.read_text()) == {"url": url, "pid": proc.pid, "model": "models:/stmem-tiny@champion"}
        res = predict(run_dir, "--input", str(write_jsonl(tmp_path / "q.jsonl", rows)),
                      env={"PYTHONPROFILEIMPORTTIME": "1"})
        assert res.returncode == 0, res.stderr[-3000:]
        assert [json.loads(line)["answer"] for line in res.stdout.splitlines()] == answers
        assert f"stmem: asking the running stmem serve at {url}" in res.stderr
        assert not {"torch", "mlflow", "prefect"} & imported(res.stderr)
    finally:
        stop(proc)
    from flows.predict import running_server

    assert running_server(run_dir) is None  # its process is gone: the next predict loads the model itself


def test_a_causal_lm_model_runs_registers_and_answers_through_predict(tmp_path):
    """`model.head: causal_lm` end to end: trained, registered as the champion, asked by `stmem predict`."""
    causal = ["--set", "model.head=causal_lm", "--set", "model.kg_fusion=false",
              "--set", "model.backbone={type: llama, hidden_size: 32, num_layers: 1, num_heads: 2, intermediate_size: 64}",
              "--set", "model.memory={type: tokens, slots: 2}", "--set", f"run.root={tmp_path}", "--set", "run.name=causal"]
    res = stmem_cli("run", "--config", str(TINY_CONFIG), *causal, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "registered models:/stmem-tiny/1 with alias 'champion'" in res.stdout
    story = tmp_path / "story.txt"
    story.write_text("Mary went to the kitchen.\n")
    res = stmem_cli("predict", "--config", str(TINY_CONFIG), *causal, "--context", str(story),
                    "--question", "Where is Mary?")
    assert res.returncode == 0, res.stderr[-3000:]
    answer = json.loads(res.stdout)
    assert answer["question"] == "Where is Mary?" and 0 < answer["score"] <= 1
    assert not list((tmp_path / "causal" / "predict-cache").glob("*/artifacts/checkpoint/backbone.torchscript.pt"))
