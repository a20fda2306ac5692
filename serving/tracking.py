"""The MLflow run of a model: opened when its training starts, closed FINISHED or FAILED.

The train stage opens it (params, tags, input datasets), logs each epoch's
loss and validation figures as they come, and records its id in the
training output (``mlflow_run.json``); the register stage adds the model,
the test metrics, the manifests and the plots to the same run. A training
resumed after a crash goes on in the same run; any other run left RUNNING
by a killed process is marked FAILED by the next training of the same run
directory.
"""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

from mlflow.entities import Metric, Param, RunStatus

from stmem.layout import SPLITS, split_file

log = logging.getLogger(__name__)
RUN_FILE = "mlflow_run.json"
RUN_DIR_TAG = "stmem.run_dir"


class TrainingRun:
    def __init__(self, *, tracking_uri: str, experiment: str, artifact_root: Path | None, run_dir: Path,
                 run_name: str, tags: dict[str, str], params: dict, out_dir: Path, round_epochs: list[int]):
        from mlflow import MlflowClient

        from serving.registry import _get_or_create_experiment, _param_value, flatten

        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        experiment_id = _get_or_create_experiment(self.client, experiment, artifact_root)
        tags = {**tags, RUN_DIR_TAG: str(Path(run_dir).resolve())}
        # epoch e of round r is step offset[r] + e, so restarts follow on in one curve
        self.offsets = [sum(round_epochs[:i]) for i in range(len(round_epochs))]
        self.run_file = Path(out_dir) / RUN_FILE
        self.run_id = json.loads(self.run_file.read_text())["run_id"] if self.run_file.is_file() else None
        self.resumed = self.run_id is not None
        self._fail_leftovers(experiment_id, tags[RUN_DIR_TAG])
        if self.run_id is not None:  # the training resumes: so does its run
            self.client.update_run(self.run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            return
        self.run_id = self.client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id
        params = [Param(k, _param_value(v)) for k, v in flatten(params).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        self.run_file.write_text(json.dumps({"run_id": self.run_id, "tracking_uri": tracking_uri}) + "\n")

    def _fail_leftovers(self, experiment_id: str, run_dir: str) -> None:
        stuck = self.client.search_runs([experiment_id], f"tags.`{RUN_DIR_TAG}` = '{run_dir}' and "
                                        f"attributes.status = 'RUNNING'")
        for run in stuck:
            if run.info.run_id == self.run_id:
                continue
            log.warning("MLflow run %s of %s was left RUNNING by a killed process: marked FAILED",
                        run.info.run_id, run_dir)
            self.client.set_tag(run.info.run_id, "stmem.failure", "left RUNNING by a killed process")
            self.client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FAILED))

    def log_inputs(self, dataset_dir: Path) -> None:
        """The dataset splits as MLflow inputs (name, digest, source, schema of what identifies an example)."""
        if self.resumed:
            return  # logged when the run began
        import mlflow.data
        import pandas as pd
        from mlflow.entities import DatasetInput, InputTag

        inputs = []
        for split in SPLITS:
            path = split_file(dataset_dir, split)
            df = pd.read_parquet(path, columns=["example_id", "task", "answer"])
            with warnings.catch_warnings():
                # MLflow registers its local-file source class twice, then warns that a path could be either
                warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in "
                                        "multiple ways", category=UserWarning)
                ds = mlflow.data.from_pandas(df, source=str(path), name=split)._to_mlflow_entity()
            inputs.append(DatasetInput(ds, tags=[InputTag("mlflow.data.context", split)]))
        self.client.log_inputs(self.run_id, datasets=inputs)

    def log_epoch(self, row: dict) -> None:
        step = self.offsets[row.get("round", 1) - 1] + row["epoch"]
        metrics = [Metric(f"epoch.{k}", float(v), 0, step) for k, v in row.items()
                   if k in ("loss", "val_loss", "val_accuracy") and v == v]  # NaN (no val split) left out
        self.client.log_batch(self.run_id, metrics=metrics)

    def end(self, ok: bool) -> None:
        self.client.set_terminated(self.run_id, RunStatus.to_string(RunStatus.FINISHED if ok else RunStatus.FAILED))
