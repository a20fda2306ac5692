"""Stage 3: corpus + entity mentions + entity index -> tokenised QA examples.

One example per question. Its context (the story sentences before the
question) is tokenised, every token that lies inside a linked entity mention
gets that entity's id, and whole sentences are packed, newest first, into
segments of at most ``segment_len`` tokens, so the last segment is always
full and no fact is cut in two across segments.
"""
from __future__ import annotations

import json
import re
import shutil
from array import array
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

if TYPE_CHECKING:
    import pyarrow.dataset as ds

from corpora.schema import CorpusError, iter_corpus
from stmem.layout import EXAMPLES, SPLITS, split_file

PAD, UNK, BOS, EOS = "[PAD]", "[UNK]", "[CLS]", "[SEP]"
_SPACED_PUNCT = re.compile(r"\s*([^\w\s]|_)\s*")
NO_ENTITY = 0  # entity id 0 means "not linked"; entity row r has id r + 1
# the extract stage's alias table (KG names found in text), kept with the tokenizer: serving links as training did
ENTITY_ALIASES = "entity_aliases.parquet"

EXAMPLE_SCHEMA = pa.schema([
    ("example_id", pa.string()),
    ("story_id", pa.string()),
    ("task", pa.string()),
    ("segments", pa.list_(pa.list_(pa.int32()))),
    ("segment_entities", pa.list_(pa.list_(pa.int32()))),
    ("question", pa.list_(pa.int32())),
    ("question_entities", pa.list_(pa.int32())),
    ("answer_ids", pa.list_(pa.int32())),  # answer tokens followed by EOS
    ("answer", pa.string()),
    ("context_tokens", pa.int32()),
    ("question_type", pa.string()),  # the question's first two words, lower case: "where is", "which subregion"
])
_WORD = re.compile(r"[\w'-]+")


def question_type(question: str) -> str:
    """What kind of question it is, by its first two words ("Which region is X in?" -> "which region"):
    evaluation reports accuracy per type, so one easy kind cannot hide a hard one."""
    return " ".join(_WORD.findall(question.lower())[:2])


@dataclass(frozen=True)
class SpecialIds:
    pad: int
    bos: int
    eos: int
    vocab_size: int

    @classmethod
    def of(cls, tok: Tokenizer, names: dict[str, str] | None = None) -> "SpecialIds":
        """The ids of ``names`` ({"pad": ..., "bos": ..., "eos": ...}, ``dataset.special_tokens``); None: BERT's."""
        names = names or {"pad": PAD, "bos": BOS, "eos": EOS}
        ids = {k: tok.token_to_id(t) for k, t in names.items()}
        missing = [f"{k} {names[k]!r}" for k, i in ids.items() if i is None]
        if missing:
            raise ValueError(f"dataset.special_tokens: the tokenizer has no {', '.join(missing)}"
                             + ("" if names["pad"] != PAD else " (a pretrained tokenizer names its own: set "
                                "dataset.special_tokens)"))
        return cls(ids["pad"], ids["bos"], ids["eos"], vocab_size=tok.get_vocab_size())


def normalize_answer(text: str) -> str:
    """Exact-match form of an answer: lowercase, no spaces around punctuation.

    The WordPiece decoder joins words with spaces and reads each punctuation
    mark as a word of its own, so a generated answer comes back as
    ``western _ europe`` or ``n , w``; this gives ``western_europe`` and
    ``n,w``, the form the gold answers have.
    """
    return _SPACED_PUNCT.sub(r"\1", text.strip().lower())


def decode_answer(tokenizer: Tokenizer, ids: list[int]) -> str:
    """Generated answer token ids -> the answer string (normalized, comparable to gold answers)."""
    return normalize_answer(tokenizer.decode(ids))


