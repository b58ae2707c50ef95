"""Each idea in one place (issue #19), read from the registries and every command's parser (cli.reference.SCRIPTS:
the top-level scripts and the module commands the documents tell users to run, python -m datasets.folds ...; not
the benchmarks of bench/, which are no user commands, nor cli.reference itself): a choice list is a
registry's names or an option declaration's (or a list of one flag of one script), a flag has one type (one
declaration), choice list and kind of action in every script (DIFFERENT_ON_PURPOSE names the few that differ, and
why), the training options that swa.py and test.py take come from their declarations, ensemble.py
refuses or passes on every option of the scripts it drives (its sets of them derived, not written by hand), and no
hand-kept list of option names is left in cli/."""
from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import pytest

from cli import ensemble as ensemble_cli
from cli.common import set_by_ensemble_in
from cli.reference import SCRIPTS, script_parser
from engine import config, jobs, optimizers, schedulers
from losses import LOSSES
from models.encoders import ENCODERS
from tgs.errors import UserError
from tgs.inputs import INPUT_MODES
from tgs.mosaic_rules import MOSAIC_RULES
from tgs.options import Option

REGISTRIES = (LOSSES, INPUT_MODES, schedulers.SCHEDULES, optimizers.OPTIMIZERS, MOSAIC_RULES, ENCODERS,
              jobs.EXECUTORS)
ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / "cli"


def parsers() -> dict[str, argparse.ArgumentParser]:
    return {script: p for script, p in ((s, script_parser(m)) for s, m in SCRIPTS.items()) if p is not None}


# module commands the documents name that are no user commands, so their parsers are not read: why
NOT_USER_COMMANDS = {"bench": "the benchmarks print tables for developers; they are no user commands",
                     "cli.reference": "writes docs/commands.md from the parsers read here; a tool of the docs",
                     "engine.fold_job": "ensemble.py's job runner (JOBFOLDER STEP), run by its executors"}
DOCUMENTS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "scripts").glob("*.sh")))


def documented_module_commands(texts) -> set[str]:
    """The project's modules that ``texts`` tell users to run as ``python -m MODULE`` (``"$PY" -m`` in the shell
    scripts), less NOT_USER_COMMANDS (a module or the package above it) and placeholders (``datasets.NAME``)."""
    found = set()
    for text in texts:
        found |= set(re.findall(r'(?:python3?|"\$PY")\s+-m\s+([A-Za-z_][\w.]*\w)', text))
    mine = {m for m in found if (ROOT / m.split(".")[0]).is_dir() and not any(w.isupper() for w in m.split("."))}
    return {m for m in mine if not any(m == n or m.startswith(n + ".") for n in NOT_USER_COMMANDS)}


def test_every_module_command_the_documents_give_is_read_here():
    """A ``python -m datasets.folds`` that README.md, docs/ or scripts/ tell users to run is one of the commands
    whose parsers these tests read (cli.reference.SCRIPTS, which also puts it in docs/commands.md)."""
    documented = documented_module_commands(d.read_text() for d in DOCUMENTS)
    assert {"datasets.folds", "datasets.synthetic", "tgs.submission"} <= documented
    assert documented <= set(SCRIPTS.values())


def test_a_documented_module_command_is_found():
    text = 'run `python -m datasets.folds --k 3`, "$PY" -m tgs.submission --empty; python -m pytest -q;\n' \
           "python -m bench.bench_gpu; python -m engine.fold_job J train; python3 -m datasets.prepare Z --out D.\n" \
           "a new one: `python -m datasets.NAME`"
    assert documented_module_commands([text]) == {"datasets.folds", "tgs.submission", "datasets.prepare"}


def actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]


def flags_by_script() -> dict[str, dict[str, argparse.Action]]:
    """{flag: {script: its action}} over every script (a positional argument under its dest)."""
    out: dict[str, dict[str, argparse.Action]] = {}
    for script, parser in parsers().items():
        for a in actions(parser):
            for flag in a.option_strings or [a.dest]:
                out.setdefault(flag, {})[script] = a
    return out


def declared_choices() -> list[tuple]:
    """Every choice list that is written once: a registry's names, or an option declaration's choices."""
    lists = [tuple(r.names()) for r in REGISTRIES]
    return lists + [tuple(o.choices) for o in (config.spec(n) for n in config.options()) if o.choices]


