import json
import multiprocessing as mp
import re

import pytest

from stmem.artifacts import (MissingArtifactError, RunInUseError, altered, earlier_dir, read_manifest, require,
                             restore_earlier, run_lock, stage_output)


def test_stage_output_publishes_whole_directory_with_manifest(tmp_path):
    final = tmp_path / "run" / "stage"
    with stage_output(final, stage="s", key="k1", inputs={"files": {"x": "1"}}, config_hash="abc") as (tmp, summary):
        (tmp / "a.txt").write_text("a")
        summary["rows"] = 1
        assert not final.exists()  # nothing visible until the end
    manifest = json.loads((final / "manifest.json").read_text())
    assert manifest["summary"] == {"rows": 1} and manifest["config_hash"] == "abc" and manifest["key"] == "k1"
    assert manifest["outputs"] == {"a.txt": "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"}  # sha256("a")
    assert (final / "a.txt").read_text() == "a"


def test_failure_leaves_previous_output_and_no_temp_dirs(tmp_path):
    final = tmp_path / "stage"
    with stage_output(final, stage="s", key="1", inputs={}, config_hash="1") as (tmp, _):
        (tmp / "a.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with stage_output(final, stage="s", key="2", inputs={}, config_hash="2") as (tmp, _):
            (tmp / "a.txt").write_text("half-written")
            raise RuntimeError("crash")
    assert (final / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage"]


def test_resumable_output_keeps_its_work_for_the_same_key_only(tmp_path):
    final = tmp_path / "train"
    with pytest.raises(RuntimeError):
        with stage_output(final, stage="t", key="same", inputs={}, config_hash="c", resumable=True) as (tmp, _):
            (tmp / "checkpoint").write_text("step 7")
            raise RuntimeError("killed")
    with stage_output(final, stage="t", key="same", inputs={}, config_hash="c", resumable=True) as (tmp, _):
        assert (tmp / "checkpoint").read_text() == "step 7"  # the second attempt finds the first's work
    with pytest.raises(RuntimeError):
        with stage_output(final, stage="t", key="other", inputs={}, config_hash="c", resumable=True) as (tmp, _):
            (tmp / "checkpoint").write_text("of other inputs")
            raise RuntimeError("killed")
    with stage_output(final, stage="t", key="third", inputs={}, config_hash="c", resumable=True) as (tmp, _):
        assert not (tmp / "checkpoint").exists()  # another key's leftover is removed, not resumed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train"]


def test_replaced_outputs_are_kept_up_to_keep_and_put_back_by_key(tmp_path):
    final = tmp_path / "stage"
    for key in ("k1", "k2", "k3", "k4"):
        with stage_output(final, stage="s", key=key, inputs={}, config_hash="c", keep=2) as (tmp, _):
            (tmp / "a.txt").write_text(key)
    kept = final.parent / "versions" / "stage"
    assert sorted(p.name for p in kept.iterdir()) == ["k2", "k3"]  # the two replaced last
    assert restore_earlier(final, "k1", keep=2) is None and (final / "a.txt").read_text() == "k4"
    assert restore_earlier(final, "k2", keep=2)["key"] == "k2"
    assert (final / "a.txt").read_text() == "k2" and sorted(p.name for p in kept.iterdir()) == ["k3", "k4"]
    (earlier_dir(final, "k3") / "a.txt").write_text("edited")  # an altered one is never put back
    assert restore_earlier(final, "k3", keep=2) is None and not earlier_dir(final, "k3").exists()
    assert (final / "a.txt").read_text() == "k2"


def test_altered_names_a_changed_or_deleted_output(tmp_path):
    final = tmp_path / "stage"
    with stage_output(final, stage="s", key="k", inputs={}, config_hash="c") as (tmp, _):
        (tmp / "a.txt").write_text("a")
        (tmp / "b.txt").write_text("b")
    assert altered(final, read_manifest(final)) is None
    (final / "a.txt").write_text("edited")
    assert altered(final, read_manifest(final)) == f"{final / 'a.txt'} was changed"
    (final / "a.txt").write_text("a")
    (final / "b.txt").unlink()
    assert altered(final, read_manifest(final)) == f"{final / 'b.txt'} was deleted"


def _hold(run_dir, ready, release):
    with run_lock(run_dir):
        ready.set()
        release.wait(30)


def _holding(run_dir):
    """Another process that holds ``run_dir``'s lock until ``release`` is set (or it is killed)."""
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(run_dir, ready, release))
    holder.start()
    assert ready.wait(60)
    return holder, release


def test_run_lock_refuses_a_second_process_and_goes_with_the_first(tmp_path):
    holder, release = _holding(tmp_path)
    with pytest.raises(RunInUseError, match=f"in use by pid {holder.pid}"):
        with run_lock(tmp_path):
            pass
    holder.kill()  # a killed holder leaves no stale lock
    holder.join()
    with run_lock(tmp_path):
        with run_lock(tmp_path):  # re-entrant in one process
            pass


def test_a_second_run_waits_its_turn_and_says_for_whom(tmp_path):
    holder, release = _holding(tmp_path)
    told = []

    def on_wait(msg):  # the holder is named; then it goes, and the wait ends in the lock
        told.append(msg)
        release.set()

    with run_lock(tmp_path, wait=120, on_wait=on_wait):
        holder.join(30)
        assert holder.exitcode == 0  # it had finished: the lock passed from it to this process
    assert len(told) == 1, told
    assert re.fullmatch(rf"waiting for run {tmp_path.resolve()} held by pid {holder.pid} since "
                        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(for up to \d+ s, run.lock_timeout\)", told[0]), told[0]


def test_a_wait_past_its_bound_is_one_line(tmp_path):
    holder, release = _holding(tmp_path)
    try:
        with pytest.raises(RunInUseError) as err:
            with run_lock(tmp_path, wait=0.2):
                pass
    finally:
        release.set()
        holder.join(30)
    assert re.fullmatch(rf"{tmp_path.resolve()}: in use by pid {holder.pid} since \S+; waited 0.2 s "
                        r"\(run.lock_timeout\); wait for it or use another run.name", str(err.value)), str(err.value)


def test_require_names_the_stage(tmp_path):
    with pytest.raises(MissingArtifactError, match="run stage 'kg' first"):
        require(tmp_path / "x.parquet", stage="kg")
