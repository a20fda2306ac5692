"""Only transient errors are retried: the stage tasks' retry policy, on real Prefect tasks."""
import pytest
from prefect import flow, task

from corpora import CorpusError
from stmem.artifacts import MissingArtifactError
from tasks.stage import _retry_unless_bad_input


@pytest.mark.parametrize("error, attempts", [(OSError("disk hiccup"), 3), (TimeoutError("slow server"), 3),
                                             (CorpusError("x.txt:3: not UTF-8"), 1),
                                             (MissingArtifactError("dataset: missing"), 1),
                                             (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"), 1)])
def test_transient_errors_are_retried_bad_input_is_not(error, attempts):
    calls = []

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=_retry_unless_bad_input, persist_result=False)
    def failing():
        calls.append(1)
        raise error

    @flow
    def run():
        failing()

    with pytest.raises(type(error)):
        run()
    assert len(calls) == attempts


# --- why a stage runs, and an earlier output put back (the ingest stage of the tiny config, in real flows) ---

import json
import logging

from stmem.config import load_config
from stmem.layout import RunLayout
from tasks.stage import run_stage
from tests.conftest import TINY_CONFIG


def _ingest(root, *sets: str) -> tuple[dict, list[str]]:
    """Run the ingest stage as the pipeline does; its manifest and the stage's log lines."""
    cfg = load_config(TINY_CONFIG, [f"run.root={root}", *sets])
    lines: list[str] = []

    class Lines(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    handler = Lines(level=logging.INFO)
    logging.getLogger("prefect.task_runs").addHandler(handler)
    try:
        flow(lambda: task(run_stage, persist_result=False)(cfg, "ingest", {}))()
    finally:
        logging.getLogger("prefect.task_runs").removeHandler(handler)
    out = RunLayout(cfg.run_dir).stage_dir("ingest")
    return json.loads((out / "manifest.json").read_text()), [m for m in lines if m.startswith("ingest:")]


def test_a_stage_says_why_it_runs_and_reuses_an_earlier_output_of_the_same_key(tmp_path):
    first, log = _ingest(tmp_path)
    assert log[0] == "ingest: started: no earlier output"
    # the manifest keeps what the key was made of: config values by name, code files by hash
    assert first["inputs"]["config"]["corpus.demo.train_stories"] == 40 and first["inputs"]["config"]["run.seed"] == 0
    assert "tasks/ingest.py" in first["inputs"]["code"] and "tasks/stage.py" not in first["inputs"]["code"]

    second, log = _ingest(tmp_path, "corpus.demo.train_stories=30")
    assert log[0] == "ingest: started: config key `corpus.demo.train_stories` 40 -> 30"

    # back to the first config: its output is put back, not built again
    third, log = _ingest(tmp_path)
    assert third == first
    assert log == [f"ingest: reused its earlier output of key {first['key']}, made {first['created_at']} "
                   "(config key `corpus.demo.train_stories` 30 -> 40)"]
    versions = tmp_path / "tiny" / "versions" / "corpus"
    assert [d.name for d in versions.iterdir()] == [second["key"]]  # the one it replaced is kept in turn

    assert _ingest(tmp_path)[1] == [f"ingest: skipped, its inputs, config and code are unchanged (key {first['key']})"]


def test_no_earlier_output_is_kept_with_keep_outputs_0(tmp_path):
    _ingest(tmp_path, "run.keep_outputs=0")
    _ingest(tmp_path, "run.keep_outputs=0", "corpus.demo.train_stories=30")
    _, log = _ingest(tmp_path, "run.keep_outputs=0")
    assert log[0] == "ingest: started: config key `corpus.demo.train_stories` 30 -> 40"
    assert not (tmp_path / "tiny" / "versions").exists()
