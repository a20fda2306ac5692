"""The MLflow run of a training: resumed with the training, other leftovers RUNNING marked FAILED."""
from serving.registry import default_tracking_uri
from serving.tracking import TrainingRun


def open_run(tmp_path, out_dir):
    out_dir.mkdir(exist_ok=True)
    return TrainingRun(tracking_uri=default_tracking_uri(tmp_path), experiment="stmem", artifact_root=None,
                       run_dir=tmp_path, run_name="tiny", tags={}, params={"train": {"epochs": 2}},
                       out_dir=out_dir, round_epochs=[2, 3])


def test_a_resumed_training_goes_on_in_its_run_and_a_killed_ones_is_failed(tmp_path):
    first = open_run(tmp_path, tmp_path / ".train.tmp-aaaa")
    first.log_epoch({"epoch": 1, "loss": 1.0, "val_loss": 0.9, "val_accuracy": 0.5, "round": 1})
    # killed: never ended. Run again with the same inputs, it finds its run id in its temporary directory
    again = open_run(tmp_path, tmp_path / ".train.tmp-aaaa")
    assert again.run_id == first.run_id and again.resumed
    again.log_epoch({"epoch": 1, "loss": 0.5, "val_loss": 0.4, "val_accuracy": 0.9, "round": 2})  # step 2 + 1
    assert [m.step for m in again.client.get_metric_history(first.run_id, "epoch.loss")] == [1, 3]
    # killed again; this time the inputs changed: a new run, and the old one is marked FAILED
    other = open_run(tmp_path, tmp_path / ".train.tmp-bbbb")
    assert other.run_id != first.run_id
    old = other.client.get_run(first.run_id)
    assert old.info.status == "FAILED" and old.data.tags["stmem.failure"] == "left RUNNING by a killed process"
    other.end(ok=True)
    assert other.client.get_run(other.run_id).info.status == "FINISHED"
