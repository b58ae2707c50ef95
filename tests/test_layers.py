"""The floors of the code import in one direction only (read from the source with ast, function-local imports
included):

    4  train.py swa.py test.py score.py ensemble.py report.py mosaic.py pseudo.py   thin scripts
    3  cli/                                                               argument parsing, one call below
    2  engine/                                                            training, prediction, ensembles, reports
    1  datasets/  models/  losses/                                        (these three never import each other)
    0  tgs/                                                               formats and geometry

A module may import its own package and the floors below it; ``bench/`` and ``tests/`` stand above everything.
Nor may a module below the cli run a top-floor script (a subprocess, an import by name, a command line): that too
is a dependency going up, one the imports do not show (:func:`script_runs`).
"""
from __future__ import annotations

import ast
import re
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


# -- running a script is depending on it ---------------------------------------------------------------------------
_NAMES = "|".join(SCRIPTS)
SCRIPT_PATH = re.compile(rf"(?:.*[/\\])?(?:{_NAMES})\.py")  # a whole string that is a script's file
CLI_MODULE = re.compile(r"(?:.*\s)?-m\s+cli\b.*|cli(?:\.\w+)*")  # `-m cli.x`, or a module name cli / cli.x


def script_flags() -> set[str]:
    """Every option string of the top-floor scripts' parsers (--resume, --threshold, ...)."""
    import importlib

    flags = set()
    for name in SCRIPTS:
        parser = importlib.import_module(f"cli.{name}").build_parser()
        flags |= {s for action in parser._actions for s in action.option_strings if s.startswith("--")}
    return flags - {"--help"}


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
            out.add(id(first.value))
    return out


def _script_run(node: ast.AST, docs: set[int], flags: set[str]) -> str | None:
    """What ``node`` does to run a script, or None (see :func:`script_runs`)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
        text = node.value.strip()
        if SCRIPT_PATH.fullmatch(text) or CLI_MODULE.fullmatch(text) or text == ".py":
            return f"names a script to run: {text!r}"
    elif isinstance(node, ast.JoinedStr):
        parts = node.values
        if any(isinstance(a, ast.FormattedValue) and isinstance(b, ast.Constant) and str(b.value).startswith(".py")
               for a, b in zip(parts, parts[1:])):
            return "makes up a script's file name ({...}.py)"
    elif isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        spelled = [e.value for e in node.elts if isinstance(e, ast.Constant) and e.value in flags]
        if spelled:
            return f"builds a script's command line ({spelled[0]})"
    return None


def script_runs(root: Path, flags: set[str]) -> list[str]:
    """Every place in a module below the cli (floors 0-2) that names a top-floor script as something to run: a
    string that is a script's file (``train.py``, ``ROOT/swa.py``) or a cli module (``cli.test``, ``-m cli.x``); a
    file name made up as ``{name}.py`` or ``name + ".py"``; or a list, tuple or set that spells a script's flag (an
    argument list: ``["--resume", path]``). A message naming a script (``make one with test.py --split valid``)
    is none of these."""
    found = []
    for package, floor in FLOORS.items():
        if floor > 2 or not (root / package).is_dir():
            continue
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            docs = _docstrings(tree)
            for node in ast.walk(tree):
                what = _script_run(node, docs, flags)
                if what:
                    found.append(f"{path.relative_to(root)}:{node.lineno} {what}")
    return found


def test_nothing_below_the_cli_runs_a_script():
    assert script_runs(ROOT, script_flags()) == []


def test_the_script_check_finds_every_way_of_running_one(tmp_path):
    (tmp_path / "engine").mkdir()
    (tmp_path / "engine" / "a.py").write_text(
        '"""Runs train.py: a docstring may say so."""\n'
        'import subprocess, sys\n'
        'ROOT = None\n'
        'def f(name, argv):\n'
        '    subprocess.run([sys.executable, str(ROOT / "swa.py"), *argv])\n'  # a script's file
        '    subprocess.run([sys.executable, f"{ROOT}/{name}.py"])\n'  # a made-up file name
        '    subprocess.run([sys.executable, "-m", "cli.test"])\n'  # a cli module
        '    return name + ".py", ["--data-dir", "d"], ("--resume", "x")\n'  # a concatenation, two argument lists
        'def g():\n'
        '    raise ValueError("make one with test.py --split valid")\n')  # a message: fine
    (tmp_path / "tgs").mkdir()
    (tmp_path / "tgs" / "b.py").write_text('import importlib\nM = importlib.import_module("cli.score")\n'
                                           'L = ("-m", "torch.distributed.run", "--standalone")\n')  # not a script's
    (tmp_path / "cli").mkdir()
    (tmp_path / "cli" / "c.py").write_text('A = ["train.py", "--resume"]\n')  # the cli may
    found = script_runs(tmp_path, {"--data-dir", "--resume"})
    assert sorted(found) == sorted([
        "engine/a.py:5 names a script to run: 'swa.py'",
        "engine/a.py:6 makes up a script's file name ({...}.py)",
        "engine/a.py:6 names a script to run: '.py'",
        "engine/a.py:7 names a script to run: 'cli.test'",
        "engine/a.py:8 names a script to run: '.py'",
        "engine/a.py:8 builds a script's command line (--data-dir)",
        "engine/a.py:8 builds a script's command line (--resume)",
        "tgs/b.py:2 names a script to run: 'cli.score'"]), found
