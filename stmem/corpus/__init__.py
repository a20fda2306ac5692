"""Corpus ingestion: every input format becomes one canonical table.

``corpus.parquet`` has one row per story (see ``schema.CORPUS_SCHEMA``); the
extract and dataset stages read only that table, so each input format is
parsed in exactly one place.
"""
from stmem.corpus.schema import CORPUS_SCHEMA, CorpusError, Story, read_corpus, write_corpus
from stmem.corpus.babi import read_babi
from stmem.corpus.demo import generate_demo
from stmem.corpus.babilong import add_distractors
from stmem.corpus.countries import generate_countries_stories, majority_rate
from stmem.corpus.ingest import ingest

__all__ = ["CORPUS_SCHEMA", "CorpusError", "Story", "read_corpus", "write_corpus", "read_babi", "generate_demo",
           "add_distractors", "generate_countries_stories", "majority_rate", "ingest"]
