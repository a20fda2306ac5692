"""Stages 1 and 2 of the pipeline, as plain functions (no Prefect).

1. ``extract``: spaCy mentions and subject-verb-object triples from the corpus.
2. ``train_kg``: a PyKEEN embedding of those triples (plus an optional
   external KG), exported as one embedding row per entity.

Names are imported on first use: spaCy and PyKEEN take seconds to import,
and a command that only needs ``KGInputError`` should not pay for them.
"""
import importlib

from kg_pipeline.errors import KGInputError

_WHERE = {**dict.fromkeys(("MENTIONS_SCHEMA", "TRIPLES_SCHEMA", "Mention", "MentionExtractor", "Triple",
                           "canonical_entity", "extract"), "kg_pipeline.extraction"),
          **dict.fromkeys(("read_triples_tsv", "read_external_kg"), "kg_pipeline.kg_files"),
          "train_kg": "kg_pipeline.kg"}

__all__ = ["KGInputError", *_WHERE]


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'kg_pipeline' has no attribute {name!r}")
