"""Build the canonical corpus from whichever input format the config names."""
from __future__ import annotations

from pathlib import Path

from corpora.config import CorpusConfig
from corpora.babi import read_babi
from corpora.babilong import add_distractors
from corpora.countries import generate_countries_stories
from corpora.demo import generate_demo
from corpora.schema import write_corpus


def ingest(cfg: CorpusConfig, out_path: Path, *, seed: int = 0) -> dict:
    """Read (or generate) the corpus and write ``corpus.parquet``; returns counts."""
    if cfg.format == "demo":
        stories = generate_demo(**cfg.demo.model_dump())
    elif cfg.format == "countries":
        stories = generate_countries_stories(countries_dir=cfg.path, **cfg.countries.model_dump())
    else:
        stories = read_babi(cfg.path, cfg.tasks, val_fraction=cfg.val_fraction, seed=seed,
                            max_line_chars=cfg.max_line_chars)
        if cfg.format == "babilong":
            stories = add_distractors(stories, **cfg.babilong.model_dump())
    return write_corpus(stories, out_path)