# -- choice lists -------------------------------------------------------------------------------------------------
def choice_problems(by_script: dict[str, argparse.ArgumentParser]) -> list[str]:
    """What is wrong with the choice lists of these parsers: a list that is neither a registry's names nor a
    declaration's choices may not copy any of their names, nor share a value with another flag's list."""
    known = declared_choices()
    names = {str(v) for c in known for v in c}
    literal: dict[str, tuple] = {}
    problems = []
    for script, parser in by_script.items():
        for a in actions(parser):
            if not a.choices or tuple(a.choices) in known:
                continue
            choices, where = tuple(a.choices), f"{script} {a.option_strings[0]}"
            copied = sorted(names & {str(v) for v in choices})
            if copied:
                problems.append(f"{where}: {choices} copies names of a registry or a declaration ({copied})")
            problems += [f"{where} and {other} both list {sorted(set(theirs) & set(choices))}"
                         for other, theirs in literal.items() if set(theirs) & set(choices)]
            literal[where] = choices
    return problems


def test_every_choice_list_is_a_registry_or_a_declaration_or_a_list_of_one_flag():
    assert choice_problems(parsers()) == []


def test_a_choice_list_written_by_hand_or_twice_is_caught():
    copy, twice, other = (argparse.ArgumentParser() for _ in range(3))
    copy.add_argument("--modes", choices=("pad", "resize"))  # a registry's names, copied by hand (and incomplete)
    copy.add_argument("--executor", choices=jobs.EXECUTORS.names())  # read from the registry: fine
    twice.add_argument("--split", choices=("test", "valid"))
    other.add_argument("--part", choices=("valid", "all"))
    assert choice_problems({"a.py": copy}) == ["a.py --modes: ('pad', 'resize') copies names of a registry or a "
                                               "declaration (['pad', 'resize'])"]
    assert choice_problems({"b.py": twice, "c.py": other}) == ["c.py --part and b.py --split both list ['valid']"]


# -- one flag, one kind of value ------------------------------------------------------------------------------------
def _takes_value(a: argparse.Action) -> bool:
    return a.nargs != 0


SHARED_FLAGS = sorted(f for f, where in flags_by_script().items() if len(where) > 1 and f.startswith("--"))


@pytest.mark.parametrize("flag", SHARED_FLAGS)
def test_a_flag_takes_a_value_in_every_script_or_in_none(flag):
    where = flags_by_script()[flag]
    kinds = {script: "a value" if _takes_value(a) else "a switch" for script, a in where.items()}
    assert len(set(kinds.values())) == 1, f"{flag}: {kinds}"


# -- one flag, one declaration: the same type, choices and kind of action in every script that takes it --------------
# (flag, script, property): why that script's flag differs from the others' in that property on purpose
DIFFERENT_ON_PURPOSE = {
    ("--input", "section.py", "kind"): "swa.py's --input is the models to average (files and folders, nargs +), "
                                       "section.py's the one section to predict: two things under one common word",
    ("--tta", "report.py", "kind"): "report.py's --tta/--no-tta defaults to what the run validated with (its --vtf), "
                                    "so it says both; test.py's --tta and ensemble.py's --no-tta each leave a fixed "
                                    "default",
    ("--no-tta", "report.py", "kind"): "report.py's --no-tta is the other half of its --tta/--no-tta pair",
    ("--mosaics", "ensemble.py", "kind"): "alone (nargs ?) it builds the mosaics into RUN/mosaics; with CSV it takes "
                                          "the same file, with the same type, as every other script",
}


def _type_of(a: argparse.Action):
    """What a flag's value is: the declaration it was made from (cli.common.add_option, add_postprocessing), else
    its argparse type (None: a string, or nothing for a switch)."""
    return getattr(a, "declared", None) or a.type


def _properties(a: argparse.Action) -> dict:
    return {"type": _type_of(a), "choices": tuple(a.choices or ()), "kind": (type(a).__name__, a.nargs)}


def _shown(value) -> str:
    if isinstance(value, Option):
        return f"declared {value.help!r}"
    return getattr(value, "__qualname__", None) or repr(value)


