"""report.py and tgs/report.py: the numbers behind the plots against tgs.metric and brute force, the files written
(valid PNGs, CSVs), runs still training, saved probabilities, and the one-line errors."""
import os
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from cli import report as report_cli
from cli import train
from engine.report import runs as RUNS
from engine.report import stats as R
from tests.tiny import TINY
from tgs import metric, probabilities, submission
from tgs.probabilities import level_of as P_level_of

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VALID_FILES = ("thresholds.png", "threshold-sweep.csv", "coverage.png", "coverage-bins.csv", "samples.png",
               "samples.csv", "per-image.csv")


def random_set(n=12, size=9, seed=0):
    """Quantised probabilities correlated with random masks, some masks empty, some probabilities tied."""
    rng = np.random.default_rng(seed)
    truth = rng.random((n, size, size)) < rng.random((n, 1, 1)) * 0.8
    truth[: n // 4] = False
    noise = rng.normal(0, 0.3, truth.shape)
    q = np.clip(np.rint((0.3 + 0.4 * truth + noise) * 255 / 8) * 8, 0, 255).astype(np.uint8)  # few levels: ties
    return q, truth


def as_loaded(q):
    """The float probabilities tgs.probabilities.load gives for these levels."""
    return q.astype(np.float32) / probabilities.SCALE


def assert_png(path: Path, min_bytes=5000):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > min_bytes, (path, len(data))
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None and img.shape[0] > 100 and img.shape[1] > 100 and img.std() > 1, path


# -- the numbers ------------------------------------------------------------------------------------------------
def test_cuts_match_float_comparison():
    probs = as_loaded(np.arange(256, dtype=np.uint8))
    for t in (0.0, 0.1, 0.25, 0.5, 100 / 255, np.float32(100 / 255), 0.73, 0.999, 1.0, *R.THRESHOLDS[::17]):
        k = P_level_of(t)
        np.testing.assert_array_equal(np.arange(256) >= k, probs > t)
    assert P_level_of(0.5) == 128 and R.THRESHOLDS[128] == 0.5


@pytest.mark.parametrize("seed", [0, 1])
def test_sweep_equals_metric_module(seed):
    q, truth = random_set(seed=seed)
    sweep = R.threshold_sweep(q, truth)
    probs = as_loaded(q)
    assert sweep.at(0.5) == metric.score(probs > 0.5, truth)
    for k in range(0, 257, 7):  # every 7th cut, brute force through the metric module
        t = sweep.thresholds[k]
        rep = metric.report(probs > t, truth)
        assert sweep.score[k] == pytest.approx(rep.score, abs=1e-12)
        assert sweep.empty_score[k] == pytest.approx(rep.empty_score, abs=1e-12)
        assert sweep.salt_score[k] == pytest.approx(rep.nonempty_score, abs=1e-12)
    brute = np.array([metric.score(probs > t, truth) for t in sweep.thresholds])
    assert sweep.best_score == brute.max()
    assert brute[P_level_of(sweep.best_threshold)] == brute.max()
    assert sweep.score[0] == metric.score(np.ones_like(truth), truth)  # everything salt
    assert sweep.score[256] == metric.score(np.zeros_like(truth), truth)  # nothing salt


def test_pixel_curves_equal_brute_force_counts():
    q, truth = random_set(n=6, size=7, seed=3)
    c = R.pixel_curves(q, truth)
    probs = as_loaded(q)
    for k, t in enumerate(c.thresholds):
        pred = probs > t
        assert c.tp[k] == np.sum(pred & truth) and c.fp[k] == np.sum(pred & ~truth)
        assert c.fn[k] == np.sum(~pred & truth) and c.tn[k] == np.sum(~pred & ~truth)
    assert (c.tp[0], c.fp[0]) == (truth.sum(), (~truth).sum()) and c.tp[256] == c.fp[256] == 0
    # ROC AUC = P(salt pixel scores above background pixel), ties count half (Mann-Whitney), pairwise
    pos, neg = q[truth].astype(int), q[~truth].astype(int)
    diff = pos[:, None] - neg[None, :]
    assert c.roc_auc == pytest.approx(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size, abs=1e-12)
    # average precision: at each distinct score, descending, precision times the recall it adds
    ap, prev_recall = 0.0, 0.0
    for level in np.unique(q)[::-1]:
        pred = q >= level
        recall = np.sum(pred & truth) / truth.sum()
        ap += (recall - prev_recall) * np.sum(pred & truth) / pred.sum()
        prev_recall = recall
    assert c.average_precision == pytest.approx(ap, abs=1e-12)
    frame = c.frame()
    assert len(frame) == 257 and frame["precision"].iloc[-1] == 1.0


def test_perfect_and_blocked_histograms_agree():
    q, truth = random_set(n=30, size=5, seed=4)
    whole = R.image_histograms(q, truth)
    blocked = probabilities.level_histograms(q, truth, block=7)  # several blocks, the last one partial
    for a, b in zip(whole, blocked):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(whole[0].sum(axis=1), 25)
    perfect = R.pixel_curves(np.where(truth, 255, 0).astype(np.uint8), truth)
    assert perfect.roc_auc == 1.0 and perfect.average_precision == 1.0


def test_coverage_table_equals_hand_computed_means():
    size = 10  # 100 pixels: the area is the coverage in percent
    areas = [0, 0, 0, 1, 5, 10, 30, 49, 50, 80]  # empty x3, <1% x0 (1% is 1-10%), 1-10% x2, 10-50% x3, >50% x2
    truth = np.zeros((len(areas), size * size), bool)
    truth[np.arange(size * size)[None, :] < np.asarray(areas)[:, None]] = True
    truth = truth.reshape(-1, size, size)
    pred = truth.copy()
    pred[0, 0, 0] = True  # empty truth, false salt: score 0
    pred[4] = False  # 5% coverage missed: score 0
    pred[6, :, :] = True  # 30% vs everything: IoU 0.3, score 0
    pred[7].flat[45:49] = False  # 45 of 49: IoU 0.918, score 0.9
    q = np.where(pred, 200, 10).astype(np.uint8)
    images = R.per_image([f"i{i}" for i in range(len(areas))], q, truth, 0.5)
    assert list(images["bin"]) == ["empty"] * 3 + ["1-10%"] * 2 + ["10-50%"] * 3 + [">50%"] * 2
    np.testing.assert_array_equal(images["score"], metric.image_scores(pred, truth))
    table = R.coverage_table(images).set_index("bin")
    assert list(table.index) == ["empty", "<1%", "1-10%", "10-50%", ">50%", "all"]
    assert list(table["images"]) == [3, 0, 2, 3, 2, 10]
    assert table.loc["empty", "score"] == pytest.approx(2 / 3)
    assert np.isnan(table.loc["<1%", "score"])
    assert table.loc["1-10%", "score"] == pytest.approx(0.5)  # 1 hit, 1 missed
    assert table.loc["10-50%", "score"] == pytest.approx((1 + 0 + 0.9) / 3)  # exact, over-predicted, 45 of 49
    assert table.loc[">50%", "score"] == 1.0
    assert table.loc["all", "score"] == pytest.approx(metric.score(pred, truth))
    assert table.loc["1-10%", "predicted_empty"] == 0.5
    assert table.loc["empty", "predicted_empty"] == pytest.approx(2 / 3)
    assert table.loc["10-50%", "iou"] == pytest.approx((1 + 0.3 + 45 / 49) / 3)


def test_select_samples():
    df = pd.DataFrame({"score": [1.0, 0.0, 0.5, 1.0, 0.0, 1.0], "iou": [1.0, 0.2, 0.6, 0.9, 0.0, 1.0],
                       "truth_area": [0, 10, 10, 10, 10, 20]})
    worst, best, rand = R.select_samples(df, n=3, seed=1)
    assert list(worst.index) == [4, 1, 2]
    assert list(best.index) == [5, 3, 2]  # images with salt first: the perfect empty one only if too few
    assert len(set(rand.index)) == 3 and list(rand.index) == list(R.select_samples(df, 3, seed=1)[2].index)
    assert len(R.select_samples(df, n=10)[0].index) == 6


def test_best_epochs_like_train_py():
    df = pd.DataFrame({"epoch": [0, 1, 2, 3], "val_metric": [0.2, 0.6, 0.6, 0.5], "val_loss": [1.0, 0.5, 0.7, 0.4]})
    b = R.best_epochs(df)
    assert (b.metric_epoch, b.metric, b.loss_epoch, b.loss, b.epochs, b.last_epoch) == (1, 0.6, 3, 0.4, 4, 3)
    nan = R.best_epochs(pd.DataFrame({"epoch": [0], "val_metric": [np.nan]}))
    assert nan.metric_epoch is None and nan.loss_epoch is None


# -- files ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 2-epoch train.py run on 60 synthetic images (fold0 validates on 6)."""
    from datasets.synthetic import write_dataset

    root = tmp_path_factory.mktemp("report")
    write_dataset(root / "data", n_train=60, n_test=4, seed=11)
    assert train.main(["--data-dir", str(root / "data"), "--log-dir", str(root / "run"), *TINY,
                       "--max-epochs", "2"]) == 0
    return root / "data", root / "run"


def test_run_report_files_and_numbers(tiny_run, tmp_path, capsys):
    data, run = tiny_run
    out = tmp_path / "out"
    assert report_cli.main([str(run), "--out", str(out), "--samples", "2", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    for name in ("learning-curves.png", *(f"valid-{f}" for f in VALID_FILES)):
        assert (out / name).is_file() and str(out / name) in text, name
        if name.endswith(".png"):
            assert_png(out / name)
    assert not list(out.glob(".*.tmp"))
    assert "best epoch" in text and "best threshold" in text and "metric by mask coverage" in text
    # the numbers behind the plots: recomputed from the model's predictions through the metric module
    import models
    from datasets import folds, kaggle

    train_set = kaggle.load_train(data)
    _, rows = folds.split(train_set.ids, "fold0")
    loaded = models.load(run / "models" / "best-metric-fold0.pth")
    assert loaded.meta["config"]["data_fold"] == "fold0"
    q, _ = RUNS.predict_levels(loaded, train_set.images[rows], "cpu")
    truth = train_set.masks[rows]
    sweep = pd.read_csv(out / "valid-threshold-sweep.csv")
    assert len(sweep) == 257 and sweep["threshold"].iloc[128] == 0.5
    assert sweep["score"].iloc[128] == pytest.approx(metric.score(as_loaded(q) > 0.5, truth), abs=1e-6)
    assert sweep["tp"].iloc[128] == np.sum((q >= 128) & truth)
    per = pd.read_csv(out / "valid-per-image.csv", dtype={"id": str})
    assert list(per["id"]) == list(train_set.ids[rows])
    np.testing.assert_allclose(per["score"], metric.image_scores(q >= 128, truth))
    bins = pd.read_csv(out / "valid-coverage-bins.csv").set_index("bin")
    assert bins.loc["all", "images"] == len(rows) == 6
    assert bins.loc["all", "score"] == pytest.approx(metric.score(q >= 128, truth), abs=1e-6)
    assert f"metric at threshold 0.50: {metric.score(q >= 128, truth):.4f}" in text
    samples = pd.read_csv(out / "valid-samples.csv")
    assert list(samples["group"]) == ["worst"] * 2 + ["best"] * 2 + ["random"] * 2
    # a data folder that is not there: one line, nothing written
    assert report_cli.main([str(run), "--out", str(tmp_path / "none"), "--data-dir", str(tmp_path / "nodata")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --data-dir {tmp_path / 'nodata'} does not exist\n" and not (tmp_path / "none").exists()


def test_run_still_training(tiny_run, tmp_path, capsys):
    _, run = tiny_run
    half = tmp_path / "half"
    half.mkdir()
    metrics = pd.read_csv(run / "metrics.csv")
    metrics.iloc[:1].to_csv(half / "metrics.csv", index=False)  # one epoch logged, no model yet
    shutil.copy(run / "config.yaml", half / "config.yaml")
    assert report_cli.main([str(half)]) == 0
    text = capsys.readouterr().out
    assert_png(half / "learning-curves.png")
    assert "1 epochs" in text and "skipped: validation plots: no models/best-metric-*.pth" in text
    assert not (half / "valid-thresholds.png").exists()
    # models but a metrics.csv without rows yet: the validation report, learning curves skipped
    (half / "metrics.csv").write_text(",".join(metrics.columns) + "\n")
    (half / "models").mkdir()
    shutil.copy(run / "models" / "last-fold0.pth", half / "models" / "last-fold0.pth")
    (half / "learning-curves.png").unlink()
    assert report_cli.main([str(half), "--samples", "1", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "last-fold0.pth" in text and "skipped: learning curves" in text and "no epochs yet" in text
    assert_png(half / "valid-thresholds.png")
    assert not (half / "learning-curves.png").exists()


def test_nothing_to_report_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for argv, fragment in (([str(tmp_path / "empty")], "has nothing to report"),
                           ([str(tmp_path / "nowhere")], "does not exist"),
                           ([], "give a run folder"),
                           ([str(tmp_path / "empty"), "--source", "npz"], "no *-probabilities.npz"),
                           (["--probabilities", str(tmp_path / "x.npz"), "--truth", "t.csv"], "does not exist")):
        assert report_cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and fragment in err and err.count("\n") == 1, err
    assert report_cli.main([str(tmp_path / "empty")]) == 2
    assert "python train.py --data-dir DATA --log-dir" in capsys.readouterr().err


def test_probabilities_report(tiny_run, tmp_path, capsys):
    data, run = tiny_run

    ids, masks = submission.read_truth(data / "train.csv")
    rng = np.random.default_rng(0)
    probs = np.clip(masks * 0.7 + rng.random(masks.shape) * 0.4, 0, 1)[:20]
    npz = probabilities.save(tmp_path / "oof-probabilities.npz", ids[:20], probs, split="valid")
    assert report_cli.main(["--probabilities", str(npz), "--truth", str(data / "train.csv"), "--samples", "3"]) == 0
    text = capsys.readouterr().out
    for f in VALID_FILES:
        assert (tmp_path / f"oof-{f}").is_file(), f
    assert_png(tmp_path / "oof-samples.png")
    q = probabilities.quantize(probs)
    sweep = pd.read_csv(tmp_path / "oof-threshold-sweep.csv")
    assert sweep["score"].iloc[128] == pytest.approx(metric.score(as_loaded(q) > 0.5, masks[:20]), abs=1e-6)
    printed = float(re.search(r"best threshold ([0-9.]+) ", text).group(1))
    assert sweep["score"].iloc[P_level_of(printed)] == sweep["score"].max()
    assert f"{sweep['score'].max():.4f}" in text
    assert "images column" not in text  # images found next to train.csv
    # --out, a mask folder as truth, and the same probabilities inside a run folder (--source npz)
    out = tmp_path / "elsewhere"
    assert report_cli.main(["--probabilities", str(npz), "--truth", str(data / "train" / "masks"),
                            "--out", str(out)]) == 0
    capsys.readouterr()
    np.testing.assert_allclose(pd.read_csv(out / "oof-threshold-sweep.csv")["score"], sweep["score"])
    bad = probabilities.save(tmp_path / "bad.npz", ["nope", *ids[:2]], probs[:3], split="valid")
    assert report_cli.main(["--probabilities", str(bad), "--truth", str(data / "train.csv")]) == 2
    assert "1 of its 3 ids have no true mask" in capsys.readouterr().err
    in_run = tmp_path / "run"
    shutil.copytree(run, in_run)
    shutil.copy(npz, in_run / "fold0-valid-probabilities.npz")
    assert report_cli.main([str(in_run), "--source", "npz"]) == 0
    text = capsys.readouterr().out
    assert "fold0-valid-probabilities.npz" in text and "validation: 20 images" in text
    np.testing.assert_allclose(pd.read_csv(in_run / "valid-threshold-sweep.csv")["score"], sweep["score"])
    # auto: the file while it is newer than the model, the model once the file is older
    assert report_cli.main([str(in_run), "--samples", "0"]) == 0
    assert "validation: 20 images" in capsys.readouterr().out
    model = in_run / "models" / "best-metric-fold0.pth"
    os.utime(in_run / "fold0-valid-probabilities.npz", (model.stat().st_mtime - 60,) * 2)
    assert report_cli.main([str(in_run), "--samples", "0", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "ignored fold0-valid-probabilities.npz: older than best-metric-fold0.pth" in text
    assert "validation: 6 images, fold0 predicted by best-metric-fold0.pth" in text
    assert "skipped: the sample grid (--samples 0)" in text


# -- mosaic pictures ------------------------------------------------------------------------------------------------
def test_mosaic_picture_places_the_tiles_on_the_grid(synthetic_root, tmp_path, capsys):
    """A hand-made 2 x 2 layout over real ids: a train tile T whose right column is partly salt at (0, 0), test tiles
    A at (0, 1) and B at (1, 0), no tile at (1, 1). Test predictions all empty; the boundary rule fills A."""
    from datasets import kaggle
    from engine.report import mosaics as M

    train_ids, train_masks = submission.read_truth(synthetic_root / "train.csv")
    test = kaggle.load_test(synthetic_root)
    right = train_masks[:, :, -1]
    t = int(np.flatnonzero(right.any(axis=1) & ~right.all(axis=1) & ~train_masks[:, -1].any(axis=1))[0])
    layout = tmp_path / "mosaics.csv"
    pd.DataFrame({"id": [train_ids[t], test.ids[0], test.ids[1]], "mosaic": 0, "row": [0, 0, 1],
                  "col": [0, 1, 0]}).to_csv(layout, index=False)
    npz = probabilities.save(tmp_path / "test-probabilities.npz", test.ids, np.zeros((len(test.ids), 101, 101)))
    argv = ["--probabilities", str(npz), "--data-dir", str(synthetic_root), "--mosaics", str(layout),
            "--mosaic-rules", "boundary"]
    assert report_cli.main(argv) == 0
    text = capsys.readouterr().out
    png_path = tmp_path / "test-mosaic-1.png"
    assert str(png_path) in text and "boundary 1" in text and "skipped: the validation report" in text
    assert not list(tmp_path.glob(".*.tmp"))
    pic = cv2.cvtColor(cv2.imread(str(png_path)), cv2.COLOR_BGR2RGB)
    assert pic.shape == (M.HEADER + 2 * 101, max(2 * 101, M.MIN_WIDTH), 3)
    images = {"T": kaggle.load_train(synthetic_root).images[t], "A": test.images[0], "B": test.images[1]}
    masks = {"T": train_masks[t], "A": np.repeat(train_masks[t][:, -1:], 101, axis=1), "B": np.zeros((101, 101), bool)}
    for name, (r, c) in (("T", (0, 0)), ("A", (0, 1)), ("B", (1, 0))):
        y0, x0 = M.HEADER + r * 101, c * 101
        m = np.pad(masks[name], 1, constant_values=True)
        # pixels away from the tile's frame whose 3 x 3 neighbourhood has one value carry no outline: the image, grey
        ys, xs = np.mgrid[M.FRAME:101 - M.FRAME, M.FRAME:101 - M.FRAME]
        flat = np.ones(ys.shape, bool)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                flat &= m[ys + 1 + dy, xs + 1 + dx] == m[ys + 1, xs + 1]
        y, x = ys[flat], xs[flat]
        assert len(y) > 1000, name
        grey = images[name][y, x]
        assert np.array_equal(pic[y0 + y, x0 + x], np.stack([grey] * 3, axis=1)), name
    assert (pic[M.HEADER + 101:, 101:202] == M.EMPTY_CELL).all()  # the empty cell
    assert tuple(pic[M.HEADER + 1, 101 + 50]) == M.RULE_COLOURS["boundary"]  # A's frame: changed by the rule
    assert tuple(pic[M.HEADER + 101 + 1, 50]) != M.RULE_COLOURS["boundary"]  # B: not changed
    # the train mask's outline is green where the prediction has none (T has no prediction)
    edge = np.argwhere(M.outlines(train_masks[t][None])[0][M.FRAME:-M.FRAME, M.FRAME:-M.FRAME]) + M.FRAME
    assert len(edge) and all(tuple(pic[M.HEADER + y, x]) == M.TRUTH for y, x in edge[:20])
    # a test-set file without --mosaics has nothing to report: one line
    assert report_cli.main(argv[:4]) == 2
    assert "holds test predictions" in capsys.readouterr().err


def test_outlines_by_hand():
    from engine.report.mosaics import outlines

    m = np.zeros((1, 5, 5), bool)
    m[0, 1:4, 1:4] = True
    assert outlines(m)[0].astype(int).tolist() == [[0, 0, 0, 0, 0], [0, 1, 1, 1, 0], [0, 1, 0, 1, 0],
                                                   [0, 1, 1, 1, 0], [0, 0, 0, 0, 0]]
    m[0, :, :2] = True  # salt running into the tile's left border gets no line along it
    assert not outlines(m)[0][:, 0].any() and outlines(m)[0][0, 1]  # its inner edge keeps its line


def test_run_report_with_mosaics(tiny_run, tmp_path, capsys):
    data, run = tiny_run
    from datasets import folds, kaggle

    train_set = kaggle.load_train(data)
    _, rows = folds.split(train_set.ids, "fold0")
    others = np.setdiff1d(np.arange(len(train_set)), rows)[:3]
    layout = tmp_path / "mosaics.csv"
    pd.DataFrame({"id": [train_set.ids[others[0]], train_set.ids[rows[0]], train_set.ids[others[1]]], "mosaic": 0,
                  "row": [0, 1, 2], "col": 0}).to_csv(layout, index=False)
    out = tmp_path / "out"
    assert report_cli.main([str(run), "--out", str(out), "--samples", "0", "--device", "cpu",
                            "--mosaics", str(layout)]) == 0
    text = capsys.readouterr().out
    assert (out / "valid-mosaic-1.png").is_file()
    assert "mosaic 0: 3 tiles in 3 x 1 cells; 3 train, 1 predicted" in text
    assert_png(out / "valid-mosaic-1.png", min_bytes=1000)
    layout.write_text("id,mosaic,row,col\nnope,0,0,0\n" + f"{train_set.ids[0]},0,1,0\n")
    assert report_cli.main([str(run), "--out", str(tmp_path / "bad"), "--mosaics", str(layout)]) == 2
    err = capsys.readouterr().err
    assert "not in this dataset" in err and err.count("\n") == 1 and not (tmp_path / "bad").exists()
