"""The project's own demo corpus: deterministic bAbI-style stories.

People move between places, one move a sentence (as in bAbI qa1), and
questions at evenly spaced points of each story ask where a person is now.
Most questions ask about someone who did not move in the sentence just
before the question, so the fact that answers lies segments back: a model
that reads the story one sentence per segment has to carry it in memory, and
one that sees only the last sentence can do little better than guess a place.
A share of questions (``recent_fraction``) ask about the last sentence's
person: the foothold from which training learns to read and write the memory.
"""
from __future__ import annotations

import random

from corpora.schema import Story

PEOPLE = ["Mary", "John", "Sandra", "Daniel", "Emma", "Oliver", "Sophia", "Liam"]
PLACES = ["kitchen", "garden", "office", "bathroom", "bedroom", "hallway", "cellar", "garage"]
MOVES = ["moved to", "went to", "journeyed to", "travelled to"]


def _story(rng: random.Random, story_id: str, split: str, n_sentences: int, n_questions: int,
           n_people: int, n_places: int, recent_fraction: float) -> Story:
    # A fixed cast, as in bAbI qa1: the same people and places in every story
    people, places = PEOPLE[:n_people], PLACES[:n_places]
    where: dict[str, str] = {}  # person -> place
    where_fact: dict[str, int] = {}  # person -> sentence index of their last move
    story = Story(story_id=story_id, task="demo", split=split)
    # As in bAbI, questions come during the story, here at evenly spaced points,
    # so contexts range from a couple of sentences to the whole story.
    ask_at = {round(n_sentences * (i + 1) / n_questions) for i in range(n_questions)}
    last = None
    for n in range(1, n_sentences + 1):
        person = rng.choice(people)
        place = rng.choice([p for p in places if p != where.get(person)])
        where[person], where_fact[person], last = place, n - 1, person
        story.sentences.append(f"{person} {rng.choice(MOVES)} the {place}.")
        if n not in ask_at:
            continue
        earlier = [p for p in where if p != last]
        if not earlier or rng.random() < recent_fraction:
            asked = last  # the fact is in the last sentence: no memory needed
        else:
            asked = rng.choice(earlier)  # a fact at least two sentences back
        story.questions.append(f"Where is {asked}?")
        story.answers.append(where[asked])
        story.question_positions.append(n)
        story.supporting.append([where_fact[asked]])
    return story


def generate_demo(*, train_stories: int, val_stories: int, test_stories: int,
                  sentences_per_story: int, questions_per_story: int, people_per_story: int = 3,
                  places_per_story: int = 6, recent_fraction: float = 0.25, seed: int) -> list[Story]:
    """Generate the demo corpus; the same arguments give the same stories."""
    if not 1 <= people_per_story <= len(PEOPLE):
        raise ValueError(f"people_per_story must be 1..{len(PEOPLE)}")
    if not 2 <= places_per_story <= len(PLACES):
        raise ValueError(f"places_per_story must be 2..{len(PLACES)}")
    rng = random.Random(seed)
    stories = []
    for split, n in (("train", train_stories), ("val", val_stories), ("test", test_stories)):
        for i in range(n):
            stories.append(_story(rng, f"demo/{split}/{i}", split, sentences_per_story, questions_per_story,
                                  people_per_story, places_per_story, recent_fraction))
    return stories
