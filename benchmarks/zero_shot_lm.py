"""A pretrained causal LM answering zero-shot with the whole context in its window: the reference row
beside the memory model (issue 26; BABILong reports SmolLM2-360M this way).

Each test question of the run's corpus (the ingest stage's ``corpus.parquet``: every sentence before
the question, background included, nothing cut) goes to the LM through its chat template, after
BABILong's instruction for the task kind, and the LM generates greedily. As BABILong scores, an
answer is right when the gold word is in the generated text and no other answer of the test set is.

    python benchmarks/zero_shot_lm.py --config conf/babilong-smollm2-qa1.yaml --limit 200
"""
from __future__ import annotations

import json
import re
import sys
import time

import torch

import common
from corpora import read_corpus

# BABILong's instruction for qa1-qa2 (booydar/babilong, prompts), shortened to what a 135M model can use
INSTRUCTION = ("I will give you context with the facts about positions of different persons hidden in some random "
               "text and a question. You need to answer the question based only on the information from the "
               "facts. If a person was in different locations, use the latest location to answer the question.")
POST = "Answer with the location only, in one word."


def right(generated: str, gold: str, labels: set[str]) -> bool:
    words = set(re.findall(r"[a-z]+", generated.lower()))
    return gold in words and not (words & (labels - {gold}))


def main() -> int:
    ap = common.parser(__doc__, config_required=True)
    ap.add_argument("--limit", type=int, help="the first N test questions (default: all)")
    ap.add_argument("--max-new-tokens", type=int, default=12)
    args = ap.parse_args()
    cfg, layout = common.load(args)
    if not cfg.model.backbone.path:
        raise SystemExit(f"{args.config}: model.backbone.path must name a pretrained causal LM directory")
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(cfg.model.backbone.path)
    lm = AutoModelForCausalLM.from_pretrained(cfg.model.backbone.path, use_safetensors=True).eval()
    asked = [(s, q) for s in read_corpus(layout.corpus) if s.split == "test" for q in range(len(s.questions))]
    labels = {s.answers[q].lower() for s, q in asked}
    asked = asked[:args.limit]
    started, correct, tokens, outputs = time.perf_counter(), 0, [], []
    for story, q in asked:
        context = " ".join(story.sentences[:story.question_positions[q]])
        prompt = f"{INSTRUCTION}\n\n<context>\n{context}\n</context>\n\nQuestion: {story.questions[q]}\n{POST}"
        ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)
        with torch.no_grad():
            out = lm.generate(**ids, max_new_tokens=args.max_new_tokens, do_sample=False,
                              pad_token_id=tok.pad_token_id)
        text = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        ok = right(text, story.answers[q].lower(), labels)
        correct += ok
        tokens.append(ids["input_ids"].shape[1])
        if len(outputs) < 20:
            outputs.append({"question": story.questions[q], "gold": story.answers[q], "generated": text, "right": ok})
    report = {"model": cfg.model.backbone.path, "questions": len(asked), "accuracy": round(correct / len(asked), 4),
              "prompt_tokens": {"mean": round(sum(tokens) / len(tokens), 1), "max": max(tokens)},
              "seconds": round(time.perf_counter() - started, 1), "examples": outputs}
    print(json.dumps({k: v for k, v in report.items() if k != "examples"}, indent=2))
    common.write_report(args, cfg.run.name, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
