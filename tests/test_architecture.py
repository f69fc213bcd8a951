"""The dependency direction and the no-work-at-import rule, checked on the source."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = {"torch", "transformers", "sqlalchemy", "alembic", "label_studio_sdk", "fastapi", "sklearn"}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_strategies_import_nothing_of_the_project_and_no_torch() -> None:
    for f in (ROOT / "strategies").rglob("*.py"):
        bad = imports_of(f) & {"loop", "connectors", "torch", "transformers"}
        assert not bad, f"{f.relative_to(ROOT)} imports {bad}"


@pytest.mark.parametrize("module", sorted(p.name for p in (ROOT / "loop").glob("*.py")))
def test_loop_domain_does_not_import_connectors_or_heavy_libraries(module: str) -> None:
    allowed = {"wiring.py", "cli.py"}  # the wiring that builds parts from settings (lazily)
    found = imports_of(ROOT / "loop" / module)
    if module in allowed:
        return
    bad = found & ({"connectors"} | HEAVY)
    assert not bad, f"loop/{module} imports {bad}"


def test_importing_the_controller_and_cli_loads_no_torch_and_writes_nothing(tmp_path: Path) -> None:
    code = (
        "import sys, os; import loop.controller, loop.cli, loop.simulation, loop.wiring, strategies; "
        "bad = [m for m in ('torch', 'transformers', 'sqlalchemy', 'label_studio_sdk') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert list(tmp_path.iterdir()) == [], "importing wrote files into the working directory"


def top_level_imports(path: Path) -> set[str]:
    """Modules imported when ``path`` is imported: module-level statements (also inside
    module-level ``try``/``if``), not function bodies and not ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()

    def visit(stmts: list[ast.stmt]) -> None:
        for node in stmts:
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
            elif isinstance(node, ast.If):
                if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)

    visit(tree.body)
    return names


@pytest.mark.parametrize("module", sorted(p.name for p in (ROOT / "loop" / "service").glob("*.py")))
def test_service_entry_points_import_no_model_libraries_or_connectors_at_top_level(
    module: str,
) -> None:
    """``loop/service`` are entry points: FastAPI, uvicorn and APScheduler are theirs; torch,
    transformers and the connectors come only lazily through ``loop.wiring``."""
    found = top_level_imports(ROOT / "loop" / "service" / module)
    bad = found & {
        "connectors",
        "torch",
        "transformers",
        "sklearn",
        "sqlalchemy",
        "alembic",
        "label_studio_sdk",
    }
    assert not bad, f"loop/service/{module} imports {bad} at module level"


def test_importing_the_service_loads_no_model_library_and_writes_nothing(tmp_path: Path) -> None:
    code = (
        "import sys; import loop.service.app, loop.service.core, loop.service.server, "
        "loop.service.status; "
        "bad = [m for m in ('torch', 'transformers', 'sqlalchemy', 'label_studio_sdk', "
        "'connectors', 'sklearn') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert list(tmp_path.iterdir()) == [], "importing wrote files into the working directory"
