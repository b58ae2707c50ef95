"""The documentation: a short README that is a front door, links that resolve, a command reference generated from
the parsers (so it cannot drift), flags in the README that the scripts take, and no history in user documents."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from cli import reference

ROOT = Path(__file__).resolve().parent.parent
USER_DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
HISTORY = ("this round", "this session", "last session", "earlier set", "lent to the sessions", "so far no",
           "used to be", "we changed", "previous commit", "previous matcher", "the old code")


def test_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; the rest belongs in docs/"
    text = "\n".join(lines)
    assert "make demo" in text and "make test" in text


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda p: p.name)
def test_relative_links_resolve(doc):
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
        if "://" in target:
            continue
        assert (doc.parent / target).exists(), f"{doc.name} links to {target}, which does not exist"


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda p: p.name)
def test_user_documents_speak_of_the_product_not_its_history(doc):
    text = doc.read_text().lower()
    found = [h for h in HISTORY if h in text]
    assert not found, f"{doc.name}: {found} (history goes in CHANGELOG.md)"


def test_the_command_reference_is_current():
    assert reference.main(["--check", str(ROOT / "docs" / "commands.md")]) == 0, \
        "run: python -m cli.reference > docs/commands.md"


def _readme_commands():
    """(script, flags) of every `python SCRIPT.py ...` / `torchrun ... SCRIPT.py ...` line of the README's code blocks
    (continued lines joined; train.py's flags after ensemble.py's `--` count as train.py's)."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line.split("#")[0])
            scripts = [i for i, w in enumerate(words) if w.endswith(".py") and (ROOT / w).is_file()]
            if not scripts:
                continue
            i = scripts[0]
            args = words[i + 1:]
            if "--" in args:
                cut = args.index("--")
                yield words[i], [a for a in args[:cut] if a.startswith("--")]
                yield "train.py", [a for a in args[cut + 1:] if a.startswith("--")]
            else:
                yield words[i], [a for a in args if a.startswith("--")]


def test_every_flag_the_readme_gives_a_script_exists():
    seen = 0
    for script, flags in _readme_commands():
        module = reference.SCRIPTS[script]
        parser = reference.script_parser(module)
        known = {s for a in parser._actions for s in a.option_strings}
        for f in flags:
            assert f.split("=")[0] in known, f"README: {script} has no flag {f}"
            seen += 1
    assert seen > 20
