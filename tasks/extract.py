from pathlib import Path

from kg_pipeline import extract
from stmem.config import Config
from tasks.stage import run_stage, stage_task


@stage_task("extract")
def extract_task(cfg: Config, corpus_dir: str) -> str:
    """``corpus.parquet`` -> ``mentions.parquet`` + ``triples.parquet`` (spaCy)."""
    corpus = Path(corpus_dir) / "corpus.parquet"
    return run_stage(cfg, "extract", inputs={corpus: "ingest"}, sections=("extract",),
                     work=lambda out: extract(corpus_path=corpus, out_dir=out, **cfg.extract.model_dump()))
