"""How much of a Countries answer a KG vector holds: a linear probe.

Fits a logistic regression from each training country's exported KG vector
(the run's kg stage) to its region and to its subregion, and scores it on the
corpus's held-out test countries (the same split the stories use). It is the
ceiling of what a model could read from the KG alone for a country no training
text named. With ``kg.relation_context`` the probe runs twice: on the whole
exported vector and on the embedding alone (its first ``embedding_dim``
columns).

    python benchmarks/kg_probe.py --config conf/countries-finetune.yaml
"""
from __future__ import annotations

import json
import sys

import numpy as np
import pyarrow.parquet as pq
from safetensors.numpy import load_file
from sklearn.linear_model import LogisticRegression

import common
from corpora.countries import load_countries_kg, split_countries


def probe(vectors: np.ndarray, row: dict[str, int], labels: dict[str, str],
          train: list[str], test: list[str]) -> float:
    """Held-out accuracy of a linear probe from vector to label."""
    train, test = [c for c in train if c in labels], [c for c in test if c in labels]
    clf = LogisticRegression(max_iter=5000, C=10.0)
    clf.fit(vectors[[row[c] for c in train]], [labels[c] for c in train])
    return float(np.mean(clf.predict(vectors[[row[c] for c in test]]) == np.array([labels[c] for c in test])))


def main() -> int:
    args = common.parser(__doc__, config_required=True).parse_args()  # a countries run's config
    cfg, layout = common.load(args)
    if cfg.corpus.format != "countries":
        raise SystemExit(f"{args.config}: corpus.format is {cfg.corpus.format!r}; the probe needs countries")
    kg_dir = layout.stage_dir("kg")
    vectors = load_file(str(kg_dir / "entity_embeddings.safetensors"))["entity_embeddings"]
    index = pq.read_table(kg_dir / "entity_index.parquet").to_pydict()
    row = dict(zip(index["entity"], index["row"]))
    metrics = json.loads((kg_dir / "kg_metrics.json").read_text())
    countries = load_countries_kg(cfg.corpus.path)
    train, test = split_countries(countries, cfg.corpus.countries.test_country_fraction, cfg.corpus.countries.seed)
    views = {"exported vector": vectors}
    if metrics.get("relation_context"):
        views["embedding alone"] = vectors[:, :metrics["embedding_dim"]]
    results = {}
    for name, v in views.items():
        results[name] = {"dim": int(v.shape[1]),
                         "region": round(probe(v, row, countries.region, train, test), 4),
                         "subregion": round(probe(v, row, countries.subregion, train, test), 4)}
        print(f"{name} ({v.shape[1]}-d): held-out region {results[name]['region']:.1%}, "
              f"subregion {results[name]['subregion']:.1%}")
    report = {"kg_dir": str(kg_dir), "kg_model": metrics["model"],
              "train_countries": len(train), "test_countries": len(test), "results": results}
    common.write_report(args, cfg.run.name, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
