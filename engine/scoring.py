"""What score.py does: score a submission with the competition metric, check a test-set submission's format, and
search the post-processing on out-of-fold probabilities (:func:`tgs.postprocess.search`)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from datasets.kaggle import Layout, read_sample_submission
from engine import logs
from tgs import metric, postprocess, probabilities, submission
from tgs.errors import UserError
from tgs.io import atomic_open
from tgs.png import read_pngs


def check(path: str, data: str) -> int:
    layout = Layout.of(data)
    layout.require("sample_submission")
    expected = read_sample_submission(layout.sample_submission)
    df = submission.align(submission.read(path), expected, path, str(layout.sample_submission))
    masks = submission.decode(df)
    empty = ~masks.reshape(len(masks), -1).any(axis=1)
    logs.info(f"{path}: valid submission of {len(df)} ids ({empty.mean():.1%} empty masks)")
    return 0


def score(path: str, truth: str, per_image: str | None, subset: bool) -> int:
    truth_ids, truth_masks = submission.read_truth(truth)
    df = submission.align(submission.read(path), truth_ids, path, truth, subset=subset)
    if len(df) < len(truth_ids):
        keep = pd.Index(truth_ids).isin(df["id"])
        truth_ids, truth_masks = truth_ids[keep], truth_masks[keep]
    pred = submission.decode(df)
    rep = metric.report(pred, truth_masks)
    logs.info("\n".join(rep.lines()))
    if per_image:
        with atomic_open(per_image, "w", newline="") as fh:
            pd.DataFrame({"id": truth_ids, "score": rep.per_image, "iou": np.round(rep.per_image_iou, 6)}).to_csv(
                fh, index=False)
        logs.info(f"per-image scores written to {per_image}")
    return 0


def search(path: str, truth: str, save_best: str | None = None) -> int:
    """Best post-processing on out-of-fold probabilities; the flat-image rule is searched when the training
    images lie next to the truth (DATA/train.csv -> DATA/train/images, DATA/train/masks -> DATA/train/images)."""
    oof = probabilities.load(path)
    if oof.split != "valid":
        logs.info(f"note: {path} holds {oof.split!r} predictions; a search is meaningful on out-of-fold ones")
    truth_ids, truth_masks = submission.read_truth(truth)
    index = pd.Index(truth_ids).get_indexer(oof.ids)
    if (index < 0).any():
        missing = oof.ids[index < 0]
        raise UserError(f"{path}: {len(missing)} of its ids are not in {truth}, first {missing[0]}")
    images_dir = submission.images_beside(truth)
    flat = None
    if images_dir.is_dir():
        flat = postprocess.flat_images(read_pngs(images_dir, oof.ids, "image"))
    else:
        logs.info(f"note: no {images_dir}: the flat-image rule is not searched")
    result = postprocess.search(probabilities.quantize(oof.probs), truth_masks[index], oof.image_probs, flat)
    logs.info("\n".join(result.lines()))
    if save_best:
        postprocess.save_setting(save_best, result.best, {
            "score": round(result.best_score, 6), "default_score": round(result.default_score, 6),
            "images": result.count, "searched_on": str(path)})
        logs.info(f"best setting written to {save_best} (test.py --post-config {save_best})")
    return 0
