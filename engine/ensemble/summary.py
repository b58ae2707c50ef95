"""A self-training run's summary: each round's out-of-fold score with the default post-processing and the nested
estimate of its submission's, and its submission."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.ensemble.options import EnsembleOptions
from tgs import metric, postprocess
from tgs import probabilities as P
from tgs.submission import match_ids


def oof_score(opts: EnsembleOptions) -> tuple[float, float | None]:
    """A round's merged out-of-fold score with the default post-processing, and the nested estimate of its
    submission's post-processing (the search's default score plus the held-out gains of its setting and of the
    mosaic rules: every fold scored with what was chosen on the other folds); None without a search."""
    from datasets.kaggle import load_train

    merged = P.load(opts.layout.merged_oof.npz)
    train = load_train(opts.data_dir)
    rows = match_ids(merged.ids, train.ids, str(opts.layout.merged_oof.npz), "train.csv", subset=True)
    masks = postprocess.apply(merged.probs[rows], merged.image_probs[rows],
                              train.images[np.isin(train.ids, merged.ids)], postprocess.DEFAULTS)
    default = metric.score(masks, train.masks[np.isin(train.ids, merged.ids)])
    if not (opts.tuned_post and opts.layout.postprocess.is_file()):
        return default, None
    setting, info = postprocess.load_setting(opts.layout.postprocess)
    gains = [info.chosen_held_out_gain, info.rules_held_out_gain if setting.rules else 0.0]
    if any(g is None for g in gains):
        return default, None
    return default, (default if info.default_score is None else info.default_score) + sum(gains)


def summary_lines(scores: list[tuple[int, tuple[float, float | None], Path]], source: str) -> list[str]:
    out = ["self-training rounds (out-of-fold score with the default post-processing; with the submission's, nested "
           "estimate; submission):"]
    for r, (default, nested), sub in scores:
        kind = ""
        if r > 0:
            kind = ("  honest: each fold's pseudo-labels came from its own models" if source == "fold" else
                    "  OPTIMISTIC: the pseudo-labels came from every fold's models, which trained on this fold's "
                    "validation images")
        tuned = f"{nested:.6f}" if nested is not None else "-"
        out.append(f"  round {r}: {default:.6f}  {tuned}  {sub}{kind}")
    return out


