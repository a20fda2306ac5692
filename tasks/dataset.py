from pathlib import Path

from stmem.config import Config


def build(cfg: Config, inputs: dict[str, Path], out: Path) -> dict:
    """Corpus + mentions + entity index -> tokenised, segmented Parquet examples."""
    from stmem.dataset import build_dataset

    return build_dataset(corpus_path=inputs["ingest"] / "corpus.parquet",
                         mentions_path=inputs["extract"] / "mentions.parquet",
                         entity_index_path=inputs["kg"] / "entity_index.parquet", out_dir=out,
                         **cfg.dataset.model_dump())
