"""Corpus ingestion: every input format becomes one canonical table.

``corpus.parquet`` has one row per story (see ``schema.CORPUS_SCHEMA``); the
extract and dataset stages read only that table, so each input format is
parsed in exactly one place.

Names are imported on first use, so a served model that only needs the
table's schema (``corpora.schema``) loads no reader.
"""
import importlib

_WHERE = {**dict.fromkeys(("CORPUS_SCHEMA", "CorpusError", "Story", "read_corpus", "write_corpus"), "corpora.schema"),
          "read_babi": "corpora.babi", "generate_demo": "corpora.demo", "add_distractors": "corpora.babilong",
          "generate_countries_stories": "corpora.countries", "majority_rate": "corpora.countries",
          "read_records": "corpora.records", "read_dialogues": "corpora.dialogue",
          "read_dialog_babi": "corpora.dialog_babi",
          "read_documents": "corpora.documents", "split_of": "corpora.splits"}
# (the ingest() entry point: ``from corpora.ingest import ingest``; a lazy name may not shadow its module)

__all__ = list(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'corpora' has no attribute {name!r}")