def flag_problems(by_script: dict[str, argparse.ArgumentParser], exempt: dict | None = None) -> list[str]:
    """The flags present in two or more of these parsers whose type (the same callable or the same declaration),
    choices or kind of action (class and nargs) differ between them, less those ``exempt`` (DIFFERENT_ON_PURPOSE)."""
    exempt = DIFFERENT_ON_PURPOSE if exempt is None else exempt
    found: dict[str, dict[str, argparse.Action]] = {}
    for script, parser in by_script.items():
        for a in actions(parser):
            for flag in a.option_strings:
                found.setdefault(flag, {})[script] = a
    problems = []
    for flag, where in sorted(found.items()):
        for what in ("type", "choices", "kind"):
            values = {s: _properties(a)[what] for s, a in where.items() if (flag, s, what) not in exempt}
            if len({id(v) if what == "type" else v for v in values.values()}) > 1:
                problems.append(f"{flag}: its {what} differs: "
                                + "; ".join(f"{s} {_shown(v)}" for s, v in sorted(values.items())))
    return problems


def test_a_flag_has_one_type_choices_and_kind_in_every_script():
    assert flag_problems(parsers()) == []


def test_every_flag_different_on_purpose_exists_and_differs():
    """An exemption that no longer names a difference goes (the list stays short and true)."""
    found = flags_by_script()
    for (flag, script, what), why in DIFFERENT_ON_PURPOSE.items():
        assert script in found.get(flag, {}) and len(found[flag]) > 1, (flag, script)
        mine = _properties(found[flag][script])[what]
        others = [_properties(a)[what] for s, a in found[flag].items() if s != script]
        assert all(o is not mine and o != mine for o in others), f"{flag} {script}: {what} no longer differs"
        assert len(why) > 40


def test_a_flag_declared_twice_by_hand_is_caught():
    from cli.common import add_option, integer

    a, b, c = (argparse.ArgumentParser() for _ in range(3))
    add_option(a, "batch_size")
    b.add_argument("--batch-size", type=integer(1), default=32)  # the same idea, declared by hand again
    add_option(c, "batch_size", "prediction", default=64)  # the declaration, with a note and a default of its own
    a.add_argument("--mosaics", metavar="CSV")
    c.add_argument("--mosaics", action="store_true")
    assert flag_problems({"a.py": a, "c.py": c}, {}) == [
        "--mosaics: its kind differs: a.py ('_StoreAction', None); c.py ('_StoreTrueAction', 0)"]
    assert flag_problems({"a.py": a, "b.py": b}, {}) == [
        "--batch-size: its type differs: a.py declared 'images per batch, per process'; b.py integer.<locals>.parse"]
    assert flag_problems({"a.py": a, "c.py": c}, {("--mosaics", "c.py", "kind"): "on purpose"}) == []
    assert flag_problems({"b.py": b, "c.py": c}, {("--mosaics", "c.py", "kind"): "on purpose"}) == [
        "--batch-size: its type differs: b.py integer.<locals>.parse; c.py declared 'images per batch, per process'"]


@pytest.mark.parametrize("script", ["swa.py", "test.py"])
def test_the_training_options_of_the_scripts_ensemble_drives_come_from_their_declarations(script):
    """swa.py's and test.py's --device, --data-fold ... are made by cli.common.add_option from engine/config.py's
    declaration, so their checks (and ensemble.py's Option.ensemble) cannot differ from train.py's."""
    parser = parsers()[script]
    for a in actions(parser):
        if a.dest in config.options() and a.option_strings == [config.flag(a.dest)]:
            assert getattr(a, "declared", None) is config.spec(a.dest), f"{script} {a.option_strings[0]} by hand"


# -- ensemble.py refuses or passes on every option of the scripts it drives ---------------------------------------
VALID = {"data_fold": "fold1", "mosaic_rules": "vertical", "device": "cpu"}  # values that the flags' types accept


def _value(a: argparse.Action) -> str:
    """A value ``a`` accepts: its first choice, a value of VALID, else the first of its declared choices, x, 1, 0.5
    that its type takes."""
    if a.choices:
        return str(a.choices[0])
    declared = config.spec(a.dest).choices if a.dest in config.options() else ()
    for text in ([VALID[a.dest]] if a.dest in VALID else [*map(str, declared[:1]), "x", "1", "0.5"]):
        try:
            if a.type is None or a.type(text) is not None:
                return text
        except (argparse.ArgumentTypeError, ValueError, UserError):
            continue
    raise AssertionError(f"no test value for {a.option_strings}")


def _argv(a: argparse.Action) -> list[str]:
    value = [] if a.nargs == 0 else [_value(a)]
    return [a.option_strings[0], *value] if a.option_strings else value


