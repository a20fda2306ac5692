"""Stages 1 and 2 of the pipeline, as plain functions (no Prefect).

1. ``extract``: spaCy mentions and subject-verb-object triples from the corpus.
2. ``train_kg``: a PyKEEN embedding of those triples (plus an optional
   external KG), exported as one embedding row per entity.
"""
from kg_pipeline.errors import KGInputError
from kg_pipeline.extract import MENTIONS_SCHEMA, TRIPLES_SCHEMA, Mention, MentionExtractor, Triple, canonical_entity, extract
from kg_pipeline.kg import read_triples_tsv, train_kg

__all__ = ["extract", "MentionExtractor", "Mention", "Triple", "canonical_entity", "MENTIONS_SCHEMA",
           "TRIPLES_SCHEMA", "train_kg", "read_triples_tsv", "KGInputError"]
