import pytest

from stmem.config import ConfigError, load_config
from tests.conftest import REPO, TINY_CONFIG


def test_defaults_and_overrides():
    cfg = load_config(None, ["train.epochs=3", "model.memory={type: none}", "kg.model_kwargs={embedding_dim: 4}"])
    assert cfg.train.epochs == 3 and cfg.model.memory.type == "none" and cfg.model.slots == 0
    assert cfg.kg.model_kwargs == {"embedding_dim": 4}
    # a memory setting without a type is the routed memory's
    cfg = load_config(None, ["model.memory.slots=16", "model.memory.route=segment"])
    assert cfg.model.memory.type == "routed" and cfg.model.slots == 16 and cfg.model.memory.route == "segment"


def test_yaml_file_is_read():
    cfg = load_config(TINY_CONFIG)
    assert cfg.run.name == "tiny" and cfg.model.backbone.hidden_size == 32


@pytest.mark.parametrize("path", sorted((REPO / "conf").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_is_valid(path):
    load_config(path)


@pytest.mark.parametrize("override, words", [
    ("train.epochz=3", ["unknown config key", "train.epochz"]),
    ("nosuchsection.x=1", ["unknown config key", "nosuchsection"]),
    ("train.epochs=abc", ["train.epochs", "integer"]),
    ("train.epochs='5'", ["train.epochs", "integer"]),  # strict: a string is not an int
    ("train.device=tpu", ["train.device"]),
    ("model.backbone.hidden_size=30", ["divisible"]),
    ("model.memory.type=gated", ["model.memory", "routed"]),
    ("model.memory={type: tokens, route: segment}", ["unknown config key", "model.memory.route"]),
    ("model.memory_slots=8", ["unknown config key", "model.memory_slots"]),
    ("corpus.format=babi", ["corpus.path"]),
    ("epochs", ["key=value"]),
    ("corpus.word_classes=[[mary]]", ["corpus.word_classes[0]", "two words"]),
    ("corpus.word_class_tasks=[qa1]", ["corpus.word_class_tasks", "corpus.word_classes"]),
    ("train.swap_words=true", ["train.swap_words", "corpus.word_classes"]),
    ("run.name=../elsewhere", ["run.name", "pattern"]),  # a run directory never leaves run.root
    ("run.name=/tmp/x", ["run.name"]),
    ("train.restarts=[{epochs: 2}]", ["train.restarts.0.lr", "required"]),
    ("run.stage_timeout={trian: 5}", ["run.stage_timeout.trian"]),
])
def test_bad_values_name_the_key(override, words):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    msg = str(err.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg


def test_unknown_key_in_file_names_file_and_key(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("train:\n  epochs: 2\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown config key 'train\.learning_rate'"):
        load_config(f)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    f = tmp_path / "broken.yaml"
    f.write_text("train:\n  epochs: [1,\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml:\d+: not valid YAML"):
        load_config(f)


def test_section_hash_tracks_only_named_sections():
    a, b = load_config(None), load_config(None, ["train.epochs=1"])
    assert a.section_hash("dataset") == b.section_hash("dataset")
    assert a.section_hash("train") != b.section_hash("train")
    # how a stage runs is not what it makes: the key stays
    c = load_config(None, ["train.num_threads=3", "train.progress=false", "train.checkpoint_every=7"])
    assert a.section_hash("train") == c.section_hash("train")
    assert a.section_hash("run.seed") != load_config(None, ["run.seed=1"]).section_hash("run.seed")


def test_a_config_extends_its_base_key_by_key(tmp_path):
    (tmp_path / "base.yaml").write_text("run: {name: base, seed: 3}\nmodel:\n  backbone: {hidden_size: 64, num_heads: 4}\n"
                                        "  memory: {type: routed, slots: 8}\ntrain: {epochs: 5}\n")
    (tmp_path / "mid.yaml").write_text("extends: base.yaml\nmodel: {memory: {route: segment}}\n")
    (tmp_path / "top.yaml").write_text("extends: mid.yaml\nrun: {name: top}\ntrain: {epochs: 2}\n")
    cfg = load_config(tmp_path / "top.yaml", ["train.lr=0.01"])
    assert (cfg.run.name, cfg.run.seed) == ("top", 3)  # the file's own keys win, the base's others stay
    assert cfg.model.backbone.hidden_size == 64 and cfg.model.slots == 8 and cfg.model.memory.route == "segment"
    assert (cfg.train.epochs, cfg.train.lr) == (2, 0.01)
    (tmp_path / "loop.yaml").write_text("extends: loop2.yaml\n")
    (tmp_path / "loop2.yaml").write_text("extends: loop.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(tmp_path / "loop.yaml")
    (tmp_path / "orphan.yaml").write_text("extends: missing.yaml\n")
    with pytest.raises(ConfigError, match=r"missing\.yaml: config file not found"):
        load_config(tmp_path / "orphan.yaml")


def test_kg_kwargs_outside_the_allow_list_are_refused():
    # PyKEEN would torch.load(weights_only=False) checkpoint_directory/checkpoint_name: a file of the config's choosing
    with pytest.raises(ConfigError, match=r"kg.training_kwargs: checkpoint_directory, checkpoint_name not among"):
        load_config(None, ['kg.training_kwargs={"num_epochs": 1, "checkpoint_name": "x.pt", "checkpoint_directory": "/tmp"}'])
    with pytest.raises(ConfigError, match=r"kg.optimizer_kwargs: params not among"):
        load_config(None, ['kg.optimizer_kwargs={"params": []}'])
    assert load_config(None, ['kg.training_kwargs={"num_epochs": 2, "batch_size": 8}']).kg.training_kwargs["num_epochs"] == 2
