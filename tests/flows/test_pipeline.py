"""The whole pipeline through Prefect on the tiny config, then one stage alone."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient
from safetensors.torch import load_file

from corpora import CORPUS_SCHEMA
from kg_pipeline import MENTIONS_SCHEMA, TRIPLES_SCHEMA
from serving.inference import Predictor
from serving.registry import default_tracking_uri
from stmem.artifacts import digest
from stmem.checkpoint import load_checkpoint
from stmem.dataset import EXAMPLE_SCHEMA, load_tokenizer
from stmem.evaluate import predict_answers
from stmem.layout import RunLayout
from tasks.graph import GRAPH, STAGES
from tests.conftest import TINY_CONFIG, error_lines, stmem_cli
from tests.servers import free_port, post, post_raw, start, stop, wait_http
from stmem.layout import split_file


# run_dir: the tiny run, tests/flows/conftest.py


def test_every_stage_wrote_its_artifacts_with_schemas(run_dir):
    L = RunLayout(run_dir)
    assert pq.read_schema(L.corpus).equals(CORPUS_SCHEMA)
    assert pq.read_schema(L.mentions).equals(MENTIONS_SCHEMA)
    assert pq.read_schema(L.triples).equals(TRIPLES_SCHEMA)
    assert pq.read_table(L.triples).num_rows > 0

    kg = L.stage_dir("kg")
    emb = load_file(str(kg / "entity_embeddings.safetensors"))["entity_embeddings"]
    index = pq.read_table(kg / "entity_index.parquet").to_pydict()
    assert emb.shape == (len(index["entity"]), 8) and sorted(index["row"]) == list(range(emb.shape[0]))
    metrics = json.loads((kg / "kg_metrics.json").read_text())
    assert 0 <= metrics["mrr"] <= 1

    ds = L.stage_dir("dataset")
    info = json.loads((ds / "dataset_info.json").read_text())
    for split in ("train", "val", "test"):
        table = pq.read_table(split_file(ds, split))
        assert table.schema.equals(EXAMPLE_SCHEMA) and table.num_rows > 0
        for segs in table.column("segments").to_pylist():
            assert all(len(s) <= info["segment_len"] for s in segs) and len(segs) <= info["max_segments"]
    assert (ds / "tokenizer.json").is_file()
    linked = pq.read_table(split_file(ds, "train")).column("segment_entities").to_pylist()
    assert any(e > 0 for story in linked for seg in story for e in seg)  # entity linking happened

    train = L.stage_dir("train")
    for f in ("model.safetensors", "model_config.json", "tokenizer.json", "entity_index.parquet"):
        assert (train / f).is_file(), f
    ev = json.loads((train / "eval.json").read_text())
    assert set(ev["test"]["per_task"]) == {"demo"}
    # eval.json is the saved checkpoint's exact match on the test split, recomputed here
    model, _ = load_checkpoint(train)
    test = pq.read_table(split_file(ds, "test")).to_pylist()
    answers = predict_answers(model, test, load_tokenizer(train / "tokenizer.json"), batch_size=16, device="cpu")
    assert ev["test"]["accuracy"] == sum(a == e["answer"] for a, e in zip(answers, test)) / len(test)
    assert pq.read_table(train / "test_predictions.parquet").column("prediction").to_pylist() == answers

    for stage in STAGES:
        m = json.loads((L.stage_dir(stage) / "manifest.json").read_text())
        assert m["stage"] == stage and m["code_version"] and m["config_hash"] and m["key"]
        assert set(m["outputs"]) >= set(GRAPH[stage].writes)
    # nothing half-written or left over from the atomic renames (.lock is the run's lock file; .pystow
    # PyKEEN's caches, there when this process first imported PyKEEN in the kg stage)
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".") and p.name != ".pystow") == [".lock"]


def test_model_is_registered_as_champion_and_loads_in_a_fresh_process(run_dir):
    uri = default_tracking_uri(run_dir)
    client = MlflowClient(uri, registry_uri=uri)
    version = client.get_model_version_by_alias("stmem-tiny", "champion")
    reg = json.loads((run_dir / "register" / "registration.json").read_text())
    assert int(version.version) == reg["version"]
    # the model card: the evaluation per task and where the model comes from
    evaluation = json.loads((run_dir / "train" / "eval.json").read_text())["test"]
    for task, accuracy in evaluation["per_task"].items():
        assert f"| {task} | {accuracy:.4f} |" in version.description
    train_manifest = json.loads((run_dir / "train" / "manifest.json").read_text())
    assert f"| code version | `{train_manifest['code_version']}` |" in version.description
    assert f"| config (train stage's sections) | `{train_manifest['config_hash']}` |" in version.description
    code = ("import mlflow, pandas as pd\n"
            "m = mlflow.pyfunc.load_model('models:/stmem-tiny@champion')\n"
            "print('ANSWER=' + m.predict(pd.DataFrame({'context': ['Mary went to the kitchen.'], "
            "'question': ['Where is Mary?']}))['answer'][0])\n")
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    expected = Predictor(run_dir / "train").answer(["Mary went to the kitchen."], ["Where is Mary?"])[0]
    assert out.stdout.splitlines()[-1] == "ANSWER=" + expected


def _test_questions(run_dir: Path) -> tuple[list[str], list[str], list[str]]:
    """The test split as raw text: (contexts, questions, example ids), one per question."""
    from corpora import read_corpus

    contexts, questions, ids = [], [], []
    for story in read_corpus(RunLayout(run_dir).corpus):
        if story.split == "test":
            for q, (question, pos) in enumerate(zip(story.questions, story.question_positions)):
                contexts.append("\n".join(story.sentences[:pos]))
                questions.append(question)
                ids.append(f"{story.story_id}/{q}")
    return contexts, questions, ids


def _evaluated(run_dir: Path, ids: list[str]) -> list[str]:
    evaluated = pq.read_table(run_dir / "train" / "test_predictions.parquet").to_pydict()
    by_id = dict(zip(evaluated["example_id"], evaluated["prediction"]))
    return [by_id[i] for i in ids]


def test_served_answers_are_the_evaluated_ones(run_dir):
    """Train/serve parity: raw test stories through the predictor give test_predictions.parquet, answer by answer."""
    contexts, questions, ids = _test_questions(run_dir)
    assert Predictor(run_dir / "train").answer(contexts, questions) == _evaluated(run_dir, ids)
    assert Predictor(run_dir / "train").max_segments == 6  # tests/tiny.yaml's dataset.max_segments


def test_predictor_refuses_a_question_longer_than_the_model_reads(run_dir):
    """Never cut: a question cut to max_question_len would be another question, answered confidently."""
    contexts, questions, _ = _test_questions(run_dir)
    predictor = Predictor(run_dir / "train")
    n = predictor.model.vocab.max_question_len
    long_question = " ".join(["where"] * (n + 1)) + " ?"
    with pytest.raises(ValueError, match=rf"^row 1: question is \d+ tokens, this model reads at most {n}$"):
        predictor.predict(contexts[:2], [questions[0], long_question])


@pytest.mark.slow
def test_stmem_serve_answers_as_predict_and_the_evaluation(run_dir, tmp_path):
    """`stmem serve` on the tiny run's champion: the test split's evaluated answers in all three request
    formats, `stmem predict`'s answer, a 400 naming the field and row for each bad request, and still serving."""
    contexts, questions, ids = _test_questions(run_dir)
    evaluated = _evaluated(run_dir, ids)
    port, log = free_port(), tmp_path / "serve.log"
    proc = start([sys.executable, "-m", "flows.cli", "serve", "--config", str(TINY_CONFIG),
                  "--set", f"run.root={run_dir.parent}", "--port", str(port)], log)
    url = f"http://127.0.0.1:{port}/invocations"
    try:
        wait_http(proc, f"http://127.0.0.1:{port}/ping", log)
        status, body = post(url, {"dataframe_split": {"columns": ["context", "question"],
                                                      "data": [list(r) for r in zip(contexts, questions)]}})
        assert status == 200, body
        assert [p["answer"] for p in body["predictions"]] == evaluated  # one batch call
        assert all(0.0 < p["score"] <= 1.0 for p in body["predictions"])
        status, body = post(url, {"inputs": {"context": contexts[:3], "question": questions[:3]}})
        assert status == 200 and [p["answer"] for p in body["predictions"]] == evaluated[:3], body
        status, body = post(url, {"dataframe_records": [{"context": c, "question": q}
                                                        for c, q in zip(contexts[:3], questions[:3])]})
        assert status == 200 and [p["answer"] for p in body["predictions"]] == evaluated[:3], body

        story = tmp_path / "story.txt"
        story.write_text(contexts[0] + "\n")
        res = stmem_cli("predict", "--model", "models:/stmem-tiny@champion", "--context", str(story),
                        "--question", questions[0], "--config", str(TINY_CONFIG), "--set", f"run.root={run_dir.parent}")
        assert res.returncode == 0, res.stderr[-3000:]
        assert json.loads(res.stdout.splitlines()[-1])["answer"] == evaluated[0]

        cols = ["context", "question"]
        bad = [({"dataframe_split": {"columns": ["context"], "data": [[contexts[0]]]}}, "missing inputs ['question']"),  # MLflow's schema check
               ({"dataframe_split": {"columns": cols, "data": [[contexts[0], questions[0]], [contexts[1], "  "]]}},
                "column 'question', row 1: must not be empty"),
               ({"dataframe_records": [{"context": contexts[0], "question": questions[0]},
                                       {"context": "", "question": questions[0]}]},
                "column 'context', row 1: must not be empty"),
               ({"dataframe_split": {"columns": cols, "data": [[contexts[0], 7]]}}, "question"),
               ({"dataframe_split": {"columns": cols, "data": [[contexts[0], questions[0]], ["x " * 60_000, "Where?"]]}},
                "column 'context', row 1: 120,000 characters, over the limit of 100,000"),
               ({"dataframe_split": {"columns": cols, "data": [[contexts[0], questions[0]]] * 257}},
                "257 rows in one request; at most 256")]
        for payload, message in bad:
            status, body = post(url, payload)
            assert status == 400 and message in body["message"], (payload.keys(), body)
        status, body = post(url, {"inputs": {"context": contexts[:1], "question": questions[:1]}})
        assert status == 200 and body["predictions"][0]["answer"] == evaluated[0], body  # still serving
    finally:
        stop(proc)


