from stmem.config import Config
from corpora import ingest
from tasks.stage import run_stage, stage_task


@stage_task("ingest")
def ingest_task(cfg: Config) -> str:
    """Input corpus (demo generator or bAbI files) -> ``corpus/corpus.parquet``."""
    return run_stage(cfg, "ingest", inputs={}, sections=("corpus", "run"),
                     work=lambda out: ingest(cfg.corpus, out / "corpus.parquet", seed=cfg.run.seed))
