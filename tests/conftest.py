"""Shared test setup: offline, no telemetry, Prefect state in a temp dir."""
import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="stmem-prefect-"))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
TINY_CONFIG = REPO / "tests" / "tiny.yaml"


@pytest.fixture
def babi_dir() -> Path:
    d = SHARED_DATA / "babi" / "en"
    if not d.is_dir():
        pytest.skip(f"{d} not present")
    return d
