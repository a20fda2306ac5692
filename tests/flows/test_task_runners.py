"""extract.shards as separate Prefect task runs: on the default thread runner and on a Dask cluster
(``run.task_runner: dask``, prefect-dask) the stage writes the same files. Real CLI, real Dask scheduler
and worker processes on 127.0.0.1."""
import json
from pathlib import Path

import pytest
from distributed import Client, LocalCluster

from stmem.layout import RunLayout
from tests.conftest import TINY_CONFIG, error_lines, stmem_cli


def _extract(root: Path, *sets: str) -> dict:
    res = stmem_cli("stage", "extract", "--config", str(TINY_CONFIG), "--force", "--set", f"run.root={root}",
                    "--set", "extract.shards=3", *(x for s in sets for x in ("--set", s)))
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads((RunLayout(root / "tiny").stage_dir("extract") / "manifest.json").read_text())


def test_dask_runner_writes_what_the_default_runner_writes(tmp_path):
    res = stmem_cli("stage", "ingest", "--config", str(TINY_CONFIG), "--set", f"run.root={tmp_path}")
    assert res.returncode == 0, res.stderr[-3000:]
    threads = _extract(tmp_path)
    assert threads["summary"]["shards"] == 3
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        dask = _extract(tmp_path, "run.task_runner=dask", f"run.dask_address={cluster.scheduler_address}")
        # the parts ran on the cluster's workers: three tasks computed, named after the library call
        computed = client.run_on_scheduler(lambda dask_scheduler: {
            p: prefix.state_counts["memory"] for p, prefix in dask_scheduler.task_prefixes.items()})
    assert computed == {"extract_part": 3}, computed
    assert dask["outputs"] == threads["outputs"]  # the same bytes in every file
    assert dask["summary"] == threads["summary"]


def test_a_dask_address_without_the_dask_runner_is_refused(tmp_path):
    res = stmem_cli("stage", "ingest", "--config", str(TINY_CONFIG), "--set", f"run.root={tmp_path}",
                    "--set", "run.dask_address=tcp://127.0.0.1:8786")
    assert res.returncode == 2
    assert error_lines(res.stderr) == [
        f"stmem: error: {TINY_CONFIG} + --set: invalid value for 'run.dask_address': Value error, an address is "
        "for the dask task runner: set run.task_runner: dask (got 'tcp://127.0.0.1:8786')"], res.stderr
