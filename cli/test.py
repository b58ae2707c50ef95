"""test.py's command line: options -> engine.prediction.PredictOptions -> engine.prediction.run."""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from cli.common import (
    MODELS_HELP,
    ArgumentParser,
    add_amp,
    add_decoding,
    add_device,
    add_mosaics,
    add_option,
    add_postprocessing,
    add_threads,
    new_parser,
    post_setting,
    set_by_ensemble,
)
from tgs.errors import UserError, cli
from tgs.io import check_output, require_file
from tgs.mosaic_rules import RULES, parse_rules

DOC = """Predict with one model or an ensemble, post-process, and write a submission and the probabilities.

    python test.py --tta fold0_swa.pth --output-prefix fold0            # fold0-submission.csv, fold0-probabilities.npz
    python test.py --tta runs/*/fold*_swa.pth --output-prefix ens       # fold averaging (pad and resize models mixed)
    python test.py --from-probabilities a.npz b.npz --output-prefix ens --data-dir DATA   # average saved predictions
    python test.py --split valid --data-fold fold0 --tta fold0_swa.pth --output-prefix oof/fold0   # out-of-fold
    python test.py --merge-oof oof/fold*-probabilities.npz --output-prefix oof --data-dir DATA     # all folds' OOF
    python test.py --tta runs/*/fold*_swa.pth --output-prefix ens --post-config post.json --mosaics M/mosaics.csv

Every model pads or resizes with its own checkpoint's input config and comes back at 101x101 (engine.predict,
the code path of train.py's validation); probabilities are averaged in one running mean, one model in memory at a
time. Post-processing (tgs/postprocess.py): --threshold, --min-area, --gate, flat images empty (--no-flat to keep
them); `score.py --search OOF.npz --truth DATA/train.csv` finds the best setting on out-of-fold predictions. With
--mosaics, the mosaic rules (--mosaic-rules, or the post-config's) run after it: vertical, empty-below, boundary,
fill-holes (tgs/mosaic_rules.py), using every train mask but the predicted tiles'.
The submission and the probabilities are written as a pair (an existing pair is replaced, and that is said)."""


def build_parser() -> ArgumentParser:
    p = new_parser("test.py", DOC)
    set_by_ensemble(p.add_argument("models", nargs="*", help=MODELS_HELP),
                    "is set by ensemble.py (every fold's SWA model)")
    src = p.add_argument_group("other sources")
    set_by_ensemble(src.add_argument("--from-probabilities", nargs="+", metavar="NPZ",
                                     help="average saved probabilities instead"),
                    "is not used by ensemble.py (it predicts with its folds' models)")
    set_by_ensemble(src.add_argument("--merge-oof", nargs="+", metavar="NPZ",
                                     help="merge per-fold out-of-fold probabilities (disjoint ids) into one file, "
                                          "and score it"),
                    "is set by ensemble.py (it merges its folds' out-of-fold predictions)")
    g = p.add_argument_group("prediction")
    set_by_ensemble(g.add_argument("--tta", action="store_true", help="horizontal-flip TTA"), "--no-tta")
    set_by_ensemble(g.add_argument("--output-prefix", required=True,
                                   help="writes PREFIX-submission.csv and PREFIX-probabilities.npz (e.g. runs/fold0)"),
                    "--run-dir")
    set_by_ensemble(g.add_argument("--split", choices=("test", "valid"), default="test",
                                   help="test: the test set; valid: --data-fold's validation images (out-of-fold)"),
                    "is set by ensemble.py (out of fold, then the test set)")
    add_option(g, "data_dir", "default: the first checkpoint's, else data", default=None)
    add_option(g, "data_fold", "with --split valid; default: the checkpoints'", default=None)
    add_option(g, "folds_file", "default: the checkpoints'", default=None)
    add_device(g)
    add_option(g, "batch_size", "prediction", default=64)
    add_amp(g)
    add_option(g, "channels_last")
    add_threads(g)
    add_decoding(g)
    g.add_argument("--message", help="the -m text of the printed kaggle command")
    add_postprocessing(p)
    mr = p.add_argument_group("mosaic rules (tgs/mosaic_rules.py), after the post-processing above")
    set_by_ensemble(add_mosaics(mr, "the layout the rules use (every train mask of --data-dir is known, but the "
                                    "predicted tiles')"), "--mosaics")
    set_by_ensemble(mr.add_argument("--mosaic-rules", type=rule_names, metavar="RULES",
                                    help=f"comma-separated, of {','.join(RULES)}; none: no rule (default: "
                                         "--post-config's rules, else none)"),
                    "is set by ensemble.py (the rules its out-of-fold search kept, with --mosaics)")
    set_by_ensemble(mr.add_argument("--mosaic-context", action="store_true",
                                    help="predict the tiles inside a --mosaics mosaic within their whole mosaic "
                                         "(windows over it, cut back), not alone (docs/sections.md)"),
                    "is not used by ensemble.py (it predicts every tile alone)")
    return p


