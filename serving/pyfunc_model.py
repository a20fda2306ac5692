"""The MLflow pyfunc model, logged as code ("models from code").

MLflow copies this file into the logged model and executes it on load, so the
model is rebuilt from the checkpoint artifact (safetensors + JSON) and nothing
is pickled. Input: a DataFrame with string columns ``context`` (the story, one
sentence per line) and ``question``; output: a DataFrame with columns
``answer`` and ``score`` (the probability the model gives that answer).

Bad requests raise ``MlflowException(INVALID_PARAMETER_VALUE)``, which
``mlflow models serve`` answers with HTTP 400. Served, a request gets
``MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT`` seconds: MLflow's server answers 504
then, and the model stops working on it at its next row or batch.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import mlflow
import pandas as pd
from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from serving.limits import MAX_CHARS, MAX_REQUEST_CHARS, MAX_ROWS

INPUT_COLUMNS = ("context", "question")
log = logging.getLogger(__name__)


def _bad_request(message: str) -> MlflowException:
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def validate_input(model_input: Any) -> tuple[list[str], list[str]]:
    """The ``context`` and ``question`` columns as lists of non-empty strings."""
    if isinstance(model_input, dict):
        try:
            model_input = pd.DataFrame(model_input)
        except ValueError as e:
            raise _bad_request(f"input could not be read as a table: {e}") from e
    if not isinstance(model_input, pd.DataFrame):
        raise _bad_request(f"input must be a DataFrame with columns {list(INPUT_COLUMNS)}, "
                           f"got {type(model_input).__name__}")
    missing = [c for c in INPUT_COLUMNS if c not in model_input.columns]
    if missing:
        raise _bad_request(f"input is missing column(s) {missing}; expected {list(INPUT_COLUMNS)}")
    if len(model_input) > MAX_ROWS:
        raise _bad_request(f"{len(model_input)} rows in one request; at most {MAX_ROWS}")
    columns = {}
    for name in INPUT_COLUMNS:
        values = model_input[name].tolist()
        for row, value in enumerate(values):
            if not isinstance(value, str):
                raise _bad_request(f"column '{name}', row {row}: expected a string, got {type(value).__name__}")
            if not value.strip():
                raise _bad_request(f"column '{name}', row {row}: must not be empty")
            if len(value) > MAX_CHARS[name]:
                raise _bad_request(f"column '{name}', row {row}: {len(value):,} characters, over the limit of "
                                   f"{MAX_CHARS[name]:,}")
        columns[name] = values
    total = sum(len(v) for values in columns.values() for v in values)
    if total > MAX_REQUEST_CHARS:
        raise _bad_request(f"{total:,} characters in one request ({len(model_input)} rows, contexts and questions), "
                           f"over the limit of {MAX_REQUEST_CHARS:,}; send fewer or shorter rows per request")
    return columns["context"], columns["question"]


class StmemQAModel(mlflow.pyfunc.PythonModel):
    """Answers questions about a story with a stmem checkpoint."""

    def load_context(self, context) -> None:
        from serving.inference import Predictor  # torch is imported only when the model loads

        self.predictor = Predictor(context.artifacts["checkpoint"], device="cpu")

    # model_input's type hint: MLflow checks a DataFrame comes in (and stops asking for hints on every load);
    # the columns are the explicit signature's (serving.registry) and validate_input's
    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        contexts, questions = validate_input(model_input)
        if not contexts:
            return pd.DataFrame({"answer": pd.Series([], dtype=object), "score": pd.Series([], dtype=float)})
        timeout = MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.get() if MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.defined else None
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            answers, scores = self.predictor.predict(contexts, questions, deadline=deadline)
        except TimeoutError as e:  # the server has answered 504 already: only the work stops here
            log.warning("request of %d rows stopped: %s", len(contexts), e)
            raise MlflowException(str(e)) from e
        except ValueError as e:  # e.g. a context with no sentence in it
            raise _bad_request(str(e)) from e
        return pd.DataFrame({"answer": answers, "score": scores})


mlflow.models.set_model(StmemQAModel())
