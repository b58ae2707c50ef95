"""Reports of a training run or of saved probabilities: finding the inputs, computing (engine.report.stats),
drawing (engine.report.plots) and writing the files. :func:`report_run` and :func:`report_probabilities` are what
``report.py`` runs: they return an :class:`Outcome` (summary lines, files written, parts skipped)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from datasets import folds, kaggle
from engine.config import TrainConfig, read_yaml
from engine.inference import UNSEEN, Ensemble, check_split
from engine.layout import Outputs, RunLayout
from engine.report.mosaics import Tiles, largest, pictures
from engine.report.plots import plot_coverage, plot_learning_curves, plot_samples, plot_thresholds, write_csv
from engine.report.stats import (
    as_levels,
    best_epochs,
    coverage_table,
    image_histograms,
    per_image,
    pixel_curves,
    read_metrics,
    select_samples,
    threshold_sweep,
)
from engine.scoring import data_root, oof_groups
from tgs import TILE, png, probabilities, submission
from tgs.errors import DataError, UserError, few
from tgs.mosaic import Mosaics
from tgs.mosaic_rules import RULES, apply_rules, parse_rules
from tgs.mosaic_rules import Outcome as RulesOutcome
from tgs.probabilities import level_of, quantize


# -- one validation set, every report ---------------------------------------------------------------------------
@dataclass
class Validation:
    """Predictions of images with known masks: what the validation part of a report is made of."""

    ids: np.ndarray  # (N,) str
    q: np.ndarray  # (N, H, W) uint8 probability levels
    truth: np.ndarray  # (N, H, W) bool
    images: np.ndarray | None  # (N, H, W) uint8, None if not found
    source: str  # where the predictions come from (for the summary)


@dataclass
class Outcome:
    """What a report did: summary lines, files written, parts skipped (with the reason)."""

    lines: list[str] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def text(self) -> str:
        out = list(self.lines)
        if self.written:
            out += ["wrote:"] + [f"  {p}" for p in self.written]
        out += [f"skipped: {s}" for s in self.skipped]
        return "\n".join(out)


def format_table(table: pd.DataFrame) -> str:
    shown = table.drop(columns=["lower", "upper"])
    return shown.to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="-")


def report_validation(v: Validation, out_dir: Path, prefix: str, threshold: float = 0.5, samples: int = 6,
                      seed: int = 0, outcome: Outcome | None = None, notes: Sequence[str] = ()) -> Outcome:
    """Threshold curves, coverage bins, sample grid and their CSVs for one validation set, files named
    ``out_dir/PREFIX-*``; summary lines added to ``outcome`` (``notes`` after the metric at the threshold)."""
    outcome = outcome or Outcome()
    if len(v.ids) == 0:
        raise UserError(f"{v.source}: no images to report on")
    hist = image_histograms(v.q, v.truth)
    curves, sweep = pixel_curves(v.q, v.truth, hist), threshold_sweep(v.q, v.truth, hist)
    table_images = per_image(v.ids, v.q, v.truth, threshold)
    best_images = per_image(v.ids, v.q, v.truth, sweep.best_threshold)
    table = coverage_table(table_images)
    table["score_best"] = coverage_table(best_images)["score"]
    groups = select_samples(table_images, samples, seed)
    frame = curves.frame().merge(sweep.frame(), on="threshold")
    shown = pd.concat([table_images.iloc[g.index].assign(group=g.name, rank=np.arange(1, len(g.index) + 1))
                       for g in groups])[["group", "rank", "id", "score", "iou", "coverage", "pred_area"]]
    name = (lambda s: out_dir / f"{prefix}-{s}")
    w = outcome.written
    w.append(plot_thresholds(curves, sweep, threshold, name("thresholds.png"),
                             f"{v.source}: {len(v.ids)} images"))
    w.append(write_csv(frame, name("threshold-sweep.csv")))
    w.append(plot_coverage(table, name("coverage.png"), threshold, sweep.best_threshold,
                           f"{v.source}: metric by mask coverage"))
    w.append(write_csv(table, name("coverage-bins.csv")))
    if samples > 0:
        w.append(plot_samples(v.images, v.truth, v.q, table_images, groups, threshold, name("samples.png"),
                              f"{v.source}: worst, best and random (seed {seed}) images"))
        w.append(write_csv(shown, name("samples.csv")))
    else:
        outcome.skipped.append("the sample grid (--samples 0)")
    w.append(write_csv(table_images.assign(score_best=best_images["score"]), name("per-image.csv")))
    outcome.lines += [
        f"validation: {len(v.ids)} images, {v.source}",
        f"  metric at threshold {threshold:.2f}: {sweep.at(threshold):.4f}",
        *notes,
        f"  best threshold {sweep.best_threshold:.3f} (prob > {sweep.best_threshold:.3f}): {sweep.best_score:.4f}",
        f"  salt pixels: ROC AUC {curves.roc_auc:.4f}, average precision {curves.average_precision:.4f}",
        f"metric by mask coverage (score at {threshold:.2f}, score_best at {sweep.best_threshold:.3f}):",
        *("  " + line for line in format_table(table).splitlines()),
    ]
    if v.images is None and samples > 0:
        outcome.skipped.append("the images column of the sample grid: training images not found (pass --data-dir)")
    return outcome


# -- inputs: saved probabilities --------------------------------------------------------------------------------
def images_folder(truth: Path | None, data_dir: Path | None) -> Path | None:
    """Where the training images of a truth source live: DATA/train/images next to DATA/train.csv or to
    DATA/train/masks, or under --data-dir."""
    if data_dir is not None:
        return Path(data_dir) / "train" / "images"
    return None if truth is None else submission.images_beside(truth)


def read_images(folder: Path | None, ids: np.ndarray) -> np.ndarray | None:
    """The images of ``ids`` from a folder of PNGs, or None when the folder lacks any of them."""
    if folder is None or not folder.is_dir():
        return None
    if not np.isin(ids, list(png.stems(folder))).all():
        return None
    return png.read_pngs(folder, ids, "image")


def align_truth(ids: np.ndarray, truth_ids: np.ndarray, source: str, truth_source: str) -> np.ndarray:
    """Rows of ``truth_ids`` holding each of ``ids``; an id without truth is an error."""
    where = pd.Index(truth_ids).get_indexer(ids)
    if (where < 0).any():
        missing = ids[where < 0]
        raise DataError(f"{source}: {len(missing)} of its {len(ids)} ids have no true mask in {truth_source}: "
                        f"{few(missing, 3)}")
    return where


def validation_from_npz(path: Path, truth: Path | None = None, data_dir: Path | None = None,
                        train=None, loaded: probabilities.Probabilities | None = None) -> Validation:
    """A probabilities file (or its ``loaded`` content) against true masks (train.csv, a mask folder, --data-dir,
    or a loaded TrainSet)."""
    p = loaded if loaded is not None else probabilities.load(path)
    source = f"{path} (split {p.split}{', ' + str(len(p.models)) + ' models' if len(p.models) > 1 else ''})"
    if train is not None:
        rows = align_truth(p.ids, train.ids, str(path), f"the training set {data_dir}")
        return Validation(p.ids, as_levels(p.probs), train.masks[rows], train.images[rows], source)
    if truth is None:
        if data_dir is None:
            raise UserError(f"{path}: say where the true masks are: --truth DATA/train.csv (or DATA/train/masks), "
                            "or --data-dir DATA")
        truth = Path(data_dir) / "train.csv"
    truth_ids, masks = submission.read_truth(truth)
    rows = align_truth(p.ids, truth_ids, str(path), str(truth))
    masks = masks[rows]
    if masks.shape[1:] != p.probs.shape[1:]:
        raise DataError(f"{path}: probabilities are {p.probs.shape[1:]}, the masks of {truth} {masks.shape[1:]}")
    return Validation(p.ids, as_levels(p.probs), masks, read_images(images_folder(truth, data_dir), p.ids), source)


def report_probabilities(npz: Path, truth: Path | None = None, data_dir: Path | None = None,
                         out_dir: Path | None = None, threshold: float = 0.5, samples: int = 6,
                         seed: int = 0, mosaics: Path | None = None, mosaic_count: int = 3,
                         mosaic_rules: Sequence[str] = RULES) -> Outcome:
    """``report.py --probabilities F.npz --truth DATA/train.csv``: the validation report of saved predictions,
    written next to the file (or into ``out_dir``), file names starting with the file's name; with ``mosaics``
    also the pictures of the largest mosaics (test predictions get only those)."""
    npz = Path(npz)
    p = probabilities.load(npz)
    out, prefix, outcome = Path(out_dir) if out_dir else npz.parent, Outputs.name_of(npz), Outcome()
    board = None
    if mosaics is not None:
        if data_dir is None and truth is None:
            raise UserError("--mosaics: say where the dataset is: --data-dir DATA (or --truth DATA/train.csv)")
        board = MosaicInputs.read(mosaics, Path(data_dir) if data_dir else data_root(truth))
    if p.split == "test":
        if board is None:
            raise UserError(f"{npz} holds test predictions: the validation report needs out-of-fold ones (test.py "
                            "--split valid); --mosaics DIR/mosaics.csv --data-dir DATA draws test predictions on the "
                            "mosaics")
        outcome.skipped.append(f"the validation report: {npz} holds test predictions (no true masks)")
    else:
        report_validation(validation_from_npz(npz, truth, data_dir, loaded=p), out, prefix, threshold, samples,
                          seed, outcome)
    if board is not None:
        board.report(p.ids, as_levels(p.probs), threshold, mosaic_rules, mosaic_count, out, prefix, outcome, p.split)
    return outcome


# -- mosaic pictures ---------------------------------------------------------------------------------------------
@dataclass
class MosaicInputs:
    """A validated mosaics file and the dataset it belongs to (the train masks, the image folders)."""

    path: Path
    mosaics: Mosaics
    layout: kaggle.Layout
    train_ids: np.ndarray
    train_masks: np.ndarray

    @classmethod
    def read(cls, path: Path, data_dir: Path) -> "MosaicInputs":
        layout = kaggle.Layout.of(data_dir)
        layout.require("train_csv")
        train_ids, train_masks = submission.read_truth(layout.train_csv)
        test_ids = (kaggle.read_sample_submission(layout.sample_submission) if layout.sample_submission.is_file()
                    else np.array([], str))
        mosaics = Mosaics.read(path, known_ids=np.concatenate([train_ids, test_ids]))
        return cls(Path(path), mosaics, layout, train_ids, train_masks)

    def _images(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The images of ``ids`` from the train and test folders: (N, H, W) uint8 and which were found."""
        images = np.zeros((len(ids), TILE, TILE), np.uint8)
        found = np.zeros(len(ids), bool)
        for folder in (self.layout.train_images, self.layout.test_images):  # a loop over the two folders
            if not folder.is_dir():
                continue
            here = np.flatnonzero(~found & np.isin(ids, list(png.stems(folder))))
            if here.size:
                images[here] = png.read_pngs(folder, ids[here], "image")
                found[here] = True
        return images, found

    def rules(self, ids: np.ndarray, pred: np.ndarray, rules: Sequence[str], split: str,
              folds_file: Path | None = None) -> Outcome:
        """The mosaic rules on predicted masks as ``score.py --search`` evaluates them: test tiles with every train
        mask known; out-of-fold tiles fold by fold (each image's chunk of the 10-chunk split, or its fold in
        ``folds_file``), the fold's own train tiles unknown."""
        if split == "test":
            parts = [(np.ones(len(ids), bool), ~np.isin(self.train_ids, ids))]
        else:
            groups, _, valid = oof_groups(self.path, ids, self.train_ids, None, folds_file)
            parts = [(groups == k, ~valid[k]) for k in range(len(valid))]
        rules = parse_rules(rules)
        masks = pred.copy()
        changed, touched = ({r: np.zeros(len(ids), bool) for r in rules} for _ in range(2))
        for sel, known in parts:  # a loop per fold
            known &= ~np.isin(self.train_ids, ids[sel])
            done = apply_rules(pred[sel], ids[sel], self.mosaics, self.train_ids[known], self.train_masks[known],
                               rules)
            masks[sel] = done.masks
            for r in rules:
                changed[r][sel], touched[r][sel] = done.changed[r], done.touched[r]
        return RulesOutcome(masks, changed, touched)

    def report(self, ids: np.ndarray, q: np.ndarray, threshold: float, rules: Sequence[str], count: int,
               out_dir: Path, prefix: str, outcome: Outcome, split: str = "valid",
               folds_file: Path | None = None) -> None:
        """Pictures of the ``count`` largest mosaics with the predictions of ``ids`` (levels ``q`` above
        ``threshold``, then the mosaic ``rules`` as :meth:`rules` applies them),
        ``out_dir/PREFIX-mosaic-RANK.png``."""
        ruled = self.rules(ids, q >= level_of(threshold), rules, split, folds_file)
        shown = self.mosaics.ids[np.isin(self.mosaics.mosaic, largest(self.mosaics, count))]
        images, has_image = self._images(shown)
        t_rows = pd.Index(self.train_ids).get_indexer(shown)
        p_rows = pd.Index(ids).get_indexer(shown)
        tiles = Tiles(shown, images, has_image, _rows_of(self.train_masks, t_rows), t_rows >= 0,
                      _rows_of(ruled.masks, p_rows), p_rows >= 0,
                      {r: _rows_of(c, p_rows) for r, c in ruled.changed.items()})
        lines, written = pictures(self.mosaics, tiles, count, lambda rank: out_dir / f"{prefix}-mosaic-{rank}.png",
                                  list(ruled.changed))
        outcome.written += written
        ruled_line = ruled.line() if rules else "none"
        outcome.lines += [f"mosaics {self.path}: {len(self.mosaics)} tiles in {len(self.mosaics.sizes())} mosaics; "
                          f"predictions above {threshold:.2f}, then the mosaic rules: {ruled_line} "
                          f"({'every train mask known' if split == 'test' else 'fold by fold, the fold unknown'})",
                          *lines]
        if not has_image.all():
            outcome.skipped.append(f"the images of {int((~has_image).sum())} mosaic tiles: not found in "
                                   f"{self.layout.train_images} or {self.layout.test_images}")


