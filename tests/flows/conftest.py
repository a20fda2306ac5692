"""The tiny pipeline's run, made once for the test modules that only read it."""
from pathlib import Path

import pytest

from tasks.graph import STAGES
from tests.conftest import TINY_CONFIG


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    """tests/tiny.yaml through the whole pipeline (Prefect, in this process). Tests read it and must not
    change it (copy it first); test_operations.py has its own run, which its tests change."""
    from flows.pipeline import pipeline

    root = tmp_path_factory.mktemp("runs")
    out = pipeline(config_path=str(TINY_CONFIG), overrides=[f"run.root={root}"])
    assert set(out) == set(STAGES)
    return root / "tiny"
