"""Stage 1 with the real spaCy model: triples, mentions, dedupe, the parquet outputs."""
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from kg_pipeline import KGInputError, MentionExtractor, Triple, canonical_entity, extract
from kg_pipeline.extraction import MENTIONS_SCHEMA, TRIPLES_SCHEMA
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
    assert sorted(p.name for p in out.iterdir()) == ["mentions.parquet", "triples.parquet"]

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
