"""Readers for users' own corpora: QA records (JSONL, Parquet), dialogues, documents with questions."""
import hashlib
import json
import logging
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from corpora import CorpusError, read_corpus, read_dialogues, read_documents, read_records, split_of
from corpora.ingest import ingest
from corpora.splits import hash_fraction
from stmem.config import ConfigError, load_config

DATA = Path(__file__).resolve().parents[1] / "data"


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


def expect_error(fn, *args, **kwargs) -> str:
    with pytest.raises(CorpusError) as err:
        fn(*args, **kwargs)
    message = str(err.value)
    assert "\n" not in message  # one line
    return message


# --- splits ---------------------------------------------------------------------------------------

def test_split_rule_is_the_documented_hash():
    for story_id in ["a", "story-7", "ünïcode", "x" * 200]:
        h = int.from_bytes(hashlib.sha256(story_id.encode("utf-8")).digest()[:8], "big") / 2**64
        assert hash_fraction(story_id) == h
        assert split_of(story_id, 0.2, 0.3) == ("test" if h < 0.3 else "val" if h < 0.5 else "train")
    shares = [split_of(f"id{i}", 0.1, 0.2) for i in range(4000)]
    assert abs(shares.count("test") / 4000 - 0.2) < 0.03 and abs(shares.count("val") / 4000 - 0.1) < 0.03
    with pytest.raises(ValueError):
        split_of("a", 0.5, 0.5)


def test_splits_are_stable_when_records_are_added_and_disjoint(tmp_path):
    records = [{"id": f"s{i}", "context": [f"Fact {i}."], "question": "Q?", "answer": "a"} for i in range(200)]
    small = read_records(write_jsonl(tmp_path / "small.jsonl", records[:80]), val_fraction=0.2, test_fraction=0.2)
    # more records, in another order, and a second question for some stories
    more = records[::-1] + [{**r, "question": "Q2?"} for r in records[:30]]
    big = read_records(write_jsonl(tmp_path / "big.jsonl", more), val_fraction=0.2, test_fraction=0.2)
    split_small = {s.story_id: s.split for s in small}
    split_big = {s.story_id: s.split for s in big}
    assert len(split_big) == len(big) == 200  # each story once, so in one split
    assert all(split_big[i] == split for i, split in split_small.items())
    assert {s.split for s in big} == {"train", "val", "test"}
    assert all(len(s.questions) == (2 if int(s.story_id[1:]) < 30 else 1) for s in big)


# --- records --------------------------------------------------------------------------------------

RECORDS = [
    {"id": "r1", "context": "Mary went to the kitchen. John moved to the hall!  Then Mary left.", "question":
     "Where is John?", "answer": "hall"},
    {"id": "r2", "context": ["Sam is in Rome.", "Ann is in Oslo."], "question": "Where is Ann?", "answer": "Oslo",
     "task": "places"},
    {"id": "r1", "context": "Mary went to the kitchen. John moved to the hall!  Then Mary left.", "question":
     "Where was Mary?", "answer": "kitchen"},
]


def check_records(stories):
    assert [s.story_id for s in stories] == ["r1", "r2"]
    r1, r2 = stories
    assert r1.sentences == ["Mary went to the kitchen.", "John moved to the hall!", "Then Mary left."]
    assert r1.questions == ["Where is John?", "Where was Mary?"] and r1.answers == ["hall", "kitchen"]
    assert r1.question_positions == [3, 3] and r1.supporting == [[], []] and r1.task == "records"
    assert r2.sentences == ["Sam is in Rome.", "Ann is in Oslo."] and r2.question_positions == [2]
    assert r2.task == "places" and r2.answers == ["Oslo"]
    for s in stories:
        assert s.split == split_of(s.story_id, 0.1, 0.1)


def test_records_jsonl(tmp_path):
    check_records(read_records(write_jsonl(tmp_path / "qa.jsonl", RECORDS)))


