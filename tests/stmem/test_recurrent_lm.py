"""The causal LM with a recurrent memory (RMT's layout), on a tiny random Llama: what the memory carries,
where gradients go, the rotary positions of memory tokens, save and reload, and that it learns."""
import random

import pytest
import torch

from stmem.batch import collate
from stmem.recurrent_lm import RecurrentMemoryLM, left_align, positions, tiny_llama

PAD, BOS, EOS, VOCAB = 0, 2, 3, 40


def model(slots=4, bptt=None, seed=0) -> RecurrentMemoryLM:
    torch.manual_seed(seed)
    return RecurrentMemoryLM(tiny_llama(VOCAB), slots=slots, pad_id=PAD, bos_id=BOS, eos_id=EOS, bptt=bptt).eval()


def example(first, middle=(10, 11, 12), last=(13, 14), question=(20, 21), answer=(30,)):
    segs = [list(first), list(middle), list(last)]
    return {"segments": segs, "segment_entities": [[0] * len(s) for s in segs], "question": list(question),
            "question_entities": [0] * len(question), "answer_ids": [*answer, EOS]}


def batch(*examples):
    return collate(list(examples), PAD, 6)


def test_memory_tokens_take_rotary_positions_around_the_segment_and_padding_takes_none():
    # [memory ; segment ; memory] of a row whose segment has 2 real tokens of 4, another's 4 of 4
    k = 2
    ids = torch.tensor([[7, 8, PAD, PAD], [7, 8, 9, 10]])
    real = torch.cat([torch.ones(2, k, dtype=torch.bool), ids != PAD, torch.ones(2, k, dtype=torch.bool)], dim=1)
    tokens = torch.cat([torch.full((2, k), -1), ids, torch.full((2, k), -2)], dim=1)  # -1 read, -2 write
    aligned, mask = left_align(tokens.unsqueeze(-1), real)
    assert aligned.squeeze(-1).tolist() == [[PAD, PAD, -1, -1, 7, 8, -2, -2], [-1, -1, 7, 8, 9, 10, -2, -2]]
    # read memory 0..k-1, the segment's real tokens k..k+n-1, write memory k+n..2k+n-1: the same in both rows
    assert positions(mask).tolist() == [[0, 0, 0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5, 6, 7]]
    assert mask.tolist()[0] == [False, False] + [True] * 6
    # and these are the positions the LM is given when the model writes those segments
    m, seen = model(slots=k), []
    m.lm.model.register_forward_pre_hook(lambda _, args, kwargs: seen.append(kwargs["position_ids"]),
                                         with_kwargs=True)
    with torch.no_grad():
        m.write(m.init_memory.expand(2, -1, -1), ids)
    assert seen[0].tolist() == [[0, 0, 0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5, 6, 7]]


def test_what_the_first_segment_said_reaches_the_answer_through_memory_and_not_without_it():
    a, b = batch(example([4, 5, 6])), batch(example([7, 7, 7]))  # only the first segment differs
    with torch.no_grad():
        with_memory = model()
        assert (with_memory.read_context(a["segments"]) - with_memory.read_context(b["segments"])).abs().max() > 1e-4
        assert abs(with_memory(a).item() - with_memory(b).item()) > 1e-6
        without = model(slots=0)
        assert without(a).item() == pytest.approx(without(b).item(), abs=1e-7)


def test_an_empty_segment_writes_nothing_and_the_memory_before_any_is_the_learned_one():
    m = model()
    short = batch(example([4, 5, 6]), {**example([4, 5, 6]), "segments": [[13, 14]], "segment_entities": [[0, 0]]})
    with torch.no_grad():
        memory = m.read_context(short["segments"])
        alone = m.read_context(batch({**example([4]), "segments": [[13, 14]], "segment_entities": [[0, 0]]})["segments"])
        assert torch.allclose(memory[1], alone[0], atol=1e-6)  # two empty segments in front change nothing
        empty = torch.full((1, 2, 3), PAD)
        assert torch.equal(m.read_context(empty)[0], m.init_memory)


@pytest.mark.parametrize("bptt, reaches", [(None, True), (1, False)], ids=["full", "truncated"])
def test_the_gradient_reaches_the_first_segments_write_only_under_full_backpropagation(bptt, reaches):
    m = model(bptt=bptt).train()
    written = []
    write = m.write

    def keep(memory, ids, ents=None):
        out = write(memory, ids, ents)
        out.retain_grad()
        written.append(out)
        return out

    m.write = keep
    m(batch(example([4, 5, 6]))).backward()
    assert len(written) == 3
    first, last = written[0].grad, written[-1].grad
    assert last is not None and last.abs().sum() > 0
    assert (first is not None and first.abs().sum() > 0) == reaches