def rule_names(text: str) -> tuple:
    """argparse type of --mosaic-rules: names of tgs.mosaic_rules.RULES (``none``: no rule)."""
    try:
        return parse_rules(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--mosaic-rules: ")) from None


def rule_setting(args: argparse.Namespace) -> tuple:
    """(PostProcess, where it comes from) with --mosaic-rules replacing the setting's rules; rules need --mosaics,
    and --mosaics goes with test or validation predictions."""
    post, source = post_setting(args)
    if args.mosaic_rules is not None:
        post = replace(post, rules=args.mosaic_rules)
        source += "; mosaic rules from the command line"
    if args.mosaics and args.merge_oof:
        raise UserError("--mosaics goes with test or validation predictions, not --merge-oof (score.py --search "
                        "OOF.npz --mosaics evaluates the rules on out-of-fold predictions fold by fold)")
    if post.rules and not args.mosaics and not args.merge_oof:
        where = "--mosaic-rules" if args.mosaic_rules else f"--post-config {args.post_config}"
        raise UserError(f"{where} asks for the mosaic rules {','.join(post.rules)}: give --mosaics DIR/mosaics.csv "
                        "(python mosaic.py --data-dir DATA --out DIR), or --mosaic-rules none")
    return post, source


def parse(argv=None):
    from engine.prediction import PredictOptions

    args = build_parser().parse_args(argv)
    sources = sum(bool(x) for x in (args.models, args.from_probabilities, args.merge_oof))
    if sources != 1:
        raise UserError("give model files, or --from-probabilities NPZ ..., or --merge-oof NPZ ... (exactly one)")
    if args.data_fold and args.split != "valid" and not args.merge_oof:
        raise UserError("--data-fold goes with --split valid")
    for paths in (args.models, args.from_probabilities or [], args.merge_oof or []):
        dup = [x for i, x in enumerate(paths) if Path(x).resolve() in {Path(y).resolve() for y in paths[:i]}]
        if dup:
            raise UserError(f"{dup[0]} is listed twice")
        for x in paths:
            require_file(x, "")
    from engine.layout import Outputs

    inputs = {"MODELS": args.models, "--from-probabilities": args.from_probabilities, "--merge-oof": args.merge_oof,
              "--post-config": args.post_config, "--mosaics": args.mosaics, "--folds-file": args.folds_file}
    for out in (Outputs(args.output_prefix).csv, Outputs(args.output_prefix).npz):
        check_output(out, "--output-prefix", inputs, [args.data_dir])
    post, source = rule_setting(args)
    if args.mosaic_context and not (args.mosaics and args.models):
        raise UserError("--mosaic-context predicts with model files inside --mosaics CSV's mosaics: give both")
    return PredictOptions(
        output_prefix=args.output_prefix, post=post, post_source=source, models=tuple(args.models),
        from_probabilities=tuple(args.from_probabilities or ()), merge_oof=tuple(args.merge_oof or ()),
        mosaics=args.mosaics, mosaic_context=args.mosaic_context, tta=args.tta,
        split=args.split, data_dir=args.data_dir, data_fold=args.data_fold, folds_file=args.folds_file,
        device=args.device, batch_size=args.batch_size, amp=args.amp, channels_last=args.channels_last,
        threads=args.threads, decode_threads=args.decode_threads, no_cache=args.no_cache, message=args.message)


@cli
def main(argv=None) -> int:
    from engine import prediction

    return prediction.run(parse(argv))