def test_records_parquet_reads_like_jsonl(tmp_path):
    path = tmp_path / "qa.parquet"
    # one type per column: context as lists here, so a jsonl string becomes a one-sentence list
    rows = [{**r, "context": [r["context"]] if isinstance(r["context"], str) else r["context"],
             "task": r.get("task", "records")} for r in RECORDS]
    pq.write_table(pa.Table.from_pylist(rows), path)
    stories = read_records(path)
    assert stories[0].sentences == [RECORDS[0]["context"]]  # a list is taken as the sentences, as given
    pq.write_table(pa.Table.from_pylist([{k: v for k, v in r.items() if k != "task"} for r in RECORDS[::2]]), path)
    (story,) = read_records(path)
    assert story.sentences == ["Mary went to the kitchen.", "John moved to the hall!", "Then Mary left."]
    assert story.question_positions == [3, 3] and story.task == "records"


GOOD = {"id": "a", "context": "Mary went home.", "question": "Where is Mary?", "answer": "home"}


@pytest.mark.parametrize("line3, words", [
    ('{"id": "a", "context": "x", ', "invalid JSON"),
    # json.loads keeps the last value: "home" would be read as "garden" without a word
    ('{"id": "c", "context": "Mary went home.", "question": "Where is Mary?", "answer": "home", "answer": "garden"}',
     "duplicate key 'answer'"),
    ('["not", "an", "object"]', "a record must be a JSON object, got list"),
    ({k: v for k, v in GOOD.items() if k != "answer"}, "field 'answer' is missing"),
    ({**GOOD, "question": 5}, "field 'question' must be a string, got int"),
    ({**GOOD, "answer": None}, "field 'answer' must be a string, got null"),
    ({**GOOD, "answer": "  "}, "field 'answer' is empty"),
    ({**GOOD, "id": ""}, "field 'id' is empty"),
    ({**GOOD, "task": ""}, "field 'task' is empty"),
    ({**GOOD, "context": 3.5}, "field 'context' must be a string or a list of strings, got float"),
    ({**GOOD, "context": []}, "field 'context' is empty"),
    ({**GOOD, "context": ["Fine.", 7]}, "field 'context[1]' must be a string, got int"),
    ({**GOOD, "anwser": "home"}, "unknown field 'anwser'"),
    ({**GOOD, "context": "Mary went to the hall."}, "field 'context' differs from the context of id 'a' at line 1"),
    ({**GOOD, "task": "other"}, "field 'task' is 'other', but the record of id 'a' at line 1 has 'records'"),
    ({**GOOD, "supporting": [1]}, "field 'supporting' has 1: a sentence index must be an integer from 0 to 0 "
                                  "(the context has 1 sentences)"),
    ({**GOOD, "supporting": [True]}, "field 'supporting' has True"),
    ({**GOOD, "supporting": "0"}, "field 'supporting' must be a non-empty list of sentence indices, got '0'"),
    ({**GOOD, "supporting": []}, "field 'supporting' must be a non-empty list"),
])
def test_bad_record_names_file_and_line(tmp_path, line3, words):
    path = write_jsonl(tmp_path / "qa.jsonl", [GOOD, {**GOOD, "id": "b"}, line3])
    message = expect_error(read_records, path)
    assert message.startswith(f"{path}:3: ") and words in message


def test_supporting_sentences_give_the_distance_back(tmp_path):
    """What accuracy by distance is drawn from: a records question says which sentences answer it."""
    from corpora.schema import support_distances

    context = ["Mary went to the kitchen.", "John moved to the hall.", "Sandra sat down."]
    rows = [{"id": "s1", "context": context, "question": "Where is Mary?", "answer": "kitchen", "supporting": [0]},
            {"id": "s1", "context": context, "question": "Where is John?", "answer": "hall", "supporting": [1, 0]},
            {"id": "s1", "context": context, "question": "Who sat?", "answer": "Sandra"}]
    (story,) = read_records(write_jsonl(tmp_path / "qa.jsonl", rows))
    assert story.supporting == [[0], [0, 1], []]
    path = tmp_path / "qa.parquet"  # a list<int> column, null where a record gives none
    pq.write_table(pa.Table.from_pylist([{**r, "supporting": r.get("supporting")} for r in rows]), path)
    (from_parquet,) = read_records(path)
    assert from_parquet.supporting == story.supporting
    table = pa.Table.from_pylist([{"story_id": "s1", "question_positions": story.question_positions,
                                   "supporting": story.supporting}])
    pq.write_table(table, tmp_path / "corpus.parquet")
    assert support_distances(tmp_path / "corpus.parquet") == {"s1/0": 3, "s1/1": 3, "s1/2": 0}


def test_question_of_wrong_type_message(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [GOOD, GOOD, {**GOOD, "question": 5}])
    assert expect_error(read_records, path) == f"{path}:3: field 'question' must be a string, got int"