def test_save_and_reload_give_identical_answers(tmp_path):
    from safetensors.torch import load_model, save_model

    m = model()
    b = batch(example([4, 5, 6]), example([7, 8], question=(22,)))
    save_model(m, str(tmp_path / "model.safetensors"))
    again = model(seed=1)  # other random weights, then the saved ones
    load_model(again, str(tmp_path / "model.safetensors"))
    with torch.no_grad():
        assert m(b).item() == again(b).item()
    assert m.generate_scored(b) == again.generate_scored(b)


def _recall_task(n: int, seed: int) -> list[dict]:
    """The answer is the word the first of three segments says; the later two are noise."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        key = rng.randrange(30, 36)
        out.append(example([4, key, 5], middle=[rng.randrange(10, 20) for _ in range(3)],
                           last=[rng.randrange(10, 20) for _ in range(2)], question=(21,), answer=(key,)))
    return out


def _accuracy_after_training(slots: int) -> float:
    m = model(slots=slots).train()
    train, test = _recall_task(512, 0), _recall_task(64, 1)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    for epoch in range(6):
        random.Random(epoch).shuffle(train)
        for i in range(0, len(train), 32):
            opt.zero_grad()
            m(batch(*train[i:i + 32])).backward()
            opt.step()
    m.eval()
    answers, _ = m.generate_scored(batch(*test), max_new_tokens=2)
    return sum(a == [e["answer_ids"][0]] for a, e in zip(answers, test)) / len(test)


def test_with_memory_it_learns_what_only_the_memory_can_answer():
    torch.set_num_threads(1)
    with_memory, without = _accuracy_after_training(4), _accuracy_after_training(0)
    # six keys: reading only the last segment is a guess (1/6)
    assert with_memory >= 0.9 and without <= 0.4, (with_memory, without)


CAUSAL = {"head": "causal_lm", "backbone": {"type": "llama", "hidden_size": 32, "num_layers": 2, "num_heads": 4,
                                            "intermediate_size": 64},
          "memory": {"type": "tokens", "slots": 4}, "kg_fusion": False, "dropout": 0.0}


def test_model_head_causal_lm_trains_in_fit_and_its_checkpoint_answers_as_evaluated(tmp_path):
    """`model.head: causal_lm`: fit() trains the causal LM, and the saved checkpoint reloads to the same answers."""
    import json

    from stmem.checkpoint import load_checkpoint
    from stmem.dataset import load_tokenizer
    from stmem.evaluate import predict_answers
    from stmem.layout import split_file
    from stmem.train import fit, load_examples
    from tests.conftest import make_dataset, tiny_config

    ds = make_dataset(tmp_path)
    # checkpoint_every: resume checkpoints, whose best weights keep the LM's tied embeddings and head apart
    summary = fit(tiny_config(CAUSAL, epochs=2, lr=3e-3, checkpoint_every=4), dataset_dir=ds, out_dir=tmp_path / "out")
    model, config = load_checkpoint(tmp_path / "out")
    assert type(model) is RecurrentMemoryLM and config["backbone"]["model_type"] == "llama"
    test = load_examples(split_file(ds, "test"))
    answers = predict_answers(model, test, load_tokenizer(tmp_path / "out" / "tokenizer.json"), batch_size=16,
                              device=torch.device("cpu"))
    accuracy = sum(a == e["answer"] for a, e in zip(answers, test)) / len(test)
    assert accuracy == json.loads((tmp_path / "out" / "eval.json").read_text())["test"]["accuracy"]
    assert summary["test_accuracy"] == accuracy


@pytest.mark.parametrize("change, message", [
    ({"memory": {"type": "routed", "slots": 4}}, "model.memory: the routed memory is read and written at"),
    ({"backbone": {"type": "bert"}}, "model.backbone.type: bert is not a causal LM"),
], ids=["routed", "bert"])
def test_a_memory_or_setting_a_causal_lm_cannot_use_is_refused_naming_it(change, message):
    from stmem.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config("tests/tiny.yaml", [f"model.{k}={v}" for k, v in {**CAUSAL, **change}.items()
                                        if k != "backbone"] + [f"model.backbone={({**CAUSAL['backbone'], **change.get('backbone', {})})}"])


def _vocab():
    from stmem.model import Vocab

    return Vocab(vocab_size=VOCAB, pad_id=PAD, bos_id=BOS, eos_id=EOS, segment_len=6, max_question_len=2,
                 max_answer_len=2)


def _model_config(**change):
    from stmem.config import ModelConfig

    return ModelConfig.model_validate({**CAUSAL, **change})


def test_keep_layers_keeps_a_pretrained_lms_first_layers_and_its_checkpoint_rebuilds_the_short_model(tmp_path):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    tiny_llama(VOCAB, num_layers=3).save_pretrained(tmp_path / "lm")
    pretrained = AutoModelForCausalLM.from_pretrained(tmp_path / "lm")
    m = RecurrentMemoryLM.build(_model_config(backbone={"path": str(tmp_path / "lm"), "keep_layers": 2}), _vocab())
    assert len(m.lm.model.layers) == 2 and m.lm.config.num_hidden_layers == 2
    for kept, original in zip(m.lm.model.layers, pretrained.model.layers):  # the first two, as trained
        assert torch.equal(kept.mlp.up_proj.weight, original.mlp.up_proj.weight)
    again = RecurrentMemoryLM.build(m.cfg, _vocab(), saved=m.saved_backbone())
    assert len(again.lm.model.layers) == 2
    with pytest.raises(ValueError, match="keep_layers: 5, but the model has 3 layers"):
        RecurrentMemoryLM.build(_model_config(backbone={"path": str(tmp_path / "lm"), "keep_layers": 5}), _vocab())


@pytest.mark.parametrize("mode", ["lora", "frozen"])
def test_lora_and_frozen_train_the_memory_and_adapters_only_and_reload_to_the_same_answers(mode, tmp_path):
    from safetensors.torch import load_model, save_model

    torch.manual_seed(0)
    m = RecurrentMemoryLM.build(_model_config(finetune=mode, lora={"r": 4, "alpha": 8.0}), _vocab()).train()
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    adapters = {n for n in trainable if "lora_" in n}
    assert trainable - adapters == {"init_memory", "gate.weight", "gate.bias"}
    # LoRA on each layer's q_proj and v_proj (two matrices each); frozen: no adapters at all
    assert len(adapters) == (2 * 2 * 2 if mode == "lora" else 0)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    b = batch(example([4, 5, 6]), example([7, 8], question=(22,)))
    for _ in range(2):
        opt.zero_grad()
        m(b).backward()
        opt.step()
    changed = {n for n, p in m.named_parameters() if not torch.equal(p, before[n])}
    assert changed <= trainable and {"init_memory", "gate.weight"} <= changed
    assert any("lora_B" in n for n in changed) == (mode == "lora")
    save_model(m.eval(), str(tmp_path / "model.safetensors"))
    torch.manual_seed(1)
    again = RecurrentMemoryLM.build(m.cfg, _vocab(), saved=m.saved_backbone())
    load_model(again, str(tmp_path / "model.safetensors"))  # strict: the adapters' tensors fit
    with torch.no_grad():
        assert m(b).item() == again.eval()(b).item()
    assert m.generate_scored(b) == again.generate_scored(b)


@pytest.mark.parametrize("model, message", [
    ({"finetune": "lora"}, "model.finetune: lora is for model.head: causal_lm"),
    ({"head": "causal_lm", "memory": {"type": "tokens", "slots": 2}, "backbone": {"type": "llama", "keep_layers": 2}},
     "model.backbone.keep_layers: for a pretrained LM"),
    ({"backbone": {"path": "x", "keep_layers": 2}}, "model.backbone.keep_layers: only for a causal LM"),
], ids=["lora-decoder", "keep-from-sizes", "keep-decoder"])
def test_settings_for_a_pretrained_causal_lm_are_refused_elsewhere_naming_the_key(model, message):
    from stmem.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config("tests/tiny.yaml", [f"model.{k}={v}" for k, v in {"kg_fusion": False, **model}.items()])


def test_kg_entities_are_fused_into_the_lms_input_embeddings_of_linked_tokens_in_segments_and_question():
    torch.manual_seed(0)
    table = torch.randn(3, 8)  # the KG stage's embeddings of 3 entities (ids 1..3 in the examples)
    m = RecurrentMemoryLM(tiny_llama(VOCAB), slots=4, pad_id=PAD, bos_id=BOS, eos_id=EOS, entity_embeddings=table)

    def linked(first_ents, question_ents=(0, 0)):
        e = example([4, 5, 6])
        e["segment_entities"][0] = list(first_ents)
        e["question_entities"] = list(question_ents)
        return batch(e)

    plain, first, other = linked([0, 0, 0]), linked([0, 1, 0]), linked([0, 2, 0])
    with torch.no_grad():
        # an entity linked in the first segment reaches the memory, and which entity it is matters
        memories = [m.read_context(b["segments"], b["segment_entities"]) for b in (plain, first, other)]
        assert (memories[0] - memories[1]).abs().max() > 1e-4 and (memories[1] - memories[2]).abs().max() > 1e-4
        assert m(linked([0, 0, 0], (3, 0))).item() != m(plain).item()  # and one in the question
    m(first).backward()
    assert m.fusion.proj.weight.grad.abs().sum() > 0 and m.fusion.gate.weight.grad.abs().sum() > 0
    # without fusion the entity ids are not read
    torch.manual_seed(0)
    bare = RecurrentMemoryLM(tiny_llama(VOCAB), slots=4, pad_id=PAD, bos_id=BOS, eos_id=EOS)
    with torch.no_grad():
        assert bare(plain).item() == bare(first).item()
