"""Build the canonical corpus from whichever input format the config names."""
from __future__ import annotations

from pathlib import Path

from corpora.config import HASH_SPLIT_FORMATS, CorpusConfig
from corpora.babi import read_babi
from corpora.babilong import add_distractors
from corpora.countries import generate_countries_stories
from corpora.demo import generate_demo
from corpora.dialog_babi import read_dialog_babi
from corpora.dialogue import read_dialogues
from corpora.documents import read_documents
from corpora.records import read_records
from corpora.schema import write_corpus


def ingest(cfg: CorpusConfig, out_path: Path, *, seed: int = 0) -> dict:
    """Read (or generate) the corpus and write ``corpus.parquet``; returns counts."""
    if cfg.format == "demo":
        stories = generate_demo(**cfg.demo.model_dump())
    elif cfg.format == "countries":
        stories = generate_countries_stories(countries_dir=cfg.path, **cfg.countries.model_dump())
    elif cfg.format == "dialog_babi":
        # the files' own splits (trn, dev, tst, tst-OOV), not a hash: figures compare with the literature's
        stories = read_dialog_babi(cfg.path, cfg.tasks, oov_test=cfg.dialog_babi.oov_test,
                                   max_line_chars=cfg.max_line_chars)
    elif cfg.format in HASH_SPLIT_FORMATS:
        # split by a hash of each story's id, not by seed: a story keeps its split as the corpus grows
        fractions = dict(val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction,
                         max_line_chars=cfg.max_line_chars)
        if cfg.format == "records":
            stories = read_records(cfg.path, **fractions)
        elif cfg.format == "dialogue":
            stories = read_dialogues(cfg.path, **fractions)
        else:
            stories = read_documents(cfg.path, cfg.questions, **fractions)
    else:
        stories = read_babi(cfg.path, cfg.tasks, val_fraction=cfg.val_fraction, seed=seed,
                            max_line_chars=cfg.max_line_chars)
        if cfg.format == "babilong":
            stories = add_distractors(stories, **cfg.babilong.model_dump())
    return write_corpus(stories, out_path)
