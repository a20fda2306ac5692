"""How many of the KG's names in a corpus get linked to their KG entity, with and without the entity ruler.

The Countries corpus (``corpora/countries.py``, the shipped recipe's
settings), as generated and in lower case (how a user's text failed in
issue 17: spaCy's NER misses lower-case names and its lemma mangles others).
An occurrence is a place where a country's name (its KG id, ``_`` read as a
space) occurs in a sentence on word boundaries, longest name first; it is
linked when the extractor gives a mention of that span with that KG id.

    python benchmarks/kg_coverage.py --config conf/countries.yaml
"""
from __future__ import annotations

import re

from common import load, parser, write_report


def occurrences(text: str, pattern: re.Pattern, aliases: dict[str, str]) -> list[tuple[int, int, str]]:
    return [(m.start(), m.end(), aliases[m.group(0).lower()]) for m in pattern.finditer(text)]


def main() -> None:
    args = parser(__doc__, config_required=True).parse_args()
    cfg, _ = load(args)
    from corpora.countries import generate_countries_stories
    from kg_pipeline.extraction import MentionExtractor, kg_aliases
    from kg_pipeline.kg_files import kg_entities, read_external_kg

    kg = read_external_kg(cfg.kg.external_kg)
    every_alias = kg_aliases(kg_entities(kg))
    countries = {h for h, r, _ in kg if r == "locatedin"}
    aliases = {a: e for a, e in every_alias.items() if e in countries}
    # longest first, so "united states virgin islands" is one occurrence, not "united states" inside it
    pattern = re.compile(r"\b(" + "|".join(re.escape(a) for a in sorted(aliases, key=len, reverse=True)) + r")\b",
                         re.IGNORECASE)
    stories = generate_countries_stories(countries_dir=cfg.corpus.path, **cfg.corpus.countries.model_dump())
    sentences = sorted({s for story in stories for s in story.sentences})
    report = {"distinct_sentences": len(sentences)}
    extractors = {"spaCy alone": MentionExtractor(cfg.extract.spacy_model),
                  "with the KG's entity ruler": MentionExtractor(cfg.extract.spacy_model, aliases=every_alias)}
    for case, texts in (("as generated", sentences), ("lower case", [s.lower() for s in sentences])):
        for name, extractor in extractors.items():
            found = linked = 0
            missed: dict[str, int] = {}
            for text, (mentions, _) in zip(texts, extractor.parse(texts)):
                spans = {(m.start, m.end, m.entity) for m in mentions}
                for start, end, entity in occurrences(text, pattern, aliases):
                    found += 1
                    if (start, end, entity) in spans or any(m.entity == entity for m in mentions):
                        linked += 1
                    else:
                        missed[entity] = missed.get(entity, 0) + 1
            share = linked / found
            report[f"{case}, {name}"] = {"occurrences": found, "linked": linked, "coverage": round(share, 4),
                                         "countries_never_linked": sorted(missed)[:20]}
            print(f"{case:13s} {name:27s} {linked:6,d} of {found:6,d} country-name occurrences linked: "
                  f"{100 * share:5.1f}%  (e.g. missed: {', '.join(sorted(missed)[:4]) or 'none'})")
    write_report(args, cfg.run.name, report)


if __name__ == "__main__":
    main()