def test_records_missing_empty_and_unknown_files(tmp_path):
    assert expect_error(read_records, tmp_path / "none.jsonl") == f"{tmp_path / 'none.jsonl'}: file not found"
    assert expect_error(read_records, tmp_path / "none.parquet") == f"{tmp_path / 'none.parquet'}: file not found"
    for text in ["", "\n  \n"]:
        (tmp_path / "empty.jsonl").write_text(text)
        assert "empty.jsonl: empty file (no records)" in expect_error(read_records, tmp_path / "empty.jsonl")
    (tmp_path / "qa.csv").write_text("id,context\n")
    assert "must be a .jsonl or .parquet file" in expect_error(read_records, tmp_path / "qa.csv")


def test_records_bad_bytes_and_long_lines_name_the_line(tmp_path):
    path = tmp_path / "qa.jsonl"
    first = json.dumps(GOOD).encode() + b"\n"
    path.write_bytes(first + b'{"id": "b\xff"}\n')
    offset = len(first) + len('{"id": "b')
    assert expect_error(read_records, path) == f"{path}:2: not UTF-8 (byte 0xff at offset {offset} in the file)"
    write_jsonl(path, [GOOD, {**GOOD, "context": "word " * 40}])
    message = expect_error(read_records, path, max_line_chars=150)
    assert message.startswith(f"{path}:2: line over the limit of ") and "corpus.max_line_chars" in message


@pytest.mark.parametrize("table, words", [
    (pa.table({"id": ["a"], "context": ["x."], "question": ["q?"]}), "missing column 'answer'"),
    (pa.table({"id": ["a"], "context": ["x."], "question": ["q?"], "answer": ["y"], "extra": [1]}),
     "unknown column 'extra'"),
    (pa.table({"id": ["a", "b"], "context": ["x.", "y."], "question": ["q?", None], "answer": ["y", "z"]}),
     "row 1: column 'question' must be a string, got null"),
    (pa.table({"id": ["a", "b"], "context": ["x.", "y."], "question": ["q?", "r?"], "answer": [1, 2]}),
     "row 0: column 'answer' must be a string, got int"),
    (pa.table({"id": ["a"], "context": [["x.", None]], "question": ["q?"], "answer": ["y"]}),
     "row 0: column 'context[1]' must be a string, got null"),
    (pa.table({"id": ["a"], "context": [""], "question": ["q?"], "answer": ["y"]}), "row 0: column 'context' is empty"),
    (pa.table({"id": pa.array([], pa.string()), "context": pa.array([], pa.string()),
               "question": pa.array([], pa.string()), "answer": pa.array([], pa.string())}), "empty file (no records)"),
])
def test_bad_parquet_names_file_row_and_column(tmp_path, table, words):
    path = tmp_path / "qa.parquet"
    pq.write_table(table, path)
    message = expect_error(read_records, path)
    assert message.startswith(f"{path}: ") and words in message


def test_not_a_parquet_file(tmp_path):
    (tmp_path / "qa.parquet").write_text("not parquet")
    assert "not a readable Parquet file" in expect_error(read_records, tmp_path / "qa.parquet")


# --- dialogue -------------------------------------------------------------------------------------

def turns(*pairs):
    return [{"speaker": s, "text": t} for s, t in pairs]


def test_dialogue_turns_become_sentences_and_questions(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [
        {"id": "d1", "turns": turns(("user", "I live in Paris."), ("assistant", "Noted."),
                                    ("user", "Nice day."), ("user", "Where do I live?"), ("assistant", "paris"))},
        {"id": "d2", "task": "chat", "turns": turns(("user", "Hi"), ("assistant", "Hello"))},
    ])
    d1, d2 = read_dialogues(path)
    assert d1.sentences == ["user: I live in Paris.", "assistant: Noted.", "user: Nice day.",
                            "user: Where do I live?", "assistant: paris"]
    assert d1.questions == ["I live in Paris.", "Where do I live?"] and d1.answers == ["Noted.", "paris"]
    assert d1.question_positions == [0, 3] and d1.supporting == [[], []] and d1.task == "dialogue"
    assert (d2.task, d2.questions, d2.question_positions) == ("chat", ["Hi"], [0])
    assert [d.split for d in (d1, d2)] == [split_of("d1", 0.1, 0.1), split_of("d2", 0.1, 0.1)]


