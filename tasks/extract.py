from pathlib import Path

from stmem.config import Config


def build(cfg: Config, inputs: dict[str, Path], out: Path) -> dict:
    """``corpus.parquet`` -> ``mentions.parquet`` + ``triples.parquet`` (spaCy)."""
    from kg_pipeline.extraction import extract

    return extract(corpus_path=inputs["ingest"] / "corpus.parquet", out_dir=out, **cfg.extract.model_dump())
