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
