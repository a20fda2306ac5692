"""Where each stage's artifacts live inside a run directory.

    <run>/corpus/corpus.parquet
    <run>/extract/{mentions,triples,entity_aliases}.parquet
    <run>/kg/{entity_embeddings.safetensors,entity_index.parquet,kg_metrics.json}
    <run>/dataset/examples/split={train,val,test}/part-0.parquet, tokenizer.json, dataset_info.json,
                  dataset_card.json, entity_aliases.parquet
    <run>/train/{model.safetensors,model_config.json,tokenizer.json,eval.json,...}
    <run>/register/registration.json
    <run>/mlflow.db, <run>/mlartifacts/   (the default local MLflow store)

Every stage directory also holds ``manifest.json``; what each stage reads and
writes is declared in ``tasks/graph.py``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "val", "test")
EXAMPLES = "examples"  # the dataset's examples: Parquet partitioned by split, Hive style


def split_path(split: str) -> str:
    """One split's examples, relative to the dataset directory (the name its manifest lists)."""
    return f"{EXAMPLES}/split={split}/part-0.parquet"


def split_file(dataset_dir: str | Path, split: str) -> Path:
    """The Parquet file of one split's examples."""
    return Path(dataset_dir) / split_path(split)


@dataclass(frozen=True)
class RunLayout:
    root: Path

    def stage_dir(self, stage: str) -> Path:
        return self.root / ("corpus" if stage == "ingest" else stage)

    @property
    def corpus(self) -> Path:
        return self.stage_dir("ingest") / "corpus.parquet"

    @property
    def mentions(self) -> Path:
        return self.stage_dir("extract") / "mentions.parquet"

    @property
    def triples(self) -> Path:
        return self.stage_dir("extract") / "triples.parquet"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlartifacts"
