"""A task whose answer needs a knowledge graph: which region is a person in?

People travel between countries ("Mary travelled to France."); questions ask
for the region or subregion the person is in now ("Which subregion is Mary
in?" -> ``western_europe``). Only countries appear in the text, so the answer
comes from the Countries KG (Bouchard et al. 2015): country ``locatedin``
subregion ``locatedin`` region. A seeded fraction of the countries is held out
for the test split and never occurs in train or val stories, so test
questions cannot be answered from country names memorised in training, only
through the KG (which holds every country).

Answers are the KG labels (``western_europe``, ``south-eastern_asia``,
``europe``), so exact match is unambiguous.
"""
from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from corpora.schema import CorpusError, Story

PEOPLE = ["Mary", "John", "Sandra", "Daniel", "Emma", "Oliver", "Sophia", "Liam"]
# sentences about something else, between the moves (the countries variant with distractors)
DISTRACTORS = ["{} drank a cup of tea.", "{} read the newspaper.", "{} called a friend.", "{} went for a walk.",
               "{} cooked dinner.", "{} wrote a letter.", "{} listened to the radio.", "{} took a photo."]
TASKS = ("countries_region", "countries_subregion")
_SPLIT_FILES = ("train.txt", "valid.txt", "test.txt")
_SMALL_WORDS = {"and", "of", "the"}
_NAMES = {"dr_congo": "DR Congo"}


def natural_name(label: str) -> str:
    """``united_states_virgin_islands`` -> ``United States Virgin Islands``."""
    if label in _NAMES:
        return _NAMES[label]
    out = []
    for i, word in enumerate(label.split("_")):
        if i and word in _SMALL_WORDS:
            out.append(word)
        else:
            out.append("-".join(part[:1].upper() + part[1:] for part in word.split("-")))
    return " ".join(out)


@dataclass(frozen=True)
class CountriesKG:
    subregion: dict[str, str]  # country -> subregion label
    region: dict[str, str]  # country -> region label (also for countries without a subregion)
    excluded: tuple[str, ...]  # countries left out of stories (see load_countries_kg)


def _kg_files(countries_dir: Path) -> list[Path]:
    for d in (countries_dir / "Countries_S1", countries_dir):
        if all((d / f).is_file() for f in _SPLIT_FILES):
            return [d / f for f in _SPLIT_FILES]
    raise CorpusError(f"{countries_dir}: Countries KG not found (expected Countries_S1/"
                      f"{{{','.join(_SPLIT_FILES)}}} of head<TAB>relation<TAB>tail lines)")


def load_countries_kg(countries_dir: str | Path) -> CountriesKG:
    """Read the union of Countries_S1 train/valid/test and place every country.

    Regions are ``locatedin`` targets that lie in nothing else; subregions are
    targets that lie in a region; countries are the entities with a
    ``locatedin`` fact that nothing lies in. (The graph has a self-loop
    ``micronesia locatedin micronesia``: the label names both the subregion and
    the country, so it is treated as the subregion only.) A country linked
    directly to a region, with no subregion, gets a region but no subregion.
    Countries whose name contains a region or subregion name, even inside a
    word (South Africa, French Polynesia, Central African Republic), are
    listed in ``excluded``: their sentence would give the answer away.
    """
    countries_dir = Path(countries_dir)
    located: dict[str, set[str]] = defaultdict(set)
    for path in _kg_files(countries_dir):
        with open(path, encoding="utf-8") as f:
            for lineno, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                parts = raw.rstrip("\n").split("\t")
                if len(parts) != 3:
                    raise CorpusError(f"{path}:{lineno}: expected head<TAB>relation<TAB>tail")
                head, rel, tail = parts
                if rel == "locatedin" and head != tail:
                    located[head].add(tail)
    targets = {t for ts in located.values() for t in ts}
    regions = {t for t in targets if t not in located}
    subregions = {t for t in targets if located.get(t, set()) & regions}
    subregion: dict[str, str] = {}
    region: dict[str, str] = {}
    for country in sorted(set(located) - targets):
        subs = sorted(located[country] & subregions)
        regs = sorted(located[country] & regions)
        if len(subs) > 1:
            raise CorpusError(f"{countries_dir}: country {country!r} lies in several subregions {subs}")
        if subs:
            subregion[country] = subs[0]
            regs = sorted(located[subs[0]] & regions) or regs
        if len(regs) != 1:
            raise CorpusError(f"{countries_dir}: country {country!r} lies in regions {regs}")
        region[country] = regs[0]
    if not region:
        raise CorpusError(f"{countries_dir}: no country with a locatedin region")
    answer_names = [natural_name(a).lower() for a in sorted(regions | subregions)]
    excluded = tuple(c for c in sorted(region) if any(a in natural_name(c).lower() for a in answer_names))
    return CountriesKG(subregion=subregion, region=region, excluded=excluded)


