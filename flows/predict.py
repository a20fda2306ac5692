"""``stmem predict``: questions from files, answered by a running server or by the checkpoint itself.

Here, not in ``serving/``: the register stage's key hashes that package's
source, and a change to this command must not register models anew. A
command pays for every import it makes, so this module imports nothing
heavy at the top: asking a running ``stmem serve`` loads neither torch nor
MLflow. A model in a local SQLite registry is resolved by MLflow once and
kept beside the store in ``predict-cache/``, keyed by the store file's size and time:
while the store is unchanged (no alias moved, no version added) the next
call loads that copy without starting MLflow (its import and store open
cost about 2 s a call).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from corpora.babi import text_lines
from corpora.jsonl import jsonl_records
from corpora.schema import CorpusError

REQUEST_ROWS = 64  # rows per request to a server: well under its row limit, and a batch for the model
_ROW = re.compile(r"(?:, )?\brow (\d+)(?=: )")  # "row 3: ..." (the predictor), "column 'x', row 3: ..." (the server)


@dataclass(frozen=True)
class Question:
    where: str  # what an error about it names: "q.jsonl:3" or "--question 2"
    context: str
    question: str


def read_questions(input_file: Path | None, context_file: Path | None, questions: list[str],
                   max_chars: int) -> list[Question]:
    """The questions of a JSON Lines file (``{"context", "question"}`` a line), or ``questions`` about one
    context file; a context over ``max_chars`` characters is refused, naming its file (and line)."""
    if input_file is not None:
        if questions:
            raise ValueError("--question goes with --context; a --input file holds its questions")
        out = []
        for rec in jsonl_records(input_file, max_chars):  # a line over max_chars is refused while reading
            rec.only(("context", "question"))
            out.append(Question(rec.where, rec.text("context"), rec.text("question")))
        return out
    if not questions:
        raise ValueError("--context needs at least one --question")
    if not context_file.is_file():
        raise FileNotFoundError(f"{context_file}: context file not found")
    lines, size = [], 0
    for _, line in text_lines(context_file, max_chars):
        lines.append(line)
        size += len(line) + 1
        if size > max_chars + 1:  # stop reading: the whole context is one row of the model's input
            raise CorpusError(f"{context_file}: context over the limit of {max_chars:,} characters "
                              "(corpus.max_line_chars)")
    context = "\n".join(lines)
    if not context.strip():
        raise ValueError(f"{context_file}: context file is empty")
    for i, q in enumerate(questions, start=1):
        if not q.strip():
            raise ValueError(f"--question {i} is empty")
    return [Question(f"--question {i}", context, q) for i, q in enumerate(questions, start=1)]


def _located(message: str, rows: list[Question], first: int) -> str:
    """``message`` about "row N" of a batch starting at ``first``, said of the input that row came from."""
    m = _ROW.search(message)
    if m is None or first + int(m.group(1)) >= len(rows):
        return message
    return f"{rows[first + int(m.group(1))].where}: {_ROW.sub('', message, count=1).lstrip(': ')}"


def serving_record(run_dir: Path) -> Path:
    """Where `stmem serve` of a config's champion says it is serving: {"url", "pid", "model"}."""
    return Path(run_dir) / "serving.json"


