from pathlib import Path

from kg_pipeline import train_kg
from kg_pipeline.kg import external_kg_files
from stmem.config import Config
from tasks.stage import run_stage, stage_task


@stage_task("kg")
def kg_task(cfg: Config, extract_dir: str) -> str:
    """Triples (+ external KG) -> PyKEEN entity embeddings, index and metrics."""
    triples = Path(extract_dir) / "triples.parquet"
    inputs = {triples: "extract"}
    if cfg.kg.external_kg:
        for f in external_kg_files(Path(cfg.kg.external_kg)):
            inputs[f] = "kg"  # external_kg_files already checked it exists; listed so the manifest hashes it
    return run_stage(cfg, "kg", inputs=inputs, sections=("kg",),
                     work=lambda out: train_kg(triples_path=triples, out_dir=out, **cfg.kg.model_dump()))
