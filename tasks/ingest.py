from pathlib import Path

from stmem.config import Config


def build(cfg: Config, inputs: dict[str, Path], out: Path) -> dict:
    """Input corpus (a generator or bAbI-format files) -> ``corpus.parquet``."""
    from corpora.ingest import ingest

    return ingest(cfg.corpus, out / "corpus.parquet", seed=cfg.run.seed)
