"""What score.py does: score a submission with the competition metric, check a test-set submission's format, and
search the post-processing on out-of-fold probabilities, honestly (:func:`search`).

The search (:func:`tgs.search.honest_search`) knows each out-of-fold image's fold (``--oof-folds``, else its
chunk of the 10-chunk split or its fold in ``--folds-file``) and reports, besides the in-sample gain, the held-out
one: each fold scored with the setting searched on the other folds. The setting it saves is one whose held-out
gain is credible (:mod:`tgs.credibility`; the defaults otherwise), and it says which check decided and why. With
``--mosaics`` the mosaic rules (:mod:`tgs.mosaic_rules`) are searched on top of it, fold by fold: the fold's own
tiles are unknown (as test tiles are) and only the train masks outside that fold are known; they are kept under the
same rule. The file ``--save-best`` writes is a :class:`tgs.postprocess.Record`.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from datasets import folds
from datasets.kaggle import Layout, read_sample_submission, read_train_csv
from engine import logs
from tgs import metric, mosaic_rules, postprocess, probabilities, submission
from tgs import search as searching
from tgs.errors import DataError, UserError
from tgs.io import atomic_open
from tgs.mosaic import Mosaics
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


def data_root(truth) -> Path:
    """The dataset folder of a truth source: DATA for DATA/train.csv or DATA/train/masks."""
    truth = Path(truth)
    return truth.parent.parent if truth.is_dir() else truth.parent


def train_order(truth, truth_ids: np.ndarray) -> np.ndarray | None:
    """The training ids in train.csv order (what the 10-chunk split cuts): the truth's own order for a CSV,
    DATA/train.csv's beside a mask folder; None without one."""
    if not Path(truth).is_dir():
        return truth_ids
    csv = data_root(truth) / "train.csv"
    return read_train_csv(csv)["id"].to_numpy(str) if csv.is_file() else None


def test_ids_beside(truth) -> np.ndarray:
    """The test ids of DATA/sample_submission.csv next to the truth (none without the file)."""
    path = Layout.of(data_root(truth)).sample_submission
    return read_sample_submission(path) if path.is_file() else np.array([], str)


