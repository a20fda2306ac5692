from pathlib import Path

from stmem.config import Config


def corpus_files(cfg: Config) -> list[Path]:
    """The files the corpus is read from (``corpus.path``: a file, or every file under the directory;
    ``corpus.questions``): part of the key, by content, so an edited corpus re-runs ingest."""
    files = []
    for p in map(Path, filter(None, (cfg.corpus.path, cfg.corpus.questions))):
        files += [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    return files


def build(cfg: Config, inputs: dict[str, Path], out: Path) -> dict:
    """Input corpus (a generator or bAbI-format files) -> ``corpus.parquet``."""
    from corpora.ingest import ingest

    return ingest(cfg.corpus, out / "corpus.parquet", seed=cfg.run.seed)
