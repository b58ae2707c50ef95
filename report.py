#!/usr/bin/env python
"""Reports of a training run or of saved probabilities, as PNG plots and CSV tables.

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
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # no display needed (tgs.report draws on Agg figures anyway)

import tgs.compat  # noqa: E402,F401  (before timm / torchvision)
from tgs import report  # noqa: E402
from tgs.errors import UserError, cli  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", nargs="?", type=Path, help="a train.py log folder (metrics.csv, models/)")
    p.add_argument("--probabilities", type=Path, metavar="NPZ",
                   help="report on saved probabilities (out-of-fold, ensemble) instead of a run")
    p.add_argument("--truth", type=Path, help="with --probabilities: train.csv or a folder of true mask PNGs")
    p.add_argument("--data-dir", type=Path,
                   help="dataset in Kaggle's layout (default: the one the run was trained on; with "
                        "--probabilities: truth and images from DATA/train.csv and DATA/train/images)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="folder for the files (default: the run folder, or the folder of the .npz)")
    g = p.add_argument_group("run folders")
    g.add_argument("--source", choices=("auto", "model", "npz"), default="auto",
                   help="validation predictions: 'model' runs the run's best model over the fold, 'npz' uses the "
                        "newest *-probabilities.npz of split valid in the run folder, 'auto' (default) that file "
                        "when it is newer than the model, else the model")
    g.add_argument("--checkpoint", type=Path, help="model to predict with (default models/best-metric-FOLD.pth, "
                                                   "else models/last-FOLD.pth)")
    g.add_argument("--folds-file", type=Path, help="folds CSV (default: the run's)")
    g.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="horizontal-flip TTA (default: as the run validated, its --vtf)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    g.add_argument("--batch-size", type=int, default=32)
    g = p.add_argument_group("report")
    g.add_argument("--threshold", type=float, default=0.5, help="probability threshold of the masks (default 0.5)")
    g.add_argument("--samples", type=int, default=6, help="worst, best and random images shown (6 each)")
    g.add_argument("--seed", type=int, default=0, help="seed of the random sample")
    return p.parse_args(argv)


@cli
def main(argv=None) -> int:
    args = parse_args(argv)
    if not 0 <= args.threshold < 1:
        raise UserError(f"--threshold {args.threshold}: use a probability in [0, 1)")
    if args.samples < 0 or args.batch_size < 1:
        raise UserError("--samples must be >= 0 and --batch-size >= 1")
    common = dict(out_dir=args.out, threshold=args.threshold, samples=args.samples, seed=args.seed)
    if args.probabilities is not None:
        if args.run is not None:
            raise UserError("give either a run folder or --probabilities, not both")
        outcome = report.report_probabilities(args.probabilities, args.truth, args.data_dir, **common)
    elif args.run is not None:
        if args.truth is not None:
            raise UserError("--truth goes with --probabilities; a run's truth comes from its data (or --data-dir)")
        outcome = report.report_run(args.run, args.source, args.checkpoint, args.data_dir, args.folds_file,
                                    device=args.device, tta=args.tta, batch_size=args.batch_size, **common)
    else:
        raise UserError("give a run folder (python report.py runs/fold0) or --probabilities FILE.npz --truth "
                        "DATA/train.csv")
    print(outcome.text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
