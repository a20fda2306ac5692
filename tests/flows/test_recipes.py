"""A recipe's chain of runs as configs: where each run registers, and what its train key holds.
The runs themselves are trained in tests/flows/test_operations.py (the two-step recipe)."""
import shutil

import pytest

from flows.recipes import chain
from serving.registry import default_tracking_uri, mlflow_store
from tests.conftest import TINY_CONFIG, stmem_cli


@pytest.fixture
def conf(tmp_path):
    """tiny.yaml, and tiny-ft.yaml fine-tuned from it, in one directory."""
    shutil.copy(TINY_CONFIG, tmp_path / "tiny.yaml")
    (tmp_path / "tiny-ft.yaml").write_text("extends: tiny.yaml\nrun: {name: tiny-ft}\ntrain: {init_from: 'run:tiny'}\n")
    return tmp_path


def test_every_run_of_a_recipe_registers_into_its_first_runs_store(conf, tmp_path):
    root = tmp_path / "runs"
    (_, _, parent), (_, _, child) = chain(str(conf / "tiny-ft.yaml"), [f"run.root={root}"])
    assert parent.register.tracking_uri is None  # the first run is the same run alone or as a parent
    assert child.register.tracking_uri == default_tracking_uri(root / "tiny")
    # with its artifacts, also for an experiment only the child has (not in ./mlruns of the working directory)
    assert mlflow_store(child.register.tracking_uri, child.run_dir) == \
        mlflow_store(None, parent.run_dir) == (default_tracking_uri(root / "tiny"), root.resolve() / "tiny" / "mlartifacts")
    assert child.train.init_from == str(root / "tiny" / "train")

    # a store given for the recipe (--set, or MLFLOW_TRACKING_URI) goes to every run
    runs = chain(str(conf / "tiny-ft.yaml"), [f"run.root={root}", "register.tracking_uri=http://127.0.0.1:5000"])
    assert [cfg.register.tracking_uri for _, _, cfg in runs] == ["http://127.0.0.1:5000"] * 2


def test_a_later_run_naming_another_store_is_refused_in_one_line(conf, tmp_path):
    (conf / "tiny-ft.yaml").write_text("extends: tiny.yaml\nrun: {name: tiny-ft}\ntrain: {init_from: 'run:tiny'}\n"
                                       "register: {tracking_uri: 'http://127.0.0.1:5000'}\n")
    root = tmp_path / "runs"
    res = stmem_cli("run", "--config", str(conf / "tiny-ft.yaml"), "--set", f"run.root={root}")
    assert res.returncode == 2
    assert res.stderr == ("stmem: error: register.tracking_uri: run 'tiny-ft' names http://127.0.0.1:5000, but a "
                          "recipe registers into one store, that of its first run 'tiny' "
                          f"({default_tracking_uri(root / 'tiny')}); set it there, or for every run with --set\n")
    assert not root.exists()
