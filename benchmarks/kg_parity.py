"""Does the kg stage score a KG as PyKEEN itself does? Stage vs a direct PyKEEN call, same split.

For Countries S1 (``../shared/data/countries/Countries_S1``) and PyKEEN's bundled
Nations (its own files, copied to a temp dir as train/valid/test.txt), each
seed trains the same model with the same settings twice on the dataset's given
split: (a) ``kg_pipeline.kg.train_kg`` with the KG alone (``text_triples=False``,
so it keeps the split directory's own split) and (b) a direct
``pykeen.pipeline.pipeline(training=, validation=, testing=)`` on the same three
files. Both report the filtered rank-based test metrics ("both.realistic");
the table gives mean and [min-max] over seeds of MRR and Hits@10, whether the
stage's seed range overlaps the direct call's, and the time ratio stage/direct
(wall seconds summed over seeds; the stage also exports its embeddings).

    python benchmarks/kg_parity.py
    python benchmarks/kg_parity.py --epochs 40 --seeds 0 1 2
"""
from __future__ import annotations

import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

import common

COUNTRIES_S1 = Path("../shared/data/countries/Countries_S1")
SPLIT_FILES = ("train.txt", "valid.txt", "test.txt")
METRICS = {"mrr": "both.realistic.inverse_harmonic_mean_rank", "hits_at_10": "both.realistic.hits_at_10"}


def nations_dir(tmp: Path) -> Path:
    """PyKEEN's Nations, its given split, as train/valid/test.txt (the files ship inside the package)."""
    from pykeen.datasets import Nations

    ds = Nations()  # no download: the package holds the files
    out = tmp / "nations"
    out.mkdir()
    for name, src in zip(SPLIT_FILES, (ds.training_path, ds.validation_path, ds.testing_path)):
        shutil.copyfile(src, out / name)
    return out


def run_stage(kg_dir: Path, seed: int, settings: dict, tmp: Path, tag: str = "") -> dict:
    from kg_pipeline.kg import train_kg

    out = tmp / f"stage{tag}-{kg_dir.name}-{seed}"
    out.mkdir()
    t0 = time.perf_counter()
    # text_triples=False: train_kg never reads triples_path, so it need not exist
    summary = train_kg(triples_path=out / "unread-triples.parquet", out_dir=out, external_kg=kg_dir,
                       text_triples=False, split="given", seed=seed, **settings)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "mrr": summary["mrr"], "hits_at_10": summary["hits_at_10"],
            "split": summary["split"], "split_used": summary["split_used"], "num_entities": summary["num_entities"]}


def run_direct(kg_dir: Path, seed: int, settings: dict) -> dict:
    from pykeen.pipeline import pipeline

    t0 = time.perf_counter()
    result = pipeline(training=str(kg_dir / "train.txt"), validation=str(kg_dir / "valid.txt"),
                      testing=str(kg_dir / "test.txt"), model=settings["model"],
                      model_kwargs=settings["model_kwargs"],
                      training_kwargs={"use_tqdm": False, **settings["training_kwargs"]},
                      optimizer_kwargs=settings["optimizer_kwargs"], evaluator="rankbased",
                      evaluation_kwargs={"use_tqdm": False}, random_seed=seed, device=None)
    seconds = time.perf_counter() - t0
    get = result.metric_results.get_metric
    return {"seconds": seconds, **{k: float(get(m)) for k, m in METRICS.items()},
            "num_entities": result.training.num_entities}


def direct_split(kg_dir: Path) -> dict:
    from pykeen.datasets import get_dataset

    ds = get_dataset(training=str(kg_dir / "train.txt"), validation=str(kg_dir / "valid.txt"),
                     testing=str(kg_dir / "test.txt"))
    return {"train": ds.training.num_triples, "valid": ds.validation.num_triples, "test": ds.testing.num_triples}


def spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values), "values": values}


