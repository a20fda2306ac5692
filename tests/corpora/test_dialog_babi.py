"""The dialog bAbI reader (corpora/dialog_babi.py) on the real files in ../shared/data/dialog-babi, and its errors."""
from collections import Counter
from pathlib import Path

import pytest

from corpora import CorpusError, read_corpus, read_dialog_babi
from corpora.dialog_babi import parse_dialog_file
from corpora.ingest import ingest
from kg_pipeline.kg_files import read_external_kg
from stmem.config import ConfigError, load_config
from tests.conftest import shared_data
from tests.corpora.test_readers import expect_error


@pytest.fixture(scope="module")
def dialog_dir() -> Path:
    return shared_data("dialog-babi")


@pytest.fixture(scope="module")
def task1(dialog_dir):
    return read_dialog_babi(dialog_dir, ["t1"])


def test_task1_files_keep_their_splits_and_the_oov_test_its_own_label(task1):
    assert Counter((s.task, s.split) for s in task1) == {
        ("dialog-t1", "train"): 1000, ("dialog-t1", "val"): 1000, ("dialog-t1", "test"): 1000,
        ("dialog-t1-oov", "test"): 1000}
    assert len({s.story_id for s in task1}) == 4000  # unique across the four files
    assert Counter(s.story_id.rsplit("-", 1)[0] for s in task1) == {
        "t1-trn": 1000, "t1-dev": 1000, "t1-tst": 1000, "t1-tst-OOV": 1000}
    # task 1 has no API results: one question per line, each after the lines before it
    for s in task1:
        assert s.question_positions == list(range(len(s.sentences))) and len(s.questions) == len(s.answers)
        assert s.answers[-1].startswith("api_call ")  # every task-1 dialogue ends with the API call
    assert sum(len(s.questions) for s in task1 if s.split == "train") == 6024  # lines of dialog-babi-task1trn.txt
    assert max(len(s.sentences) for s in task1) == 8  # conf/dialog-babi-t1.yaml: dataset.max_segments


def test_a_known_dialogue(task1):
    (story,) = [s for s in task1 if s.story_id == "t1-tst-0"]  # the first dialogue of dialog-babi-task1tst.txt
    assert (story.task, story.split) == ("dialog-t1", "test")
    assert story.sentences == [
        "user: good morning bot: hello what can i help you with today",
        "user: can you book a table in a cheap price range in london bot: i'm on it",
        "user: <SILENCE> bot: any preference on a type of cuisine",
        "user: with french food bot: how many people would be in your party",
        "user: for four please bot: ok let me look into some options for you",
        "user: <SILENCE> bot: api_call french london four cheap"]
    assert story.questions == ["good morning", "can you book a table in a cheap price range in london", "<SILENCE>",
                               "with french food", "for four please", "<SILENCE>"]
    assert story.answers[-1] == "api_call french london four cheap"
    assert story.question_positions[-1] == 5  # the API call is made from the five lines before it
    (oov,) = [s for s in task1 if s.story_id == "t1-tst-OOV-0"]
    assert oov.task == "dialog-t1-oov" and oov.split == "test"
    assert oov.answers[-1] == "api_call thai seoul four expensive"  # neither word is in trn or dev


def test_oov_test_left_out_on_request(dialog_dir):
    stories = read_dialog_babi(dialog_dir, ["t1"], oov_test=False)
    assert {s.task for s in stories} == {"dialog-t1"} and len(stories) == 3000


def test_task6_reads_whole_with_its_quirks(dialog_dir):
    # DSTC2: not 1,000 dialogues a file, no OOV test, 'api_call no result' lines, a few turns without a user
    # utterance, and every closing bot utterance written with a leading space
    stories = read_dialog_babi(dialog_dir, ["t6"])
    assert Counter(s.split for s in stories) == {"train": 1618, "val": 500, "test": 1117}
    assert {s.task for s in stories} == {"dialog-t6"}
    assert sum("api_call no result" in s.sentences for s in stories) > 0
    assert all(a == a.strip() and q for s in stories for q, a in zip(s.questions, s.answers))
    assert all(s.answers[-1] == "you are welcome" for s in stories)


def test_turns_facts_and_filled_silence(tmp_path):
    path = tmp_path / "dialog-babi-task3trn.txt"
    path.write_text("1 hi\thello\n2 rome please\t api_call italian rome\n3 resto_a R_rating 7\n4 api_call no result\n"
                    "5 \tanything else\n\n1 bye\tyou are welcome\n")
    first, second = parse_dialog_file(path, "dialog-t3", "train", "t3-trn")
    assert first.sentences == ["user: hi bot: hello", "user: rome please bot: api_call italian rome",
                               "resto_a R_rating 7", "api_call no result", "user: <SILENCE> bot: anything else"]
    assert first.questions == ["hi", "rome please", "<SILENCE>"]  # an empty user turn is the files' <SILENCE>
    assert first.answers == ["hello", "api_call italian rome", "anything else"]
    assert first.question_positions == [0, 1, 4] and first.supporting == [[], [], []]
    assert (second.story_id, second.question_positions) == ("t3-trn-1", [0])