def running_server(run_dir: Path) -> str | None:
    """The URL of a `stmem serve` of this run's champion that is still running, else None.

    Its record is removed when it stops; one left by a killed server names a process that is gone.
    """
    try:
        record = json.loads(serving_record(run_dir).read_text())
        os.kill(int(record["pid"]), 0)  # signal 0: is it alive
        return str(record["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def ask_server(url: str, rows: list[Question]) -> tuple[list[str], list[float]]:
    """Answers and scores from a running ``stmem serve`` at ``url`` (its ``/invocations``)."""
    endpoint = url.rstrip("/")
    if not endpoint.endswith("/invocations"):
        endpoint += "/invocations"
    answers, scores = [], []
    for first in range(0, len(rows), REQUEST_ROWS):
        batch = rows[first:first + REQUEST_ROWS]
        body = json.dumps({"dataframe_split": {"columns": ["context", "question"],
                                               "data": [[r.context, r.question] for r in batch]}}).encode()
        request = urllib.request.Request(endpoint, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=600) as response:
                predictions = json.loads(response.read())["predictions"]
        except urllib.error.HTTPError as e:
            try:  # MLflow's scoring server says "Failed to predict data '<the rows>'. \nError: <why>"
                message = json.loads(e.read())["message"].rpartition("Error: ")[2].strip().splitlines()[0]
            except (ValueError, KeyError, AttributeError, IndexError):
                message = e.reason
            if e.code == 400:  # the server refused this input
                raise ValueError(_located(f"{endpoint} refused it: {message}", rows, first)) from None
            raise ValueError(f"{endpoint}: HTTP {e.code}: {message}") from None
        except (urllib.error.URLError, OSError) as e:  # refused, unreachable, or no answer in time
            raise ValueError(f"{endpoint}: no answer ({getattr(e, 'reason', e)}); is `stmem serve` running "
                             "there?") from None
        answers += [p["answer"] for p in predictions]
        scores += [p["score"] for p in predictions]
    return answers, scores


def ask_checkpoint(ckpt_dir: Path, rows: list[Question],
                   traced_backbone: Path | None = None) -> tuple[list[str], list[float]]:
    """Answers and scores from the checkpoint itself, every question read before any is answered."""
    from serving.inference import Predictor

    try:
        return Predictor(ckpt_dir, traced_backbone=traced_backbone).predict([r.context for r in rows],
                                                                           [r.question for r in rows])
    except ValueError as e:  # "row N: ..." of the one batch
        raise ValueError(_located(str(e), rows, 0)) from None


def checkpoint_in(path: Path) -> Path | None:
    """``path`` when it is a checkpoint, or the checkpoint of the logged stmem model at ``path``."""
    from stmem.checkpoint import CONFIG, WEIGHTS  # (torch: loaded only where a model is)

    # registry.py logs it as artifacts={"checkpoint": ...}; its download is a "checkpoint" directory
    for d in (path, path / "checkpoint", path / "artifacts" / "checkpoint"):
        if (d / CONFIG).is_file() and (d / WEIGHTS).is_file():
            return d
    return None


def sqlite_path(tracking_uri: str) -> Path | None:
    return Path(tracking_uri[len("sqlite:///"):]) if tracking_uri.startswith("sqlite:///") else None


CACHE = "predict-cache"
TRACED = "backbone.torchscript.pt"  # in a cached checkpoint: its backbone traced (Backbone.save_traced)


def store_state(db: Path) -> list:
    """What changes when a SQLite store is written: its size and modification time, and its WAL file's."""
    state = []
    for f in (db, db.with_name(db.name + "-wal")):
        with contextlib.suppress(FileNotFoundError):
            st = f.stat()
            state.append([f.name, st.st_size, st.st_mtime_ns])
    return state


def _download(model_uri: str, tracking_uri: str, dst: Path) -> Path:
    """``model_uri``'s checkpoint downloaded by MLflow into ``dst`` (MLflow resolves the URI: its registry's
    tables are its own)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    # download_artifacts resolves models:/ URIs with the process's registry, whatever its arguments say
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        path = mlflow.artifacts.download_artifacts(artifact_uri=f"{model_uri.rstrip('/')}/artifacts/checkpoint",
                                                   dst_path=str(dst))
    except MlflowException as exc:
        raise ValueError(f"{model_uri}: cannot load from {tracking_uri}: {str(exc).splitlines()[0]}") from None
    ckpt = checkpoint_in(Path(path))
    if ckpt is None:
        raise ValueError(f"{model_uri}: not a stmem model (no checkpoint in it)")
    return ckpt


def _traced(ckpt: Path) -> Path | None:
    """The cached checkpoint's backbone as TorchScript, traced on the first call that finds it missing.

    Answering from it never imports transformers, whose model code costs seconds a call. A backbone
    whose trace does not reproduce it is said on stderr and answered without one.
    """
    path = ckpt / TRACED
    if not path.is_file():
        from stmem.checkpoint import load_checkpoint, read_config

        if read_config(ckpt)["model"].get("head", "decoder") != "decoder":
            return None  # a causal LM answers by generate: the whole model, not a traced encoder
        tmp = path.with_name(f".{TRACED}.{os.getpid()}")
        try:
            load_checkpoint(ckpt)[0].backbone.save_traced(tmp)
            tmp.replace(path)  # a call beside this one reads the whole file or none
        except RuntimeError as exc:
            print(f"stmem: predict: {str(exc).splitlines()[0]}; answering without a traced backbone",
                  file=sys.stderr)
            return None
        finally:
            tmp.unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def model_checkpoint(model_uri: str, tracking_uri: str) -> Iterator[tuple[Path, Path | None]]:
    """The checkpoint directory of a registered model and its traced backbone, for the ``with`` block.

    With a local SQLite store, the download is kept beside it in
    ``predict-cache/`` under the URIs and the store's ``store_state``: a later
    call finds it while the store is unchanged, and any write to the store (an
    alias moved, a version added or deleted) sends the next call back to
    MLflow. The cached checkpoint keeps its backbone traced (``_traced``).
    Otherwise (a tracking server) it is downloaded into a temporary
    directory, and nothing is traced: one call would pay for it.
    """
    db = sqlite_path(tracking_uri)
    if db is None:
        with tempfile.TemporaryDirectory(prefix="stmem-predict-") as tmp:
            yield _download(model_uri, tracking_uri, Path(tmp)), None
        return
    cache = db.parent / CACHE  # beside the store it is keyed by: asking creates no run directory
    state = store_state(db)  # taken before MLflow reads it: a write during the download misses next time
    family = hashlib.sha256(f"{tracking_uri}\n{model_uri}".encode()).hexdigest()[:12]
    entry = cache / f"{family}-{hashlib.sha256(json.dumps(state).encode()).hexdigest()[:12]}"
    ckpt = checkpoint_in(entry)
    if ckpt is not None:
        yield ckpt, _traced(ckpt)
        return
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=cache))
    try:
        _download(model_uri, tracking_uri, tmp)
        with contextlib.suppress(OSError):  # a call beside this one may have put it there first
            tmp.rename(entry)
        for old in cache.glob(f"{family}-*"):  # copies made from earlier states of the store
            if old != entry:
                shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ckpt = checkpoint_in(entry)
    if ckpt is None:
        raise ValueError(f"{entry}: no checkpoint was kept there")
    yield ckpt, _traced(ckpt)
