"""Stage 2 with real PyKEEN on the real Countries KG (read in place, never copied)."""
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import shared_data
from kg_pipeline import KGInputError, read_triples_tsv, train_kg
from kg_pipeline.extraction import TRIPLES_SCHEMA
from kg_pipeline.kg import with_relation_context
from kg_pipeline.kg_files import external_kg_files

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
COUNTRIES_S1 = DATA / "countries" / "Countries_S1" / "train.txt"


@pytest.fixture
def countries_data():
    shared_data("countries", "Countries_S1", "train.txt")


needs_countries = pytest.mark.usefixtures("countries_data")

# entities the text adds that Countries does not have, and one it shares (france)
TEXT_TRIPLES = [("mary", "move_to", "kitchen"), ("john", "pick_up", "apple"), ("daniel", "travel_to", "france"),
                ("mary", "move_to", "kitchen")]  # a duplicate, which train_kg must drop


def _triples_parquet(path: Path, triples) -> Path:
    cols = {"head": [t[0] for t in triples], "relation": [t[1] for t in triples], "tail": [t[2] for t in triples],
            "story_id": ["s1"] * len(triples), "sentence": list(range(len(triples)))}
    pq.write_table(pa.table(cols, schema=TRIPLES_SCHEMA), path)
    return path


def test_read_triples_tsv(tmp_path):
    path = tmp_path / "kg.tsv"
    path.write_text("a\tr\tb\n\nb\tr\tc\n")
    assert read_triples_tsv(path) == [("a", "r", "b"), ("b", "r", "c")]


@pytest.mark.parametrize("text, lineno", [("a\tr\tb\n\nb\tr\n", 3), ("a\tr\tb\na\t\tb\n", 2), ("a\tr\tb\tc\n", 1)])
def test_read_triples_tsv_bad_line_names_file_and_line(tmp_path, text, lineno):
    path = tmp_path / "kg.tsv"
    path.write_text(text)
    with pytest.raises(KGInputError, match=f"{path}:{lineno}:"):
        read_triples_tsv(path)


def test_dialog_babi_kb_files_are_triples():
    """dialog bAbI's KBs as an external KG: '1 <entity> R_<relation><TAB or space><value>' lines."""
    from kg_pipeline.kg_files import read_external_kg

    for name, n, first in [("dialog-babi-kb-all.txt", 8400, ("resto_seoul_cheap_korean_1stars", "R_cuisine", "korean")),
                           ("dialog-babi-task6-dstc2-kb.txt", None, ("frankie_and_bennys", "R_post_code",
                                                                     "frankie_and_bennys_post_code"))]:
        path = shared_data("dialog-babi", name)
        triples = read_external_kg(path)
        assert triples[0] == first and all(r.startswith("R_") for _, r, _ in triples)
        assert n is None or len(triples) == n


def test_a_bad_line_in_a_dialog_kb_names_it(tmp_path):
    path = tmp_path / "kb.txt"
    path.write_text("1 resto_a R_cuisine\tthai\n1 resto_a R_price cheap\nresto_a\tR_x\tb\n")
    with pytest.raises(KGInputError, match=rf"^{path}:3: expected a dialog bAbI KB line"):
        read_triples_tsv(path)


@pytest.mark.parametrize("content, words", [
    (b"head,relation,tail\n", "no triples"),
    (b"head,relation,tail\na,r,b\nc,r,\xff\xfe\n", "not UTF-8"),
    (b"head,relation,tail\na,r,b\nc,r,d\x00e\n", ":3: a NUL byte in a field"),
    (b"head,relation,tail\na,r,\"" + b"x" * 140_000 + b"\"\n", ":2: not a readable CSV line: field larger than field limit"),
])
def test_a_bad_csv_kg_is_one_line_naming_the_file(tmp_path, content, words):
    from kg_pipeline.kg_files import read_external_kg

    path = tmp_path / "kg.csv"
    path.write_bytes(content)
    with pytest.raises(KGInputError, match=re.escape(str(path))) as e:
        read_external_kg(path)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_a_junk_or_empty_parquet_kg_is_refused(tmp_path):
    from kg_pipeline.kg_files import read_external_kg

    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"PAR1 not really")
    with pytest.raises(KGInputError, match=rf"^{junk}: not a readable Parquet file"):
        read_external_kg(junk)
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({c: pa.array([], pa.string()) for c in ("head", "relation", "tail")}), empty)
    with pytest.raises(KGInputError, match=rf"^{empty}: no triples$"):
        read_external_kg(empty)


