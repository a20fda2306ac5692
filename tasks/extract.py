from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from stmem.config import Config, ConfigError


def _as_task_runs(fn, calls: list[dict]) -> list[dict]:
    """Each part of the corpus a Prefect task run, submitted to the flow's task runner (``run.task_runner``)."""
    part = task(fn, name="extract-shard", cache_policy=NO_CACHE, persist_result=False)
    futures = [part.with_options(task_run_name=f"extract-shard-{i}").submit(**kw) for i, kw in enumerate(calls)]
    return [f.result() for f in futures]


def check(cfg: Config) -> None:
    """extract.spacy_model is what spacy.load reads: an installed package, or a pipeline directory."""
    import importlib.metadata

    name = cfg.extract.spacy_model
    if Path(name).is_dir():
        if not (Path(name) / "config.cfg").is_file():
            raise ConfigError(f"extract.spacy_model: {name} is a directory without config.cfg, not a spaCy pipeline")
        return
    try:
        importlib.metadata.distribution(name)  # as spacy.util.is_package: no import, so no code runs
    except importlib.metadata.PackageNotFoundError:
        installed = sorted(e.name for e in importlib.metadata.entry_points(group="spacy_models"))
        raise ConfigError(f"extract.spacy_model: {name!r} is neither an installed spaCy model "
                          f"(installed: {', '.join(installed) or 'none'}) nor a pipeline directory") from None


def build(cfg: Config, inputs: dict[str, Path], out: Path) -> dict:
    """``corpus.parquet`` (+ the external KG's entity names) -> mentions, triples and the alias table (spaCy)."""
    from kg_pipeline.extraction import extract
    from kg_pipeline.kg_files import kg_entities, read_external_kg

    entities = kg_entities(read_external_kg(Path(cfg.kg.external_kg))) if cfg.kg.external_kg else None
    return extract(corpus_path=inputs["ingest"] / "corpus.parquet", out_dir=out, kg_entities=entities,
                   run_parts=_as_task_runs, **cfg.extract.model_dump())
