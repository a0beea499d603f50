"""The three tiers hold: dags/ -> jobs/ (programs) -> recsys/ (the package), never backwards or sideways."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from recsys.core.config import REPO_ROOT


def imported_modules(path: Path) -> set[str]:
    """Every module a Python file imports (absolute imports, at any depth of the file)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_imported_modules_reads_every_form(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("import a.b\nfrom c import d\n\ndef f():\n    from jobs import tables\n")
    assert imported_modules(source) == {"a.b", "c", "c.d", "jobs", "jobs.tables"}


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "recsys").rglob("*.py")), ids=lambda p: p.stem)
def test_the_package_never_imports_a_program_or_airflow(path: Path) -> None:
    assert not {m for m in imported_modules(path) if m.split(".")[0] in ("jobs", "airflow", "recsys_airflow")}, path


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "jobs").glob("*.py")), ids=lambda p: p.stem)
def test_a_program_never_imports_another(path: Path) -> None:
    assert not {m for m in imported_modules(path) if m == "jobs" or m.startswith("jobs.")}, path


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "jobs").glob("*.py")), ids=lambda p: p.stem)
def test_a_program_keeps_out_of_airflow(path: Path) -> None:
    assert not {m for m in imported_modules(path) if m.split(".")[0] in ("airflow", "recsys_airflow")}, path
