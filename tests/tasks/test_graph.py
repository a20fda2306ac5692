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
