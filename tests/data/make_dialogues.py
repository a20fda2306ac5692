"""Write tests/data/dialogues.jsonl: small dialogues whose answers were said several turns back.

The user states a few personal facts (where they live, their dog's name,
their favourite colour) among small talk and other people's facts of the same
kind, then asks about one or two of their own facts. Each answer is one
lower-case word that is said only in an earlier turn, at least half of them
three or more turns before the question, so a model without memory of the
earlier turns can only guess (1 in 8). The assistant does not reply to the
user's own facts, so each of its replies is a question worth asking.
Deterministic: the same seed writes the same bytes.

    python tests/data/make_dialogues.py [--n 2500] [--seed 0] [--out tests/data/dialogues.jsonl]
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

OUT = Path(__file__).with_name("dialogues.jsonl")

# kind: (values, how the user states it, how they ask for it, someone else's fact of that kind)
FACTS = {
    "city": (["Paris", "Rome", "Berlin", "Madrid", "Lisbon", "Vienna", "Prague", "Dublin"],
             ["I live in {}.", "My home is in {}.", "I moved to {} last year."],
             ["Where do I live?", "Which city is my home in?"],
             "My sister lives in {}."),
    "pet": (["Rex", "Max", "Bella", "Luna", "Milo", "Daisy", "Rocky", "Coco"],
            ["My dog is called {}.", "I have a dog named {}."],
            ["What is my dog called?", "What is my dog's name?"],
            "My neighbour's dog is called {}."),
    "colour": (["red", "blue", "green", "yellow", "purple", "orange", "pink", "black"],
               ["My favourite colour is {}.", "I like {} best of all colours."],
               ["What is my favourite colour?", "Which colour do I like best?"],
               "My brother likes {} best."),
}
# one reply per kind of turn, so a reply can be learnt from the turn it answers; the answers that need
# the memory are the facts asked for later
NOTED = "Noted."
SMALL_TALK = [("What a nice day.", "Indeed."), ("I had coffee this morning.", "Sounds good."),
              ("Work was busy today.", "I hope it gets quieter."), ("The train was late again.", "That is annoying."),
              ("I am reading a good book.", "Enjoy it."), ("It might rain later.", "Take an umbrella.")]
OTHER_REPLY = "Nice."


def make_dialogue(rng: random.Random, dialogue_id: str) -> dict:
    exchanges = rng.choice([3, 4, 5])  # 6, 8 or 10 turns
    n_questions = 1 if exchanges == 3 else rng.choice([1, 2])
    n_statements = exchanges - n_questions
    kinds = rng.sample(sorted(FACTS), rng.randint(n_questions, min(3, n_statements)))
    own = {kind: rng.choice(FACTS[kind][0]) for kind in kinds}
    statements = [(rng.choice(FACTS[k][1]).format(own[k]), NOTED) for k in kinds]
    for _ in range(n_statements - len(kinds)):
        if rng.random() < 0.4:  # someone else's fact: the same kind of word, not the answer
            kind = rng.choice(kinds)
            other = rng.choice([v for v in FACTS[kind][0] if v != own[kind]])
            statements.append((FACTS[kind][3].format(other), OTHER_REPLY))
        else:
            statements.append(rng.choice(SMALL_TALK))
    rng.shuffle(statements)
    asked = rng.sample(kinds, n_questions)
    # the facts asked about were said longer ago more often than not: ask about the oldest first
    asked.sort(key=lambda k: next(i for i, (text, _) in enumerate(statements) if own[k] in text))
    questions = [(rng.choice(FACTS[k][2]), own[k].lower()) for k in asked]
    turns = []
    for user, assistant in statements + questions:
        turns.append({"speaker": "user", "text": user})
        if assistant != NOTED:  # the user goes on without a reply: only replies that say something are asked
            turns.append({"speaker": "assistant", "text": assistant})
    return {"id": dialogue_id, "turns": turns}


def make_dialogues(n: int = 2500, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [make_dialogue(rng, f"dlg{i:04d}") for i in range(n)]


def write(path: Path = OUT, n: int = 2500, seed: int = 0) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for d in make_dialogues(n, seed):
            f.write(json.dumps(d, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    write(a.out, a.n, a.seed)
