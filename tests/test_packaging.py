"""What pyproject.toml declares matches what the package uses (no unused runtime dependency)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

REPO = Path(__file__).resolve().parent.parent
# Distributions whose import name differs from their name.
IMPORT_NAMES = {"ipython": "IPython"}
# Declared, but used by a dependency rather than imported by us (why, for each).
USED_INDIRECTLY = {"jinja2": "pandas' Styler renders the comparison table's HTML with it"}


def declared() -> dict[str, str]:
    """Runtime requirement name (normalised) -> the requirement as written."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = {}
    for requirement in project["dependencies"]:
        name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0)
        names[re.sub(r"[-_.]+", "-", name).lower()] = requirement
    return names


def imported_modules() -> set[str]:
    """Top-level names of every module the package imports (also lazily, inside functions)."""
    found = set()
    for path in (REPO / "mpcontainer_magics").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.partition(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.partition(".")[0])
    return found


def test_every_runtime_dependency_is_imported_by_the_package() -> None:
    imported = imported_modules()
    unused = [
        requirement
        for name, requirement in declared().items()
        if name not in USED_INDIRECTLY and IMPORT_NAMES.get(name, name) not in imported
    ]
    assert unused == [], f"declared in pyproject.toml but never imported: {unused}"


def test_the_notebooks_extra_brings_matplotlib_also_to_the_test_extra() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert any(r.startswith("matplotlib") for r in extras["notebooks"])
    assert "mpcontainer-magics[notebooks]" in extras["test"]
    assert ".[notebooks]" in (REPO / "binder" / "requirements.txt").read_text().split()
