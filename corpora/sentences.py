"""Sentence boundaries for free text: spaCy's rule-based sentencizer.

Rule-based (punctuation) rather than a parser's boundaries: it needs no model
download, gives the same split on every machine, and is fast enough for a
whole corpus. Each sentence becomes one sentence slot of a story.
"""
from __future__ import annotations

from typing import Callable


def sentencizer() -> Callable[[str], list[str]]:
    """A function from text to its sentences, whitespace runs collapsed; build it once per corpus."""
    import spacy  # here, not at the top: the other corpus formats do not need spaCy

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    # max_length guards the memory of parsers and NER; a tokenizer and the sentencizer alone
    # need far less, and a long document is not an error
    nlp.max_length = 2**31 - 1

    def split(text: str) -> list[str]:
        return [s for s in (" ".join(sent.text.split()) for sent in nlp(text).sents) if s]

    return split
