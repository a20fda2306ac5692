"""Bad input: one line naming the file, line or key; non-zero exit; nothing written."""

import pytest

from tests.conftest import TINY_CONFIG, stmem_cli


def _error_line(res) -> str:
    lines = [l for l in res.stderr.splitlines() if l.startswith("stmem: error:")]
    assert len(lines) == 1, res.stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize("override, words", [
    ("train.epochz=3", "unknown config key 'train.epochz'"),
    ("train.epochs=many", "invalid value for 'train.epochs'"),
])
def test_config_errors(tmp_path, override, words):
    res = stmem_cli("run", "--config", str(TINY_CONFIG), "--set", f"run.root={tmp_path}", "--set", override)
    assert res.returncode == 2
    assert words in _error_line(res)
    assert not list(tmp_path.iterdir())


def test_malformed_babi_names_file_and_line_and_writes_nothing(tmp_path):
    data = tmp_path / "babi"
    data.mkdir()
    (data / "qa1_x_train.txt").write_text("1 Mary went home.\n2 Where is Mary?\n")  # no answer
    (data / "qa1_x_test.txt").write_text("1 Mary went home.\n2 Where is Mary?\thome\t1\n")
    root = tmp_path / "runs"
    res = stmem_cli("run", "--config", str(TINY_CONFIG), "--set", f"run.root={root}", "--set", "corpus.format=babi",
                    "--set", f"corpus.path={data}")
    assert res.returncode == 2
    assert f"{data / 'qa1_x_train.txt'}:2: malformed bAbI question" in _error_line(res)
    assert not (root / "tiny" / "corpus").exists()
    assert [p.name for p in (root / "tiny").glob(".*")] == [".lock"]  # no temp dirs left behind


def test_missing_corpus_directory(tmp_path):
    res = stmem_cli("stage", "ingest", "--config", str(TINY_CONFIG), "--set", f"run.root={tmp_path}",
                    "--set", "corpus.format=babi", "--set", f"corpus.path={tmp_path / 'nowhere'}")
    assert res.returncode == 2
    assert "nowhere: bAbI directory not found" in _error_line(res)


def test_missing_context_file_for_predict(tmp_path):
    res = stmem_cli("predict", "--model", "models:/x@champion", "--context", str(tmp_path / "none.txt"),
                    "--question", "Where?", "--config", str(TINY_CONFIG))
    assert res.returncode == 2
    assert "none.txt: context file not found" in _error_line(res)


def test_predict_errors_are_one_line_and_create_nothing(tmp_path):
    ctx = tmp_path / "story.txt"
    ctx.write_text("Mary went to the kitchen.\n")
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    root = tmp_path / "runs"
    cases = [
        (["--context", str(empty)], f"stmem: error: {empty}: context file is empty"),
        (["--context", str(tmp_path / "nope.txt")], f"stmem: error: {tmp_path / 'nope.txt'}: context file not found"),
        (["--context", str(ctx)], f"stmem: error: {(root / 'tiny' / 'mlflow.db').resolve()}: no MLflow store there; "
                                  "run the pipeline for this config first, or pass --config / --tracking-uri"),
    ]
    for extra, message in cases:
        res = stmem_cli("predict", "--model", "models:/stmem-tiny@champion", "--question", "Where is Mary?",
                        "--config", str(TINY_CONFIG), "--set", f"run.root={root}", *extra)
        assert res.returncode == 2 and res.stderr == message + "\n", res.stderr
    assert not root.exists()  # no store was created by asking