def _rows_of(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``values[rows]``, zero (False) where a row is -1."""
    out = np.zeros((len(rows),) + values.shape[1:], values.dtype)
    out[rows >= 0] = values[rows[rows >= 0]]
    return out


# -- inputs: a run folder ----------------------------------------------------------------------------------------
MODEL_KINDS = ("best-metric", "last")


def find_checkpoint(layout: RunLayout | None) -> Path | None:
    """``models/best-metric-FOLD.pth``, else ``models/last-FOLD.pth``; None if none."""
    if layout is None:
        return None
    return next((layout.model(k) for k in MODEL_KINDS if layout.model(k).is_file()), None)


def find_valid_probabilities(run: Path) -> list[Path]:
    """``*-probabilities.npz`` files in the run folder whose split is ``valid``, newest first."""
    found = []
    for path in run.glob("*-probabilities.npz"):
        if probabilities.split_of(path) == "valid":
            found.append(path)
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def predict_levels(loaded, images: np.ndarray, device, tta: bool | None = None,
                   batch_size: int = 32) -> tuple[np.ndarray, bool]:
    """Run a loaded checkpoint (:func:`models.load`) over uint8 images (N, 101, 101) as test.py does
    (:class:`engine.inference.Ensemble` of one model): (probability levels uint8 (N, 101, 101), whether flip TTA was
    used; by default as the run validated, its ``--vtf``)."""
    import torch

    if tta is None:
        tta = TrainConfig.from_checkpoint(loaded.meta).run.vtf
    ens = Ensemble(len(images))
    ens.add_model(loaded.model, loaded.input_spec, np.ascontiguousarray(images), torch.device(device),
                  batch_size=batch_size, tta=tta)
    return quantize(ens.result()[0]), tta


@dataclass
class RunSources:
    """Where a run's validation report comes from: a saved ``*-probabilities.npz`` of split 'valid' (``npz``) or a
    model to predict with (``model``), and what was found (``npzs``, ``checkpoint``)."""

    npz: Path | None
    model: Path | None
    npzs: list[Path]
    checkpoint: Path | None


def choose_sources(run: Path, layout: RunLayout | None, source: str, checkpoint: Path | None,
                   metrics_df) -> RunSources:
    """``auto``: the newest valid-split npz when it is newer than the model, else the model; ``npz`` / ``model``:
    that one or a UserError saying how to make it; nothing at all to report is a UserError too."""
    ckpt = Path(checkpoint) if checkpoint else find_checkpoint(layout)
    if checkpoint and not ckpt.is_file():
        raise UserError(f"--checkpoint {ckpt} does not exist")
    npzs = find_valid_probabilities(run) if source in ("auto", "npz") else []
    if source == "npz" and not npzs:
        raise UserError(f"{run}: no *-probabilities.npz with split 'valid' (write one with test.py's --split valid, "
                        "or use --source model)")
    use_npz = npzs[0] if npzs and (source == "npz" or ckpt is None
                                   or npzs[0].stat().st_mtime >= ckpt.stat().st_mtime) else None
    use_model = ckpt if use_npz is None and source in ("auto", "model") else None
    if source == "model" and ckpt is None:
        raise UserError(f"{run}: no models/best-metric-*.pth or models/last-*.pth to predict with (they appear "
                        "after the first epoch of `python train.py --log-dir RUN`)")
    if (metrics_df is None or metrics_df.empty) and use_npz is None and use_model is None:
        raise UserError(
            f"{run} has nothing to report: no metrics.csv rows, no models/best-metric-*.pth or models/last-*.pth, "
            f"no *-probabilities.npz of split 'valid'; train into it with `python train.py --data-dir DATA "
            f"--log-dir {run}` (both appear after the first epoch), or report saved predictions with "
            f"`python report.py --probabilities FILE.npz --truth DATA/train.csv`")
    return RunSources(use_npz, use_model, npzs, ckpt)


@dataclass
class RunInputs:
    """What the validation report reads, checked before anything is written: the loaded model (or None), its
    device, the run's configuration (or None) and the data folder (None: no validation report)."""

    loaded: object = None
    device: object = None
    cfg: TrainConfig | None = None
    data: Path | None = None


def read_inputs(run: Path, layout: RunLayout | None, src: RunSources, data_dir: Path | None,
                device: str) -> RunInputs:
    out = RunInputs()
    if src.model is not None:
        import models
        from engine.distributed import resolve_device

        out.device = resolve_device(device)
        out.loaded = models.load(src.model, device=out.device)
        out.cfg = TrainConfig.from_checkpoint(out.loaded.meta, src.model)
    elif layout is not None and layout.config.is_file():
        stored = read_yaml(layout.config)
        out.cfg = TrainConfig.from_dict({k: v for k, (v, _) in stored.items()},
                                        {k: w for k, (_, w) in stored.items()})
    if src.npz is None and src.model is None:
        return out
    stored = out.cfg.data.data_dir if out.cfg is not None else None
    out.data = Path(data_dir) if data_dir else (Path(stored) if stored else None)
    if out.data is None:
        raise UserError(f"{run}: the run does not say where its data is; pass --data-dir DATA")
    if not out.data.is_dir():
        if data_dir:
            raise UserError(f"--data-dir {out.data} does not exist")
        raise UserError(f"data folder {out.data} (from {src.model or run / 'config.yaml'}) does not exist; "
                        "pass --data-dir DATA")
    return out


def report_curves(run: Path, metrics_df, out_dir: Path, outcome: Outcome) -> None:
    """``learning-curves.png`` and the best epochs' lines, or a note on why there are none."""
    if metrics_df is None:
        outcome.skipped.append(f"learning curves: {run / 'metrics.csv'} does not exist")
        return
    if metrics_df.empty:
        outcome.skipped.append(f"learning curves: {run / 'metrics.csv'} has no epochs yet")
        return
    best = best_epochs(metrics_df)
    outcome.written.append(plot_learning_curves(metrics_df, best, out_dir / "learning-curves.png",
                                                f"{run}: {best.epochs} epochs"))
    outcome.lines.append(f"run {run}: {best.epochs} epochs (last {best.last_epoch})")
    if best.metric_epoch is not None:
        loss = (f"; best validation loss {best.loss:.4f} at epoch {best.loss_epoch}"
                if best.loss_epoch is not None else "")
        outcome.lines.append(f"  best epoch {best.metric_epoch}: validation metric {best.metric:.4f}{loss}")


def predicted_validation(src: RunSources, inp: RunInputs, train, folds_file: Path | None, tta: bool | None,
                         batch_size: int, notes: list[str]) -> Validation:
    """The fold's validation images predicted by the run's model, as train.py validated them (its fold, its TTA)."""
    meta, cfg = inp.loaded.meta, inp.cfg
    fold = cfg.data.data_fold
    check_split(src.model, cfg.data.folds_file, folds_file)
    kaggle.check_fingerprint(src.model, meta.get("data_fingerprint"), train.fingerprint(), inp.data, UNSEEN)
    _, rows = folds.split(train.ids, fold, folds_file or cfg.data.folds_file)
    q, used_tta = predict_levels(inp.loaded, train.images[rows], inp.device, tta, batch_size)
    epoch = meta.get("epoch")
    own = (meta.get("metrics") or {}).get("val_metric")
    if own is not None:
        notes.append(f"  during training (epoch {epoch}, unquantised probabilities > 0.5): {own:.4f}")
    return Validation(train.ids[rows], q, train.masks[rows], train.images[rows],
                      f"{fold} predicted by {src.model.name} (epoch {epoch}{', flip TTA' if used_tta else ''})")


def report_run(run: Path, source: str = "auto", checkpoint: Path | None = None, data_dir: Path | None = None,
               folds_file: Path | None = None, out_dir: Path | None = None, threshold: float = 0.5,
               samples: int = 6, seed: int = 0, device: str = "auto", tta: bool | None = None,
               batch_size: int = 32, mosaics: Path | None = None, mosaic_count: int = 3,
               mosaic_rules: Sequence[str] = RULES) -> Outcome:
    """``report.py RUN``: learning curves from ``RUN/metrics.csv`` and the validation report of the fold, from the
    run's best model (``source='model'``), from a ``*-probabilities.npz`` of split 'valid' in the run folder
    (``'npz'``), or (``'auto'``) from such a file when it is newer than the model, else the model; with
    ``mosaics``, pictures of the largest mosaics with the fold's predictions.

    What is missing is skipped with a note (a run still training may have one epoch and no model yet); a folder
    with neither metrics nor predictions is a UserError that says how to make them.
    """
    run = Path(run)
    if not run.is_dir():
        raise UserError(f"run folder {run} does not exist (train into it with `python train.py --data-dir DATA "
                        f"--log-dir {run}`)")
    out_dir = Path(out_dir) if out_dir else run
    outcome = Outcome()
    layout = RunLayout.discover(run)
    metrics_df = read_metrics(run / "metrics.csv")
    src = choose_sources(run, layout, source, checkpoint, metrics_df)
    inp = read_inputs(run, layout, src, data_dir, device)  # every input checked before anything is written
    board = MosaicInputs.read(mosaics, inp.data) if mosaics is not None and inp.data is not None else None

    report_curves(run, metrics_df, out_dir, outcome)
    if inp.data is None:
        outcome.skipped.append(f"validation plots: no models/best-metric-*.pth or models/last-*.pth in {run} and no "
                               "*-probabilities.npz of split 'valid' yet (a model appears after the first epoch)")
        if mosaics is not None:
            outcome.skipped.append("the mosaic pictures: no validation predictions yet")
        return outcome
    notes = []
    if src.npzs and src.npz is None:
        outcome.lines.append(f"ignored {src.npzs[0].name}: older than {src.checkpoint.name} (--source npz uses it)")
    train = kaggle.load_train(inp.data)
    if src.npz is not None:
        v = validation_from_npz(src.npz, data_dir=inp.data, train=train)
        if len(src.npzs) > 1:
            outcome.lines.append(f"(the newest of {len(src.npzs)} validation probability files: "
                                 f"{few((p.name for p in src.npzs), 3)})")
    else:
        v = predicted_validation(src, inp, train, folds_file, tta, batch_size, notes)
    report_validation(v, out_dir, "valid", threshold, samples, seed, outcome, notes)
    if board is not None:
        board.report(v.ids, v.q, threshold, mosaic_rules, mosaic_count, out_dir, "valid", outcome,
                     folds_file=folds_file or (inp.cfg.data.folds_file if inp.cfg is not None else None))
    return outcome