def oof_groups(path, oof_ids: np.ndarray, train_ids: np.ndarray, names=None,
               folds_file=None) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(fold index of each out-of-fold image, fold names, (K, len(train_ids)) bool: each fold's validation rows).

    ``names`` (``--oof-folds``): the folds the file was merged from, each image in exactly one of them; without
    them, each image's chunk of the 10-chunk split (or its fold in ``folds_file``)."""
    where = pd.Index(train_ids).get_indexer(oof_ids)
    if (where < 0).any():
        raise DataError(f"{path}: {int((where < 0).sum())} of its ids are not in train.csv, first "
                        f"{oof_ids[where < 0][0]}")
    if names:
        valid = np.zeros((len(names), len(train_ids)), bool)
        for k, name in enumerate(names):
            try:
                valid[k, folds.split(train_ids, name, folds_file)[1]] = True
            except UserError as exc:  # its message names the flag of train.py
                raise UserError(str(exc).replace("--data-fold", "--oof-folds")) from None
        member = valid[:, where]
        none, several = ~member.any(axis=0), member.sum(axis=0) > 1
        if none.any():
            raise UserError(f"--oof-folds {','.join(names)}: {int(none.sum())} images of {path} are in none of "
                            f"these folds' validation sets, first {oof_ids[none][0]}")
        if several.any():
            raise UserError(f"--oof-folds {','.join(names)}: the folds overlap (image {oof_ids[several][0]} of "
                            f"{path} is in two of them)")
        return np.argmax(member, axis=0), list(names), valid
    assignment = (folds.chunk_of_rows(len(train_ids)) if folds_file is None
                  else folds.read_folds_file(folds_file, train_ids))
    present, groups = np.unique(assignment[where], return_inverse=True)
    return groups, [f"fold{int(v)}" for v in present], assignment[None, :] == present[:, None]


def search(path: str, truth: str, save_best: str | None = None, mosaics: str | None = None,
           oof_folds=None, folds_file=None) -> int:
    """The honest post-processing search on out-of-fold probabilities (see the module docstring); the flat-image
    rule is searched when the training images lie next to the truth (DATA/train.csv -> DATA/train/images,
    DATA/train/masks -> DATA/train/images)."""
    oof = probabilities.load(path)
    if oof.split != "valid":
        logs.info(f"note: {path} holds {oof.split!r} predictions; a search is meaningful on out-of-fold ones")
    truth_ids, truth_masks = submission.read_truth(truth)
    index = pd.Index(truth_ids).get_indexer(oof.ids)
    if (index < 0).any():
        missing = oof.ids[index < 0]
        raise UserError(f"{path}: {len(missing)} of its ids are not in {truth}, first {missing[0]}")
    layout = None
    if mosaics:  # read (and refused) before any work
        layout = Mosaics.read(mosaics, known_ids=np.concatenate([truth_ids, test_ids_beside(truth)]))
    images_dir = submission.images_beside(truth)
    images = None
    if images_dir.is_dir():
        images = read_pngs(images_dir, oof.ids, "image")
    else:
        logs.info(f"note: no {images_dir}: the flat-image rule is not searched")
    order = truth_ids if folds_file else train_order(truth, truth_ids)  # a folds file maps ids, any order
    groups, names, valid = None, [], None
    if order is None:
        if mosaics or oof_folds:
            raise UserError(f"--truth {truth}: the folds follow train.csv's order and there is no "
                            f"{data_root(truth) / 'train.csv'}; give --truth DATA/train.csv or --folds-file")
        logs.info(f"note: no train.csv beside {truth}: the out-of-fold images' folds are unknown")
    else:
        groups, names, valid = oof_groups(path, oof.ids, order, oof_folds, folds_file)
    truth_oof = truth_masks[index]
    flat = postprocess.flat_images(images) if images is not None else None
    honest = searching.honest_search(probabilities.quantize(oof.probs), truth_oof, oof.image_probs, flat,
                                     groups, names)
    logs.info("\n".join(honest.lines()))
    record = record_of(honest, path)
    if layout is not None:
        masks = postprocess.apply(oof.probs, oof.image_probs, images, honest.chosen)
        nested = held_out_masks(oof, images, honest, masks)
        found = search_rules(layout, masks, truth_oof, oof.ids, groups, names, valid, order, truth_ids,
                             truth_masks, test_ids_beside(truth), nested)
        record = with_rules(record, found, mosaics, names)
        if found.kept:
            logs.info(f"test.py flags (with the rules): {record.setting.flags()} --mosaics {mosaics}")
        else:
            logs.info(f"test.py flags (no mosaic rule kept): {record.setting.flags()}")
    if save_best:
        postprocess.save_setting(save_best, record.setting, record)
        logs.info(f"chosen setting written to {save_best} (test.py --post-config {save_best}"
                  f"{f' --mosaics {mosaics}' if record.setting.rules else ''})")
    return 0


def _rounded(x: float):
    return None if np.isnan(x) else round(float(x), 6)


def record_of(honest: searching.HonestSearch, path) -> postprocess.Record:
    """What ``--save-best`` records of the search: the chosen setting, its scores, gains and the verdicts."""
    full = honest.families["all"]
    return postprocess.Record(
        honest.chosen, score=round(honest.chosen_score, 6), default_score=round(honest.result.default_score, 6),
        images=honest.result.count, searched_on=str(path), in_sample_best=honest.result.best,
        in_sample_gain=round(full.in_sample_gain, 6), held_out_gain=_rounded(full.held_out_gain),
        threshold_held_out_gain=_rounded(honest.families["threshold"].held_out_gain),
        # the chosen setting's (0 for the defaults): the default score plus it is the setting's nested score
        chosen_held_out_gain=(_rounded(honest.families[honest.chosen_family].held_out_gain)
                              if honest.chosen_family else 0.0),
        why=honest.reason, folds=dict(zip(honest.names, honest.counts)),
        empty_share=round(honest.empty["chosen"], 4), true_empty_share=round(honest.truth_empty, 4),
        credibility=honest.verdicts())


def with_rules(record: postprocess.Record, found: mosaic_rules.RuleSearch, mosaics, names) -> postprocess.Record:
    """The record with the mosaic rules' search: the kept rules in the setting, the score and the empty share with
    them, their gains, verdict, and the rules each fold's own predictions may use."""
    kept = found.kept
    score = record.score + float(found.sums[found.subsets.index(kept)].sum() - found.sums[0].sum()) / found.count
    return replace(
        record, setting=replace(record.setting, rules=kept), score=round(score, 6),
        empty_share=round(found.empty_share(kept), 4), mosaics=str(mosaics),
        rules_in_sample_gain=round(found.in_sample_gain, 6),
        # the kept rules' nested gain (the default score plus the setting's and this one is the nested score)
        rules_held_out_gain=_rounded(found.kept_held_out_gain if kept else found.held_out_gain),
        rules_why=found.verdict.why,
        credibility={**record.credibility, "mosaic rules": found.verdict,
                     **{f"mosaic rule {r}": v for r, v in found.rule_verdicts.items()}},
        rule_changes={r: postprocess.RuleChange(n, round(d, 6)) for r, (n, d) in found.alone.items()},
        # per fold, the rules chosen without its truth (what its own pseudo-labels may use)
        rules_by_fold={name: found.for_fold(k) for k, name in enumerate(names)})


def held_out_masks(oof, images, honest: searching.HonestSearch, masks: np.ndarray) -> np.ndarray:
    """The out-of-fold masks with each fold post-processed by the setting chosen without its truth (the nested
    search's), so that the rules' held-out gain is nested too; ``masks`` (the chosen setting's) where a fold has
    none."""
    out = masks.copy()
    for sel, setting in honest.held_out_settings():
        if sel.any():
            out[sel] = postprocess.apply(oof.probs[sel], None if oof.image_probs is None else oof.image_probs[sel],
                                         None if images is None else images[sel], setting)
    return out


def search_rules(layout: Mosaics, masks: np.ndarray, truth: np.ndarray, ids: np.ndarray, groups: np.ndarray,
                 names: list, valid: np.ndarray, order: np.ndarray, truth_ids: np.ndarray, truth_masks: np.ndarray,
                 test_ids: np.ndarray, nested_masks: np.ndarray | None = None) -> mosaic_rules.RuleSearch:
    """The mosaic rules on top of the chosen setting's masks, fold by fold: fold k's tiles unknown, the train masks
    outside fold k's validation rows known. The held-out figures come from ``nested_masks`` (each fold with the
    setting chosen on the other folds) when given. Prints the search and how many tiles could be reached."""
    rows = pd.Index(truth_ids)
    contexts, reach = [], 0
    for k in range(len(names)):
        known = rows.get_indexer(order[~valid[k]])
        known = known[known >= 0]
        ctx = mosaic_rules.Context(layout, truth_ids[known], truth_masks[known])
        reach += int(ctx.next_to_known(ids[groups == k]).sum())
        contexts.append(ctx)
    if len(contexts) == 1:  # one fold: its two halves (the same masks known) give the held-out estimate
        groups, names, contexts = searching.halves(len(ids)), ["first half", "second half"], contexts * 2
    found = mosaic_rules.search_rules(masks, truth, ids, groups, contexts, names)
    if nested_masks is not None:
        found.nested = mosaic_rules.search_rules(nested_masks, truth, ids, groups, contexts, names)
    share = reach / len(ids)
    reach_line = f"  {reach} of {len(ids)} out-of-fold tiles ({share:.1%}) are next to a known train tile"
    if len(test_ids):
        near = int(mosaic_rules.Context(layout, truth_ids, truth_masks).next_to_known(test_ids).sum())
        reach_line += f"; at test time {near} of {len(test_ids)} test tiles ({near / len(test_ids):.1%}) are"
        if share < 0.5 * near / len(test_ids):
            reach_line += (" (far fewer out of fold: folds that keep a mosaic's train tiles together, such as mosaic "
                           "folds, hide the neighbours the rules read)")
    logs.info(f"mosaic rules on top of the chosen setting ({len(layout)} tiles in {len(layout.sizes())} mosaics; "
              "each fold's own tiles unknown, the other folds' train masks known):")
    logs.info(reach_line)
    logs.info("\n".join(found.lines()))
    return found
