"""Corpus ingestion: every input format becomes one canonical table.

``corpus.parquet`` has one row per story (see ``schema.CORPUS_SCHEMA``); the
extract and dataset stages read only that table, so each input format is
parsed in exactly one place.
"""
from corpora.schema import CORPUS_SCHEMA, CorpusError, Story, read_corpus, write_corpus
from corpora.babi import read_babi
from corpora.demo import generate_demo
from corpora.babilong import add_distractors
from corpora.countries import generate_countries_stories, majority_rate
from corpora.ingest import ingest

__all__ = ["CORPUS_SCHEMA", "CorpusError", "Story", "read_corpus", "write_corpus", "read_babi", "generate_demo",
           "add_distractors", "generate_countries_stories", "majority_rate", "ingest"]