def train_tokenizer(texts: Iterable[str], vocab_size: int, spell: Iterable[str] = (),
                    words: Iterable[str] = ()) -> Tokenizer:
    """A lowercase WordPiece tokenizer: every character, then whole words of ``texts``, most frequent first.

    The vocabulary is the same for the same texts, so two builds of one dataset
    give the same token ids (and the same files): tokenizers' own
    WordPieceTrainer breaks ties between equally frequent merges by ids it hands
    out in hash-map order, so its vocabulary differs from one run to the next
    (huggingface/tokenizers#1794), and with it the model's initialisation.
    Words beyond ``vocab_size`` are spelled from their characters (``##``
    pieces), so any text the alphabet covers can be encoded. ``spell``: more texts
    whose characters (not words) join the alphabet, so that words never seen in
    training (dialog bAbI's OOV restaurants, "beijing" with no "j" in training)
    can still be read and generated. ``words``: whole words that join the
    vocabulary after the ranked ones when no text put them there
    (``corpus.word_classes``: a class word the training split never says is
    one token, which swapping trains).
    """
    tok = Tokenizer(models.WordPiece(vocab={UNK: 0}, unk_token=UNK))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()

    def split(text: str) -> Iterator[str]:
        return (w for w, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(text)))

    counts = Counter(w for text in texts for w in split(text))
    named = [w for word in words for w in split(word)]
    chars = sorted({c for w in counts for c in w} | {c for text in spell for w in split(text) for c in w})
    vocab = [PAD, UNK, BOS, EOS, *chars, *(f"##{c}" for c in chars)]
    known = set(vocab)
    ranked = sorted((w for w in counts if w not in known), key=lambda w: (-counts[w], w))
    vocab += ranked[:max(0, vocab_size - len(vocab))]
    have = set(vocab)
    vocab += [w for w in dict.fromkeys(named) if w not in have]
    tok.model = models.WordPiece(vocab={t: i for i, t in enumerate(vocab)}, unk_token=UNK,
                                 max_input_chars_per_word=max(100, max(map(len, [*counts, *named]), default=0)))
    return tok


def load_tokenizer(path: str | Path) -> Tokenizer:
    """``tokenizer.json`` itself or a directory holding one (e.g. a pretrained model)."""
    p = Path(path)
    p = p / "tokenizer.json" if p.is_dir() else p
    if not p.is_file():
        raise FileNotFoundError(f"{p}: tokenizer file not found")
    tok = Tokenizer.from_file(str(p))
    # A pretrained model's tokenizer.json often pads (all-MiniLM-L6-v2: every text to 128 [PAD]) or
    # truncates; a sentence here is one piece of a segment, so neither may happen.
    tok.no_padding()
    tok.no_truncation()
    if isinstance(tok.pre_tokenizer, pre_tokenizers.ByteLevel):
        # A byte-level BPE (GPT-2's, SmolLM2's) spells a word at the start of a text apart from the same word
        # in running text ("bedroom" is two SmolLM2 tokens, " bedroom" one). Every sentence, question and
        # answer is encoded alone here, so each is given the leading space it has in running text.
        tok.pre_tokenizer.add_prefix_space = True
    return tok


