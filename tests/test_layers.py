"""The floors of the code import in one direction only (read from the source with ast, function-local imports
included):

    4  train.py swa.py test.py score.py ensemble.py report.py mosaic.py pseudo.py   thin scripts
    3  cli/                                                               argument parsing, one call below
    2  engine/                                                            training, prediction, ensembles, reports
    1  datasets/  models/  losses/                                        (these three never import each other)
    0  tgs/                                                               formats and geometry

A module may import its own package and the floors below it; ``bench/`` and ``tests/`` stand above everything.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOORS = {"tgs": 0, "datasets": 1, "models": 1, "losses": 1, "engine": 2, "cli": 3}
SCRIPTS = ("train", "swa", "test", "score", "ensemble", "report", "mosaic", "pseudo", "section")
for _name in SCRIPTS:
    FLOORS[_name] = 4


def imported(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, top-level name) of every absolute import anywhere in a module."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module.split(".")[0]))
    return out


def violations(root: Path) -> list[str]:
    """Every import from a lower floor to a higher one or sideways between packages of one floor."""
    found = []
    files = [p for p in root.glob("*.py") if p.stem in SCRIPTS]
    for package in FLOORS:
        if (root / package).is_dir():
            files += sorted((root / package).rglob("*.py"))
    for path in files:
        rel = path.relative_to(root)
        owner = rel.parts[0] if len(rel.parts) > 1 else path.stem
        floor = FLOORS[owner]
        for line, name in imported(ast.parse(path.read_text(), str(path))):
            if name == owner or name not in FLOORS:
                continue
            if FLOORS[name] > floor or (FLOORS[name] == floor and floor in (1, 4)):
                found.append(f"{rel}:{line} ({owner}, floor {floor}) imports {name} (floor {FLOORS[name]})")
    return found


def test_imports_run_down_the_floors_only():
    assert violations(ROOT) == []


def test_the_checker_finds_upward_sideways_and_function_local_imports(tmp_path):
    (tmp_path / "tgs").mkdir()
    (tmp_path / "tgs" / "a.py").write_text("def f():\n    from engine import trainer\n")  # hidden in a function
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "b.py").write_text("import models.unet\nfrom tgs import rle\n")  # sideways + fine
    (tmp_path / "engine").mkdir()
    (tmp_path / "engine" / "c.py").write_text("import cli.train\nimport numpy\nfrom . import d\n")
    (tmp_path / "test.py").write_text("from cli.test import main\nimport train\n")  # a script importing a script
    found = violations(tmp_path)
    assert sorted(found) == ["datasets/b.py:1 (datasets, floor 1) imports models (floor 1)",
                             "engine/c.py:1 (engine, floor 2) imports cli (floor 3)",
                             "test.py:2 (test, floor 4) imports train (floor 4)",
                             "tgs/a.py:2 (tgs, floor 0) imports engine (floor 2)"]


def test_scripts_are_thin_and_nothing_loads_code_by_file_path():
    for name in SCRIPTS:
        path = ROOT / f"{name}.py"
        if not path.exists():
            continue
        tree = ast.parse(path.read_text())
        defs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        assert defs == [], f"{name}.py defines {[d.name for d in defs]}: scripts only call cli.{name}.main"
    for path in [*ROOT.glob("*.py"), *ROOT.glob("*/*.py"), *ROOT.glob("*/*/*.py")]:
        if ".venv" in path.parts or path.name == "test_layers.py":
            continue
        text = path.read_text()
        assert "spec_from_file_location" not in text and "sys.path.insert" not in text, path