OK_TURNS = turns(("user", "Hi"), ("assistant", "Hello"))


@pytest.mark.parametrize("line2, words", [
    ({"id": "e", "turns": turns(("assistant", "Hello"), ("user", "Hi"))},
     "turns[0]: an assistant turn must follow a user turn"),
    ({"id": "e", "turns": turns(("user", "Hi"), ("assistant", "Hello"), ("assistant", "Again"))},
     "turns[2]: an assistant turn must follow a user turn"),
    ({"id": "e", "turns": turns(("user", "Hi"), ("user", "Anyone?"))}, "dialogue 'e' has no assistant turn"),
    ({"id": "e", "turns": turns(("user", "Hi"), ("bot", "Hello"))},
     "turns[1]: field 'speaker' must be 'user' or 'assistant', got 'bot'"),
    ({"id": "e", "turns": [{"speaker": "user", "text": "Hi"}, {"speaker": "assistant", "text": ""}]},
     "turns[1]: field 'text' is empty"),
    ({"id": "e", "turns": [{"speaker": "user", "text": "Hi", "time": 3}]}, "turns[0]: unknown field 'time'"),
    ({"id": "e", "turns": ["Hi", "Hello"]}, "turns[0]: a turn must be a JSON object, got string"),
    ({"id": "e", "turns": []}, "field 'turns' is empty"),
    ({"id": "e", "turns": {"speaker": "user"}}, "field 'turns' must be a list, got object"),
    ({"id": "e"}, "field 'turns' is missing"),
    ({"id": 4, "turns": OK_TURNS}, "field 'id' must be a string, got int"),
    ({"id": "d", "turns": OK_TURNS}, "field 'id' 'd' is also the id of the dialogue at line 1"),
    ("{not json}", "invalid JSON"),
    ('{"id": "e", "turns": [{"speaker": "user", "text": "Hi", "text": "Bye"}, {"speaker": "assistant", "text": "Hello"}]}',
     "duplicate key 'text'"),
])
def test_bad_dialogue_names_file_line_and_turn(tmp_path, line2, words):
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": "d", "turns": OK_TURNS}, line2])
    message = expect_error(read_dialogues, path)
    assert message.startswith(f"{path}:2: ") and words in message


def test_dialogue_missing_and_empty_file(tmp_path):
    assert "file not found" in expect_error(read_dialogues, tmp_path / "d.jsonl")
    (tmp_path / "d.jsonl").write_text("")
    assert "empty file (no records)" in expect_error(read_dialogues, tmp_path / "d.jsonl")


def test_committed_dialogues_read_and_ask_about_earlier_turns(tmp_path):
    from tests.data.make_dialogues import FACTS, write

    path = DATA / "dialogues.jsonl"
    assert path.stat().st_size < 1_500_000
    write(tmp_path / "again.jsonl")  # the committed file is what the generator writes
    assert (tmp_path / "again.jsonl").read_bytes() == path.read_bytes()
    stories = read_dialogues(path)
    assert len(stories) == 2500 and {s.split for s in stories} == {"train", "val", "test"}
    assert all(4 <= len(s.sentences) <= 10 for s in stories)
    values = {v.lower() for vals, *_ in FACTS.values() for v in vals}
    back = []
    for s in stories:
        asked = [(q, a, p) for q, a, p in zip(s.questions, s.answers, s.question_positions) if a in values]
        assert 1 <= len(asked) <= 2 and asked[-1][2] == len(s.sentences) - 2  # asked at the end
        for q, a, p in asked:
            said = [i for i in range(p) if a in re.findall(r"\w+", s.sentences[i].lower())]
            assert len(said) == 1 and s.sentences[said[0]].startswith("user: ")  # said once, by the user
            assert a not in q.lower()
            back.append(p - said[0])
    assert len(back) > 700 and sum(b >= 3 for b in back) >= len(back) / 2


# --- documents ------------------------------------------------------------------------------------

@pytest.fixture
def docs(tmp_path):
    d = tmp_path / "docs"
    d.mkdir()
    (d / "alpha.txt").write_text("Mary went to the\nkitchen. John left.\n\n\nHeading\n\nAnn stayed home.\n")
    (d / "beta.txt").write_text("Nobody asks about this one.\n")
    (d / "gamma.txt").write_text("Sam is in Rome.")
    (d / "notes.md").write_text("not a document")
    return d


