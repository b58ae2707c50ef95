"""What every command line shares: a parser whose mistakes are one line (exit 2, like every user error), range-
checked number types, and the options several scripts take (device, amp, threads, decoding threads, cache,
post-processing)."""
from __future__ import annotations

import argparse

from tgs import TILE
from tgs.cliargs import ArgumentParser, integer, number, probability, share  # noqa: F401  (re-exported for the cli modules)
from tgs.errors import UserError


def checked(name: str):
    """An argparse type for the training option ``name``: the same :func:`engine.config.coerce` checks (kind,
    choices, range, the option's own test) that train.py's flag and a config file's key pass."""
    from engine import config as C

    def parse(text: str):
        try:
            return C.coerce(name, text, C.flag(name), text=True)
        except UserError as exc:
            raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[-1]) from None

    parse.__name__ = name  # argparse names the type in some messages
    return parse


def fold_list(text: str) -> tuple[str, ...]:
    """An argparse type: comma-separated fold names (``fold0,fold1``), checked by datasets.folds.fold_names."""
    from datasets.folds import fold_names

    try:
        return fold_names(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_option(p, name: str, help: str | None = None, **kw) -> None:
    """Add the training option ``name`` (declared once, in engine/config.py) to another script's parser: its flag,
    default, help and checks are the declaration's; ``help`` or argparse keywords (``default``) may narrow them."""
    from engine import config as C

    title, f = C.options()[name]
    o = f.metadata["option"]
    if o.kind == "bool":
        action = p.add_argument(C.flag(name), action="store_true", help=help or o.help, **kw)
    else:
        kw.setdefault("default", f.default)
        metavar = "{" + ",".join(map(str, o.choices)) + "}" if o.choices else name.upper()
        action = p.add_argument(C.flag(name), type=checked(name), metavar=metavar,
                                help=f"{help or o.help} (default: {kw['default']})", **kw)
    action.declared = name  # the flag is the declaration's (tests/test_one_place.py checks it)
    if o.ensemble:
        set_by_ensemble(action, o.ensemble)


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
    p.add_argument("--decode-threads", type=integer(0, 1024), default=0, help="PNG decoding threads (0: automatic)")
    add_option(p, "no_cache")


def doc_parts(doc: str) -> tuple[str, str]:
    """(description, epilog) of a script's docstring: its first paragraph and the rest."""
    head, _, rest = doc.partition("\n\n")
    return head, rest


def add_postprocessing(p) -> None:
    """The post-processing flags (test.py, pseudo.py): ``--post-config JSON`` and the flags overriding its values,
    each named as its tgs.postprocess.PostProcess field and absent from the namespace unless given;
    :func:`post_setting` resolves them."""
    from tgs import postprocess

    d = postprocess.DEFAULTS
    pp = p.add_argument_group("post-processing (defaults: --post-config's file, else tgs/postprocess.py's)")
    pp.add_argument("--post-config", metavar="JSON",
                    help="the setting of score.py --search --save-best JSON; the flags below override its values")
    pp.add_argument("--threshold", type=probability, default=argparse.SUPPRESS,
                    help=f"salt where probability > this (default {d.threshold:g})")
    pp.add_argument("--min-area", type=integer(0, TILE * TILE), default=argparse.SUPPRESS,
                    help=f"predictions with fewer salt pixels become empty (default {d.min_area})")
    pp.add_argument("--gate", type=postprocess.parse_gate, default=argparse.SUPPRESS,
                    help="empty where the image-level salt probability < this (none: off; default off)")
    pp.add_argument("--no-flat", dest="flat", action="store_const", const=False, default=argparse.SUPPRESS,
                    help="keep predictions on flat single-valued images (default: empty)")


def post_setting(args: argparse.Namespace) -> tuple:
    """(PostProcess, where it comes from): --post-config's file or the defaults, overridden by the flags given
    (:func:`add_postprocessing`: a flag not given is no attribute; ``--gate none`` is a value, off)."""
    from dataclasses import fields

    from tgs import postprocess

    given = {f.name: getattr(args, f.name) for f in fields(postprocess.PostProcess) if hasattr(args, f.name)}
    return postprocess.resolve(args.post_config, given)