def split_countries(kg: CountriesKG, test_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Seeded (train, test) split of the usable countries, stratified by subregion.

    Each subregion sends ``round(test_fraction * n)`` of its n countries to
    test but keeps at least one for training, so every answer label occurs in
    training.
    """
    rng = random.Random(f"{seed}/countries-split")
    groups: dict[str, list[str]] = defaultdict(list)
    for c in sorted(kg.region):
        if c not in kg.excluded:
            groups[kg.subregion.get(c, kg.region[c])].append(c)
    train, test = [], []
    for key in sorted(groups):
        members = groups[key]
        rng.shuffle(members)
        n_test = min(len(members) - 1, round(test_fraction * len(members)))
        test += members[:n_test]
        train += members[n_test:]
    return sorted(train), sorted(test)


@dataclass(frozen=True)
class TextVariant:
    """How the stories are written: ``CountriesConfig``'s lowercase, verbs, distractors_per_move, people_per_story."""
    lowercase: bool = False
    verbs: tuple[str, ...] = ("travelled to", "flew to", "moved to", "went to", "journeyed to")
    distractors_per_move: int = 0
    people_per_story: int = 4


def _story(rng: random.Random, kg: CountriesKG, pool: list[str], story_id: str, task: str,
           split: str, n_sentences: int, n_questions: int, text: TextVariant = TextVariant()) -> Story:
    """``n_sentences`` moves (each followed by ``distractors_per_move`` other sentences), questions after some."""
    case = str.lower if text.lowercase else str
    people = rng.sample(PEOPLE, text.people_per_story)
    answer_of = kg.region if task == "countries_region" else kg.subregion
    kind = "region" if task == "countries_region" else "subregion"
    where: dict[str, str] = {}
    where_fact: dict[str, int] = {}
    story = Story(story_id=story_id, task=task, split=split)
    ask_at = {round(n_sentences * (i + 1) / n_questions) for i in range(n_questions)}
    moves = 0
    while moves < n_sentences:
        person = rng.choice(people)
        country = rng.choice([c for c in pool if c != where.get(person)])
        where[person] = country
        where_fact[person] = len(story.sentences)
        story.sentences.append(case(f"{person} {rng.choice(text.verbs)} {natural_name(country)}."))
        story.sentences += [case(rng.choice(DISTRACTORS).format(rng.choice(people)))
                            for _ in range(text.distractors_per_move)]
        moves += 1
        if moves not in ask_at:
            continue
        # Ask about anyone who has travelled, not the same fact twice when
        # there is another. (Always asking about the person whose last travel
        # lies furthest back made "the oldest country in the story" a
        # shortcut: a model learned it and then missed every person who had
        # moved on since.)
        candidates = sorted(p for p in where if where[p] in answer_of)
        fresh = [p for p in candidates if [where_fact[p]] not in story.supporting]
        person = rng.choice(fresh or candidates)
        story.questions.append(case(f"Which {kind} is {person} in?"))
        story.answers.append(answer_of[where[person]])
        story.question_positions.append(len(story.sentences))
        story.supporting.append([where_fact[person]])
    return story


def generate_countries_stories(*, countries_dir: str | Path, train_stories: int, val_stories: int,
                               test_stories: int, sentences_per_story: int, questions_per_story: int,
                               test_country_fraction: float, seed: int, lowercase: bool = False,
                               verbs: list[str] | tuple[str, ...] = TextVariant.verbs, distractors_per_move: int = 0,
                               people_per_story: int = 4) -> list[Story]:
    """Generate the countries corpus; the same arguments give the same stories.

    ``sentences_per_story`` counts the moves; the text variants are ``TextVariant``'s.

    Stories alternate between the tasks ``countries_region`` and
    ``countries_subregion``. Train and val stories use only training
    countries; test stories use only the held-out test countries.
    """
    if not 0 < test_country_fraction < 1:
        raise ValueError(f"test_country_fraction must be in (0, 1), got {test_country_fraction}")
    if questions_per_story > sentences_per_story:
        raise ValueError("questions_per_story must not exceed sentences_per_story")
    kg = load_countries_kg(countries_dir)
    train_pool, test_pool = split_countries(kg, test_country_fraction, seed)
    if len(test_pool) < 2:
        raise CorpusError(f"{countries_dir}: test_country_fraction {test_country_fraction} "
                          f"leaves {len(test_pool)} test countries; need at least 2")
    text = TextVariant(lowercase, tuple(verbs), distractors_per_move, people_per_story)
    rng = random.Random(seed)
    stories = []
    for split, n, pool in (("train", train_stories, train_pool), ("val", val_stories, train_pool),
                           ("test", test_stories, test_pool)):
        for i in range(n):
            task = TASKS[i % 2]
            if task == "countries_subregion":
                pool_i = [c for c in pool if c in kg.subregion]
            else:
                pool_i = pool
            stories.append(_story(rng, kg, pool_i, f"{task}/{split}/{i}", task, split,
                                  sentences_per_story, questions_per_story, text))
    return stories


def majority_rate(stories: list[Story], split: str = "test") -> dict[str, float]:
    """Per task, the fraction of `split` questions whose answer is the most frequent one."""
    answers: dict[str, Counter] = defaultdict(Counter)
    for s in stories:
        if s.split == split:
            answers[s.task].update(s.answers)
    return {task: c.most_common(1)[0][1] / sum(c.values()) for task, c in sorted(answers.items())}
