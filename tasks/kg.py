from pathlib import Path

from stmem.config import Config


def external_files(cfg: Config) -> list[Path]:
    """The external KG's files: part of the stage's key, so an edited KG re-runs it."""
    if not cfg.kg.external_kg:
        return []
    from kg_pipeline.kg_files import external_kg_files

    return external_kg_files(Path(cfg.kg.external_kg))


def build(cfg: Config, inputs: dict[str, Path], out: Path) -> dict:
    """Triples (+ external KG) -> PyKEEN entity embeddings, index and metrics; none when nothing fuses them."""
    import os

    if not cfg.model.kg_fusion:
        from kg_pipeline.kg import write_no_kg

        return write_no_kg(out, "model.kg_fusion is false: no KG is trained, and the model links no entities")

    # PyKEEN's caches (pystow) inside the run directory, not in the user's home
    os.environ["PYSTOW_HOME"] = str(cfg.run_dir / ".pystow")
    from kg_pipeline.kg import train_kg

    return train_kg(triples_path=inputs["extract"] / "triples.parquet", out_dir=out, **cfg.kg.model_dump())
