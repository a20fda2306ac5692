"""Training throughput: the memory model vs a plain BertModel of the same size.

Both train on the same batches of a dataset stage's examples. The plain
encoder reads every segment independently (no memory, no KG, no decoder)
with a token-level loss, the usual way to run a BERT over long inputs in
chunks; the memory model runs its full forward (memory write and read, KG
fusion, answer decoder). Tokens/s counts real (non-pad) context and question
tokens, the same for both, measured alternately in one process.

    python benchmarks/throughput.py --config conf/demo.yaml --steps 30
"""
from __future__ import annotations

import json
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import BertConfig, BertModel

import common
from stmem.batch import collate
from stmem.model import MemoryQA, Vocab
from stmem.train import load_examples
from stmem.layout import split_file


class PlainEncoder(torch.nn.Module):
    """BertModel over each segment, predicting each token from its state (tied head)."""

    def __init__(self, model: MemoryQA):
        super().__init__()
        c = model.backbone.model.config
        self.bert = BertModel(BertConfig(vocab_size=c.vocab_size, hidden_size=c.hidden_size,
                                         num_hidden_layers=c.num_hidden_layers,
                                         num_attention_heads=c.num_attention_heads,
                                         intermediate_size=c.intermediate_size,
                                         max_position_embeddings=c.max_position_embeddings,
                                         pad_token_id=c.pad_token_id), add_pooling_layer=False)
        self.pad = c.pad_token_id

    def forward(self, batch: dict) -> torch.Tensor:
        seg = batch["segments"].flatten(0, 1)
        seg = seg[(seg != self.pad).any(dim=1)]  # real segments only, as the memory model skips empty ones
        q = batch["question"]
        width = max(seg.shape[1], q.shape[1])
        ids = torch.cat([F.pad(seg, (0, width - seg.shape[1]), value=self.pad),
                         F.pad(q, (0, width - q.shape[1]), value=self.pad)])
        h = self.bert(input_ids=ids, attention_mask=(ids != self.pad).long()).last_hidden_state
        logits = h @ self.bert.get_input_embeddings().weight.T
        return F.cross_entropy(logits.flatten(0, 1), ids.flatten(), ignore_index=self.pad)


def tokens(batch: dict, pad: int) -> int:
    return int((batch["segments"] != pad).sum() + (batch["question"] != pad).sum())


def main() -> int:
    ap = common.parser(__doc__)
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    cfg, layout = common.load(args)
    torch.manual_seed(cfg.run.seed)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    ds, kg = layout.stage_dir("dataset"), layout.stage_dir("kg")
    info = json.loads((ds / "dataset_info.json").read_text())
    emb = load_file(str(kg / "entity_embeddings.safetensors"))["entity_embeddings"] if cfg.model.kg_fusion else None
    vocab = Vocab.from_dataset(info, emb)
    device = common.device()
    memory_model = MemoryQA(cfg.model, vocab, emb).to(device).train()
    plain = PlainEncoder(memory_model).to(device).train()
    examples = load_examples(split_file(ds, "train"))
    bs = cfg.train.batch_size
    batches = [collate(examples[i:i + bs], vocab.pad_id, vocab.segment_len)
               for i in range(0, min(len(examples), bs * args.steps), bs)]
    tps = common.alternate_training({"memory": memory_model, "plain": plain}, batches, device,
                                    lambda b: tokens(b, vocab.pad_id), lr=1e-4)
    report = {"device": str(device), "timed_steps": len(batches) - 2, "tokens_per_second": {k: round(v, 1) for k, v in tps.items()},
              "ratio_memory_over_plain": round(tps["memory"] / tps["plain"], 3),
              "parameters": {"memory": sum(p.numel() for p in memory_model.parameters()),
                             "plain": sum(p.numel() for p in plain.parameters())}}
    print(json.dumps(report, indent=2))
    common.write_report(args, cfg.run.name, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
