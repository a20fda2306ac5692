"""Shared test setup: offline, no telemetry, Prefect state in a temp dir."""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="stmem-prefect-"))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
# the suite's own server, and each command's when a test starts one, may start slowly on a loaded machine
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def pytest_sessionstart(session):
    """One Prefect server for the whole suite, as docs/operations.md advises for repeated commands:
    each `stmem` command a test starts then reports to it instead of starting a temporary server."""
    if os.environ.get("PREFECT_API_URL"):
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start()
    os.environ["PREFECT_API_URL"] = server.api_url


def pytest_sessionfinish(session, exitstatus):
    """Stop Prefect's temporary server while pytest's output is still open.

    Prefect stops it at exit otherwise, and its "Stopping temporary server"
    log line then goes to a stream pytest has closed ("--- Logging error ---").
    Prefect keeps its servers in a private per-port registry; there is no
    public handle on the one its flows started.
    """
    from prefect.logging.handlers import APILogWorker
    from prefect.server.api.server import SubprocessASGIServer

    APILogWorker.drain_all(timeout=5)  # the flows' last log lines, while the server is still up
    for server in list(SubprocessASGIServer._instances.values()):
        server.stop()


REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
TINY_CONFIG = REPO / "tests" / "tiny.yaml"


def stmem_cli(*args: str, timeout: int = 300, env: dict | None = None, **run_kwargs) -> subprocess.CompletedProcess:
    """``stmem ARGS`` in a fresh process, as a user runs it; ``run_kwargs`` go to ``subprocess.run``."""
    # not MLFLOW_TRACKING_URI from this process: MLflow sets it in-process when a test registers a model,
    # and a command would then find that test's store instead of its own config's
    inherited = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env = {**inherited, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **(env or {})}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout, **run_kwargs)


def error_lines(stderr: str) -> list[str]:
    """What the user is shown of an error: the CLI's line, any traceback, Prefect's ERROR records."""
    return [line for line in stderr.splitlines() if "stmem: error" in line or "Traceback" in line or "| ERROR" in line]


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data; a missing data set fails the test that needs it, never skips it silently."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.fail(f"{p} not found: the tests read bAbI v1.2, dialog bAbI and the Countries KG from ../shared/data")
    return p


@pytest.fixture
def babi_dir() -> Path:
    return shared_data("babi", "en")


def make_dataset(d: Path, tokenizer: str | None = None, row_group_rows: int = 4096, stories: list | None = None,
                 special_tokens: dict | None = None, pack_sentences: bool = True) -> Path:
    """A tiny demo dataset in d/ds: 60 training examples of a few segments, no entities.

    ``tokenizer``: a pretrained tokenizer directory; None trains a WordPiece on the stories.
    ``stories``: other stories instead of the demo's. ``special_tokens``: as ``dataset.special_tokens``.
    """
    from corpora import generate_demo, write_corpus
    from stmem.dataset import build_dataset

    write_corpus(stories or generate_demo(train_stories=30, val_stories=4, test_stories=6, sentences_per_story=10,
                                          questions_per_story=2, seed=3), d / "corpus.parquet")
    empty = pa.array([], pa.string())
    pq.write_table(pa.table({"story_id": empty, "source": empty, "index": pa.array([], pa.int32()),
                             "start": pa.array([], pa.int32()), "end": pa.array([], pa.int32()), "entity": empty}),
                   d / "mentions.parquet")
    pq.write_table(pa.table({"entity": empty, "row": pa.array([], pa.int32())}), d / "entity_index.parquet")
    (d / "ds").mkdir()
    build_dataset(corpus_path=d / "corpus.parquet", mentions_path=d / "mentions.parquet",
                  entity_index_path=d / "entity_index.parquet", out_dir=d / "ds", segment_len=12, max_segments=4,
                  tokenizer=tokenizer, row_group_rows=row_group_rows, special_tokens=special_tokens,
                  pack_sentences=pack_sentences)
    return d / "ds"


TINY_MODEL = {"backbone": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64},
              "memory": {"type": "routed", "slots": 2}, "kg_fusion": False}


def tiny_config(model: dict | None = None, corpus: dict | None = None, seed: int = 1, **train):
    """A Config with a tiny model and the given train settings, for training in tests."""
    from stmem.config import Config

    return Config.model_validate({
        "run": {"seed": seed}, "corpus": corpus or {}, "model": {**TINY_MODEL, **(model or {})},
        "train": {"epochs": 1, "batch_size": 8, "device": "cpu", "progress": False, "num_threads": 1, **train}})
