#!/usr/bin/env python
"""Score a submission with the competition metric, or check a test-set submission's format.

    python score.py SUBMISSION.csv --truth DATA/train.csv        # or --truth DATA/train/masks
    python score.py SUBMISSION.csv --truth DATA/train.csv --per-image scores.csv
    python score.py SUBMISSION.csv --check DATA                   # all test ids of sample_submission.csv, valid RLE
    python score.py --search OOF.npz --truth DATA/train.csv       # best post-processing on out-of-fold predictions
    python score.py --search OOF.npz --truth DATA/train.csv --save-best post.json   # for test.py --post-config

The score is the mean over images of the precision at IoU thresholds 0.50, 0.55, ..., 0.95 (see tgs/metric.py).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

from tgs import metric, submission
from tgs.errors import UserError, cli
from tgs.io import atomic_open


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("submission", nargs="?", help="CSV with header id,rle_mask")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--truth", help="train.csv (id,rle_mask) or a folder of true mask PNGs")
    mode.add_argument("--check", metavar="DATA", help="validate a test-set submission against DATA/sample_submission.csv")
    p.add_argument("--per-image", metavar="FILE", help="write id,score,iou per image to this CSV")
    p.add_argument("--subset", action="store_true",
                   help="score only the truth ids the submission has (e.g. one fold's validation images)")
    p.add_argument("--search", metavar="OOF.npz",
                   help="grid-search threshold, minimum area, gating (and the flat-image rule) on out-of-fold "
                        "probabilities (test.py --split valid / --merge-oof) against --truth")
    p.add_argument("--save-best", metavar="JSON",
                   help="with --search: write the best setting here (read by test.py --post-config)")
    args = p.parse_args(argv)
    if args.save_best and not args.search:
        raise UserError("--save-best goes with --search")
    if args.search:
        if args.submission or not args.truth or args.per_image or args.subset:
            raise UserError("--search OOF.npz goes with --truth only (no submission, --check, --per-image, --subset)")
    elif not args.submission:
        raise UserError("give a SUBMISSION.csv to score or check (or --search OOF.npz --truth ...)")
    return args


def check(path: str, data: str) -> int:
    from datasets.kaggle import Layout, read_sample_submission

    layout = Layout.of(data)
    layout.require("sample_submission")
    expected = read_sample_submission(layout.sample_submission)
    df = submission.align(submission.read(path), expected, path, str(layout.sample_submission))
    masks = submission.decode(df)
    empty = ~masks.reshape(len(masks), -1).any(axis=1)
    print(f"{path}: valid submission of {len(df)} ids ({empty.mean():.1%} empty masks)")
    return 0


def score(path: str, truth: str, per_image: str | None, subset: bool) -> int:
    from datasets.kaggle import load_truth

    truth_ids, truth_masks = load_truth(truth)
    df = submission.align(submission.read(path), truth_ids, path, truth, subset=subset)
    if len(df) < len(truth_ids):
        keep = pd.Index(truth_ids).isin(df["id"])
        truth_ids, truth_masks = truth_ids[keep], truth_masks[keep]
    pred = submission.decode(df)
    rep = metric.report(pred, truth_masks)
    print("\n".join(rep.lines()))
    if per_image:
        with atomic_open(per_image, "w", newline="") as fh:
            pd.DataFrame({"id": truth_ids, "score": rep.per_image, "iou": np.round(rep.per_image_iou, 6)}).to_csv(
                fh, index=False)
        print(f"per-image scores written to {per_image}")
    return 0


def search(path: str, truth: str, save_best: str | None = None) -> int:
    """Best post-processing on out-of-fold probabilities; the flat-image rule is searched when the training
    images lie next to the truth (DATA/train.csv -> DATA/train/images, DATA/train/masks -> DATA/train/images)."""
    from datasets.kaggle import load_truth, read_pngs, train_images_beside
    from tgs import postprocess, probabilities

    oof = probabilities.load(path)
    if oof.split != "valid":
        print(f"note: {path} holds {oof.split!r} predictions; a search is meaningful on out-of-fold ones")
    truth_ids, truth_masks = load_truth(truth)
    index = pd.Index(truth_ids).get_indexer(oof.ids)
    if (index < 0).any():
        missing = oof.ids[index < 0]
        raise UserError(f"{path}: {len(missing)} of its ids are not in {truth}, first {missing[0]}")
    images_dir = train_images_beside(truth)
    flat = None
    if images_dir.is_dir():
        flat = postprocess.flat_images(read_pngs(images_dir, oof.ids, "image"))
    else:
        print(f"note: no {images_dir}: the flat-image rule is not searched")
    result = postprocess.search(probabilities.quantize(oof.probs), truth_masks[index], oof.image_probs, flat)
    print("\n".join(result.lines()))
    if save_best:
        postprocess.save_setting(save_best, result.best, {
            "score": round(result.best_score, 6), "default_score": round(result.default_score, 6),
            "images": result.count, "searched_on": str(path)})
        print(f"best setting written to {save_best} (test.py --post-config {save_best})")
    return 0


@cli
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.search:
        return search(args.search, args.truth, args.save_best)
    if args.check:
        if args.per_image or args.subset:
            raise UserError("--per-image and --subset go with --truth, not --check")
        return check(args.submission, args.check)
    return score(args.submission, args.truth, args.per_image, args.subset)


if __name__ == "__main__":
    sys.exit(main())
