"""The core (everything under pipeline/ but the Dagster layer) never imports Dagster."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pipeline"
DAGSTER_LAYER = [PACKAGE / "defs", PACKAGE / "definitions.py"]


def core_modules() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py"))
            if not any(p == d or d in p.parents for d in DAGSTER_LAYER)]


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_no_core_module_imports_dagster_in_its_source():
    modules = core_modules()
    assert PACKAGE / "steps" / "sequence.py" in modules and PACKAGE / "cli.py" in modules
    offenders = [str(p.relative_to(PACKAGE)) for p in modules if imported_roots(p) & {"dagster", "dagster_pipes"}]
    assert offenders == []


def test_the_ast_check_sees_an_import_of_dagster(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from dagster import asset\n", encoding="utf-8")
    assert "dagster" in imported_roots(bad)


def test_importing_every_core_module_loads_no_dagster():
    names = []
    for path in core_modules():
        if path.name == "__main__.py":      # runs a command when imported
            continue
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n"
            "    importlib.import_module(name)\n"
            "from pipeline.cli import parser; parser()\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dagster', 'dagster_pipes')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
