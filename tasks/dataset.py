from pathlib import Path

from stmem.config import Config
from stmem.dataset import build_dataset
from tasks.stage import run_stage, stage_task


@stage_task("dataset")
def dataset_task(cfg: Config, corpus_dir: str, extract_dir: str, kg_dir: str) -> str:
    """Corpus + mentions + entity index -> tokenised, segmented Parquet examples."""
    corpus = Path(corpus_dir) / "corpus.parquet"
    mentions = Path(extract_dir) / "mentions.parquet"
    entity_index = Path(kg_dir) / "entity_index.parquet"
    return run_stage(cfg, "dataset", inputs={corpus: "ingest", mentions: "extract", entity_index: "kg"},
                     sections=("dataset",),
                     work=lambda out: build_dataset(corpus_path=corpus, mentions_path=mentions,
                                                    entity_index_path=entity_index, out_dir=out,
                                                    **cfg.dataset.model_dump()))