class ContextEncoder:
    """Turns sentences plus their entity mentions into token and entity ids.

    Shared by the dataset stage and inference so that a served model sees
    exactly the encoding it was trained on. Encodings are cached by sentence
    text because story corpora repeat sentences many times.
    """

    CACHE_TEXTS = 100_000

    def __init__(self, tokenizer: Tokenizer, entity_rows: dict[str, int]):
        self.tok = tokenizer
        self.entity_rows = entity_rows
        self._cache: dict[str, tuple[list[int], list[tuple[int, int]]]] = {}

    def _encode(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        hit = self._cache.get(text)
        if hit is None:
            if len(self._cache) >= self.CACHE_TEXTS:  # real text repeats little: bounded, not one entry a sentence
                self._cache.clear()
            enc = self.tok.encode(text, add_special_tokens=False)
            hit = self._cache[text] = (enc.ids, enc.offsets)
        return hit

    def encode(self, text: str, mentions: list[tuple[int, int, str]]) -> tuple[list[int], list[int]]:
        """Token ids and per-token entity ids for one sentence.

        ``mentions`` holds (start, end, entity) char spans of that sentence.
        """
        ids, offsets = self._encode(text)
        ents = [NO_ENTITY] * len(ids)
        for start, end, entity in mentions:
            row = self.entity_rows.get(entity)
            if row is None:
                continue
            for i, (a, b) in enumerate(offsets):
                if a < end and b > start:
                    ents[i] = row + 1
        return ids, ents


def segment(sentences: list[tuple[list[int], list[int]]], segment_len: int, max_segments: int | None = None,
            pack: bool = True) -> tuple[list[list[int]], list[list[int]]]:
    """Pack whole sentences, newest first, into segments of at most ``segment_len`` tokens.

    ``sentences`` holds (token ids, entity ids) per sentence, oldest first.
    A fact is never cut in two across segments (binding its halves through
    the memory is needlessly hard); only a sentence longer than a segment is
    split, end-aligned. ``pack=False`` gives every sentence its own segment.
    Returns the newest ``max_segments`` segments (None: all), oldest first.
    """
    cap = max_segments if max_segments is not None else float("inf")
    segs: list[tuple[list[int], list[int]]] = []
    cur_ids: list[int] = []
    cur_ents: list[int] = []
    for ids, ents in reversed(sentences):
        while len(ids) > segment_len:  # too long for one segment: split off its tail
            if cur_ids:
                segs.append((cur_ids, cur_ents))
                cur_ids, cur_ents = [], []
            segs.append((ids[-segment_len:], ents[-segment_len:]))
            ids, ents = ids[:-segment_len], ents[:-segment_len]
        if cur_ids and (not pack or len(cur_ids) + len(ids) > segment_len):
            segs.append((cur_ids, cur_ents))
            cur_ids, cur_ents = [], []
        cur_ids, cur_ents = ids + cur_ids, ents + cur_ents
        if len(segs) >= cap:
            break
    if cur_ids and len(segs) < cap:
        segs.append((cur_ids, cur_ents))
    segs = [s for s in segs if s[0]][:max_segments]
    return [s[0] for s in reversed(segs)], [s[1] for s in reversed(segs)]


def _mentions_per_story(mentions_path: Path) -> Iterator[tuple[str, dict[tuple[str, int], list[tuple[int, int, str]]]]]:
    """(story id, {(source, index): [(start, end, entity)]}) per story, in the file's order, a batch at a time."""
    f = pq.ParquetFile(mentions_path)
    story, spans = None, {}
    for batch in f.iter_batches(batch_size=65536, columns=["story_id", "source", "index", "start", "end", "entity"]):
        for sid, src, idx, a, b, ent in zip(*(c.to_pylist() for c in batch.columns)):
            if sid != story:
                if story is not None:
                    yield story, spans
                story, spans = sid, {}
            spans.setdefault((src, idx), []).append((a, b, ent))
    if story is not None:
        yield story, spans


ROW_GROUP_ROWS = 4096


def examples_dataset(dataset_dir: str | Path) -> ds.Dataset:
    """Every example as one ``pyarrow.dataset``, with the split as a partition column (read lazily)."""
    import pyarrow.dataset as ds  # here, not above: it imports pandas, which answering never needs

    return ds.dataset(Path(dataset_dir) / EXAMPLES, format="parquet", schema=EXAMPLE_SCHEMA.append(
        pa.field("split", pa.string())), partitioning=ds.partitioning(pa.schema([("split", pa.string())]),
                                                                     flavor="hive"))


class _Stats:
    """What ``dataset_card.json`` and the stage summary report, counted as the examples are written."""

    LENGTHS = ("context_tokens", "segments", "question", "answer")  # answer: its tokens and the EOS

    def __init__(self):
        self.counts: dict[str, dict[str, int]] = {split: {} for split in SPLITS}
        self.lengths = {name: array("i") for name in self.LENGTHS}  # per example, for the percentiles
        self.cut_contexts = 0  # contexts longer than max_segments, which keep their newest segments
        self.linked = self.tokens = 0

    def add(self, split: str, row: dict, linked: int, whole_segments: int) -> None:
        self.counts[split][row["task"]] = self.counts[split].get(row["task"], 0) + 1
        for name, n in (("context_tokens", row["context_tokens"]), ("segments", len(row["segments"])),
                        ("question", len(row["question"])), ("answer", len(row["answer_ids"]))):
            self.lengths[name].append(n)
        self.cut_contexts += whole_segments > len(row["segments"])
        self.linked, self.tokens = self.linked + linked, self.tokens + row["context_tokens"]

    def longest(self, name: str) -> int:
        return max(self.lengths[name], default=1) or 1

    def refuse_too_long(self, corpus_path: Path, **limits: int | None) -> None:
        """A ``CorpusError`` when a question or answer is longer than a length the config gave."""
        for key, limit in limits.items():
            name = key.removeprefix("max_").removesuffix("_len")
            over = sum(n > limit for n in self.lengths[name]) if limit else 0
            if over:
                need = self.longest(name)
                what = "answers longer than" if name == "answer" else "questions longer than"
                room = limit - 1 if name == "answer" else limit  # an answer's last place is its EOS
                raise CorpusError(f"{corpus_path}: {over} {what} {room} tokens (longest "
                                  f"{need - (name == 'answer')}): set dataset.{key} to {need} or more, or leave "
                                  f"it out to take it from the data")

    def card(self, info: dict) -> dict:
        """What the dataset holds, for a reader who has not built it: examples per split and task, lengths
        (context tokens and segments, question and answer tokens) by percentile, the contexts cut to
        ``max_segments``, the vocabulary, the share of context tokens linked to a KG entity, and the
        examples' Arrow schema."""
        def percentiles(values: array) -> dict:
            ordered = sorted(values) or [0]
            return {**{f"p{q}": ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] for q in (50, 90, 99)},
                    "max": ordered[-1]}

        return {"examples": {split: sum(c.values()) for split, c in self.counts.items()},
                "examples_per_task": {split: c for split, c in self.counts.items() if c},
                "context_tokens": percentiles(self.lengths["context_tokens"]),
                "lengths": {name: percentiles(self.lengths[name]) for name in ("segments", "question", "answer")},
                "contexts_cut": {"max_segments": info["max_segments"], "examples": self.cut_contexts},
                "vocab_size": info["vocab_size"], "entities": info["num_entities"],
                "linked_token_fraction": round(self.linked / max(1, self.tokens), 4),
                "layout": f"{EXAMPLES}/split=<split>/part-0.parquet (Hive partitioning), zstd, row groups of "
                          f"{info['row_group_rows']} examples",
                "schema": {f.name: str(f.type) for f in EXAMPLE_SCHEMA}}