def compare(stage: list[dict], direct: list[dict]) -> dict:
    out = {}
    for k in METRICS:
        s, d = spread([r[k] for r in stage]), spread([r[k] for r in direct])
        out[k] = {"stage": s, "direct": d,
                  "stage_mean_in_direct_range": d["min"] <= s["mean"] <= d["max"],
                  # the direct call's seed range widened by the stage's own spread: the ranges overlap
                  "ranges_overlap": s["min"] <= d["max"] and d["min"] <= s["max"],
                  # same ids, same triples, same seed: PyKEEN should give the very same numbers
                  "identical_per_seed": all(a[k] == b[k] for a, b in zip(stage, direct))}
    out["seconds"] = {"stage": sum(r["seconds"] for r in stage), "direct": sum(r["seconds"] for r in direct)}
    out["time_ratio_stage_over_direct"] = out["seconds"]["stage"] / out["seconds"]["direct"]
    return out


def print_table(name: str, cmp: dict, seeds: list[int]) -> None:
    print(f"\n{name} (seeds {seeds}; test set, filtered, both.realistic)")
    print(f"  {'metric':<10} {'stage mean [min-max]':<28} {'direct mean [min-max]':<28} {'stage mean in direct':<21} {'overlap':<8} same per seed")
    for k in METRICS:
        s, d = cmp[k]["stage"], cmp[k]["direct"]
        fmt = lambda x: f"{x['mean']:.4f} [{x['min']:.4f}-{x['max']:.4f}]"  # noqa: E731
        print(f"  {k:<10} {fmt(s):<28} {fmt(d):<28} {str(cmp[k]['stage_mean_in_direct_range']):<21} "
              f"{str(cmp[k]['ranges_overlap']):<8} {cmp[k]['identical_per_seed']}")
    t = cmp["seconds"]
    print(f"  time: stage {t['stage']:.1f}s, direct {t['direct']:.1f}s, ratio stage/direct "
          f"{cmp['time_ratio_stage_over_direct']:.2f}")


def main() -> int:
    ap = common.parser(__doc__)
    ap.set_defaults(out=common.RESULTS / "kg_parity.json")
    ap.add_argument("--model", default="TransE")
    ap.add_argument("--embedding-dim", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the benchmark machine is shared)")
    ap.add_argument("--countries", type=Path, default=COUNTRIES_S1, help="a Countries split directory")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    settings = {"model": args.model, "model_kwargs": {"embedding_dim": args.embedding_dim},
                "training_kwargs": {"num_epochs": args.epochs, "batch_size": args.batch_size},
                "optimizer_kwargs": {"lr": args.lr}}

    report = {"settings": settings, "seeds": args.seeds, "datasets": {}}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        datasets = {"countries_s1": args.countries.resolve(), "nations": nations_dir(tmp)}
        # after pykeen's import (nations_dir), which sets its logger to INFO: those per-run lines drown the table
        logging.getLogger("pykeen").setLevel(logging.WARNING)
        # untimed: imports and first-call set-up would otherwise land on whichever way runs first
        warm = {**settings, "training_kwargs": {**settings["training_kwargs"], "num_epochs": 1}}
        run_stage(datasets["countries_s1"], 0, warm, tmp, tag="-warm-up")
        run_direct(datasets["countries_s1"], 0, warm)
        for name, kg_dir in datasets.items():
            stage, direct = [], []
            for seed in args.seeds:
                stage.append(run_stage(kg_dir, seed, settings, tmp))
                direct.append(run_direct(kg_dir, seed, settings))
                print(f"{name} seed {seed}: stage mrr {stage[-1]['mrr']:.4f} h@10 {stage[-1]['hits_at_10']:.4f} "
                      f"({stage[-1]['seconds']:.1f}s) | direct mrr {direct[-1]['mrr']:.4f} "
                      f"h@10 {direct[-1]['hits_at_10']:.4f} ({direct[-1]['seconds']:.1f}s)", flush=True)
            split = direct_split(kg_dir)
            if any(r["split_used"] != "given" or r["split"] != split for r in stage):
                raise SystemExit(f"{name}: the stage's split {stage[0]['split']} ({stage[0]['split_used']}) "
                                 f"is not the direct call's {split}")
            cmp = compare(stage, direct)
            report["datasets"][name] = {"path": str(kg_dir) if name != "nations" else "pykeen.datasets.Nations",
                                        "split": split, "stage_entities": stage[0]["num_entities"],
                                        "direct_entities": direct[0]["num_entities"],
                                        "stage": stage, "direct": direct, **cmp}
            print_table(name, cmp, args.seeds)
    report["total_seconds"] = time.perf_counter() - t_start
    print(f"\ntotal {report['total_seconds']:.0f}s")
    common.write_report(args, "", report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