def test_stmem_serve_refuses_a_port_another_server_holds(run_dir):
    with socket.socket() as other:  # another server, listening
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        res = stmem_cli("serve", "--config", str(TINY_CONFIG), "--set", f"run.root={run_dir.parent}",
                        "--port", str(port))
    assert res.returncode == 2
    assert res.stderr == f"stmem: error: --port {port}: cannot serve on 127.0.0.1:{port}: another process is " \
                         "listening on it; choose another --port\n"
    assert res.stdout == ""  # no "serving ... on :port"


@pytest.mark.slow
def test_stmem_serve_refuses_what_would_flood_it_and_stops_work_past_its_timeout(run_dir, tmp_path):
    """Body size, JSON depth and the request's characters are refused with one-line 4xx answers before any
    work; a request past --timeout is answered 504 and its work stops; the server answers the next one."""
    contexts, questions, ids = _test_questions(run_dir)
    port, log = free_port(), tmp_path / "serve.log"
    proc = start([sys.executable, "-m", "flows.cli", "serve", "--config", str(TINY_CONFIG),
                  "--set", f"run.root={run_dir.parent}", "--port", str(port), "--timeout", "2"], log)
    url = f"http://127.0.0.1:{port}/invocations"
    split = lambda rows: json.dumps({"dataframe_split": {"columns": ["context", "question"], "data": rows}}).encode()
    try:
        wait_http(proc, f"http://127.0.0.1:{port}/ping", log)
        # 256 rows of 100,000 characters: 25.6 MB, refused on its Content-Length (the first 64 KB sent)
        flood = split([["x " * 50_000, "Where is Mary?"]] * 256)
        status, text = post_raw(url, flood[:65536], content_length=len(flood))
        assert (status, json.loads(text)["message"]) == (413, f"request body of {len(flood):,} bytes, over the "
                                                              "limit of 4,194,304; send fewer or shorter rows")
        status, text = post_raw(url, b"[" * 100_000 + b"]" * 100_000)
        assert status == 400 and json.loads(text)["message"].startswith("request JSON is nested too deeply"), text
        # within the body limit, over the request's characters: refused before MLflow parses it
        status, text = post_raw(url, split([["x " * 50_000, "Where is Mary?"]] * 3))
        assert (status, json.loads(text)["message"]) == (413, "300,083 characters in one request, over the limit "
                                                              "of 200,000; send fewer or shorter rows per request")
        # 15 rows, each one 10,000-character sentence for spaCy to parse (about a second each): past 2 s
        slow = split([["Mary went to the kitchen and " * 345, "Where is Mary?"]] * 15)
        status, text = post_raw(url, slow)
        assert status == 504, text
        stopped = "request of 15 rows stopped: past its time budget after"
        for _ in range(120):  # the work stops at its next row: a second or so
            if stopped in log.read_text():
                break
            time.sleep(0.5)
        assert stopped in log.read_text(), log.read_text()[-3000:]
        status, body = post(url, {"inputs": {"context": contexts[:1], "question": questions[:1]}})
        assert status == 200 and body["predictions"][0]["answer"] == _evaluated(run_dir, ids[:1])[0], body
    finally:
        stop(proc)