def _texts(corpus_path: Path, splits: tuple[str, ...], seen: list[int]) -> Iterator[str]:
    """Every text of the given splits, streamed; ``seen[0]`` counts their stories."""
    for stories in iter_corpus(corpus_path):
        for story in stories:
            if story.split in splits:
                seen[0] += 1
                yield from (*story.sentences, *story.questions, *story.answers)


def build_dataset(*, corpus_path: Path, mentions_path: Path, entity_index_path: Path, out_dir: Path,
                  segment_len: int = 24, max_segments: int | None = None, tokenizer: str | None = None,
                  vocab_size: int = 2000, max_question_len: int | None = None, max_answer_len: int | None = None,
                  pack_sentences: bool = True, aliases_path: Path | None = None, words: Iterable[str] = (),
                  special_tokens: dict[str, str] | None = None, row_group_rows: int = ROW_GROUP_ROWS) -> dict:
    """Write the examples (``split_file`` per split), ``tokenizer.json``, ``dataset_info.json``,
    ``dataset_card.json`` (and a copy of the extract stage's ``entity_aliases.parquet``, which the model
    needs to link text as it was linked here).

    The corpus and the mentions are streamed story by story (both are in the
    corpus's story order) and the examples written ``row_group_rows`` at a
    time, so memory does not grow with the corpus.

    Nothing is cut silently. ``max_question_len`` and ``max_answer_len`` (answer
    tokens + EOS) left as None are the longest in the corpus; given, a longer
    question or answer is refused with the count and the length it needs.
    ``max_segments`` None keeps every context whole; given, a longer context
    keeps its newest ``max_segments`` segments, and the card counts them.
    ``words``: whole words the trained tokenizer must hold (``train_tokenizer``). ``special_tokens``: the
    padding, answer-start and answer-end tokens by name (``SpecialIds.of``).
    """
    if tokenizer is None:
        seen = [0]
        # the vocabulary from the train split; the characters of the other splits too (words, never)
        tok = train_tokenizer(_texts(corpus_path, ("train",), seen), vocab_size,
                              spell=_texts(corpus_path, tuple(s for s in SPLITS if s != "train"), [0]), words=words)
        if not seen[0]:  # a given tokenizer can encode a test-only corpus
            raise CorpusError(f"{corpus_path}: no training stories to train a tokenizer on")
    else:
        tok = load_tokenizer(tokenizer)
    special = SpecialIds.of(tok, special_tokens)
    unk = tok.token_to_id(UNK)
    entity_rows = dict(zip(*(pq.read_table(entity_index_path).column(c).to_pylist() for c in ("entity", "row"))))
    encoder = ContextEncoder(tok, entity_rows)
    mentions = _mentions_per_story(mentions_path)
    pending = next(mentions, None)

    stats, tasks = _Stats(), set()
    buffers: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for split in SPLITS:
        split_file(out_dir, split).parent.mkdir(parents=True, exist_ok=True)
    writers = {split: pq.ParquetWriter(split_file(out_dir, split), EXAMPLE_SCHEMA, compression="zstd")
               for split in SPLITS}

    def flush(split: str) -> None:
        writers[split].write_table(pa.Table.from_pylist(buffers[split], schema=EXAMPLE_SCHEMA),
                                   row_group_size=row_group_rows)
        buffers[split] = []

    try:
        for stories in iter_corpus(corpus_path):
            for s in stories:
                spans = {}
                if pending is not None and pending[0] == s.story_id:
                    spans, pending = pending[1], next(mentions, None)
                tasks.add(s.task)
                sent_ids, sent_ents = [], []
                for i, text in enumerate(s.sentences):
                    ids, ents = encoder.encode(text, spans.get(("sentence", i), []))
                    if ids and all(t == special.pad for t in ids):
                        raise CorpusError(f"{corpus_path}: story {s.story_id}, sentence {i}: all {PAD} after "
                                          f"tokenising ({tokenizer or 'the trained tokenizer'}); its text gives "
                                          f"no tokens a model could read")
                    sent_ids.append(ids)
                    sent_ents.append(ents)
                for q, (question, answer, pos) in enumerate(zip(s.questions, s.answers, s.question_positions)):
                    whole, whole_ents = segment(list(zip(sent_ids[:pos], sent_ents[:pos])), segment_len,
                                                pack=pack_sentences)
                    segs, seg_ents = (whole[-max_segments:], whole_ents[-max_segments:]) if max_segments \
                        else (whole, whole_ents)  # the newest segments; the card counts those cut
                    q_ids, q_ents = encoder.encode(question, spans.get(("question", q), []))
                    a_ids = tok.encode(normalize_answer(answer), add_special_tokens=False).ids
                    if unk is not None and unk in a_ids:
                        raise CorpusError(f"{corpus_path}: story {s.story_id}, question {q}: the tokenizer "
                                          f"({tokenizer or 'trained on the train split'}) cannot spell the answer "
                                          f"{answer!r} ({UNK} in it), so no model could generate it")
                    row = {
                        "example_id": f"{s.story_id}/{q}", "story_id": s.story_id, "task": s.task,
                        "segments": segs, "segment_entities": seg_ents,
                        "question": q_ids, "question_entities": q_ents,
                        "answer_ids": a_ids + [special.eos], "answer": normalize_answer(answer),
                        "context_tokens": sum(len(x) for x in sent_ids[:pos]),
                        "question_type": question_type(question),
                    }
                    stats.add(s.split, row, sum(e != NO_ENTITY for x in sent_ents[:pos] for e in x),
                              whole_segments=len(whole))
                    buffers[s.split].append(row)
                    if len(buffers[s.split]) == row_group_rows:
                        flush(s.split)
        if pending is not None:
            raise CorpusError(f"{mentions_path}: the mentions of story {pending[0]!r} are not in the corpus's "
                              f"story order, or not of a story of {corpus_path}; run the extract stage again")
        for split in SPLITS:
            if buffers[split]:
                flush(split)
        stats.refuse_too_long(corpus_path, max_question_len=max_question_len, max_answer_len=max_answer_len)
    except BaseException:
        for w in writers.values():
            w.close()
        shutil.rmtree(out_dir / EXAMPLES)  # bad input leaves nothing half-written
        raise
    for w in writers.values():
        w.close()
    tok.save(str(out_dir / "tokenizer.json"))
    if aliases_path is not None:
        shutil.copy(aliases_path, out_dir / ENTITY_ALIASES)
    if tokenizer is not None and Path(tokenizer).is_dir():
        # keep the pretrained directory's other tokenizer files beside it
        for f in Path(tokenizer).glob("*token*"):
            if f.name != "tokenizer.json":
                shutil.copy(f, out_dir / f.name)
    info = {
        "vocab_size": special.vocab_size, "pad_id": special.pad, "bos_id": special.bos, "eos_id": special.eos,
        "segment_len": segment_len, "pack_sentences": pack_sentences,
        "max_segments": max_segments or stats.longest("segments"),
        "max_question_len": max_question_len or stats.longest("question"),
        "max_answer_len": max_answer_len or stats.longest("answer"), "num_entities": len(entity_rows),
        "tasks": sorted(tasks), "row_group_rows": row_group_rows,
    }
    (out_dir / "dataset_info.json").write_text(json.dumps(info, indent=2) + "\n")
    card = stats.card(info)
    (out_dir / "dataset_card.json").write_text(json.dumps(card, indent=2) + "\n")
    n = len(stats.lengths["segments"])
    return {
        **{f"{split}_examples": count for split, count in card["examples"].items()},
        "vocab_size": special.vocab_size,
        "mean_context_tokens": round(sum(stats.lengths["context_tokens"]) / max(1, n), 1),
        "mean_segments": round(sum(stats.lengths["segments"]) / max(1, n), 2),
        "contexts_cut": stats.cut_contexts,
        "linked_token_fraction": card["linked_token_fraction"],
    }
