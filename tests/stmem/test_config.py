import pytest

from stmem.config import ConfigError, load_config
from tests.conftest import REPO, TINY_CONFIG


def test_defaults_and_overrides():
    cfg = load_config(None, ["train.epochs=3", "model.memory=false", "kg.model_kwargs={embedding_dim: 4}"])
    assert cfg.train.epochs == 3 and cfg.model.memory is False
    assert cfg.kg.model_kwargs == {"embedding_dim": 4}


def test_yaml_file_is_read():
    cfg = load_config(TINY_CONFIG)
    assert cfg.run.name == "tiny" and cfg.model.hidden_size == 32


@pytest.mark.parametrize("path", sorted((REPO / "conf").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_is_valid(path):
    load_config(path)


@pytest.mark.parametrize("override, words", [
    ("train.epochz=3", ["unknown config key", "train.epochz"]),
    ("nosuchsection.x=1", ["unknown config key", "nosuchsection"]),
    ("train.epochs=abc", ["train.epochs", "integer"]),
    ("train.epochs='5'", ["train.epochs", "integer"]),  # strict: a string is not an int
    ("train.device=tpu", ["train.device"]),
    ("model.hidden_size=30", ["divisible"]),
    ("corpus.format=babi", ["corpus.path"]),
    ("epochs", ["key=value"]),
    ("train.swap_words=[[mary]]", ["train.swap_words[0]", "two words"]),
    ("train.swap_tasks=[qa1]", ["train.swap_tasks", "train.swap_words"]),
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
