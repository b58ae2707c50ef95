"""test.py: submission format and order, TTA, mixed pad/resize ensembles, saved-probability averaging,
out-of-fold predictions and their merge, post-processing flags, one-line errors and atomic outputs."""
import re
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import models
from cli import test as script
from datasets import folds, kaggle
from tgs import metric, postprocess, rle, submission
from tgs import probabilities as P
from tgs.inputs import InputSpec
from tgs.postprocess import PostProcess

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(encoder="unet", encoder_width=4, decoder_channels=8, center_channels=16, input_upsample=1,
             oc_decoder=False, fuse_channels=8, image_channels=8)
RESIZE, PAD = InputSpec("resize", 32), InputSpec("pad", 128)
LEVEL = 1 / 255 + 1e-6  # one quantisation level of the .npz files






def tiny(seed: int, spec: InputSpec, images: np.ndarray) -> models.SaltUNet:
    """A random model whose pixel and image logits are rescaled to mean 0, std 2 on ``images``: probabilities
    spread over (0, 1), so thresholds, gates and flips all matter."""
    torch.manual_seed(seed)
    model = models.build_model(**SMALL).train()
    with torch.no_grad():
        model(torch.rand(4, 1, 32, 32))
        model.eval()
        out = model(spec.encode_images(torch.from_numpy(images)[:, None]))
        for layer, logits in ((model.logit[-1], out["logits"]), (model.image_head.classify, out["image_logit"])):
            k = 2.0 / float(logits.std())
            layer.weight.mul_(k)
            layer.bias.copy_(k * (layer.bias - float(logits.mean())))
    return model


def fold(meta: dict, name: str) -> dict:
    """``meta`` of a model trained on fold ``name`` (a checkpoint records its fold in its configuration)."""
    return {**meta, "config": {**meta["config"], "data_fold": name}}


