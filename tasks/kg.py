from pathlib import Path

from stmem.config import Config, ConfigError


def external_files(cfg: Config) -> list[Path]:
    """The external KG's files: part of the stage's key, so an edited KG re-runs it."""
    if not cfg.kg.external_kg:
        return []
    from kg_pipeline.kg_files import external_kg_files

    return external_kg_files(Path(cfg.kg.external_kg))


def check(cfg: Config) -> None:
    """kg.model and the initializers and constrainers in kg.model_kwargs are names PyKEEN knows."""
    if not cfg.model.kg_fusion:
        return  # no KG is trained
    import os
    import shutil
    import sys

    if "pykeen" not in sys.modules:
        # PyKEEN makes its home (pystow) when first imported, for the rest of the process: the run
        # directory's, as build() would, not the user's; made by a check that fails, it is removed again
        home = cfg.run_dir / ".pystow"
        made = [p for p in (Path(cfg.run.root), cfg.run_dir, home) if not p.exists()]
        os.environ["PYSTOW_HOME"] = str(home)
        try:
            _check_names(cfg)
        except ConfigError:
            if made:  # the topmost directory the import made, with what is under it
                shutil.rmtree(made[0], ignore_errors=True)
            raise
        return
    _check_names(cfg)


def _check_names(cfg: Config) -> None:
    from difflib import get_close_matches

    from pykeen.models import model_resolver
    from pykeen.nn.init import initializer_resolver
    from pykeen.nn.representation import constrainer_resolver

    try:
        model_resolver.lookup(cfg.kg.model)
    except KeyError:
        near = get_close_matches(model_resolver.normalize(cfg.kg.model), model_resolver.lookup_dict, n=5, cutoff=0.5)
        hint = f"; nearest: {', '.join(model_resolver.lookup_dict[n].__name__ for n in near)}" if near else ""
        raise ConfigError(f"kg.model: {cfg.kg.model!r} is not a PyKEEN model{hint}") from None
    for key, resolver in (("entity_initializer", initializer_resolver), ("relation_initializer", initializer_resolver),
                          ("entity_constrainer", constrainer_resolver),
                          ("relation_constrainer", constrainer_resolver)):
        value = cfg.kg.model_kwargs.get(key)
        if isinstance(value, str):
            try:
                resolver.lookup(value)
            except KeyError:
                raise ConfigError(f"kg.model_kwargs.{key}: {value!r} is not one of PyKEEN's "
                                  f"({', '.join(sorted(resolver.lookup_dict))})") from None


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