@pytest.mark.parametrize("text, lineno, words", [
    ("1 hi\thello\n2 what about rome\n", 2, "a line without a tab must be a KB fact"),
    ("1 hi\thello\n2 a\tb\tc\n", 2, "2 tabs in a line"),
    ("1 hi\thello\n2 rome\t  \n", 2, "empty bot utterance"),
    ("1 hi\thello\n3 rome\tok\n", 2, "line id 3 does not follow 1"),
    ("1 hi\thello\n\n2 rome\tok\n", 3, "line id 2 does not follow a blank line"),
    ("1 hi\thello\nhi there\tok\n", 2, "malformed dialog bAbI line"),
    ("1 hi\thello\n\n1 resto_a R_rating 7\n", 3, "the dialogue starting here has no bot utterance"),
])
def test_malformed_line_names_file_and_line(tmp_path, text, lineno, words):
    path = tmp_path / "dialog-babi-task1trn.txt"
    path.write_text(text)
    message = expect_error(parse_dialog_file, path, "dialog-t1", "train", "t1-trn")
    assert message.startswith(f"{path}:{lineno}: ") and words in message


def test_missing_directory_file_and_task(tmp_path, dialog_dir):
    assert "dialog bAbI directory not found" in expect_error(read_dialog_babi, tmp_path / "none", ["t1"])
    (tmp_path / "dialog-babi-task1trn.txt").write_text("1 hi\thello\n")
    assert expect_error(read_dialog_babi, tmp_path, ["t1"]) == (
        f"{tmp_path / 'dialog-babi-task1dev.txt'}: dialog bAbI file not found (task t1, dev file)")
    assert "'qa1' is not a dialog bAbI task" in expect_error(read_dialog_babi, dialog_dir, ["qa1"])
    (tmp_path / "dialog-babi-task1trn.txt").write_text("\n\n")
    assert "empty file (no dialogues)" in expect_error(parse_dialog_file, tmp_path / "dialog-babi-task1trn.txt",
                                                       "dialog-t1", "train", "t1-trn")


@pytest.mark.parametrize("overrides, words", [
    (["corpus.format=dialog_babi"], "corpus.path is required"),
    (["corpus.format=dialog_babi", "corpus.path=x"], "corpus.tasks: 'qa1' is not a dialog bAbI task (expected t1, "
                                                     "t2, t3, t4, t5, t6, and the default [qa1] is a bAbI task)"),
    (["corpus.format=dialog_babi", "corpus.path=x", "corpus.tasks=['1']"], "corpus.tasks: '1' is not a dialog bAbI"),
    (["corpus.format=dialog_babi", "corpus.path=x", "corpus.tasks=[t1, t1]"],
     "corpus.tasks: each dialog bAbI task once"),
    (["corpus.format=dialog_babi", "corpus.path=x", "corpus.tasks=[]"], "corpus.tasks is empty"),
    (["corpus.format=dialog_babi", "corpus.path=x", "corpus.tasks=[t1]", "corpus.dialog_babi.oov=false"],
     "corpus.dialog_babi.oov"),
])
def test_config_refuses(overrides, words):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert words in str(err.value)


def test_config_and_ingest(tmp_path, dialog_dir):
    cfg = load_config(Path(__file__).resolve().parents[2] / "conf" / "dialog-babi-t1.yaml",
                      [f"corpus.path={dialog_dir}", "corpus.dialog_babi.oov_test=true"])
    counts = ingest(cfg.corpus, tmp_path / "corpus.parquet")
    assert counts["stories"] == 4000 and counts["train_questions"] == 6024
    stories = read_corpus(tmp_path / "corpus.parquet")
    assert {s.task for s in stories} == {"dialog-t1", "dialog-t1-oov"}
    assert load_config(None, ["corpus.format=dialog_babi", "corpus.path=x", "corpus.tasks=[t1]"]).corpus.dialog_babi \
        .oov_test  # included unless left out


def test_kbwords_config_swaps_the_kb_cuisines_and_places(dialog_dir):
    # conf/dialog-babi-t1-kbwords.yaml lists the KB's cuisines and places by hand: they must be
    # exactly the KB's, the five tst-OOV says among them
    cfg = load_config(Path(__file__).resolve().parents[2] / "conf" / "dialog-babi-t1-kbwords.yaml",
                      [f"corpus.path={dialog_dir}"])
    kb = {}
    for _, relation, value in read_external_kg(dialog_dir / "dialog-babi-kb-all.txt"):
        kb.setdefault(relation, set()).add(value)
    assert [set(c) for c in cfg.corpus.word_classes] == [kb["R_cuisine"], kb["R_location"]]
    assert cfg.train.swap_words
    oov = read_dialog_babi(dialog_dir, ["t1"])
    said = {w for s in oov if s.task == "dialog-t1-oov" for a in s.answers if a.startswith("api_call")
            for w in a.split()[1:3]}
    assert said <= kb["R_cuisine"] | kb["R_location"] and "tokyo" in said
