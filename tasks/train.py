from pathlib import Path

from stmem.config import Config
from stmem.train import fit
from tasks.stage import run_stage, stage_task


@stage_task("train")
def train_task(cfg: Config, dataset_dir: str, kg_dir: str) -> str:
    """Examples + KG embeddings -> checkpoint (safetensors + JSON) and ``eval.json``."""
    ds, kg = Path(dataset_dir), Path(kg_dir)
    inputs = {ds / f"{s}.parquet": "dataset" for s in ("train", "val", "test")}
    inputs[kg / "entity_embeddings.safetensors"] = "kg"
    if cfg.train.init_from:  # fine-tuning: the starting model is an input too, hashed in the manifest
        for f in ("model.safetensors", "model_config.json", "tokenizer.json"):  # its tokens map by string
            inputs[Path(cfg.train.init_from) / f] = "train"
    return run_stage(cfg, "train", inputs=inputs, sections=("model", "train", "run", "corpus"),
                     work=lambda out: fit(cfg, dataset_dir=ds, kg_dir=kg, out_dir=out))
