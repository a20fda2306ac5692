"""stmem: transformer QA models with a short-term memory and KG fusion.

The model library: config schema, backbone, memories, model, dataset,
training and evaluation, with no Prefect. It reads corpora through
``corpora/``; inference, the MLflow pyfunc and the registry are ``serving/``,
the Prefect orchestration ``tasks/`` and ``flows/``.
"""
import os

# Nothing is fetched from a model hub at run time, and no usage data leaves
# the machine. setdefault: a user who wants otherwise can still say so.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
