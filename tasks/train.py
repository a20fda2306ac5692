from pathlib import Path

from stmem.config import Config

START_MODEL_FILES = ("model.safetensors", "model_config.json", "tokenizer.json")  # its tokens map by string


def start_model(cfg: Config) -> list[Path]:
    """The model fine-tuning starts from (``train.init_from``, resolved): part of the key."""
    if not cfg.train.init_from:
        return []
    d = Path(cfg.train.init_from)
    missing = [f for f in START_MODEL_FILES if not (d / f).is_file()]
    if missing:
        from stmem.artifacts import MissingArtifactError

        raise MissingArtifactError(f"train.init_from: {d} has no {', '.join(missing)}; train that model first")
    return [d / f for f in START_MODEL_FILES]


def build(cfg: Config, inputs: dict[str, Path], out: Path) -> dict:
    """Examples + KG embeddings -> checkpoint (safetensors + JSON), ``eval.json``; resumes in ``out``."""
    from stmem.train import fit_with_restarts

    return fit_with_restarts(cfg, dataset_dir=inputs["dataset"], kg_dir=inputs["kg"], out_dir=out)