def test_read_triples_tsv_empty_and_missing(tmp_path):
    path = tmp_path / "kg.tsv"
    path.write_text("\n  \n")
    with pytest.raises(KGInputError, match=f"{path}: no triples"):
        read_triples_tsv(path)
    with pytest.raises(KGInputError, match="missing.tsv"):
        read_triples_tsv(tmp_path / "missing.tsv")


def test_too_small_kg_is_refused(tmp_path):
    triples = _triples_parquet(tmp_path / "triples.parquet", TEXT_TRIPLES)
    with pytest.raises(KGInputError, match="too small|need at least"):
        train_kg(triples_path=triples, out_dir=tmp_path)
    assert not (tmp_path / "entity_embeddings.safetensors").exists()


def test_triples_parquet_without_columns(tmp_path):
    path = tmp_path / "triples.parquet"
    pq.write_table(pa.table({"head": ["a"], "tail": ["b"]}), path)
    with pytest.raises(KGInputError, match="relation"):
        train_kg(triples_path=path, out_dir=tmp_path)


def _train(tmp_path, model="TransE", dim=4, epochs=2, batch_size=256, **kwargs):
    """train_kg on the text triples + Countries_S1 into tmp_path/kg; kwargs go to train_kg."""
    triples = _triples_parquet(tmp_path / "triples.parquet", TEXT_TRIPLES)
    out = tmp_path / "kg"
    out.mkdir()
    summary = train_kg(triples_path=triples, out_dir=out, model=model, external_kg=COUNTRIES_S1,
                       model_kwargs={"embedding_dim": dim},
                       training_kwargs={"num_epochs": epochs, "batch_size": batch_size}, seed=0, **kwargs)
    return out, summary


@needs_countries
def test_train_kg_transe_on_countries(tmp_path):
    out, summary = _train(tmp_path, "TransE", 8)
    countries = read_triples_tsv(COUNTRIES_S1)
    expected = {e for h, _, t in countries + TEXT_TRIPLES for e in (h, t)}

    emb = load_file(out / "entity_embeddings.safetensors")["entity_embeddings"]
    assert emb.dtype.is_floating_point and str(emb.dtype) == "torch.float32"
    assert tuple(emb.shape) == (len(expected), 8)

    index = pq.read_table(out / "entity_index.parquet")
    assert index.schema.field("entity").type == pa.string() and index.schema.field("row").type == pa.int32()
    assert sorted(index.column("row").to_pylist()) == list(range(len(expected)))
    assert set(index.column("entity").to_pylist()) == expected  # text-only entities (kitchen) included

    metrics = json.loads((out / "kg_metrics.json").read_text())
    assert metrics == summary
    assert metrics["model"] == "TransE" and metrics["embedding_dim"] == 8
    assert metrics["num_entities"] == len(expected)
    assert metrics["num_triples"] == len(set(countries + TEXT_TRIPLES))
    assert metrics["num_relations"] == 2 + 3
    kg = set(countries)
    assert metrics["merge"] == {  # france's travel_to is text only; mary's move is given twice
        "text_triples": 3, "kg_triples": len(kg), "in_both": 0, "duplicates_dropped": 1 + len(countries) - len(kg),
        "triples_per_relation": {"locatedin": sum(r == "locatedin" for _, r, _ in kg), "move_to": 1,
                                 "neighbor": sum(r == "neighbor" for _, r, _ in kg), "pick_up": 1, "travel_to": 1}}
    assert sum(metrics["merge"]["triples_per_relation"].values()) == metrics["num_triples"]
    assert sum(metrics["split"].values()) == metrics["num_triples"] and min(metrics["split"].values()) > 0
    assert 0 <= metrics["mrr"] <= 1
    assert 0 <= metrics["hits_at_1"] <= metrics["hits_at_3"] <= metrics["hits_at_10"] <= 1