def _passed_on(script: str, argv: list[str]) -> set[str]:
    """The fields ensemble.py passes on from ``--test-args`` / ``--swa-args`` given as ``argv``."""
    if script == "swa.py":
        return set(ensemble_cli.swa_options(argv))
    predict, post_config, post = ensemble_cli.test_options(argv)
    return set(predict) | set(post) | ({"post_config"} if post_config else set())


@pytest.mark.parametrize("script", ["test.py", "swa.py"])
def test_ensemble_refuses_or_passes_on_every_option_of_the_scripts_it_drives(script, tmp_path):
    """Each option of test.py and swa.py given in --test-args / --swa-args is either refused, saying what to use
    instead, or reaches the step's typed options: none is dropped without a word."""
    from tgs import postprocess

    VALID["post_config"] = str(tmp_path / "post.json")
    VALID["mosaics"] = str(tmp_path / "mosaics.csv")  # the flag's type wants an existing file
    (tmp_path / "mosaics.csv").write_text("id,mosaic,row,col\n")
    postprocess.save_setting(VALID["post_config"], postprocess.DEFAULTS)
    parser = parsers()[script]
    owned = set_by_ensemble_in(parser)
    for a in actions(parser):
        if a.dest in owned:
            with pytest.raises(UserError) as exc:
                _passed_on(script, _argv(a))
            assert "ensemble.py" in str(exc.value) and owned[a.dest][1] in str(exc.value), exc.value
        else:
            assert a.dest in _passed_on(script, _argv(a)), f"{script} {a.option_strings[0]} is dropped"


def test_every_training_option_an_ensemble_fold_sets_is_refused_among_the_pass_through_ones(tmp_path):
    from engine.ensemble import EnsembleOptions, fold_config
    from engine.ensemble.naming import Job

    given = dict(data_dir="elsewhere", data_fold="fold7", log_dir="runs/x", input_mode="resize", resize=True,
                 input_size=64, folds_file="f.csv", pseudo_labels="p.npz", pseudo_fraction=0.5)
    base = config.TrainConfig.from_dict(given)
    opts = EnsembleOptions(data_dir="data", run_dir=str(tmp_path), folds=("fold0",), train=base, modes=("pad",),
                           pseudo_labels="q.npz", pseudo_train={"pseudo_fraction": 0.25})
    made = fold_config(Job("pad", "fold0", opts.layout), opts).to_dict()
    changed = {k for k, v in base.to_dict().items() if made[k] != v}
    assert changed == set(given) and changed <= set(config.SET_BY_ENSEMBLE)


def test_a_refused_training_option_names_the_ensemble_flag_to_use():
    for name, how in config.SET_BY_ENSEMBLE.items():
        value = [] if config.spec(name).kind == "bool" else [VALID.get(name, "1")]
        with pytest.raises(UserError) as exc:
            ensemble_cli.train_options([config.flag(name), *value])
        assert str(exc.value) == f"train options: {ensemble_cli.refusal(config.flag(name), how, ' for every fold')}"
        assert how.startswith("--") or how.startswith("is ")


# -- no hand-kept list of option names ------------------------------------------------------------------------------
def _option_name_lists(source: str, dests: set[str]) -> list[tuple[int, list[str]]]:
    """(line, names) of each tuple, list, set or dict literal in ``source`` that names two or more options."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            items = node.elts
        elif isinstance(node, ast.Dict):
            items = [k for k in node.keys if k is not None]
        else:
            continue
        names = [e.value for e in items if isinstance(e, ast.Constant) and isinstance(e.value, str)
                 and e.value in dests]
        if len(names) >= 2:
            out.append((node.lineno, names))
    return out


def _dests() -> set[str]:
    return {a.dest for p in parsers().values() for a in actions(p)}


def test_no_hand_kept_list_of_option_names_is_left_in_cli():
    dests = _dests()
    found = {f"cli/{f.name}:{line}": names for f in sorted(CLI.glob("*.py"))
             for line, names in _option_name_lists(f.read_text(), dests)}
    assert found == {}, f"option names kept by hand (derive them from the declarations): {found}"


def test_a_hand_kept_list_of_option_names_is_caught():
    source = 'SHARED = ("device", "threads", "amp")\nFLAGS = {"--device": 1, "--amp": 2}\nWORDS = ("a", "b")\n'
    assert _option_name_lists(source, _dests()) == [(1, ["device", "threads", "amp"])]
