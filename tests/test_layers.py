"""The package layers: each imports only the layers below it, and no library imports Prefect.

    flows -> tasks -> serving -> stmem, kg_pipeline -> corpora
"""
import ast

import pytest

from tests.conftest import REPO

ALLOWED = {
    "corpora": set(),
    "kg_pipeline": {"corpora"},
    "stmem": {"corpora"},
    "serving": {"corpora", "kg_pipeline", "stmem"},
    "tasks": {"corpora", "kg_pipeline", "stmem", "serving", "prefect"},
    "flows": {"corpora", "kg_pipeline", "stmem", "serving", "tasks", "flows", "prefect"},
}
OURS = set(ALLOWED) | {"prefect"}


def imported(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_the_layers_below_it(package):
    wrong = {f"{f.relative_to(REPO)} imports {name}"
             for f in (REPO / package).rglob("*.py")
             for name in imported(f) & OURS - ALLOWED[package] - {package}}
    assert not wrong, sorted(wrong)
