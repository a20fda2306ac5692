"""Stage 2: train a knowledge-graph embedding (PyKEEN) on the extracted triples.

The output is plain data a downstream linker can read without PyKEEN: one
embedding row per entity (safetensors), the entity -> row index (parquet) and
the link-prediction metrics (json).
"""
from __future__ import annotations

import json
import logging
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors.torch import save_file

from kg_pipeline.errors import KGInputError
from kg_pipeline.kg_files import external_kg_files, read_external_kg, read_triples_parquet

__all__ = ["KGInputError", "train_kg", "write_no_kg"]

# below this a 3-way split leaves (almost) nothing to validate or test on
MIN_TRIPLES = 10

ENTITY_INDEX_SCHEMA = pa.schema([("entity", pa.string()), ("row", pa.int32())])


def _entity_matrix(model) -> torch.Tensor:
    # indices=None gives every entity, in the factory's id order
    emb = model.entity_representations[0](indices=None).detach().cpu()
    if emb.is_complex():
        emb = torch.view_as_real(emb)  # RotatE, ComplEx: (re, im) pairs so the file is always real
    return emb.reshape(emb.shape[0], -1).to(torch.float32).contiguous()


def with_relation_context(emb: torch.Tensor, mapped_triples: torch.Tensor, num_relations: int) -> torch.Tensor:
    """[entities, d] -> [entities, d * (1 + num_relations)]: each entity's own
    embedding, then for each relation id in order the mean embedding of the
    entities it points to by that relation (zeros where it points to none).

    A country's vector then holds its subregion's and region's own embeddings
    (``locatedin``) beside its neighbours': what the graph says about an entity
    is in its vector directly, not only as far as the embedding model managed to
    fold it into one point (benchmarks/kg_probe.py measures the difference).
    """
    n, d = emb.shape
    heads, rels, tails = mapped_triples.long().unbind(1)
    bucket = heads * num_relations + rels  # one (entity, relation) bucket per row of the result
    sums = torch.zeros(n * num_relations, d).index_add_(0, bucket, emb[tails])
    counts = torch.zeros(n * num_relations).index_add_(0, bucket, torch.ones(len(bucket)))
    means = sums / counts.clamp(min=1).unsqueeze(1)
    return torch.cat([emb, means.reshape(n, num_relations * d)], dim=1).contiguous()


_WHAT_TO_DO = ("Give a KG of your own (kg.external_kg), or set model.kg_fusion: false to train the model "
               "without one (the kg stage is then skipped).")


def _too_small(triples_path: Path, external_kg: Path | None, factory, ratios, why: str) -> str:
    """Why a random split failed, and what to do, instead of PyKEEN's own error."""
    sources = f"{triples_path}" + (f" + {external_kg}" if external_kg is not None else "")
    return (f"{sources}: {factory.num_triples} triples of {factory.num_entities} entities and "
            f"{factory.num_relations} relations are too few to split {[float(r) for r in ratios]} with every "
            f"entity in the training part ({why}). {_WHAT_TO_DO}")


