"""The project's own demo corpus: deterministic bAbI-style stories.

People move between places and pick up and drop objects. Questions come at
evenly spaced points of each story and ask where a person or an object is
now. Stories are long, so the fact that answers a question usually lies
several segments back and a model that reads the story in short segments has
to carry it in memory.
"""
from __future__ import annotations

import random

from corpora.schema import Story

PEOPLE = ["Mary", "John", "Sandra", "Daniel", "Emma", "Oliver", "Sophia", "Liam"]
PLACES = ["kitchen", "garden", "office", "bathroom", "bedroom", "hallway", "cellar", "garage"]
OBJECTS = ["apple", "football", "milk", "book", "key", "umbrella"]
MOVES = ["moved to", "went to", "journeyed to", "travelled to"]
TAKES = ["picked up", "grabbed", "took"]
DROPS = ["dropped", "put down", "discarded"]


def _story(rng: random.Random, story_id: str, split: str, n_sentences: int, n_questions: int,
           n_people: int) -> Story:
    people = rng.sample(PEOPLE, n_people)
    objects = rng.sample(OBJECTS, 3)
    where: dict[str, str] = {}  # person -> place
    where_fact: dict[str, int] = {}  # person -> sentence index of their last move
    holder: dict[str, str] = {}  # object -> person holding it
    dropped: dict[str, tuple[str, list[int]]] = {}  # object -> (place, supporting facts)
    took_fact: dict[str, int] = {}
    sentences: list[str] = []
    story = Story(story_id=story_id, task="demo", split=split)
    # As in bAbI, questions come during the story, here at evenly spaced points,
    # so contexts range from a segment or two to the whole story.
    ask_at = {round(n_sentences * (i + 1) / n_questions) for i in range(n_questions)}
    while len(sentences) < n_sentences:
        person = rng.choice(people)
        carrying = [o for o, p in holder.items() if p == person]
        free = [o for o in objects if o not in holder]
        r = rng.random()
        if person in where and carrying and r < 0.15:
            obj = rng.choice(carrying)
            del holder[obj]
            dropped[obj] = (where[person], [where_fact[person], len(sentences)])
            sentences.append(f"{person} {rng.choice(DROPS)} the {obj}.")
        elif person in where and free and r < 0.35:
            obj = rng.choice(free)
            holder[obj] = person
            dropped.pop(obj, None)
            took_fact[obj] = len(sentences)
            sentences.append(f"{person} {rng.choice(TAKES)} the {obj}.")
        else:
            place = rng.choice([p for p in PLACES if p != where.get(person)])
            where[person] = place
            where_fact[person] = len(sentences)
            sentences.append(f"{person} {rng.choice(MOVES)} the {place}.")
        if len(sentences) not in ask_at:
            continue
        candidates: list[tuple[str, str, list[int]]] = []
        for p, place in where.items():
            candidates.append((f"Where is {p}?", place, [where_fact[p]]))
        for obj in objects:
            if obj in holder:
                p = holder[obj]
                candidates.append((f"Where is the {obj}?", where[p], sorted({took_fact[obj], where_fact[p]})))
            elif obj in dropped:
                candidates.append((f"Where is the {obj}?", *dropped[obj]))
        # Half the questions ask about the fact that lies furthest back, half
        # about any person or object: a mix of recent facts (learnable from
        # one segment, a foothold for training) and facts segments back.
        if rng.random() < 0.5:
            rng.shuffle(candidates)
            question, answer, support = min(candidates, key=lambda c: max(c[2]))
        else:
            question, answer, support = rng.choice(candidates)
        story.questions.append(question)
        story.answers.append(answer)
        story.question_positions.append(len(sentences))
        story.supporting.append(support)
    story.sentences = sentences
    return story


def generate_demo(*, train_stories: int, val_stories: int, test_stories: int,
                  sentences_per_story: int, questions_per_story: int, people_per_story: int = 3,
                  seed: int) -> list[Story]:
    """Generate the demo corpus; the same arguments give the same stories."""
    rng = random.Random(seed)
    stories = []
    for split, n in (("train", train_stories), ("val", val_stories), ("test", test_stories)):
        for i in range(n):
            stories.append(_story(rng, f"demo/{split}/{i}", split, sentences_per_story, questions_per_story,
                                  people_per_story))
    return stories
