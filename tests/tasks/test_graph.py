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
