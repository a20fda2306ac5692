"""Stage 1 with the real spaCy model: triples, mentions, dedupe, the parquet outputs."""
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kg_pipeline import KGInputError, MentionExtractor, Triple, canonical_entity, extract
from kg_pipeline.extraction import (KG_LABEL, MENTIONS_SCHEMA, TRIPLES_SCHEMA, FixedRowGroups, kg_aliases,
                                   run_in_order, shard_rows)
from corpora import Story, write_corpus


@pytest.fixture(scope="module")
def extractor() -> MentionExtractor:
    return MentionExtractor()  # loading spaCy is the slow part: once per module


@pytest.mark.parametrize("text, triple", [
    ("Mary moved to the kitchen.", Triple("mary", "move_to", "kitchen")),
    ("John picked up the apple.", Triple("john", "pick_up", "apple")),
    ("Daniel travelled to France.", Triple("daniel", "travel_to", "france")),
])
def test_svo_triples(extractor, text, triple):
    [(_, triples)] = extractor.parse([text])
    assert triples == [triple]


def test_compound_names_and_conjuncts(extractor):
    [(_, a), (_, b)] = extractor.parse(["The United States Virgin Islands is located in the Caribbean.",
                                        "Mary and John went back to the garden."])
    assert a == [Triple("united_states_virgin_islands", "locate_in", "caribbean")]
    assert b == [Triple("mary", "go_to", "garden"), Triple("john", "go_to", "garden")]


def test_mentions_spans_and_entities(extractor):
    text = "Mary gave John the red apples."
    [(mentions, _)] = extractor.parse([text])
    for m in mentions:
        assert text[m.start:m.end] == m.text
    assert [(m.text, m.label, m.entity) for m in mentions] == [
        ("Mary", "PERSON", "mary"), ("John", "PERSON", "john"), ("the red apples", "NOUN_CHUNK", "red_apple")]


def test_canonical_entity(extractor):
    doc = extractor.nlp("The United States Virgin Islands is located in the Caribbean.")
    assert canonical_entity(next(doc.noun_chunks)) == "united_states_virgin_islands"
    doc = extractor.nlp("His dog ate the apples.")
    assert [canonical_entity(c) for c in doc.noun_chunks] == ["dog", "apple"]
    doc = extractor.nlp("She ate it.")
    assert canonical_entity(doc[0:1]) == "" and canonical_entity(doc[2:3]) == "" and canonical_entity(doc[0:0]) == ""


def test_pronoun_mentions_and_triples_are_dropped(extractor):
    [(mentions, triples)] = extractor.parse(["She ate it."])
    assert mentions == [] and triples == []


def test_parse_dedupes(extractor):
    texts = ["Mary moved to the kitchen.", "John picked up the apple.", "Mary moved to the kitchen."] * 3
    before = extractor.texts_parsed
    results = extractor.parse(texts)
    assert extractor.texts_parsed - before == 2
    assert len(results) == len(texts)
    assert results[0] == results[2] == results[8] and results[0] != results[1]
    assert results[0][0] is not results[2][0]  # duplicates get their own lists
    assert results == [extractor.parse([t])[0] for t in texts]


def test_missing_model_is_named():
    with pytest.raises(OSError, match="no_such_spacy_model"):
        MentionExtractor("no_such_spacy_model")


def _corpus(path: Path) -> Path:
    stories = [
        Story("s1", "qa1", "train", sentences=["Mary moved to the kitchen.", "John picked up the apple."],
              questions=["Did Sandra pick up the football?"], answers=["no"], question_positions=[2],
              supporting=[[1]]),
        Story("s2", "qa1", "test", sentences=["Mary moved to the kitchen.", "Daniel travelled to France."],
              questions=["Where is Mary?"], answers=["kitchen"], question_positions=[2], supporting=[[0]]),
    ]
    write_corpus(stories, path)
    return path


