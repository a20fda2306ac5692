"""JSON Lines input and checked record fields, shared by the records, dialogue and documents readers.

Every problem is a one-line ``CorpusError`` that names the file, the line (or
Parquet row) and the field, and no record is ever skipped: a corpus that is
silently smaller than its file trains a model on the wrong data.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Iterator

from corpora.babi import text_lines
from corpora.schema import CorpusError

_JSON_TYPES = {type(None): "null", bool: "bool", int: "int", float: "float", str: "string", list: "list",
               dict: "object"}


def type_name(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


class Fields:
    """One record's fields, checked by name.

    ``where`` prefixes every message (``data.jsonl:3`` or ``data.parquet: row 2``),
    ``at`` is the short form other messages refer back to (``line 3``, ``row 2``),
    ``noun`` is what a field is called there (``field``, ``column``).
    """

    def __init__(self, record: dict, where: str, at: str, noun: str = "field"):
        self.record, self.where, self.at, self.noun = record, where, at, noun

    def error(self, name: str, problem: str) -> CorpusError:
        return CorpusError(f"{self.where}: {self.noun} '{name}' {problem}")

    def only(self, allowed: Iterable[str]) -> None:
        """An unknown field is an error: a misspelt optional field would otherwise fall back to its default."""
        allowed = tuple(allowed)
        for name in self.record:
            if name not in allowed:
                raise CorpusError(f"{self.where}: unknown {self.noun} {name!r} (expected {', '.join(allowed)})")

    def text(self, name: str, default: str | None = None) -> str:
        """A non-empty string, stripped; ``default`` (if given) when the field is absent."""
        if name not in self.record:
            if default is not None:
                return default
            raise self.error(name, "is missing")
        return self.check_text(name, self.record[name])

    def check_text(self, name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise self.error(name, f"must be a string, got {type_name(value)}")
        if not value.strip():
            raise self.error(name, "is empty")
        return value.strip()

    def choice(self, name: str, options: tuple[str, ...]) -> str:
        value = self.text(name)
        if value not in options:
            raise self.error(name, f"must be {' or '.join(repr(o) for o in options)}, got {value!r}")
        return value

    def optional_choice(self, name: str, options: tuple[str, ...]) -> str | None:
        """``choice``, or None when the field is absent or null (a Parquet column's missing value)."""
        return None if self.record.get(name) is None else self.choice(name, options)

    def items(self, name: str) -> list:
        """A non-empty list."""
        if name not in self.record:
            raise self.error(name, "is missing")
        value = self.record[name]
        if not isinstance(value, list):
            raise self.error(name, f"must be a list, got {type_name(value)}")
        if not value:
            raise self.error(name, "is empty")
        return value

    def text_or_texts(self, name: str) -> str | list[str]:
        """A non-empty string, or a non-empty list of non-empty strings (each stripped)."""
        if name not in self.record:
            raise self.error(name, "is missing")
        value = self.record[name]
        if isinstance(value, str):
            return self.check_text(name, value)
        if not isinstance(value, list):
            raise self.error(name, f"must be a string or a list of strings, got {type_name(value)}")
        if not value:
            raise self.error(name, "is empty")
        return [self.check_text(f"{name}[{i}]", item) for i, item in enumerate(value)]


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    # json.loads keeps the last of repeated keys: the record's first value would be silently dropped
    record = {}
    for key, value in pairs:
        if key in record:
            raise _DuplicateKey(key)
        record[key] = value
    return record


def jsonl_records(path: Path, max_line_chars: int) -> Iterator[Fields]:
    """Each JSON object of a JSON Lines file, as ``Fields``; blank lines are not records and are passed over.

    A missing or empty file, a line that is not JSON, a key repeated in one
    object, or a value that is not an object is a ``CorpusError`` naming the file and the line; so are a bad
    UTF-8 byte and an over-long line (``text_lines``).
    """
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{path}: file not found")
    count = 0
    for lineno, line in text_lines(path, max_line_chars):
        if not line.strip():
            continue
        try:
            record = json.loads(line, object_pairs_hook=_unique_keys)
        except _DuplicateKey as exc:
            raise CorpusError(f"{path}:{lineno}: duplicate key {exc.args[0]!r}") from None
        except json.JSONDecodeError as exc:
            raise CorpusError(f"{path}:{lineno}: invalid JSON: {exc.msg} (column {exc.colno})") from None
        except RecursionError:
            raise CorpusError(f"{path}:{lineno}: invalid JSON: nested too deeply") from None
        if not isinstance(record, dict):
            raise CorpusError(f"{path}:{lineno}: a record must be a JSON object, got {type_name(record)}")
        count += 1
        yield Fields(record, f"{path}:{lineno}", f"line {lineno}")
    if not count:
        raise CorpusError(f"{path}: empty file (no records)")
