"""pseudo.py's command line: options -> engine.pseudo.make."""
from __future__ import annotations

import argparse

from cli.common import (
    ArgumentParser,
    add_decoding,
    add_mosaics,
    add_option,
    add_postprocessing,
    new_parser,
    post_setting,
    share,
)
from tgs.errors import UserError, cli

DOC = """Choose pseudo-labels among the test images from saved test predictions, and write them for train.py.

    python pseudo.py --probabilities RUN/ensemble-probabilities.npz --data-dir DATA \\
        --post-config RUN/postprocess.json --out RUN/pseudo-labels.npz
    python train.py ... --pseudo-labels RUN/pseudo-labels.npz [--pseudo-fraction 0.25 --pseudo-weight 1]

An image is kept when at least --min-confidence of its pixels have a probability below --lo or above --hi, and it
is not flat (one value everywhere); --cap BIN=SHARE keeps at most that share of the kept images whose predicted
coverage is in BIN (empty, <1%, 1-10%, 10-50%, >50%), the most confident first. The labels are the
post-processed masks (tgs/postprocess.py; the same flags as test.py). The file (tgs/pseudo.py) holds the ids,
masks, confidences and where they came from."""


def cap(text: str) -> tuple[str, float]:
    """An argparse type: ``BIN=SHARE`` (the bin's name is checked by tgs.pseudo.Rule)."""
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r} is not BIN=SHARE (e.g. empty=0.5)")
    return name, share(value)


def add_rule(group, prefix: str = "") -> None:
    """The pseudo-label rule's options (tgs.pseudo.Rule), declared once: pseudo.py takes them as they are,
    ensemble.py with the prefix ``pseudo-`` (``--pseudo-lo``; its ``--pseudo-confidence`` is
    ``--pseudo-min-confidence``). Each lands in ``args.<prefix>NAME`` with ``-`` as ``_``."""
    from tgs.pseudo import Rule

    d = Rule()

    def add(name: str, *aliases: str, **kw) -> None:
        flags = [f"--{prefix}{name}", *(f"--{prefix}{a}" for a in aliases)]
        group.add_argument(*flags, dest=f"{prefix}{name}".replace("-", "_"), **kw)

    add("lo", type=share, default=d.lo, help=f"a pixel is sure background below this (default {d.lo:g})")
    add("hi", type=share, default=d.hi, help=f"a pixel is sure salt above this (default {d.hi:g})")
    add("min-confidence", *(("confidence",) if prefix else ()), type=share, default=d.min_confidence,
        help=f"keep images with at least this share of sure pixels (default {d.min_confidence:g})")
    add("cap", type=cap, action="append", default=[], metavar="BIN=SHARE",
        help="keep at most SHARE of the kept images of a predicted-coverage bin, the most confident (e.g. "
             "empty=0.5; repeat for several bins)")


def rule_of(a: argparse.Namespace, prefix: str = ""):
    """The tgs.pseudo.Rule the options of :func:`add_rule` give."""
    from tgs.pseudo import Rule

    get = lambda name: getattr(a, f"{prefix}{name}".replace("-", "_"))  # noqa: E731
    return Rule(get("lo"), get("hi"), get("min-confidence"), tuple(get("cap")))


def build_parser() -> ArgumentParser:
    p = new_parser("pseudo.py", DOC)
    p.add_argument("--probabilities", required=True, metavar="NPZ",
                   help="test-set predictions (test.py's or the ensemble's PREFIX-probabilities.npz)")
    add_option(p, "data_dir")
    p.add_argument("--out", required=True, metavar="NPZ", help="the pseudo-labels file to write (e.g. "
                                                               "RUN/pseudo-labels.npz)")
    add_rule(p.add_argument_group("the rule"))
    add_decoding(p)
    add_postprocessing(p)
    add_mosaics(p, "for the setting's mosaic rules, every train mask known")
    return p


def parse(argv=None) -> dict:
    from pathlib import Path

    args = build_parser().parse_args(argv)
    if not Path(args.probabilities).is_file():
        raise UserError(f"--probabilities {args.probabilities} does not exist")
    from tgs.io import check_output

    check_output(args.out, "--out", {"--probabilities": args.probabilities, "--mosaics": args.mosaics,
                                     "--post-config": args.post_config}, [args.data_dir])
    post, source = post_setting(args)
    rule = rule_of(args)
    return dict(probabilities=args.probabilities, data_dir=args.data_dir, out=args.out, post=post, rule=rule,
                post_source=source, cache=not args.no_cache, workers=args.decode_threads or None,
                mosaics=args.mosaics)


@cli
def main(argv=None) -> int:
    from engine import pseudo

    pseudo.make(**parse(argv))
    return 0
