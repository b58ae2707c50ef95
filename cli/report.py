"""report.py's command line: a run folder or saved probabilities -> engine.report."""
from __future__ import annotations

import argparse
from pathlib import Path

from cli.common import ArgumentParser, add_declared, add_device, add_mosaics, add_option, integer, new_parser
from cli.test import rule_names
from tgs import postprocess
from tgs.errors import UserError, cli
from tgs.mosaic_rules import RULES

DOC = """Reports of a training run or of saved probabilities, as PNG plots and CSV tables.

    python report.py runs/fold0                                   # learning curves + the fold's validation report
    python report.py runs/fold0 --source npz                      # from a *-probabilities.npz of split valid there
    python report.py --probabilities OOF.npz --truth DATA/train.csv [--out DIR]

A run folder gets learning-curves.png (loss, metric, learning rate per epoch; best epochs marked) and, from its best
model (models/best-metric-FOLD.pth, else last-FOLD.pth) over the fold's validation images, valid-thresholds.png
(pixel ROC, precision-recall, competition metric over thresholds, best threshold marked), valid-coverage.png
(metric by mask coverage), valid-samples.png (worst, best and random images) and the numbers as CSV
(valid-threshold-sweep.csv, valid-coverage-bins.csv, valid-samples.csv, valid-per-image.csv). A probabilities file
gets the same validation files, named after it (OOF-thresholds.png ...). Parts whose inputs are missing (a run
still in its first epoch) are skipped with a note.

    python report.py --probabilities OOF.npz --truth DATA/train.csv --mosaics M/mosaics.csv [--mosaic-count 5]
    python report.py --probabilities test-probabilities.npz --data-dir DATA --mosaics M/mosaics.csv

--mosaics adds PREFIX-mosaic-1.png ...: the largest mosaics assembled (images grey), train masks outlined in green,
predictions (above --threshold, then the mosaic rules) in red, tiles a rule changed framed in the rule's colour."""


def build_parser() -> ArgumentParser:
    p = new_parser("report.py", DOC)
    p.add_argument("run", nargs="?", type=Path, help="a train.py log folder (metrics.csv, models/)")
    p.add_argument("--probabilities", metavar="NPZ",
                   help="report on saved probabilities (out-of-fold, ensemble) instead of a run")
    p.add_argument("--truth", help="with --probabilities: train.csv or a folder of true mask PNGs")
    add_option(p, "data_dir", "default: the one the run was trained on; with --probabilities: truth and images "
                              "from DATA_DIR/train.csv and DATA_DIR/train/images", default=None)
    p.add_argument("--out", metavar="DIR",
                   help="folder for the files (default: the run folder, or the folder of the .npz)")
    g = p.add_argument_group("run folders")
    g.add_argument("--source", choices=("auto", "model", "npz"), default="auto",
                   help="validation predictions: 'model' runs the run's best model over the fold, 'npz' uses the "
                        "newest *-probabilities.npz of split valid in the run folder, 'auto' (default) that file "
                        "when it is newer than the model, else the model")
    g.add_argument("--checkpoint", type=Path, help="model to predict with (default models/best-metric-FOLD.pth, "
                                                   "else models/last-FOLD.pth)")
    add_option(g, "folds_file", "default: the run's", default=None)
    g.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="horizontal-flip TTA (default: as the run validated, its --vtf)")
    add_device(g)
    add_option(g, "batch_size", "prediction with the run's model", default=32)
    g = p.add_argument_group("report")
    add_declared(g, "--threshold", postprocess.VALUES["threshold"], postprocess.DEFAULTS.threshold,
                 "of the masks drawn")
    g.add_argument("--samples", type=integer(0), default=6, help="worst, best and random images shown (6 each)")
    add_option(g, "seed", "the sample's")
    g = p.add_argument_group("mosaics")
    add_mosaics(g, "also draw the largest mosaics as assembled sections, train masks and predictions outlined, "
                   "the tiles the mosaic rules change framed (PREFIX-mosaic-1.png ...)")
    g.add_argument("--mosaic-count", type=integer(1), default=3, help="how many mosaics, largest first (default 3)")
    g.add_argument("--mosaic-rules", type=rule_names, default=RULES, metavar="RULES",
                   help=f"the rules applied to the predictions in the pictures (default all: {','.join(RULES)}; "
                        "none: no rule)")
    return p


def _path(value: str | None) -> Path | None:
    return None if value is None else Path(value)  # engine.report takes Paths


@cli
def main(argv=None) -> int:
    from engine import report

    args = build_parser().parse_args(argv)
    from tgs.io import check_output

    check_output(args.out, "--out", {"--probabilities": args.probabilities, "--truth": args.truth,
                                     "--checkpoint": args.checkpoint, "--folds-file": args.folds_file,
                                     "--mosaics": args.mosaics}, [args.data_dir])
    common = dict(out_dir=_path(args.out), threshold=args.threshold, samples=args.samples, seed=args.seed,
                  mosaics=_path(args.mosaics), mosaic_count=args.mosaic_count, mosaic_rules=args.mosaic_rules)
    if args.probabilities is not None:
        if args.run is not None:
            raise UserError("give either a run folder or --probabilities, not both")
        outcome = report.report_probabilities(_path(args.probabilities), _path(args.truth), _path(args.data_dir),
                                             **common)
    elif args.run is not None:
        if args.truth is not None:
            raise UserError("--truth goes with --probabilities; a run's truth comes from its data (or --data-dir)")
        outcome = report.report_run(args.run, args.source, args.checkpoint, _path(args.data_dir),
                                    _path(args.folds_file), device=args.device, tta=args.tta,
                                    batch_size=args.batch_size, **common)
    else:
        raise UserError("give a run folder (python report.py runs/fold0) or --probabilities FILE.npz --truth "
                        "DATA/train.csv")
    print(outcome.text())
    return 0