def test_documents(tmp_path, docs, caplog):
    questions = write_jsonl(tmp_path / "q.jsonl", [
        {"doc": "gamma", "question": "Where is Sam?", "answer": "Rome", "task": "places"},
        {"doc": "alpha", "question": "Where did Mary go?", "answer": "kitchen"},
        {"doc": "alpha", "question": "Who stayed home?", "answer": "Ann"},
    ])
    caplog.set_level(logging.INFO, logger="corpora.documents")
    alpha, gamma = read_documents(docs, questions)
    assert alpha.story_id == "alpha" and alpha.task == "documents"
    assert alpha.sentences == ["Mary went to the kitchen.", "John left.", "Heading", "Ann stayed home."]
    assert alpha.questions == ["Where did Mary go?", "Who stayed home?"] and alpha.answers == ["kitchen", "Ann"]
    assert alpha.question_positions == [4, 4] and alpha.supporting == [[], []]
    assert (gamma.sentences, gamma.task, gamma.question_positions) == (["Sam is in Rome."], "places", [1])
    assert [s.split for s in (alpha, gamma)] == [split_of("alpha", 0.1, 0.1), split_of("gamma", 0.1, 0.1)]
    assert "1 of 3 documents" in caplog.text and "skipped" in caplog.text


@pytest.mark.parametrize("line2, words", [
    ({"doc": "delta", "question": "Q?", "answer": "a"}, "field 'doc' names no document"),
    ({"doc": "alpha", "question": "Q?"}, "field 'answer' is missing"),
    ({"doc": "alpha", "question": ["Q?"], "answer": "a"}, "field 'question' must be a string, got list"),
    ({"doc": "alpha", "question": "Q?", "answer": "a", "task": "x"}, "field 'task' is 'x', but the question"),
    ({"doc": "alpha", "question": "Q?", "answer": "a", "page": 3}, "unknown field 'page'"),
    ("7", "a record must be a JSON object, got int"),
])
def test_bad_question_names_questions_file_and_line(tmp_path, docs, line2, words):
    questions = write_jsonl(tmp_path / "q.jsonl", [{"doc": "alpha", "question": "Q?", "answer": "a"}, line2])
    message = expect_error(read_documents, docs, questions)
    assert message.startswith(f"{questions}:2: ") and words in message


def test_bad_documents(tmp_path, docs):
    questions = write_jsonl(tmp_path / "q.jsonl", [{"doc": "alpha", "question": "Q?", "answer": "a"}])
    assert "documents directory not found" in expect_error(read_documents, tmp_path / "none", questions)
    (tmp_path / "bare").mkdir()
    assert "no .txt documents" in expect_error(read_documents, tmp_path / "bare", questions)
    assert expect_error(read_documents, docs, tmp_path / "no.jsonl") == f"{tmp_path / 'no.jsonl'}: file not found"
    (docs / "alpha.txt").write_text("\n  \n")
    assert expect_error(read_documents, docs, questions) == (
        f"{docs / 'alpha.txt'}: empty document (no sentences), asked about at {questions}:1")
    (docs / "alpha.txt").write_bytes(b"Fine.\nBad \xe9 byte.\n")
    assert expect_error(read_documents, docs, questions) == (
        f"{docs / 'alpha.txt'}:2: not UTF-8 (byte 0xe9 at offset 10 in the file)")
    (docs / "alpha.txt").write_text("word " * 50)
    assert expect_error(read_documents, docs, questions, max_line_chars=100).startswith(f"{docs / 'alpha.txt'}:1: line")


# --- config and ingest ----------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, words", [
    (["corpus.format=documents", "corpus.path=x"], "corpus.questions"),
    (["corpus.format=csv", "corpus.path=x"], "corpus.format"),
    (["corpus.format=records"], "corpus.path is required"),
    (["corpus.format=dialogue", "corpus.path=x", "corpus.questions=q.jsonl"], "corpus.questions is only read"),
    (["corpus.format=records", "corpus.path=x", "corpus.val_fraction=0.5", "corpus.test_fraction=0.5"],
     "must be below 1"),
    (["corpus.test_fraction=0"], "corpus.test_fraction"),
])
def test_config_refuses(overrides, words):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert words in str(err.value)


