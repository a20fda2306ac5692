import json

import pytest

from stmem.artifacts import MissingArtifactError, require, stage_output


def test_stage_output_publishes_whole_directory_with_manifest(tmp_path):
    src = tmp_path / "input.txt"
    src.write_text("x")
    final = tmp_path / "run" / "stage"
    with stage_output(final, stage="s", inputs=[src], config_hash="abc") as (tmp, summary):
        (tmp / "a.txt").write_text("a")
        summary["rows"] = 1
        assert not final.exists()  # nothing visible until the end
    manifest = json.loads((final / "manifest.json").read_text())
    assert manifest["summary"] == {"rows": 1} and manifest["config_hash"] == "abc"
    assert list(manifest["inputs"].values())[0].startswith("2d711642")  # sha256 of "x"
    assert (final / "a.txt").read_text() == "a"


def test_failure_leaves_previous_output_and_no_temp_dirs(tmp_path):
    final = tmp_path / "stage"
    with stage_output(final, stage="s", inputs=[], config_hash="1") as (tmp, _):
        (tmp / "a.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with stage_output(final, stage="s", inputs=[], config_hash="2") as (tmp, _):
            (tmp / "a.txt").write_text("half-written")
            raise RuntimeError("crash")
    assert (final / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage"]


def test_require_names_the_stage(tmp_path):
    with pytest.raises(MissingArtifactError, match="run stage 'kg' first"):
        require(tmp_path / "x.parquet", stage="kg")
