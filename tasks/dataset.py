from pathlib import Path

from stmem.config import Config


def tokenizer_file(cfg: Config) -> list[Path]:
    """The tokenizer file the config names (``tokenizer.json``, or a directory holding one): part of the key."""
    if not cfg.dataset.tokenizer:
        return []
    t = Path(cfg.dataset.tokenizer)
    t = t / "tokenizer.json" if t.is_dir() else t  # what stmem.dataset.load_tokenizer reads
    return [t] if t.is_file() else []


def build(cfg: Config, inputs: dict[str, Path], out: Path) -> dict:
    """Corpus + mentions + entity index -> tokenised, segmented Parquet examples."""
    from stmem.dataset import build_dataset

    return build_dataset(corpus_path=inputs["ingest"] / "corpus.parquet",
                         mentions_path=inputs["extract"] / "mentions.parquet",
                         entity_index_path=inputs["kg"] / "entity_index.parquet", out_dir=out,
                         aliases_path=inputs["extract"] / "entity_aliases.parquet",
                         # swapping trains the class words the training split never says: one token each
                         words=[w for words in cfg.corpus.word_classes for w in words],
                         **cfg.dataset.model_dump())
