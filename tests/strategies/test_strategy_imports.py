"""``strategies`` imports nothing of the project, no torch, and nothing heavy at import time."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "strategies"
FORBIDDEN = {"loop", "connectors", "torch", "transformers"}
THIRD_PARTY_ALLOWED = {"numpy", "scipy", "sklearn", "modAL"}
SOURCES = sorted(PACKAGE.rglob("*.py"))


def _imported_top_levels(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_package_has_sources() -> None:
    assert {p.name for p in SOURCES} >= {
        "__init__.py",
        "measures.py",
        "selection.py",
        "registry.py",
    }


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_no_project_torch_or_unexpected_imports(path: Path) -> None:
    found = _imported_top_levels(path)
    assert not found & FORBIDDEN, f"{path.name} imports {found & FORBIDDEN}"
    unexpected = (
        found - THIRD_PARTY_ALLOWED - set(sys.stdlib_module_names) - {"strategies", "__future__"}
    )
    assert not unexpected, f"{path.name} imports {unexpected}"


def test_importing_strategies_loads_no_heavy_module(tmp_path: Path) -> None:
    code = (
        "import sys, strategies; "
        "print([m for m in ('torch', 'loop', 'connectors', 'modAL', 'sklearn') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
