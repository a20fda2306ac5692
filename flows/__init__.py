"""Prefect flows: the end-to-end pipeline and one flow per stage."""
import os

# Before Prefect is imported: no usage data leaves the machine.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
import stmem  # noqa: E402,F401  (sets the Hugging Face and MLflow offline defaults)
