"""The command reference (docs/commands.md), generated from the commands' own parsers so that it cannot drift.

    python -m cli.reference > docs/commands.md     # regenerate
    python -m cli.reference --check docs/commands.md   # exit 1 when the file differs (the test suite runs this)

Each command's ``--help`` text (the scripts' and the user-facing module commands'), at a fixed width, in the order
a user meets them.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

# command -> the module whose build_parser() makes its parser: the top-level scripts (their cli modules; section.py's
# is listed only where its module exists) and the module commands the documents tell users to run. Not listed: the
# benchmarks (bench/, not user commands), this reference itself, and engine.fold_job (ensemble.py's job runner,
# two positional words and no parser).
SCRIPTS = {"python -m datasets.prepare": "datasets.prepare", "python -m datasets.synthetic": "datasets.synthetic",
           "train.py": "cli.train", "swa.py": "cli.swa", "test.py": "cli.test", "score.py": "cli.score",
           "ensemble.py": "cli.ensemble", "mosaic.py": "cli.mosaic", "python -m datasets.folds": "datasets.folds",
           "pseudo.py": "cli.pseudo", "report.py": "cli.report", "python -m tgs.submission": "tgs.submission",
           "section.py": "cli.section", "python -m datasets.synthetic_sections": "datasets.synthetic_sections"}
WIDTH = 118


def script_parser(module: str):
    """The argument parser of a script's cli module; None where the module is not part of this checkout."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return None
        raise
    return mod.build_parser()


def render() -> str:
    """The whole document."""
    os.environ["COLUMNS"] = str(WIDTH)  # argparse wraps to the terminal's width: fix it
    parts = ["# Command reference\n",
             "Generated from each command's parser by `python -m cli.reference > docs/commands.md`; a test checks that "
             "this file is current.\n"]
    for script, module in SCRIPTS.items():
        parser = script_parser(module)
        if parser is None:
            continue
        parser.prog = script
        parts.append(f"## `{script}`\n\n```text\n{parser.format_help().rstrip()}\n```\n")
    return "\n".join(parts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m cli.reference", description=__doc__.splitlines()[0])
    p.add_argument("--check", metavar="FILE", help="compare FILE with the generated text; exit 1 when it differs")
    a = p.parse_args(argv)
    text = render()
    if a.check:
        if Path(a.check).read_text() != text:
            print(f"{a.check} is not current: run python -m cli.reference > {a.check}", file=sys.stderr)
            return 1
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