def test_extract_writes_declared_schemas(tmp_path):
    corpus = _corpus(tmp_path / "corpus.parquet")
    out = tmp_path / "out"
    out.mkdir()
    summary = extract(corpus_path=corpus, out_dir=out)
    assert sorted(p.name for p in out.iterdir()) == ["entity_aliases.parquet", "mentions.parquet", "triples.parquet"]

    mentions = pq.read_table(out / "mentions.parquet")
    triples = pq.read_table(out / "triples.parquet")
    assert mentions.schema.equals(MENTIONS_SCHEMA) and triples.schema.equals(TRIPLES_SCHEMA)

    rows = mentions.to_pylist()
    questions = [r for r in rows if r["source"] == "question"]
    assert {(r["story_id"], r["index"], r["entity"]) for r in questions} == {
        ("s1", 0, "sandra"), ("s1", 0, "football"), ("s2", 0, "mary")}
    assert all(r["source"] in ("sentence", "question") for r in rows)

    # the question "Did Sandra pick up the football?" parses to a triple, but questions state no facts
    assert triples.to_pylist() == [
        {"head": "mary", "relation": "move_to", "tail": "kitchen", "story_id": "s1", "sentence": 0},
        {"head": "john", "relation": "pick_up", "tail": "apple", "story_id": "s1", "sentence": 1},
        {"head": "mary", "relation": "move_to", "tail": "kitchen", "story_id": "s2", "sentence": 0},
        {"head": "daniel", "relation": "travel_to", "tail": "france", "story_id": "s2", "sentence": 1},
    ]
    assert summary == {
        "mentions": len(rows), "triples": 4, "distinct_triples": 3,
        "distinct_entities": len({"mary", "kitchen", "john", "apple", "daniel", "france", "sandra", "football"}),
        "unique_texts_parsed": 5,  # 6 texts, "Mary moved to the kitchen." twice
    }


def test_extract_missing_corpus(tmp_path):
    with pytest.raises(KGInputError, match="nope.parquet"):
        extract(corpus_path=tmp_path / "nope.parquet", out_dir=tmp_path)


# -----------------------------------------------------------------------------
# the user's KG found in text

COUNTRY_IDS = ["barbados", "cook_islands", "chile", "united_states_virgin_islands", "united_states", "guinea",
               "papua_new_guinea", "guinea-bissau", "caribbean", "polynesia", "south_america"]


@pytest.fixture(scope="module")
def kg_extractor() -> MentionExtractor:
    return MentionExtractor(aliases=kg_aliases(COUNTRY_IDS))


def test_kg_aliases_read_underscores_as_spaces():
    aliases = kg_aliases(["united_states_virgin_islands", "guinea-bissau", "Chile"])
    assert aliases == {"united states virgin islands": "united_states_virgin_islands",
                       "guinea-bissau": "guinea-bissau", "chile": "Chile"}


@pytest.mark.parametrize("text, entity", [
    # the names spaCy's NER and lemmatiser got wrong in a user's corpus (issue 17)
    ("mary travelled to barbados.", "barbados"),  # not "barbado"
    ("john went to the cook islands.", "cook_islands"),  # not "island"
    ("sandra moved to chile.", "chile"),  # missed by NER in lower case
    ("Daniel journeyed to the United States Virgin Islands.", "united_states_virgin_islands"),
    ("daniel journeyed to united states virgin islands.", "united_states_virgin_islands"),  # longest name wins
    ("mary went to papua new guinea.", "papua_new_guinea"),
    ("mary went to guinea-bissau.", "guinea-bissau"),
])
def test_kg_names_are_linked_to_their_kg_ids(kg_extractor, text, entity):
    [(mentions, triples)] = kg_extractor.parse([text])
    linked = [m for m in mentions if m.label == KG_LABEL]
    assert [m.entity for m in linked] == [entity]
    assert text[linked[0].start:linked[0].end].lower().replace(" ", "_").endswith(entity.lower().split("_")[-1])


@pytest.mark.parametrize("text, triple", [
    ("john went to the cook islands.", Triple("john", "go_to", "cook_islands")),  # its id, not the chunk's
    ("Daniel journeyed to the United States Virgin Islands.",
     Triple("daniel", "journey_to", "united_states_virgin_islands")),
])
def test_triples_name_kg_entities_by_their_ids(kg_extractor, text, triple):
    # (where the parse itself is right: "sandra moved to chile." in lower case parses "to chile" as a verb)
    assert kg_extractor.parse([text])[0][1] == [triple]


def test_without_the_kg_lower_case_names_are_lost(extractor):
    # the behaviour the ruler fixes: spaCy alone on the same sentences
    got = [m.entity for text in ("mary travelled to barbados.", "john went to the cook islands.")
           for m in extractor.parse([text])[0][0]]
    assert "barbados" not in got and "cook_islands" not in got


def test_coverage_counts_kg_name_occurrences(kg_extractor):
    before = (kg_extractor.kg_occurrences, kg_extractor.kg_linked)
    kg_extractor.parse(["mary went to chile and then to barbados.", "Where is Mary?", "mary went to chile and then to barbados."])
    assert (kg_extractor.kg_occurrences - before[0], kg_extractor.kg_linked - before[1]) == (4, 4)


