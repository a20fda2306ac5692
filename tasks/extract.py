from pathlib import Path

from stmem.config import Config


def build(cfg: Config, inputs: dict[str, Path], out: Path) -> dict:
    """``corpus.parquet`` (+ the external KG's entity names) -> mentions, triples and the alias table (spaCy)."""
    from kg_pipeline.extraction import extract
    from kg_pipeline.kg_files import kg_entities, read_external_kg

    entities = kg_entities(read_external_kg(Path(cfg.kg.external_kg))) if cfg.kg.external_kg else None
    return extract(corpus_path=inputs["ingest"] / "corpus.parquet", out_dir=out, kg_entities=entities,
                   **cfg.extract.model_dump())