def write_no_kg(out_dir: Path, reason: str) -> dict:
    """The kg stage's output when no KG is fused: no entities, no embeddings, and ``kg_metrics.json`` saying
    why. The stages after it read the same files either way, so the pipeline's shape does not change."""
    out_dir = Path(out_dir)
    save_file({"entity_embeddings": torch.zeros(0, 1)}, str(out_dir / "entity_embeddings.safetensors"))
    pq.write_table(ENTITY_INDEX_SCHEMA.empty_table(), out_dir / "entity_index.parquet")
    summary = {"skipped": reason, "num_entities": 0}
    (out_dir / "kg_metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _cpu_notice(record: logging.LogRecord) -> bool:
    """False for torch_max_mem's notice that it maximises batch sizes on CPU too (PyKEEN's evaluation asks it to)."""
    return not record.getMessage().startswith("Encountered tensors on device_types={'cpu'}")


def train_kg(*, triples_path: Path, out_dir: Path, model: str = "TransE",
             model_kwargs: dict | None = None, training_kwargs: dict | None = None,
             optimizer_kwargs: dict | None = None, external_kg: Path | None = None,
             negative_sampler: str = "basic", negative_sampler_kwargs: dict | None = None,
             stopper: str = "nop", stopper_kwargs: dict | None = None,
             split_ratios: tuple[float, float, float] | list[float] = (0.8, 0.1, 0.1),
             text_triples: bool = True, relation_context: bool = False, seed: int = 0,
             split: str = "random") -> dict:
    """Train `model` on triples.parquet (+ an external KG: ``kg_files.read_external_kg``) and export
    per-entity embeddings (with ``relation_context``, each followed by its
    relation context over every triple given: ``with_relation_context``)."""
    from pykeen.pipeline import pipeline  # here, not at the top: a run without a KG never imports PyKEEN
    from pykeen.triples import TriplesFactory

    triples_path, out_dir = Path(triples_path), Path(out_dir)
    # text_triples=False: the embedding is trained on the external KG alone,
    # so facts the text states about its entities cannot pull them around.
    text = read_triples_parquet(triples_path) if text_triples else []
    if not text_triples and external_kg is None:
        raise KGInputError("kg.text_triples is false and there is no kg.external_kg: nothing to train on")
    # the external KG file by file: a split directory's train/valid/test are also its given split
    kg_parts = [read_external_kg(f) for f in external_kg_files(Path(external_kg))] if external_kg is not None else []
    from_text, from_kg = set(text), {t for part in kg_parts for t in part}
    triples = sorted(from_text | from_kg)  # sorted: the same input gives the same ids and split
    # what the merge did, so a user sees how much the text adds to their KG and which relations dominate
    merge = {"text_triples": len(from_text), "kg_triples": len(from_kg), "in_both": len(from_text & from_kg),
             "duplicates_dropped": len(text) + sum(map(len, kg_parts)) - len(triples),
             "triples_per_relation": dict(sorted(Counter(r for _, r, _ in triples).items()))}
    if len(triples) < MIN_TRIPLES:
        sources = f"{triples_path}" + (f" + {external_kg}" if external_kg is not None else "")
        raise KGInputError(f"{sources}: only {len(triples)} distinct triples; need at least {MIN_TRIPLES} "
                           f"to split into train/valid/test. {_WHAT_TO_DO}")

    factory = TriplesFactory.from_labeled_triples(np.array(triples, dtype=str))
    given = None
    if split == "given":  # the benchmarks' setting: MRR and Hits on the KG's own test split
        if not text_triples and len(kg_parts) == 3 and Path(external_kg).is_dir():
            given = [sorted(set(part)) for part in kg_parts]
        else:
            raise KGInputError("kg.split 'given' needs kg.external_kg to be a train/valid/test directory "
                               "and kg.text_triples false")
    if given is not None:
        # the KG alone, shipped as train/valid/test.txt: its own split, as published results and a
        # direct PyKEEN call use it. Ids from the whole KG, so an entity only valid or test names
        # still gets an embedding row; PyKEEN drops a part's duplicate triples, as it does reading files.
        train, valid, test = (TriplesFactory.from_labeled_triples(
            np.array(part, dtype=str), entity_to_id=factory.entity_to_id, relation_to_id=factory.relation_to_id)
            for part in given)
        split_used = "given"
    else:
        # PyKEEN's split moves triples into train until every entity occurs there,
        # and all parts share the full factory's entity_to_id, so every entity gets an embedding
        try:
            train, valid, test = factory.split(list(split_ratios), random_state=seed)
        except ValueError as exc:  # PyKEEN: "Could not find a coverage of all entities and relation ..."
            raise KGInputError(_too_small(triples_path, external_kg, factory, split_ratios, str(exc))) from None
        split_used = f"random {[float(r) for r in split_ratios]}"
    if valid.num_triples == 0 or test.num_triples == 0:
        raise KGInputError(_too_small(triples_path, external_kg, factory, split_ratios,
                                      f"valid={valid.num_triples}, test={test.num_triples} triples"))

    cuda = torch.cuda.is_available()
    if not cuda:
        logging.getLogger("torch_max_mem.api").addFilter(_cpu_notice)
    # Say what PyKEEN would otherwise guess and warn about on every CPU run: the device, no pinned
    # memory without a GPU, and on CPU the evaluation batch size it falls back to (32).
    training_kwargs = {"use_tqdm": False, "pin_memory": cuda, **(training_kwargs or {})}
    evaluation_kwargs = {"use_tqdm": False} if cuda else {"use_tqdm": False, "batch_size": 32}
    with warnings.catch_warnings():
        # PyKEEN's sub-batch search builds its DataLoader with pin_memory=True whatever training_kwargs say
        warnings.filterwarnings("ignore", message="'pin_memory' argument is set as true but no accelerator",
                                category=UserWarning)
        result = pipeline(
            training=train, validation=valid, testing=test,
            model=model, model_kwargs=model_kwargs, training_kwargs=training_kwargs,
            optimizer_kwargs=optimizer_kwargs,
            negative_sampler=negative_sampler, negative_sampler_kwargs=negative_sampler_kwargs,
            stopper=stopper, stopper_kwargs=stopper_kwargs,  # "early": stops on the validation split's MRR/Hits
            # filtered rank-based metrics; the pipeline filters train + valid triples when testing
            evaluator="rankbased", evaluation_kwargs=evaluation_kwargs,
            random_seed=seed, device="cuda" if cuda else "cpu",
        )

    emb = _entity_matrix(result.model)
    entities = sorted(factory.entity_to_id, key=factory.entity_to_id.__getitem__)
    if emb.shape[0] != len(entities):
        raise RuntimeError(f"{model}: {emb.shape[0]} embedding rows for {len(entities)} entities")
    embedding_dim = int(emb.shape[1])
    relations = sorted(factory.relation_to_id, key=factory.relation_to_id.__getitem__)
    if relation_context:
        emb = with_relation_context(emb, factory.mapped_triples, len(relations))

    metric = result.metric_results.get_metric
    summary = {
        "model": model,
        "num_triples": factory.num_triples,
        "num_entities": factory.num_entities,
        "num_relations": factory.num_relations,
        "embedding_dim": embedding_dim,
        # the exported vector: the embedding, then one block per relation in this order
        "vector_dim": int(emb.shape[1]),
        "relation_context": relations if relation_context else None,
        "merge": merge,
        "split": {"train": train.num_triples, "valid": valid.num_triples, "test": test.num_triples},
        "epochs_trained": len(result.losses),  # fewer than num_epochs when the early stopper stopped it
        # "given": the external KG's own train/valid/test.txt; else "random [ratios]" (seeded) over all triples
        "split_used": split_used,
        "mrr": float(metric("both.realistic.inverse_harmonic_mean_rank")),
        "hits_at_1": float(metric("both.realistic.hits_at_1")),
        "hits_at_3": float(metric("both.realistic.hits_at_3")),
        "hits_at_10": float(metric("both.realistic.hits_at_10")),
    }

    save_file({"entity_embeddings": emb}, str(out_dir / "entity_embeddings.safetensors"))
    index = pa.table({"entity": entities, "row": [factory.entity_to_id[e] for e in entities]},
                     schema=ENTITY_INDEX_SCHEMA)
    pq.write_table(index, out_dir / "entity_index.parquet")
    (out_dir / "kg_metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