def test_extract_links_kg_entities_and_reports_coverage(tmp_path):
    stories = [Story(f"s{i}", "countries", "train", sentences=["mary travelled to barbados.", "john went to the cook islands."],
                     questions=["Which subregion is mary in?"], answers=["caribbean"], question_positions=[2],
                     supporting=[[0]]) for i in range(5)]
    write_corpus(stories, tmp_path / "corpus.parquet")
    outs = []
    for chunk in (5, 2):  # one chunk of 5 stories, or three of at most 2: the same files
        out = tmp_path / f"out{chunk}"
        out.mkdir()
        summary = extract(corpus_path=tmp_path / "corpus.parquet", out_dir=out, kg_entities=COUNTRY_IDS,
                          stories_per_chunk=chunk)
        outs.append(out)
        assert summary["coverage"] == 1.0 and summary["kg_name_occurrences"] == 10
    for name in ("mentions.parquet", "triples.parquet", "entity_aliases.parquet"):
        # written chunk by chunk, the same bytes: row groups do not follow the chunks
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    aliases = pq.read_table(outs[0] / "entity_aliases.parquet").to_pydict()
    assert dict(zip(aliases["alias"], aliases["entity"]))["cook islands"] == "cook_islands"
    linked = {r["entity"] for r in pq.read_table(outs[0] / "mentions.parquet").to_pylist() if r["label"] == KG_LABEL}
    assert linked == {"barbados", "cook_islands"}


def test_a_text_over_max_length_is_parsed_in_pieces(extractor):
    limit = extractor.nlp.max_length
    extractor.nlp.max_length = 60
    try:
        text = "Mary moved to the kitchen. " * 6  # 162 characters
        [(mentions, triples)] = extractor.parse([text])
    finally:
        extractor.nlp.max_length = limit
    assert sum(m.entity == "kitchen" for m in mentions) == 6
    assert all(text[m.start:m.end] == m.text for m in mentions)  # offsets into the whole text
    assert triples == [Triple("mary", "move_to", "kitchen")]


def test_extract_with_two_processes_writes_the_same_files(tmp_path):
    corpus = _corpus(tmp_path / "corpus.parquet")
    outs = []
    for n in (1, 2):
        out = tmp_path / f"out{n}"
        out.mkdir()
        extract(corpus_path=corpus, out_dir=out, kg_entities=["france", "kitchen"], n_process=n)
        outs.append(out)
    for name in ("mentions.parquet", "triples.parquet", "entity_aliases.parquet"):
        assert pq.read_table(outs[0] / name).equals(pq.read_table(outs[1] / name)), name


def test_shards_hold_the_rows_of_one_part_in_order(tmp_path):
    stories = [Story(f"s{i}", "qa1", "train", sentences=[f"{name} moved to the kitchen.", "John went to France."],
                     questions=[f"Where is {name}?"], answers=["kitchen"], question_positions=[2], supporting=[[0]])
               for i, name in enumerate(["Mary", "Sandra", "Daniel", "Emma", "Oliver"])]
    corpus = tmp_path / "corpus.parquet"
    write_corpus(stories, corpus)
    assert shard_rows(corpus, 3) == [(0, 2), (2, 3), (3, 5)] and shard_rows(corpus, 9) == [
        (i, i + 1) for i in range(5)]  # never an empty part
    runs = []

    def spy(fn, calls):  # the parts as extract hands them to a runner
        runs.extend(c["rows"] for c in calls)
        return run_in_order(fn, calls)

    outs = {}
    for shards, how in ((1, {}), (3, {"stories_per_chunk": 1, "batch_size": 3})):
        out = tmp_path / f"out{shards}"
        out.mkdir()
        summary = extract(corpus_path=corpus, out_dir=out, kg_entities=["france", "kitchen"], shards=shards,
                          run_parts=spy, **how)
        outs[shards] = (out, summary)
    assert runs == [(0, 2), (2, 3), (3, 5)]  # one part alone is not handed to the runner
    (one, s1), (three, s3) = outs[1], outs[3]
    assert sorted(p.name for p in three.iterdir()) == sorted(p.name for p in one.iterdir())  # no parts left
    for name in ("mentions.parquet", "triples.parquet", "entity_aliases.parquet"):
        # the same bytes, not only the same rows: the stages after extract are keyed on them
        assert (three / name).read_bytes() == (one / name).read_bytes(), name
    assert s3.pop("shards") == 3
    assert s3.pop("unique_texts_parsed") > s1.pop("unique_texts_parsed")  # "John went to France." once per part
    assert s3 == s1


def test_row_groups_do_not_depend_on_how_the_rows_arrived(tmp_path):
    table = pa.table({"x": list(range(8))})
    for name, pieces in (("whole", [(0, 8)]), ("chunked", [(0, 3), (3, 4), (4, 4), (4, 8)])):
        with FixedRowGroups(tmp_path / f"{name}.parquet", table.schema, rows=3) as writer:
            for a, b in pieces:
                writer.write(table.slice(a, b - a))
    f = pq.ParquetFile(tmp_path / "chunked.parquet")
    assert [f.metadata.row_group(g).num_rows for g in range(f.num_row_groups)] == [3, 3, 2]
    assert (tmp_path / "chunked.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()