def test_ingest_writes_each_new_format(tmp_path, docs):
    records = write_jsonl(tmp_path / "qa.jsonl", RECORDS)
    questions = write_jsonl(tmp_path / "q.jsonl", [{"doc": "gamma", "question": "Where is Sam?", "answer": "Rome"}])
    for overrides in (["corpus.format=records", f"corpus.path={records}"],
                      ["corpus.format=dialogue", f"corpus.path={DATA / 'dialogues.jsonl'}"],
                      ["corpus.format=documents", f"corpus.path={docs}", f"corpus.questions={questions}"]):
        cfg = load_config(None, overrides + ["corpus.val_fraction=0.2", "corpus.test_fraction=0.3"])
        out = tmp_path / f"{cfg.corpus.format}.parquet"
        counts = ingest(cfg.corpus, out)
        stories = read_corpus(out)
        assert counts["stories"] == len(stories) > 0
        assert all(s.split == split_of(s.story_id, 0.2, 0.3) for s in stories)
    assert [s.story_id for s in read_corpus(tmp_path / "records.parquet")] == ["r1", "r2"]
    assert len(read_corpus(tmp_path / "dialogue.parquet")) == 2500
    assert read_corpus(tmp_path / "documents.parquet")[0].sentences == ["Sam is in Rome."]


# --- given splits ---------------------------------------------------------------------------------

def test_given_splits_are_kept_and_the_rest_hashed(tmp_path, docs):
    ids = [f"s{i}" for i in range(40)]
    hashed = {i: split_of(i, 0.1, 0.1) for i in ids}
    given = {i: "test" if hashed[i] == "train" else "train" for i in ids[:20]}  # none where the hash puts it
    records = write_jsonl(tmp_path / "r.jsonl", [
        {"id": i, "context": "Sam is in Rome.", "question": "Where is Sam?", "answer": "Rome",
         **({"split": given[i]} if i in given else {})} for i in ids])
    assert {s.story_id: s.split for s in read_records(records)} == {**hashed, **given}
    table = pa.table({"id": ids, "context": ["Sam is in Rome."] * 40, "question": ["Where is Sam?"] * 40,
                      "answer": ["Rome"] * 40, "split": [given.get(i) for i in ids]})  # null: hashed
    pq.write_table(table, tmp_path / "r.parquet")
    assert {s.story_id: s.split for s in read_records(tmp_path / "r.parquet")} == {**hashed, **given}

    dialogues = write_jsonl(tmp_path / "d.jsonl", [{"id": i, "turns": OK_TURNS, **({"split": given[i]} if i in given
                                                                                    else {})} for i in ids])
    assert {s.story_id: s.split for s in read_dialogues(dialogues)} == {**hashed, **given}

    questions = write_jsonl(tmp_path / "q.jsonl", [{"doc": "gamma", "question": "What?", "answer": "a", "split": "val"},
                                                   {"doc": "gamma", "question": "Why?", "answer": "b", "split": "val"}])
    assert [s.split for s in read_documents(docs, questions)] == ["val"]


def test_a_bad_or_contradicting_split_names_the_line(tmp_path, docs):
    rec = {"id": "s", "context": "Sam is in Rome.", "question": "Where is Sam?", "answer": "Rome"}
    message = expect_error(read_records, write_jsonl(tmp_path / "r.jsonl", [{**rec, "split": "dev"}]))
    assert message.endswith(":1: field 'split' must be 'train' or 'val' or 'test', got 'dev'")
    message = expect_error(read_records, write_jsonl(tmp_path / "r.jsonl", [{**rec, "split": "train"}, rec]))
    assert ":2: field 'split' is 'not given', but the record of id 's' at line 1 has 'train'" in message
    message = expect_error(read_dialogues, write_jsonl(tmp_path / "d.jsonl", [{"id": "d", "turns": OK_TURNS,
                                                                               "split": 3}]))
    assert message.endswith(":1: field 'split' must be a string, got int")
    questions = write_jsonl(tmp_path / "q.jsonl", [{"doc": "gamma", "question": "What?", "answer": "a", "split": "val"},
                                                   {"doc": "gamma", "question": "Why?", "answer": "b", "split": "test"}])
    assert "q.jsonl:2: field 'split' is 'test', but the question about 'gamma' at line 1 has 'val'" in expect_error(
        read_documents, docs, questions)