def test_stage_train_reruns_training_alone(run_dir, tmp_path):
    # on a copy: the registered champion must keep matching run_dir's checkpoint for the other tests
    run_dir = Path(shutil.copytree(run_dir, tmp_path / run_dir.name))
    L = RunLayout(run_dir)
    before = {s: json.loads((L.stage_dir(s) / "manifest.json").read_text()) for s in STAGES}
    weights_before = (L.stage_dir("train") / "model.safetensors").read_bytes()
    res = stmem_cli("stage", "train", "--config", str(TINY_CONFIG), "--set", f"run.root={run_dir.parent}",
                    "--set", "train.epochs=1")
    assert res.returncode == 0, res.stderr[-3000:]
    after = {s: json.loads((L.stage_dir(s) / "manifest.json").read_text()) for s in STAGES}
    assert (L.stage_dir("train") / "model.safetensors").read_bytes() != weights_before  # trained anew
    assert after["train"]["config_hash"] != before["train"]["config_hash"]  # epochs changed
    assert json.loads((L.stage_dir("train") / "eval.json").read_text())["epochs_run"] == 1
    for s in ("ingest", "extract", "kg", "dataset", "register"):
        assert after[s] == before[s], s  # untouched
    # the train manifest records what it read: the dataset and KG outputs, by the digest of their files
    assert after["train"]["inputs"]["upstream"] == {s: digest(after[s]["outputs"]) for s in ("dataset", "kg")}
    accuracy = json.loads((L.stage_dir("train") / "eval.json").read_text())["test"]["accuracy"]
    assert f"test exact-match accuracy: {accuracy:.3f}" in res.stdout  # the summary reports the new model
    # and says the registered model is not that model: register read the old one and did not run
    states = {p[0]: p[1] for p in map(str.split, res.stdout.splitlines()) if len(p) > 1 and p[0] in STAGES}
    assert states == {**dict.fromkeys(STAGES, "reused"), "train": "ran", "register": "stale"}
    assert ("  register stale            stage 'register' ran on other inputs, config or code: output of stage "
            "'train' changed") in res.stdout
    assert "registered models:/" not in res.stdout


def test_stage_without_upstream_artifacts_fails_clearly(tmp_path):
    res = stmem_cli("stage", "train", "--config", str(TINY_CONFIG), "--set", f"run.root={tmp_path}")
    assert res.returncode == 2
    assert error_lines(res.stderr) == [f"stmem: error: stage 'dataset' is out of date ({tmp_path / 'tiny' / 'dataset'} " \
                                 "has no output); run it again (stmem stage dataset) or the pipeline (stmem run)"]
    assert not (tmp_path / "tiny" / "train").exists()
