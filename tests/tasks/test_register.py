"""The register stage's input example comes from the model's own corpus, in words its tokenizer knows."""
from corpora.schema import Story, write_corpus
from tasks.register import _input_example


def test_the_registered_example_is_the_first_test_question_that_has_a_context(tmp_path):
    # bAbI qa4's model reads a fixed "Where is Mary?" as 8 tokens of the 7 it takes: registration failed
    stories = [
        Story("s1", "qa4", "train", ["The office is north of the kitchen."], ["What is north of the kitchen?"],
              ["office"], [1], [[0]]),
        Story("s2", "qa4", "test", ["The garden is east of the hallway.", "The hallway is east of the office."],
              ["What is east of the hallway?", "What is the hallway east of?"], ["garden", "office"], [0, 2],
              [[0], [1]]),
    ]
    write_corpus(stories, tmp_path / "corpus.parquet")
    assert _input_example(tmp_path / "corpus.parquet") == {
        "context": "The garden is east of the hallway.\nThe hallway is east of the office.",
        "question": "What is the hallway east of?"}
    # no test split in the corpus (the dataset stage splits it): the first question with a context
    write_corpus(stories[:1], tmp_path / "train-only.parquet")
    assert _input_example(tmp_path / "train-only.parquet")["question"] == "What is north of the kitchen?"