@needs_countries
@pytest.mark.parametrize("model, width", [("RotatE", 8), ("ComplEx", 8), ("DistMult", 4), ("TransE", 4)])
def test_train_kg_models_by_name_export_real_float32(tmp_path, model, width):
    out, summary = _train(tmp_path, model, 4, epochs=1, batch_size=512)
    emb = load_file(out / "entity_embeddings.safetensors")["entity_embeddings"]
    assert str(emb.dtype) == "torch.float32" and not emb.is_complex()
    assert tuple(emb.shape) == (summary["num_entities"], width)  # complex models: (re, im) per dimension
    assert summary["embedding_dim"] == width and summary["model"] == model


@needs_countries
def test_external_kg_directory_is_its_whole_split(tmp_path):
    # Countries_S1 ships train/valid/test.txt: the directory stands for their union, the whole graph.
    s1 = COUNTRIES_S1.parent
    files = external_kg_files(s1)
    assert [f.name for f in files] == ["train.txt", "valid.txt", "test.txt"]
    whole = {t for f in files for t in read_triples_tsv(f)}
    assert len(whole) > len(set(read_triples_tsv(COUNTRIES_S1)))
    triples = _triples_parquet(tmp_path / "triples.parquet", TEXT_TRIPLES)
    out = tmp_path / "kg"
    out.mkdir()
    summary = train_kg(triples_path=triples, out_dir=out, external_kg=s1, model_kwargs={"embedding_dim": 4},
                       training_kwargs={"num_epochs": 1, "batch_size": 512}, seed=0)
    assert summary["num_triples"] == len(whole | set(TEXT_TRIPLES))
    assert summary["split_used"] == "random [0.8, 0.1, 0.1]"  # text triples to merge: re-split


def test_external_kg_directory_without_split_names_what_is_missing(tmp_path):
    (tmp_path / "train.txt").write_text("a\tr\tb\n")
    with pytest.raises(KGInputError, match=f"{tmp_path}: external KG directory lacks valid.txt, test.txt"):
        external_kg_files(tmp_path)
    with pytest.raises(KGInputError, match="nowhere: external KG not found"):
        external_kg_files(tmp_path / "nowhere")


@needs_countries
def test_kg_alone_leaves_the_text_triples_out(tmp_path):
    out, summary = _train(tmp_path, epochs=1, batch_size=512, text_triples=False)
    assert summary["num_triples"] == len(set(read_triples_tsv(COUNTRIES_S1)))
    assert "mary" not in pq.read_table(out / "entity_index.parquet").column("entity").to_pylist()


@needs_countries
def test_kg_alone_from_a_split_directory_keeps_its_given_split(tmp_path):
    # nothing to merge: Countries_S1's own train/valid/test.txt, as published results use them, not a re-split
    s1 = COUNTRIES_S1.parent
    lines = {f.stem: [line for line in f.read_text().splitlines() if line.strip()] for f in external_kg_files(s1)}
    assert len(lines["valid"]) == len(lines["test"]) == 24
    out = tmp_path / "kg"
    out.mkdir()
    summary = train_kg(triples_path=tmp_path / "unread.parquet", out_dir=out, external_kg=s1, text_triples=False, split="given",
                       model_kwargs={"embedding_dim": 4}, training_kwargs={"num_epochs": 1, "batch_size": 512})
    assert summary["split_used"] == "given"
    # each part its file's lines (train.txt states one triple twice: PyKEEN keeps it once, as reading the file)
    assert summary["split"] == {name: len(set(part)) for name, part in lines.items()}
    assert summary["split"]["valid"] == len(lines["valid"]) and summary["split"]["test"] == len(lines["test"])
    assert summary["split"]["train"] == len(lines["train"]) - 1
    whole = {e for part in lines.values() for line in part for e in line.split("\t")[::2]}
    assert summary["num_entities"] == len(whole)  # every entity has a row, whichever part names it
    assert pq.read_table(out / "entity_index.parquet").num_rows == len(whole)


def test_kg_alone_without_external_kg_is_an_error(tmp_path):
    triples = _triples_parquet(tmp_path / "triples.parquet", TEXT_TRIPLES)
    with pytest.raises(KGInputError, match="text_triples is false and there is no kg.external_kg"):
        train_kg(triples_path=triples, out_dir=tmp_path, text_triples=False)


