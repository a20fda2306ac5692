"""Reading a user's knowledge graph: TSV, CSV or Parquet triples, a dialog bAbI KB file, or a
link-prediction split directory.

No PyKEEN here: extraction reads the KG's entity names (to find them in text)
without paying for PyKEEN's import.
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

import pyarrow.parquet as pq

from kg_pipeline.errors import KGInputError

Triple = tuple[str, str, str]
COLUMNS = ("head", "relation", "tail")
SPLIT_FILES = ("train.txt", "valid.txt", "test.txt")
# dialog bAbI's KB files (dialog-babi-kb-all.txt, task 6's dialog-babi-task6-dstc2-kb.txt):
# '1 resto_rome_cheap_thai_2stars R_cuisine<TAB>thai', the value after a tab or a space
DIALOG_KB_LINE = re.compile(r"^\d+ (\S+) (R_\w+)[\t ](\S+)$")


def read_triples_tsv(path: Path) -> list[Triple]:
    """head<TAB>relation<TAB>tail per line, as in the Countries KG; blank lines are skipped.

    A file whose first line is a dialog bAbI KB line (``DIALOG_KB_LINE``) is read
    as one: every line must be, giving (entity, relation, value).
    """
    path = Path(path)
    if not path.is_file():
        raise KGInputError(f"{path}: triples file not found")
    triples, lineno, dialog_kb = [], 0, None
    with open(path, encoding="utf-8") as f:
        try:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                line = line.rstrip("\n")
                if dialog_kb is None:
                    dialog_kb = bool(DIALOG_KB_LINE.match(line))
                if dialog_kb:
                    m = DIALOG_KB_LINE.match(line)
                    if not m:
                        raise KGInputError(f"{path}:{lineno}: expected a dialog bAbI KB line "
                                           f"'<n> <entity> R_<relation> <value>' as line 1, got {line!r}")
                    triples.append(m.groups())
                    continue
                fields = [x.strip() for x in line.split("\t")]
                if len(fields) != 3 or not all(fields):
                    raise KGInputError(f"{path}:{lineno}: expected head<TAB>relation<TAB>tail, got {line!r}")
                triples.append(tuple(fields))
        except UnicodeDecodeError as e:
            raise KGInputError(f"{path}: not UTF-8 after line {lineno}: {e.reason}") from None
    if not triples:
        raise KGInputError(f"{path}: no triples")
    return triples


def read_triples_csv(path: Path) -> list[Triple]:
    """A CSV with a header naming the columns head, relation, tail (others ignored)."""
    path = Path(path)
    if not path.is_file():
        raise KGInputError(f"{path}: triples file not found")
    triples, lineno = [], 1
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise KGInputError(f"{path}:1: the header lacks column(s) {missing}; expected {list(COLUMNS)}")
            for row in reader:
                lineno = reader.line_num
                triple = tuple((row[c] or "").strip() for c in COLUMNS)
                if not all(triple):
                    raise KGInputError(f"{path}:{lineno}: empty field in {triple}")
                if any("\0" in x for x in triple):  # Python's csv reads NUL bytes as text since 3.11
                    raise KGInputError(f"{path}:{lineno}: a NUL byte in a field: not a text CSV file")
                triples.append(triple)
    except csv.Error as e:  # e.g. a field over csv.field_size_limit() (131,072 characters)
        raise KGInputError(f"{path}:{lineno + 1}: not a readable CSV line: {e}") from None
    except UnicodeDecodeError as e:
        raise KGInputError(f"{path}: not UTF-8 after line {lineno}: {e.reason}") from None
    if not triples:
        raise KGInputError(f"{path}: no triples")
    return triples


def read_triples_parquet(path: Path) -> list[Triple]:
    """Columns head, relation, tail (strings); a null or empty field names its row."""
    import pyarrow as pa

    path = Path(path)
    if not path.is_file():
        raise KGInputError(f"{path}: triples file not found")
    try:
        missing = [n for n in COLUMNS if n not in pq.read_schema(path).names]
        if missing:
            raise KGInputError(f"{path}: missing column(s) {missing}")
        cols = pq.read_table(path, columns=list(COLUMNS)).to_pydict()
    except (pa.ArrowException, OSError) as e:
        raise KGInputError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
    triples = list(zip(*(cols[n] for n in COLUMNS)))
    for row, triple in enumerate(triples):
        if not all(isinstance(x, str) and x for x in triple):
            raise KGInputError(f"{path}: row {row} has an empty or null field: {triple}")
    if not triples:
        raise KGInputError(f"{path}: no triples")
    return triples


def external_kg_files(path: Path) -> list[Path]:
    """A triples file (.tsv/.txt, .csv, .parquet), or a directory holding a link-prediction
    split of one (train.txt, valid.txt, test.txt, as Countries_S1 ships): all of them."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = [path / f for f in SPLIT_FILES]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise KGInputError(f"{path}: external KG directory lacks {', '.join(missing)} "
                               f"(expected {', '.join(SPLIT_FILES)})")
        return files
    raise KGInputError(f"{path}: external KG not found (kg.external_kg)")


def read_external_kg(path: Path) -> list[Triple]:
    """Every triple of the external KG (``external_kg_files``), read by each file's suffix."""
    triples: list[Triple] = []
    for f in external_kg_files(path):
        suffix = f.suffix.lower()
        if suffix == ".csv":
            triples += read_triples_csv(f)
        elif suffix == ".parquet":
            triples += read_triples_parquet(f)
        else:
            triples += read_triples_tsv(f)
    return triples


def kg_entities(triples: list[Triple]) -> list[str]:
    """The KG's entity ids, sorted."""
    return sorted({h for h, _, _ in triples} | {t for _, _, t in triples})
