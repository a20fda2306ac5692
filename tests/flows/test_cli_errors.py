"""Bad input: one line naming the file, line or key; non-zero exit; nothing written."""
import os
import resource
import subprocess

import pytest

from tests.conftest import TINY_CONFIG, error_lines, stmem_cli


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
    # no temp dirs left behind (.pystow: PyKEEN's home, made when the kg check imported it)
    assert sorted(p.name for p in (root / "tiny").glob(".*")) == [".lock", ".pystow"]


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


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory nothing can be written into, root included (root ignores permissions: immutable then)."""
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    immutable = os.access(d, os.W_OK) and subprocess.run(["chattr", "+i", str(d)], capture_output=True).returncode == 0
    if os.access(d, os.W_OK) and not immutable:
        pytest.skip("running as root on a file system without chattr +i: no directory here is read-only")
    yield d
    if immutable:
        subprocess.run(["chattr", "-i", str(d)], check=True)
    d.chmod(0o755)


def test_read_only_run_root_is_one_line_naming_the_path(read_only_dir):
    res = stmem_cli("stage", "ingest", "--config", str(TINY_CONFIG), "--set", f"run.root={read_only_dir}")
    assert res.returncode == 2
    assert res.stderr in (f"stmem: error: {read_only_dir / 'tiny'}: Permission denied\n",  # a user
                          f"stmem: error: {read_only_dir / 'tiny'}: Operation not permitted\n")  # root, immutable


def _small_files():
    # the kernel then refuses (EFBIG) any write past 2 KB, as a full disk refuses (ENOSPC) any write
    resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))


def test_storage_refusing_a_stage_write_is_not_retried(tmp_path):
    res = stmem_cli("stage", "ingest", "--config", str(TINY_CONFIG), "--set", f"run.root={tmp_path}",
                    "--set", "run.retries=2", "--set", "run.retry_delay=0", preexec_fn=_small_files)
    assert res.returncode == 2
    # the corpus file was refused inside the stage's task: one line naming the run, no retry, no traceback
    assert error_lines(res.stderr) == [f"stmem: error: {tmp_path / 'tiny'}: File too large"], res.stderr[-3000:]
    assert res.stderr.count("ingest: started") == 1 and "Retry " not in res.stderr
    assert not (tmp_path / "tiny" / "corpus").exists() and not list((tmp_path / "tiny").glob(".corpus*"))


def _pickled_backbone(d):
    from transformers import BertConfig

    BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=32).save_pretrained(d)
    (d / "pytorch_model.bin").write_bytes(b"")  # refused by its name: it is never opened
    return d


@pytest.mark.parametrize("command, override, message", [
    ("run", "kg.model=TransX", "kg.model: 'TransX' is not a PyKEEN model; nearest: TransR, TransH, TransF, TransE"),
    ("deploy --interval 60", "kg.model=TransX", "kg.model: 'TransX' is not a PyKEEN model"),  # not when it runs
    ("stage kg", "kg.model_kwargs={embedding_dim: 8, entity_initializer: xavier_unifrom}",
     "kg.model_kwargs.entity_initializer: 'xavier_unifrom' is not one of PyKEEN's (constant, "),
    ("stage extract", "extract.spacy_model=en_core_web_sn",
     "extract.spacy_model: 'en_core_web_sn' is neither an installed spaCy model (installed: "),
    ("stage train", "model.backbone.path={tmp}/bert",
     "model.backbone.path: {tmp}/bert holds pytorch_model.bin, a pickle, and no model.safetensors: pickles are "
     "never loaded"),
])
def test_misspelt_components_fail_before_any_stage(tmp_path, command, override, message):
    _pickled_backbone(tmp_path / "bert")
    root = tmp_path / "runs"
    res = stmem_cli(*command.split(), "--config", str(TINY_CONFIG), "--set", f"run.root={root}",
                    "--set", "run.retries=2", "--set", override.replace("{tmp}", str(tmp_path)), timeout=120)
    assert res.returncode == 2
    assert _error_line(res).startswith("stmem: error: " + message.replace("{tmp}", str(tmp_path)))
    assert "Traceback" not in res.stderr and not root.exists()  # refused before Prefect or any stage started


@pytest.mark.parametrize("override, message", [
    ("kg.model_kwargs={dropout: &x [1], embedding_dim: *x}",
     "--set kg.model_kwargs: YAML anchors and aliases (&, *) are not accepted in a config"),
    ("kg.model_kwargs={dropout: 0.1, dropout: 0.2}", "--set kg.model_kwargs: duplicate key 'dropout'"),
    ("train.lr=[1", "--set train.lr: not valid YAML: expected ',' or ']', but got '<stream end>'"),
    ("train.lr=" + "[" * 20000, "--set train.lr: nested more than 32 levels deep"),
    ("run.name=" + "a" * 300, "defaults + --set: invalid value for 'run.name': String should have at most 128"),
    ("run.root={tmp}/it's", "invalid value for 'run.root': Value error, {tmp}/it's holds a ' (quote)"),
])
def test_bad_overrides_are_one_line(tmp_path, override, message):
    res = stmem_cli("stage", "ingest", "--set", override.replace("{tmp}", str(tmp_path)))
    assert res.returncode == 2
    assert message.replace("{tmp}", str(tmp_path)) in _error_line(res) and "Traceback" not in res.stderr
    assert not list(tmp_path.iterdir())


def test_lr_in_exponent_form_is_a_number(tmp_path):
    res = stmem_cli("stage", "ingest", "--config", str(TINY_CONFIG), "--set", f"run.root={tmp_path}",
                    "--set", "train.lr=1e-4")
    assert res.returncode == 0, res.stderr[-2000:]
