"""The command reference (docs/commands.md), generated from the scripts' own parsers so that it cannot drift.

    python -m cli.reference > docs/commands.md     # regenerate
    python -m cli.reference --check docs/commands.md   # exit 1 when the file differs (the test suite runs this)

Each script's ``--help`` text, at a fixed width, in the order a user meets the scripts.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

# script -> its cli module (each has build_parser()); section.py's is listed only where its module exists
SCRIPTS = {"train.py": "cli.train", "swa.py": "cli.swa", "test.py": "cli.test", "score.py": "cli.score",
           "ensemble.py": "cli.ensemble", "mosaic.py": "cli.mosaic", "pseudo.py": "cli.pseudo",
           "report.py": "cli.report", "section.py": "cli.section"}
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
             "Generated from each script's parser by `python -m cli.reference > docs/commands.md`; a test checks that "
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