@pytest.fixture(scope="module")
def ckpts(synthetic_root, tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpts")
    meta = {"config": {"data_dir": str(synthetic_root), "folds_file": None}}
    images = kaggle.load_test(synthetic_root).images[:16]
    return {
        "a": models.save_checkpoint(d / "a.pth", tiny(0, RESIZE, images), RESIZE, fold(meta, "fold0")),
        "a1": models.save_checkpoint(d / "a1.pth", tiny(1, RESIZE, images), RESIZE, fold(meta, "fold1")),
        "b": models.save_checkpoint(d / "b.pth", tiny(2, PAD, images), PAD, fold(meta, "fold0")),
    }


@pytest.fixture(scope="module")
def test_images(synthetic_root):
    t = kaggle.load_test(synthetic_root)
    return t.ids, t.images


def run(argv, capsys):
    code = script.main([str(a) for a in argv] + ["--threads", "1", "--device", "cpu"])
    out = capsys.readouterr()
    return code, out.out, out.err


def direct(path, images, tta=False):
    """Probabilities straight from the model, by hand (no engine.predict). TTA: the model's input mirrored, its
    output mirrored back (at the model's resolution: with 101 -> 128 reflect padding, 13 + 14 pixels, the mirror
    of the padded input is what the model sees), averaged, then restored to 101x101."""
    loaded = models.load(path)
    spec, model = loaded.input_spec, loaded.model
    x = spec.encode_images(torch.from_numpy(images)[:, None])
    with torch.no_grad():
        out = model(x)
        p = torch.sigmoid(out["logits"])
        img = torch.sigmoid(out["image_logit"])
        if tta:
            f = model(torch.flip(x, dims=[3]))
            p = 0.5 * (p + torch.flip(torch.sigmoid(f["logits"]), dims=[3]))
            img = 0.5 * (img + torch.sigmoid(f["image_logit"]))
    return spec.decode(p)[:, 0].numpy(), img.numpy()


def csv_masks(path, ids):
    df = submission.read(path)
    assert df["id"].tolist() == list(ids)
    return rle.decode(df["rle_mask"].tolist(), df["id"].tolist())


def test_submission_format_order_empty_fields_and_kaggle_line(ckpts, synthetic_root, test_images, tmp_path, capsys):
    ids, images = test_images
    probs, image_probs = direct(ckpts["a"], images)
    # a threshold between the images' maxima: some predictions empty, some not
    threshold = float(np.median(probs.reshape(len(probs), -1).max(axis=1)))
    code, out, err = run([ckpts["a"], "--output-prefix", tmp_path / "a", "--threshold", threshold], capsys)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-probabilities.npz", "a-submission.csv"]  # no temp files
    lines = (tmp_path / "a-submission.csv").read_text().splitlines()
    assert lines[0] == "id,rle_mask" and len(lines) == len(ids) + 1
    assert [line.split(",")[0] for line in lines[1:]] == kaggle.read_sample_submission(
        synthetic_root / "sample_submission.csv").tolist()
    expected = postprocess.apply(probs, image_probs, images, PostProcess(threshold=threshold))
    got = csv_masks(tmp_path / "a-submission.csv", ids)
    np.testing.assert_array_equal(got, expected)
    empty = ~expected.any(axis=(1, 2))
    assert 0 < empty.sum() < len(ids)
    assert all(line.endswith(",") == e for line, e in zip(lines[1:], empty))  # an empty mask is an empty field
    assert f"empty predictions: {empty.mean():.1%} ({int(empty.sum())} of {len(ids)})" in out
    submit = f"kaggle competitions submit -c tgs-salt-identification-challenge -f {tmp_path / 'a-submission.csv'} -m"
    assert submit in out
    saved = P.load(tmp_path / "a-probabilities.npz")
    assert saved.split == "test" and saved.models == [str(ckpts["a"])] and list(saved.ids) == list(ids)
    assert np.abs(saved.probs - probs).max() <= 0.5 / 255 + 1e-6
    np.testing.assert_allclose(saved.image_probs, image_probs, rtol=1e-5)


def test_post_processing_flags_reach_the_submission(ckpts, test_images, tmp_path, capsys):
    ids, images = test_images
    probs, image_probs = direct(ckpts["a"], images)
    gate = float(np.median(image_probs))
    p = PostProcess(threshold=0.45, min_area=300, gate=gate, flat=False)
    code, out, _ = run([ckpts["a"], "--output-prefix", tmp_path / "p", "--threshold", "0.45", "--min-area", "300",
                        "--gate", gate, "--no-flat"], capsys)
    assert code == 0 and p.describe() in out
    np.testing.assert_array_equal(csv_masks(tmp_path / "p-submission.csv", ids),
                                  postprocess.apply(probs, image_probs, images, p))


def test_post_config_file_and_flags_that_override_it(ckpts, test_images, tmp_path, capsys):
    ids, images = test_images
    probs, image_probs = direct(ckpts["a"], images)
    gate = float(np.median(image_probs))
    saved = PostProcess(threshold=0.4, min_area=200, gate=gate, flat=False)
    postprocess.save_setting(tmp_path / "post.json", saved, {"searched_on": "oof.npz", "score": 0.9})
    code, out, _ = run([ckpts["a"], "--output-prefix", tmp_path / "c", "--post-config", tmp_path / "post.json"], capsys)
    assert code == 0 and f"post-processing: {saved.describe()} ({tmp_path / 'post.json'}, searched on oof.npz)" in out
    np.testing.assert_array_equal(csv_masks(tmp_path / "c-submission.csv", ids),
                                  postprocess.apply(probs, image_probs, images, saved))
    # flags given on the command line win over the file's values; the others stay the file's
    code, out, _ = run([ckpts["a"], "--output-prefix", tmp_path / "d", "--post-config", tmp_path / "post.json",
                        "--threshold", "0.6", "--gate", "none"], capsys)
    mixed = PostProcess(threshold=0.6, min_area=200, gate=None, flat=False)
    assert code == 0 and mixed.describe() in out and "threshold, gate from the command line" in out
    np.testing.assert_array_equal(csv_masks(tmp_path / "d-submission.csv", ids),
                                  postprocess.apply(probs, image_probs, images, mixed))
    # without a file: the defaults, said so
    code, out, _ = run([ckpts["a"], "--output-prefix", tmp_path / "e"], capsys)
    assert code == 0 and f"post-processing: {postprocess.DEFAULTS.describe()} (defaults)" in out


@pytest.mark.parametrize("text,fragment", [
    (None, "does not exist"),
    ("folder", "is a folder, not a JSON file"),
    ("{not json", "not a JSON file"),
    ("[1, 2]", "expected a JSON object"),
    ('{"threshold": 0.5, "min_area": 0, "gate": null}', "missing flat"),
    ('{"threshold": "0.5", "min_area": 0, "gate": null, "flat": true}', "threshold: '0.5' is not a number"),
    ('{"threshold": 0.5, "min_area": 2.5, "gate": null, "flat": true}', "min_area: 2.5 is not an integer"),
    ('{"threshold": 1.5, "min_area": 0, "gate": null, "flat": true}', "threshold: must be < 1, got 1.5"),
])
def test_a_bad_post_config_is_one_line(ckpts, tmp_path, capsys, text, fragment):
    path = tmp_path / "post.json"
    if text == "folder":
        path.mkdir()
    elif text is not None:
        path.write_text(text)
    code, _, err = run([ckpts["a"], "--output-prefix", tmp_path / "x", "--post-config", path], capsys)
    assert code == 2 and err.count("\n") == 1 and str(path) in err and fragment in err
    assert not list(tmp_path.glob("x-*"))


def test_bf16_and_channels_last_predict_what_fp32_predicts(ckpts, test_images, tmp_path, capsys):
    ids, images = test_images
    assert run([ckpts["b"], "--tta", "--output-prefix", tmp_path / "f32"], capsys)[0] == 0
    code, out, err = run([ckpts["b"], "--tta", "--amp", "bf16", "--channels-last", "--output-prefix",
                          tmp_path / "bf16"], capsys)
    assert code == 0, err
    f32, b16 = P.load(tmp_path / "f32-probabilities.npz"), P.load(tmp_path / "bf16-probabilities.npz")
    assert list(b16.ids) == list(f32.ids) == list(ids) and b16.probs.dtype == np.float32
    diff = np.abs(b16.probs - f32.probs)
    assert diff.max() < 0.1 and diff.mean() < 0.01  # bf16 keeps 8 bits of mantissa
    assert diff.max() > 0  # it did run in bf16
    # (not the image probabilities: tiny() scales the image head's weights by ~1e6 to spread its logits, far
    # beyond what bf16's 8-bit mantissa can carry; a trained head is nowhere near that)
    assert np.isfinite(b16.image_probs).all() and ((b16.image_probs >= 0) & (b16.image_probs <= 1)).all()


def test_tta_is_the_flip_average(ckpts, test_images, tmp_path, capsys):
    ids, images = test_images
    assert run([ckpts["a"], "--tta", "--output-prefix", tmp_path / "t"], capsys)[0] == 0
    got = P.load(tmp_path / "t-probabilities.npz")
    manual, manual_img = direct(ckpts["a"], images, tta=True)
    plain, _ = direct(ckpts["a"], images, tta=False)
    assert np.abs(got.probs - manual).max() <= LEVEL
    np.testing.assert_allclose(got.image_probs, manual_img, rtol=1e-5)
    assert np.abs(got.probs - plain).max() > 5 * LEVEL  # the flip really changes the prediction


def test_mixed_pad_and_resize_ensemble_is_the_mean_of_single_runs(ckpts, test_images, tmp_path, capsys, monkeypatch):
    ids, images = test_images
    for name in ("a", "b"):
        assert run([ckpts[name], "--tta", "--output-prefix", tmp_path / name], capsys)[0] == 0
    # the pad model's run pads and crops: equal to the manual forward with its own input spec
    pb, _ = direct(ckpts["b"], images, tta=True)
    assert np.abs(P.load(tmp_path / "b-probabilities.npz").probs - pb).max() <= LEVEL

    alive = []  # one model in memory at a time: every earlier model is freed when the next one loads
    real_load = models.load

    def watched(path, device="cpu"):
        assert all(ref() is None for ref in alive), "the previous model is still alive"
        loaded = real_load(path, device)
        alive.append(weakref.ref(loaded.model))
        return loaded

    monkeypatch.setattr(models, "load", watched)
    code, out, err = run([ckpts["a"], ckpts["b"], "--tta", "--output-prefix", tmp_path / "ab"], capsys)
    assert code == 0, err
    assert "(resize 101->32" in out and "(pad 101->128" in out and len(alive) == 2
    a, b, ab = (P.load(tmp_path / f"{n}-probabilities.npz") for n in ("a", "b", "ab"))
    assert np.abs(ab.probs - (a.probs + b.probs) / 2).max() <= LEVEL
    np.testing.assert_allclose(ab.image_probs, (a.image_probs + b.image_probs) / 2, rtol=1e-5)
    assert ab.models == [str(ckpts["a"]), str(ckpts["b"])]

    # --from-probabilities: exactly the average of the saved files
    code, out, err = run(["--from-probabilities", tmp_path / "a-probabilities.npz", tmp_path / "b-probabilities.npz",
                          "--output-prefix", tmp_path / "fp", "--data-dir", data_root(ckpts)], capsys)
    assert code == 0, err
    fp = P.load(tmp_path / "fp-probabilities.npz")
    mean = (a.probs + b.probs) / np.float32(2)
    np.testing.assert_array_equal(P.quantize(fp.probs), P.quantize(mean))
    np.testing.assert_array_equal(csv_masks(tmp_path / "fp-submission.csv", ids),
                                  postprocess.apply(mean, (a.image_probs + b.image_probs) / 2, images))
    assert fp.models == [str(tmp_path / "a-probabilities.npz"), str(tmp_path / "b-probabilities.npz")]


def data_root(ckpts):
    return models.read_checkpoint(ckpts["a"])["meta"]["config"]["data_dir"]




def test_out_of_fold_predictions_and_merge(ckpts, synthetic_root, tmp_path, capsys):
    train = kaggle.load_train(synthetic_root)
    fold_ids = {}
    for name, fold in (("a", "fold0"), ("a1", "fold1")):
        args = [ckpts[name], "--split", "valid", "--tta", "--output-prefix", tmp_path / fold]
        code, out, err = run(args, capsys)  # the fold comes from the checkpoint
        assert code == 0, err
        _, va = folds.split(train.ids, fold)
        oof = P.load(tmp_path / f"{fold}-probabilities.npz")
        assert oof.split == "valid" and list(oof.ids) == list(train.ids[va])
        fold_ids[fold] = train.ids[va]
        masks = csv_masks(tmp_path / f"{fold}-submission.csv", train.ids[va])
        printed = float(re.search(r"^score\s+([0-9.]+)", out, re.M).group(1))
        assert printed == pytest.approx(metric.score(masks, train.masks[va]), abs=1e-6)
        assert f"{len(va)} images of {fold}" in out and "kaggle competitions submit" not in out
    # a model is only scored on its own fold's validation images
    code, _, err = run([ckpts["a1"], "--split", "valid", "--data-fold", "fold0", "--output-prefix", tmp_path / "x"],
                       capsys)
    assert code == 2 and "trained on fold1, not fold0" in err and err.count("\n") == 1

    code, out, err = run(["--merge-oof", tmp_path / "fold1-probabilities.npz", tmp_path / "fold0-probabilities.npz",
                          "--output-prefix", tmp_path / "oof", "--data-dir", synthetic_root], capsys)
    assert code == 0, err
    merged = P.load(tmp_path / "oof-probabilities.npz")
    n = len(fold_ids["fold0"]) + len(fold_ids["fold1"])
    assert merged.split == "valid" and list(merged.ids) == list(train.ids[:n])  # train.csv order
    assert f"covers {n} of the {len(train)} training images" in out
    f0, f1 = (P.load(tmp_path / f"{f}-probabilities.npz") for f in ("fold0", "fold1"))
    np.testing.assert_array_equal(merged.probs, np.concatenate([f0.probs, f1.probs]))
    masks = postprocess.apply(merged.probs, merged.image_probs, train.images[:n])
    printed = float(re.search(r"^score\s+([0-9.]+)", out, re.M).group(1))
    assert printed == pytest.approx(metric.score(masks, train.masks[:n]), abs=1e-6)

    (tmp_path / "again.npz").write_bytes((tmp_path / "fold0-probabilities.npz").read_bytes())
    code, _, err = run(["--merge-oof", tmp_path / "fold0-probabilities.npz", tmp_path / "again.npz",
                        "--output-prefix", tmp_path / "m"], capsys)
    assert code == 2 and "disjoint" in err
    P.save(tmp_path / "test.npz", ["x"], np.zeros((1, 101, 101), np.float32))
    code, _, err = run(["--merge-oof", tmp_path / "test.npz", "--output-prefix", tmp_path / "m"], capsys)
    assert code == 2 and "not out-of-fold" in err
    code, _, err = run(["--from-probabilities", tmp_path / "fold0-probabilities.npz", tmp_path / "test.npz",
                        "--output-prefix", tmp_path / "m", "--data-dir", synthetic_root], capsys)
    assert code == 2 and "cannot be averaged together" in err


def test_saved_probabilities_must_hold_exactly_the_sets_ids(synthetic_root, test_images, tmp_path, capsys):
    ids, _ = test_images
    zeros = np.zeros((len(ids), 101, 101), np.float32)
    P.save(tmp_path / "short.npz", ids[1:], zeros[1:])  # a test-set file without its first id
    code, _, err = run(["--from-probabilities", tmp_path / "short.npz", "--output-prefix", tmp_path / "s",
                        "--data-dir", synthetic_root], capsys)
    assert code == 2 and err.count("\n") == 1 and f"1 of the {len(ids)} ids" in err and ids[0] in err
    P.save(tmp_path / "odd.npz", ["zzzzzzzzzz", *ids[1:]], zeros)
    code, _, err = run(["--from-probabilities", tmp_path / "odd.npz", "--output-prefix", tmp_path / "s",
                        "--data-dir", synthetic_root], capsys)
    assert code == 2 and "1 ids are not in the test set of sample_submission.csv: zzzzzzzzzz" in err
    P.save(tmp_path / "valid.npz", ["zzzzzzzzzz"], zeros[:1], split="valid")
    code, _, err = run(["--from-probabilities", tmp_path / "valid.npz", "--output-prefix", tmp_path / "s",
                        "--data-dir", synthetic_root], capsys)
    assert code == 2 and "are not in train.csv" in err
    assert not list(tmp_path.glob("s-*"))


def test_missing_test_image_names_the_id(ckpts, data_copy, tmp_path, capsys):
    ids = kaggle.read_sample_submission(data_copy / "sample_submission.csv")
    (data_copy / "test" / "images" / f"{ids[3]}.png").unlink()
    code, _, err = run([ckpts["a"], "--data-dir", data_copy, "--output-prefix", tmp_path / "m"], capsys)
    assert code == 2 and err.count("\n") == 1 and f"id {ids[3]}" in err
    assert not list(tmp_path.glob("m-*"))
    r = subprocess.run([sys.executable, str(ROOT / "test.py"), str(ckpts["a"]), "--data-dir", str(data_copy),
                        "--output-prefix", str(tmp_path / "m"), "--device", "cpu"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr and f"id {ids[3]}" in r.stderr


def test_bad_inputs_are_one_line_errors(ckpts, tmp_path, capsys):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00" * 100)
    cases = [
        ([junk], "junk.pth"),
        ([], "give model files"),
        ([ckpts["a"], "--from-probabilities", junk], "exactly one"),
        ([ckpts["a"], ckpts["a"]], "listed twice"),
        ([tmp_path / "none.pth"], "none.pth does not exist"),
        ([ckpts["a"], "--data-fold", "fold0"], "--data-fold goes with --split valid"),
        ([ckpts["a"], "--threshold", "1.5"], "--threshold: must be < 1, got 1.5"),
    ]
    for argv, fragment in cases:
        code, _, err = run([*argv, "--output-prefix", tmp_path / "j"], capsys)
        assert code == 2 and err.count("\n") == 1 and fragment in err, (argv, err)
    assert not list(tmp_path.glob("j-*"))


def test_an_interrupted_write_keeps_the_previous_file(ckpts, tmp_path, capsys, monkeypatch):
    target = tmp_path / "i-submission.csv"
    target.write_text("id,rle_mask\nold,\n")

    def broken(self, fh, *args, **kwargs):
        fh.write("id,rle_mask\nhalf")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken)
    with pytest.raises(OSError, match="disk full"):
        script.main([str(ckpts["a"]), "--output-prefix", str(tmp_path / "i"), "--device", "cpu"])
    assert target.read_text() == "id,rle_mask\nold,\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i-submission.csv"]  # no new .npz beside the old CSV


# -- mosaic rules ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def built_mosaics(synthetic_root, tmp_path_factory):
    """mosaics.csv of the shared synthetic set, as mosaic.py builds it."""
    from cli import mosaic as mosaic_cli

    out = tmp_path_factory.mktemp("mosaics")
    assert mosaic_cli.main(["--data-dir", str(synthetic_root), "--out", str(out), "--no-cache"]) == 0
    return out / "mosaics.csv"


def test_mosaic_rules_end_to_end(synthetic_root, built_mosaics, test_images, tmp_path, capsys):
    """All-empty test predictions and the boundary rule over mosaic.py's layout: exactly the test tiles with a train
    neighbour whose facing edge is partly salt get salt, the others stay empty; a tile with one such neighbour and
    no known tile opposite gets that edge line extruded."""
    from tgs.mosaic import Mosaics

    ids, _ = test_images
    P.save(tmp_path / "zero.npz", ids, np.zeros((len(ids), 101, 101), np.float32))
    code, out, err = run(["--from-probabilities", tmp_path / "zero.npz", "--data-dir", synthetic_root,
                          "--output-prefix", tmp_path / "b", "--mosaics", built_mosaics,
                          "--mosaic-rules", "boundary"], capsys)
    assert code == 0, err
    got = csv_masks(tmp_path / "b-submission.csv", ids)
    train_ids, train_masks = submission.read_truth(synthetic_root / "train.csv")
    layout = Mosaics.read(built_mosaics)
    everyone = np.concatenate([ids, train_ids])
    nb = layout.neighbours(everyone)
    known = np.arange(len(everyone)) >= len(ids)
    truth_of = lambda j: train_masks[j - len(ids)]  # noqa: E731
    partly = lambda line: 0 < line.sum() < len(line)  # noqa: E731
    expected_changed = 0
    for i in range(len(ids)):
        facing = {"up": lambda m: m[-1], "down": lambda m: m[0], "left": lambda m: m[:, -1], "right": lambda m: m[:, 0]}
        sides = {s: getattr(nb, s)[i] for s in facing}
        salt_sides = [s for s, j in sides.items() if j >= 0 and known[j] and partly(facing[s](truth_of(j)))]
        if not salt_sides:
            assert not got[i].any(), ids[i]
            continue
        expected_changed += 1
        assert got[i].any(), ids[i]
        side = salt_sides[0]
        opposite = {"up": "down", "down": "up", "left": "right", "right": "left"}[side]
        j, o = sides[side], sides[opposite]
        if side in ("up", "down") and not (o >= 0 and known[o]):
            assert np.array_equal(got[i], np.repeat(facing[side](truth_of(j))[None], 101, axis=0)), ids[i]
        if side in ("left", "right") and not (o >= 0 and known[o]) and not any(s in salt_sides for s in ("up", "down")):
            assert np.array_equal(got[i], np.repeat(facing[side](truth_of(j))[:, None], 101, axis=1)), ids[i]
    assert expected_changed > 0
    assert f"mosaic rules changed: boundary {expected_changed} tile" in out
    assert "mosaic rules boundary" in out and "mosaic rules from the command line" in out
    assert f"{len(train_ids)} train masks known" in out


def test_vertical_rule_through_a_post_config(synthetic_root, test_images, tmp_path, capsys):
    """A hand-made layout over real ids: a train tile with a vertical wall above two test tiles, then a train tile,
    then a third test tile. The rule comes from --post-config; --mosaic-rules none turns it off."""
    ids, _ = test_images
    train_ids, train_masks = submission.read_truth(synthetic_root / "train.csv")
    from tgs.mosaic_rules import Edges

    walls = np.flatnonzero(Edges.of(train_masks).vertical)
    assert walls.size >= 1
    w, other = int(walls[0]), int(np.flatnonzero(~train_masks.any(axis=(1, 2)))[0])
    path = tmp_path / "mosaics.csv"
    pd.DataFrame({"id": [train_ids[w], ids[0], ids[1], train_ids[other], ids[2]], "mosaic": 0,
                  "row": range(5), "col": 0}).to_csv(path, index=False)
    rng = np.random.default_rng(0)
    probs = rng.random((len(ids), 101, 101)).astype(np.float32)
    P.save(tmp_path / "p.npz", ids, probs)
    postprocess.save_setting(tmp_path / "post.json", PostProcess(rules=("vertical",)), {"searched_on": "oof.npz"})
    argv = ["--from-probabilities", tmp_path / "p.npz", "--data-dir", synthetic_root, "--mosaics", path,
            "--post-config", tmp_path / "post.json"]
    code, out, err = run(argv + ["--output-prefix", tmp_path / "v"], capsys)
    assert code == 0, err
    got = csv_masks(tmp_path / "v-submission.csv", ids)
    plain = postprocess.apply(P.load(tmp_path / "p.npz").probs, None, test_images[1])
    assert np.array_equal(got[0], train_masks[w]) and np.array_equal(got[1], train_masks[w])
    assert np.array_equal(got[2:], plain[2:])  # the walk stopped at the empty train tile
    assert "mosaic rules changed: vertical 2 tiles" in out and "searched on oof.npz" in out
    code, out, err = run(argv + ["--output-prefix", tmp_path / "n", "--mosaic-rules", "none"], capsys)
    assert code == 0 and "the mosaics are not used" in out
    assert np.array_equal(csv_masks(tmp_path / "n-submission.csv", ids), plain)
    # rules without a layout, a layout with merged out-of-fold files: one line each
    code, _, err = run(argv[:-4] + ["--post-config", tmp_path / "post.json", "--output-prefix", tmp_path / "x"], capsys)
    assert code == 2 and err.count("\n") == 1 and "asks for the mosaic rules vertical: give --mosaics" in err
    code, _, err = run(["--merge-oof", tmp_path / "p.npz", "--mosaics", path, "--output-prefix", tmp_path / "x"],
                       capsys)
    assert code == 2 and "--mosaics goes with test or validation predictions, not --merge-oof" in err
    code, _, err = run(argv[:4] + ["--mosaics", tmp_path / "none.csv", "--mosaic-rules", "vertical",
                                   "--output-prefix", tmp_path / "x"], capsys)
    assert code == 2 and "none.csv does not exist" in err
    assert not list(tmp_path.glob("x-*"))


@pytest.mark.parametrize("case", ["unknown ids", "another dataset", "two ids one cell"])
def test_a_bad_mosaics_file_stops_test_py_before_any_work(ckpts, synthetic_root, test_images, tmp_path, capsys,
                                                          case):
    ids, _ = test_images
    rows = {"unknown ids": [(ids[0], 0, 0, 0), (ids[1], 0, 1, 0), ("ffffffffff", 0, 2, 0)],
            "another dataset": [(f"{i:010x}", 0, 0, i) for i in range(5)] + [(ids[0], 0, 1, 0)],
            "two ids one cell": [(ids[0], 0, 0, 0), (ids[1], 0, 0, 0)]}[case]
    path = tmp_path / "mosaics.csv"
    pd.DataFrame(rows, columns=["id", "mosaic", "row", "col"]).to_csv(path, index=False)
    code, out, err = run([ckpts["a"], "--data-dir", synthetic_root, "--output-prefix", tmp_path / "m",
                          "--mosaics", path, "--mosaic-rules", "vertical,boundary"], capsys)
    expected = {"unknown ids": "1 of its 3 ids are not in this dataset's train or test ids: ffffffffff",
                "another dataset": "belongs to another dataset", "two ids one cell": "are both at mosaic 0"}[case]
    assert code == 2 and expected in err and str(path) in err and err.count("\n") == 1
    assert "models on" in out and "model 1/1" not in out  # refused after loading the data, before predicting
    assert not list(tmp_path.glob("m-*"))
