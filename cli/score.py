"""score.py's command line: one of scoring a submission, checking a test submission, or the post-processing
search (engine.scoring)."""
from __future__ import annotations

import argparse

from cli.common import ArgumentParser, add_mosaics, add_option, fold_list, new_parser
from tgs.errors import UserError, cli

DOC = """Score a submission with the competition metric, or check a test-set submission's format.

    python score.py SUBMISSION.csv --truth DATA/train.csv        # or --truth DATA/train/masks
    python score.py SUBMISSION.csv --truth DATA/train.csv --per-image scores.csv
    python score.py SUBMISSION.csv --check DATA                   # all test ids of sample_submission.csv, valid RLE
    python score.py --search OOF.npz --truth DATA/train.csv       # best post-processing on out-of-fold predictions
    python score.py --search OOF.npz --truth DATA/train.csv --save-best post.json   # for test.py --post-config
    python score.py --search OOF.npz --truth DATA/train.csv --oof-folds fold0,fold1 --mosaics M/mosaics.csv

The search is honest: besides the in-sample gain (the best setting chosen and scored on the same images) it
prints the held-out gain (each fold scored with the best setting of the other folds) and the share of empty masks
each setting gives. A setting is kept only when its held-out gain is credible: at least 0.001, above the spread
between the folds, and significant in a paired sign-flip test over the out-of-fold images (p < 0.05); else the
defaults, and the output says which check decided (docs/search.md). --save-best writes the chosen setting and
the verdicts. With --mosaics the mosaic rules are searched on top of it, fold by fold, the fold's own tiles
unknown, and kept under the same rule.

The score is the mean over images of the precision at IoU thresholds 0.50, 0.55, ..., 0.95 (see tgs/metric.py)."""


SEARCH = "the post-processing search (--search OOF.npz --truth ...; the flags after --search go with it)"


def build_parser() -> ArgumentParser:
    p = new_parser("score.py", DOC)
    p.add_argument("submission", nargs="?", help="CSV with header id,rle_mask")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--truth", help="train.csv (id,rle_mask) or a folder of true mask PNGs")
    mode.add_argument("--check", metavar="DATA",
                      help="validate a test-set submission against DATA/sample_submission.csv")
    p.add_argument("--per-image", metavar="FILE", help="write id,score,iou per image to this CSV")
    p.add_argument("--subset", action="store_true",
                   help="score only the truth ids the submission has (e.g. one fold's validation images)")
    s = p.add_argument_group(SEARCH)  # the flags after --search go with it only (parse() says so)
    s.add_argument("--search", metavar="OOF.npz",
                   help="grid-search threshold, minimum area, gating (and the flat-image rule) on out-of-fold "
                        "probabilities (test.py --split valid / --merge-oof) against --truth")
    s.add_argument("--save-best", metavar="JSON",
                   help="write the chosen setting here (read by test.py --post-config)")
    s.add_argument("--oof-folds", type=fold_list, metavar="FOLDS",
                   help="the folds the out-of-fold file was merged from, e.g. fold0,fold1 (default: each image's "
                        "chunk of the 10-chunk split, or its fold in --folds-file)")
    add_option(s, "folds_file", "the folds of the out-of-fold file", default=None, passed_on=False)
    add_mosaics(s, "the mosaic rules are searched too")
    return p


def parse(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    group = next(g for g in parser._action_groups if g.title == SEARCH)
    for action in group._group_actions[1:]:
        if getattr(args, action.dest) and not args.search:
            raise UserError(f"{action.option_strings[0]} goes with --search")
    if args.search:
        if args.submission or not args.truth or args.per_image or args.subset:
            raise UserError("--search OOF.npz goes with --truth only (no submission, --check, --per-image, --subset)")
    elif not args.submission:
        raise UserError("give a SUBMISSION.csv to score or check (or --search OOF.npz --truth ...)")
    if args.check and (args.per_image or args.subset):
        raise UserError("--per-image and --subset go with --truth, not --check")
    from tgs.io import check_output

    inputs = {"SUBMISSION": args.submission, "--truth": args.truth, "--search": args.search,
              "--folds-file": args.folds_file, "--mosaics": args.mosaics}
    check_output(args.per_image, "--per-image", inputs, [args.check])
    check_output(args.save_best, "--save-best", inputs, [args.check])
    return args


@cli
def main(argv=None) -> int:
    from engine import scoring

    args = parse(argv)
    if args.search:
        return scoring.search(args.search, args.truth, args.save_best, args.mosaics, args.oof_folds, args.folds_file)
    if args.check:
        return scoring.check(args.submission, args.check)
    return scoring.score(args.submission, args.truth, args.per_image, args.subset)