def test_relation_context_appends_the_mean_tail_per_relation():
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [4.0, 0.0]])
    # 0 -r0-> 1, 0 -r0-> 2, 0 -r1-> 3, 3 -r1-> 0; entities 1 and 2 point nowhere
    mapped = torch.tensor([[0, 0, 1], [0, 0, 2], [0, 1, 3], [3, 1, 0]])
    out = with_relation_context(emb, mapped, num_relations=2)
    assert out.shape == (4, 6)
    torch.testing.assert_close(out[:, :2], emb)  # own embedding first
    torch.testing.assert_close(out[0, 2:], torch.tensor([1.0, 1.5, 4.0, 0.0]))  # mean of 1 and 2; then 3
    torch.testing.assert_close(out[3, 2:], torch.tensor([0.0, 0.0, 1.0, 0.0]))  # nothing by r0; 0 by r1
    assert not out[1, 2:].any() and not out[2, 2:].any()


@needs_countries
def test_train_kg_with_relation_context_exports_what_the_graph_says(tmp_path):
    out, summary = _train(tmp_path, epochs=1, batch_size=512, text_triples=False, relation_context=True)
    assert summary["embedding_dim"] == 4 and summary["vector_dim"] == 4 * 3
    assert summary["relation_context"] == ["locatedin", "neighbor"]
    emb = load_file(out / "entity_embeddings.safetensors")["entity_embeddings"]
    index = pq.read_table(out / "entity_index.parquet").to_pydict()
    row = dict(zip(index["entity"], index["row"]))
    located = [t for h, r, t in read_triples_tsv(COUNTRIES_S1) if h == "france" and r == "locatedin"]
    assert located  # western_europe, europe
    expected = torch.stack([emb[row[t], :4] for t in located]).mean(0)
    torch.testing.assert_close(emb[row["france"], 4:8], expected)


def test_given_split_needs_a_split_directory_and_the_kg_alone(tmp_path):
    with pytest.raises(KGInputError, match="kg.split 'given' needs"):
        train_kg(triples_path=tmp_path / "unread.parquet", out_dir=tmp_path, external_kg=COUNTRIES_S1,
                 text_triples=False, split="given")


@needs_countries
def test_early_stopping_on_the_validation_split_and_a_named_negative_sampler(tmp_path):
    out, summary = _train(tmp_path, "TransE", 4, epochs=60, batch_size=512, negative_sampler="bernoulli",
                          negative_sampler_kwargs={"num_negs_per_pos": 2}, stopper="early",
                          stopper_kwargs={"frequency": 2, "patience": 1, "relative_delta": 0.5})
    # a relative improvement of 50% every 2 epochs cannot last: the stopper ends training early
    assert summary["epochs_trained"] < 60


def test_a_graph_too_sparse_to_split_says_why_and_what_to_do(tmp_path):
    # ten triples, each of two entities no other triple names: every triple must stay in train for its
    # entities to get embeddings, so nothing is left to validate or test on (PyKEEN: "Could not find a
    # coverage of all entities ...")
    triples = _triples_parquet(tmp_path / "triples.parquet", [(f"a{i}", "r", f"b{i}") for i in range(10)])
    with pytest.raises(KGInputError) as err:
        train_kg(triples_path=triples, out_dir=tmp_path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{triples}: 10 triples of 20 entities and 1 relations are "
                                                      f"too few to split [0.8, 0.1, 0.1]")
    assert "set model.kg_fusion: false to train the model without one" in message


def test_no_kg_writes_empty_outputs_the_later_stages_read(tmp_path):
    from kg_pipeline.kg import ENTITY_INDEX_SCHEMA, write_no_kg

    summary = write_no_kg(tmp_path, "model.kg_fusion is false")
    assert summary == {"skipped": "model.kg_fusion is false", "num_entities": 0}
    assert json.loads((tmp_path / "kg_metrics.json").read_text()) == summary
    index = pq.read_table(tmp_path / "entity_index.parquet")
    assert index.num_rows == 0 and index.schema.equals(ENTITY_INDEX_SCHEMA)
    assert load_file(tmp_path / "entity_embeddings.safetensors")["entity_embeddings"].shape[0] == 0
