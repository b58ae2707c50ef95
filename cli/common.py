"""What every command line shares: a parser whose mistakes are one line (exit 2, like every user error), range-
checked number types, and the options several scripts take (device, amp, threads, decoding threads, cache,
post-processing)."""
from __future__ import annotations

import argparse

from tgs.cliargs import (  # noqa: F401  (re-exported for the cli modules)
    ArgumentParser,
    add_declared,
    add_mosaics,
    checked,
    integer,
    number,
    share,
)
from tgs.errors import UserError


def fold_list(text: str) -> tuple[str, ...]:
    """An argparse type: comma-separated fold names (``fold0,fold1``), checked by datasets.folds.fold_names."""
    from datasets.folds import fold_names

    try:
        return fold_names(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_GIVEN = object()


def add_option(p, name: str, note: str | None = None, default=_GIVEN, passed_on: bool = True,
               **kw) -> argparse.Action:
    """Add the training option ``name`` (declared once, in engine/config.py) to another script's parser: its flag,
    type, metavar, checks and help are the declaration's (:func:`add_declared`); ``note`` adds the script's own use
    to the help, ``default`` replaces the declared one. ``passed_on=False``: the parser is ensemble.py's own, whose
    flag sets the option for every fold (else the flag is marked as one ensemble.py refuses among the options it
    passes on, :func:`set_by_ensemble`, where the declaration says so)."""
    from engine import config as C

    f = C.options()[name][1]
    o = f.metadata["option"]
    action = add_declared(p, C.flag(name), o, f.default if default is _GIVEN else default, note, **kw)
    if o.ensemble and passed_on:
        set_by_ensemble(action, o.ensemble)
    return action


def set_by_ensemble(action: argparse.Action, how: str) -> argparse.Action:
    """Declare that ensemble.py sets the option of ``action`` (a flag of a script whose options it passes on)
    itself: ``how`` is the ensemble.py flag to use instead (``--run-dir``) or, not a flag, what it does (``is set
    by ensemble.py (...)``). ensemble.py refuses such an option among the pass-through ones, saying ``how``
    (:func:`set_by_ensemble_in` reads them back). A training option says it on its declaration (Option.ensemble)."""
    action.set_by_ensemble = how
    return action


def set_by_ensemble_in(parser: argparse.ArgumentParser) -> dict[str, tuple[str, str]]:
    """``{dest: (its flag, how)}`` of the options of ``parser`` that ensemble.py sets itself
    (:func:`set_by_ensemble`); a positional argument's flag is its name in capitals."""
    return {a.dest: ((a.option_strings or [a.dest.upper()])[0], a.set_by_ensemble) for a in parser._actions
            if getattr(a, "set_by_ensemble", "")}


def add_device(p, default: str = "auto") -> None:
    add_option(p, "device", default=default)


def add_amp(p) -> None:
    add_option(p, "amp")


def add_threads(p) -> None:
    add_option(p, "threads")


def add_decoding(p) -> None:
    """``--decode-threads`` (declared in tgs/png.py) and ``--no-cache``."""
    from tgs.png import DECODE_THREADS

    add_declared(p, "--decode-threads", DECODE_THREADS, 0)
    add_option(p, "no_cache")


def doc_parts(doc: str) -> tuple[str, str]:
    """(description, epilog) of a script's docstring: its first paragraph and the rest."""
    head, _, rest = doc.partition("\n\n")
    return head, rest


def new_parser(prog: str, doc: str, **kw) -> ArgumentParser:
    """A script's parser: its docstring's first paragraph as the description and the rest as the epilog, both
    printed as written (:func:`doc_parts`)."""
    description, epilog = doc_parts(doc)
    return ArgumentParser(prog=prog, description=description, epilog=epilog,
                          formatter_class=argparse.RawDescriptionHelpFormatter, **kw)


MODELS_HELP = "checkpoints (models.save_checkpoint files, e.g. swa.py outputs)"  # the scripts that take models


def add_postprocessing(p) -> None:
    """The post-processing flags (test.py, pseudo.py, section.py): ``--post-config JSON`` and a flag per value of
    :class:`tgs.postprocess.PostProcess` (its declaration gives the flag, type, range and help) overriding the
    file's; a flag not given leaves no attribute (``--gate none`` is a value), and :func:`post_setting` resolves
    them."""
    from tgs import postprocess

    pp = p.add_argument_group("post-processing (defaults: --post-config's file, else tgs/postprocess.py's)")
    pp.add_argument("--post-config", metavar="JSON",
                    help="the setting of score.py --search --save-best JSON; the flags below override its values")
    for name, o in postprocess.VALUES.items():
        default = getattr(postprocess.DEFAULTS, name)
        if o.kind == "bool":
            pp.add_argument(postprocess.flag(name), dest=name, action="store_const", const=not default,
                            default=argparse.SUPPRESS, help=o.help).declared = o
            continue
        shown = "none: off; default off" if default is None else f"default {default:g}"
        pp.add_argument(postprocess.flag(name), type=checked(name, o, postprocess.flag(name)), dest=name,
                        default=argparse.SUPPRESS, metavar=name.upper(), help=f"{o.help} ({shown})").declared = o


def post_setting(args: argparse.Namespace) -> tuple:
    """(PostProcess, where it comes from): --post-config's file or the defaults, overridden by the flags given
    (:func:`add_postprocessing`: a flag not given is no attribute; ``--gate none`` is a value, off)."""
    from tgs import postprocess

    given = {k: getattr(args, k) for k in postprocess.VALUES if hasattr(args, k)}
    return postprocess.resolve(args.post_config, given)
