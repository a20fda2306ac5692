"""Training throughput of a causal LM with the recurrent memory against plain fine-tuning of the same LM.

Both train on the same batches of a dataset stage's examples (a ``model.head: causal_lm`` config). The
memory model (stmem/recurrent_lm.py) reads the context a segment at a time between its memory tokens
and is trained on the answer; the plain ``*ForCausalLM``, loaded from the same weights, reads each
example whole as one left-padded sequence, [context ; question ; BOS ; answer], trained on the answer
too: the usual fine-tuning of an LM whose window holds the context. Tokens/s counts the real context,
question and answer tokens, the same for both; the two are timed alternately in one process, so a
busy machine slows both alike (issue 26 asks for the memory model at >= 0.75x the plain one).

    python benchmarks/lm_throughput.py --config conf/babilong-smollm2-qa1.yaml --steps 12
"""
from __future__ import annotations

import json
import sys

import torch
import torch.nn.functional as F

import common
from stmem.batch import collate
from stmem.layout import split_file
from stmem.model import Vocab
from stmem.recurrent_lm import RecurrentMemoryLM, left_align, positions
from stmem.train import load_examples


class PlainLM(torch.nn.Module):
    """The LM reading [context ; question ; BOS ; answer] in one sequence, cross-entropy on the answer."""

    def __init__(self, lm: torch.nn.Module, pad: int, bos: int):
        super().__init__()
        self.lm, self.pad, self.bos = lm, pad, bos

    def forward(self, batch: dict) -> torch.Tensor:
        answer = batch["answer_ids"]
        bos = answer.new_full((len(answer), 1), self.bos)
        ids = torch.cat([batch["segments"].flatten(1), batch["question"], bos, answer], dim=1)
        ids, mask = left_align(ids, ids != self.pad)  # as the memory model's reads are: answers end each row
        # the loss on the answer positions only: the last answer.shape[1] tokens, predicted from the one before
        target = torch.where(mask, ids, self.pad)[:, -answer.shape[1]:]
        # logits for the answer's positions only (as the memory model computes them), not the whole window
        logits = self.lm(input_ids=ids, attention_mask=mask.long(), position_ids=positions(mask),
                         logits_to_keep=answer.shape[1] + 1).logits
        return F.cross_entropy(logits[:, :-1].transpose(1, 2), target, ignore_index=self.pad)


def tokens(batch: dict, pad: int) -> int:
    return int(sum((batch[k] != pad).sum() for k in ("segments", "question", "answer_ids")))


def main() -> int:
    ap = common.parser(__doc__, config_required=True)
    ap.add_argument("--steps", type=int, default=12)
    args = ap.parse_args()
    cfg, layout = common.load(args)
    if cfg.model.head != "causal_lm":
        raise SystemExit(f"{args.config}: model.head must be causal_lm")
    torch.manual_seed(cfg.run.seed)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    ds = layout.stage_dir("dataset")
    vocab = Vocab.from_dataset(json.loads((ds / "dataset_info.json").read_text()), None)
    device = common.device()
    memory_model = RecurrentMemoryLM.build(cfg.model, vocab).to(device).train()
    full = cfg.model.model_copy(update={"finetune": "full"})  # plain fine-tuning trains every weight
    plain = PlainLM(RecurrentMemoryLM.build(full, vocab).lm, vocab.pad_id, vocab.bos_id).to(device).train()
    examples = load_examples(split_file(ds, "train"))
    bs = cfg.train.batch_size
    batches = [collate(examples[i:i + bs], vocab.pad_id, vocab.segment_len)
               for i in range(0, min(len(examples), bs * args.steps), bs)]
    models = {"memory": memory_model, "plain": plain}
    tps = common.alternate_training(models, batches, device, lambda b: tokens(b, vocab.pad_id), lr=1e-5)
    report = {"device": str(device), "timed_steps": len(batches) - 2, "batch_size": bs,
              "finetune": cfg.model.finetune, "layers": memory_model.lm.config.num_hidden_layers,
              "tokens_per_second": {k: round(v, 1) for k, v in tps.items()},
              "ratio_memory_over_plain": round(tps["memory"] / tps["plain"], 3),
              "trainable_parameters": {k: sum(p.numel() for p in m.parameters() if p.requires_grad)
                                       for k, m in models.items()}}
    print(json.dumps(report, indent=2))
    common.write_report(args, cfg.run.name, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
