import hashlib

import pyarrow.parquet as pq
import pytest

from corpora import CORPUS_SCHEMA, CorpusError, generate_demo, read_babi, read_corpus, write_corpus
from corpora.babi import parse_babi_file

DEMO = dict(train_stories=200, val_stories=3, test_stories=5, sentences_per_story=6, questions_per_story=3, seed=7)


def test_demo_is_deterministic_and_answers_are_supported():
    a, b = generate_demo(**DEMO), generate_demo(**DEMO)
    assert [s.sentences for s in a] == [s.sentences for s in b]
    assert [s.split for s in a].count("test") == 5
    for s in a:
        assert len(s.sentences) == 6 and s.question_positions == [2, 4, 6]
        assert {x.split()[0] for x in s.sentences} <= {"Mary", "John", "Sandra"}  # a fixed cast
        for answer, support in zip(s.answers, s.supporting):
            # the answer word is in one of the supporting facts
            assert any(answer in s.sentences[i] for i in support)
    assert generate_demo(**{**DEMO, "seed": 8})[0].sentences != a[0].sentences


def test_most_demo_answers_lie_before_the_last_sentence():
    """The last sentence before a question is all a model without memory sees (one sentence per segment)."""
    stories = generate_demo(**DEMO)
    asked = [(s, q, pos, sup[0]) for s in stories for q, pos, sup in zip(s.questions, s.question_positions, s.supporting)]
    back = [pos - 1 - fact for _, _, pos, fact in asked]
    # recent_fraction (0.25) ask about the last sentence's person, the rest about someone else, if anyone moved before
    assert 0.6 < sum(b > 0 for b in back) / len(back) < 0.8
    for s, q, pos, fact in asked:
        person = q.removeprefix("Where is ").removesuffix("?")
        named_last = s.sentences[pos - 1].startswith(person)
        assert named_last == (fact == pos - 1)  # an older fact's person is not named in the last sentence
        assert not any(x.startswith(person) for x in s.sentences[fact + 1:pos])  # the supporting fact is the latest


def test_corpus_round_trip(tmp_path):
    stories = generate_demo(**DEMO)
    counts = write_corpus(stories, tmp_path / "c.parquet")
    assert pq.read_schema(tmp_path / "c.parquet").equals(CORPUS_SCHEMA)
    assert counts["questions"] == sum(len(s.questions) for s in stories)
    assert read_corpus(tmp_path / "c.parquet") == stories


def test_babi_reader_on_real_data(babi_dir):
    path = babi_dir / "qa1_single-supporting-fact_train.txt"
    assert hashlib.md5(path.read_bytes()).hexdigest() == "b3d2196a7dd5d8c65b2ddc17a34d76bd"
    stories = read_babi(babi_dir, ["qa1", "qa2"], val_fraction=0.1, seed=0)
    qa1 = [s for s in stories if s.task == "qa1"]
    assert sum(len(s.questions) for s in qa1 if s.split in ("train", "val")) == 1000
    assert sum(len(s.questions) for s in qa1 if s.split == "test") == 1000
    assert 0 < sum(s.split == "val" for s in qa1) < 60
    first = qa1[0]
    assert first.sentences[0] == "Mary moved to the bathroom."
    assert first.questions[0] == "Where is Mary?" and first.answers[0] == "bathroom"
    assert first.question_positions[0] == 2 and first.supporting[0] == [0]


@pytest.mark.parametrize("text, line, words", [
    ("1 Mary moved to the bathroom.\nbroken line\n", 2, "malformed bAbI line"),
    ("1 Mary went home.\n2 Where is Mary?\thome\n", 2, "malformed bAbI question"),
    ("1 Mary went home.\n2 Where is Mary?\n", 2, "malformed bAbI question"),
    ("1 Mary went home.\n2 Where is Mary?\thome\t7\n", 2, "supporting fact"),
    ("1 Mary went home.\n3 John left.\n", 2, "does not follow"),
])
def test_malformed_babi_names_file_and_line(tmp_path, text, line, words):
    f = tmp_path / "qa1_x_train.txt"
    f.write_text(text)
    with pytest.raises(CorpusError) as err:
        parse_babi_file(f, "qa1", "train")
    assert f"{f}:{line}:" in str(err.value) and words in str(err.value)


def test_empty_and_missing_corpus(tmp_path):
    (tmp_path / "qa1_x_train.txt").write_text("")
    with pytest.raises(CorpusError, match="empty corpus"):
        read_babi(tmp_path, ["qa1"])
    with pytest.raises(CorpusError, match="no bAbI file for task 'qa9'"):
        read_babi(tmp_path, ["qa9"])
    with pytest.raises(CorpusError, match="directory not found"):
        read_babi(tmp_path / "missing", ["qa1"])
    with pytest.raises(CorpusError, match="empty corpus"):
        write_corpus([], tmp_path / "c.parquet")


def test_non_utf8_byte_is_named_with_file_line_and_offset(tmp_path):
    f = tmp_path / "qa1_x_train.txt"
    f.write_bytes(b"1 Mary went to the kitchen.\n2 Where is Mary?\tkitchen\t1\n1 John went to the hall\xff.\n")
    with pytest.raises(CorpusError) as err:
        parse_babi_file(f, "qa1", "train")
    assert str(err.value) == f"{f}:3: not UTF-8 (byte 0xff at offset 78 in the file)"


def test_line_over_the_limit_is_refused_at_ingestion(tmp_path):
    f = tmp_path / "qa1_x_train.txt"
    f.write_bytes(b"1 Mary went to the kitchen.\n1 " + b"word " * 30 + b"\n")
    with pytest.raises(CorpusError) as err:
        parse_babi_file(f, "qa1", "train", max_line_chars=100)
    assert str(err.value) == f"{f}:2: line over the limit of 100 bytes (corpus.max_line_chars)"


def test_a_file_with_no_newline_is_refused_without_reading_it_whole(tmp_path):
    """The limit is checked while reading: 20 MB with no newline costs ~max_line_chars of memory, not 20 MB."""
    import tracemalloc

    f = tmp_path / "qa1_x_train.txt"
    f.write_bytes(b"1 " + b"x" * 20_000_000)
    tracemalloc.start()
    try:
        with pytest.raises(CorpusError, match=r":1: line over the limit of 100,000 bytes"):
            parse_babi_file(f, "qa1", "train")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000, peak
