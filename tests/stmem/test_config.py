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
    ("train={batch_by: story, segment_curriculum: [2]}", ["train.segment_curriculum", "train.batch_by: story"]),
    ("train.batch_by=stories", ["train.batch_by", "story"]),
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
    # another component by name replaces the base's whole: a routed memory's route means nothing to tokens
    (tmp_path / "other.yaml").write_text("extends: mid.yaml\nmodel: {memory: {type: tokens, slots: 4}}\n")
    assert load_config(tmp_path / "other.yaml").model.memory.model_dump() == {"type": "tokens", "slots": 4}
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


def _refused(tmp_path, text: str) -> str:
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_yaml_aliases_are_refused_in_files_and_overrides(tmp_path):
    # a "billion laughs": nine levels of nine aliases each, a few hundred bytes that expand to gigabytes
    # when the stage keys hash the section; the allow-listed kg.model_kwargs.dropout takes any value
    levels = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]'] + [
        f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi")]
    bomb = "kg:\n  model_kwargs:\n    dropout:\n" + "".join(f"      {line}\n" for line in levels)
    assert _refused(tmp_path, bomb) == f"{tmp_path / 'c.yaml'}:4: YAML anchors and aliases (&, *) are not accepted in a config"
    # an anchor alone too, and in a --set value
    assert ":2: YAML anchors" in _refused(tmp_path, "run: {seed: 1}\ntrain: &t\n  epochs: 2\n")
    with pytest.raises(ConfigError, match=r"^--set kg.model_kwargs: YAML anchors and aliases"):
        load_config(None, ["kg.model_kwargs={embedding_dim: &d 8, dropout: *d}"])


def test_duplicate_keys_are_refused(tmp_path):
    assert _refused(tmp_path, "train:\n  epochs: 2\n  lr: 0.1\n  epochs: 3\n") == \
        f"{tmp_path / 'c.yaml'}:4: duplicate key 'epochs'"
    assert ":3: duplicate key 'train'" in _refused(tmp_path, "train: {epochs: 2}\nrun: {seed: 1}\ntrain: {lr: 0.1}\n")
    with pytest.raises(ConfigError, match=r"^--set kg.model_kwargs: duplicate key 'dropout'$"):
        load_config(None, ["kg.model_kwargs={dropout: 0.1, dropout: 0.2}"])


def test_exponent_numbers_are_floats(tmp_path):
    # YAML 1.1 reads a number without a dot as a string
    cfg = load_config(None, ["train.lr=1e-4", "train.weight_decay=5E-3", "train.grad_clip=1e4", "kg.seed=1"])
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.grad_clip) == (1e-4, 5e-3, 1e4)
    f = tmp_path / "c.yaml"
    f.write_text("train: {lr: 3e-4, weight_decay: 1.5e2}\n")
    assert (load_config(f).train.lr, load_config(f).train.weight_decay) == (3e-4, 150.0)
    # a real string is still a schema error naming the key
    with pytest.raises(ConfigError, match=r"invalid value for 'train.lr': .* \(got '1e-4x'\)"):
        load_config(None, ["train.lr=1e-4x"])


def test_invalid_or_too_deep_yaml_names_the_option_or_file(tmp_path):
    with pytest.raises(ConfigError, match=r"^--set train.lr: not valid YAML: expected ',' or '\]'"):
        load_config(None, ["train.lr=[1"])
    deep = "[" * 20000 + "]" * 20000
    with pytest.raises(ConfigError, match=r"^--set kg.model_kwargs: nested more than 32 levels deep$"):
        load_config(None, [f"kg.model_kwargs={{dropout: {deep}}}"])
    assert _refused(tmp_path, f"kg:\n  model_kwargs:\n    dropout: {deep}\n") == \
        f"{tmp_path / 'c.yaml'}:3: nested more than 32 levels deep"
    block = "".join(f"{'  ' * i}k{i}:\n" for i in range(1000))  # block style: indentation, not brackets
    assert "nested more than 32 levels deep" in _refused(tmp_path, block)


def test_run_name_length_and_quote_in_run_root(tmp_path):
    # a file system takes 255 bytes a name: mkdir would fail with "File name too long"
    with pytest.raises(ConfigError, match=r"'run.name': String should have at most 128 characters \(got 'aaa.*\.\.\.\)$"):
        load_config(None, ["run.name=" + "a" * 300])
    # MLflow's run search in the train stage quotes the run directory in '...'
    with pytest.raises(ConfigError, match=r"'run.root': .*it's holds a ' \(quote\), which MLflow's run search"):
        load_config(None, [f"run.root={tmp_path}/it's"])
    assert load_config(None, [f'run.root={tmp_path}/say "x"']).run.root.endswith('"x"')
