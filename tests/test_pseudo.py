"""Pseudo-labels: the selection rule on hand-built probabilities, the file format and its bad files, pseudo.py, and
training with them (batch composition, validation, the pretrain schedule, the loss weighting, exact resume)."""
import hashlib

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

import models
from cli import pseudo as pseudo_cli
from cli import train as train_cli
from datasets import kaggle
from datasets.torchdata import MixedBatchSampler
from engine import distributed, trainer
from engine import pseudo as engine_pseudo
from tests.tiny import TINY
from tgs import TILE, postprocess, pseudo
from tgs import probabilities as P
from tgs.errors import DataError, UserError


# -- the rule ---------------------------------------------------------------------------------------------------
def tiles(*values_per_image):
    """10x10 float32 images: each a list of (probability, pixel count) filling its 100 pixels in order."""
    out = np.zeros((len(values_per_image), 10, 10), np.float32)
    for i, parts in enumerate(values_per_image):
        flat = np.concatenate([np.full(k, p, np.float32) for p, k in parts])
        assert flat.size == 100
        out[i] = flat.reshape(10, 10)
    return out


def test_confidence_is_the_share_of_sure_pixels_and_lo_hi_are_strict():
    probs = tiles([(0.1, 50), (0.9, 45), (0.5, 5)],  # 95 sure
                  [(0.0, 90), (0.5, 10)],  # 90 sure: exactly the default threshold
                  [(1.0, 89), (0.79, 11)],  # 89 sure
                  [(0.2, 50), (0.8, 50)])  # exactly lo and hi: not sure
    assert pseudo.confidence(probs).tolist() == [0.95, 0.9, 0.89, 0.0]
    assert pseudo.confidence(probs, lo=0.21, hi=0.79).tolist() == [0.95, 0.9, 0.89, 1.0]
    masks = probs > 0.5
    sel = pseudo.select(probs, masks, np.zeros(4, bool))
    assert sel.index.tolist() == [0, 1]  # 0.9 is kept (at least min_confidence), 0.89 is not
    assert pseudo.select(probs, masks, np.zeros(4, bool), pseudo.Rule(min_confidence=0.89)).index.tolist() == [0, 1, 2]


def test_flat_images_are_never_pseudo_labelled():
    probs = tiles([(0.0, 100)], [(0.0, 100)], [(1.0, 100)])
    sel = pseudo.select(probs, probs > 0.5, np.array([False, True, False]))
    assert sel.index.tolist() == [0, 2] and sel.flat == 1 and sel.confident == 2


def test_caps_keep_the_most_confident_of_a_bin():
    # five images predicted empty with confidences 0.95, 1.0, 0.97, 0.97, 0.92 and one with salt (>50%)
    probs = tiles([(0.0, 95), (0.4, 5)], [(0.0, 100)], [(0.1, 97), (0.3, 3)], [(0.1, 97), (0.3, 3)],
                  [(0.0, 92), (0.45, 8)], [(0.9, 60), (0.1, 40)])
    masks = probs > 0.5
    rule = pseudo.Rule(caps={"empty": 0.5})
    sel = pseudo.select(probs, masks, np.zeros(6, bool), rule)
    # floor(0.5 x 5) = 2 empty ones: 1.0 (image 1), then the earlier of the two 0.97 (image 2); the salt one stays
    assert sel.index.tolist() == [1, 2, 5] and sel.capped == {"empty": 3}
    assert pseudo.select(probs, masks, np.zeros(6, bool), pseudo.Rule(caps={"empty": 0.0, ">50%": 1.0})
                         ).index.tolist() == [5]
    assert pseudo.select(probs, masks, np.zeros(6, bool), pseudo.Rule(caps={">50%": 0.0})).index.tolist() == [0, 1, 2,
                                                                                                               3, 4]


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(lo=0.8, hi=0.2), "need 0 <= lo < hi <= 1"),
    (dict(min_confidence=1.5), "--min-confidence 1.5: must be in [0, 1]"),
    (dict(caps={"tiny": 0.5}), "--cap 'tiny': not a coverage bin"),
    (dict(caps={"empty": 2.0}), "--cap empty=2.0"),
    (dict(caps=(("empty", 0.5), ("empty", 0.2))), "--cap empty is given twice"),
])
def test_bad_rules(kwargs, fragment):
    with pytest.raises(UserError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        pseudo.Rule(**kwargs)


# -- the file -----------------------------------------------------------------------------------------------------
def labels_of(ids, seed=0):
    rng = np.random.default_rng(seed)
    n = len(ids)
    return pseudo.PseudoLabels(np.asarray(ids, str), rng.random((n, TILE, TILE)) > 0.5,
                               rng.random(n).astype(np.float32), {"source": "x.npz", "rule": "{}", "postprocess": "{}"})


def test_file_round_trip_and_digest(tmp_path):
    labels = labels_of(["a", "b", "c"])
    path = pseudo.save(tmp_path / "pseudo-labels.npz", labels)
    back = pseudo.load(path, test_ids=["c", "b", "a", "d"])
    assert back.ids.tolist() == ["a", "b", "c"] and np.array_equal(back.masks, labels.masks)
    assert back.masks.dtype == bool and back.confidence.dtype == np.float32
    assert np.array_equal(back.confidence, labels.confidence) and back.provenance == labels.provenance
    assert pseudo.digest(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert not list(tmp_path.glob(".*.tmp"))


def _bad_files(tmp_path):
    good = pseudo.save(tmp_path / "good.npz", labels_of(["a", "b"]))
    arrays = dict(np.load(good))
    out = {}

    def write(name, **changes):
        path = tmp_path / f"{name}.npz"
        np.savez_compressed(path, **{**arrays, **changes})
        out[name] = path

    write("shape", masks=np.zeros((2, 50, 50), bool))
    write("dtype", masks=arrays["masks"].astype(np.uint8))
    write("dup", ids=np.array(["a", "a"]))
    write("conf", confidence=np.array([0.5, 1.5], np.float32))
    write("noconf", confidence=np.zeros(3, np.float32))
    np.savez(tmp_path / "pickle.npz", **{**arrays, "ids": np.array(["a", "b"], dtype=object)})
    out["pickle"] = tmp_path / "pickle.npz"
    np.savez(tmp_path / "missing.npz", ids=arrays["ids"], masks=arrays["masks"])
    out["missing"] = tmp_path / "missing.npz"
    data = good.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    out["cut"] = tmp_path / "cut.npz"
    np.save(tmp_path / "single.npy", arrays["masks"])
    out["single"] = tmp_path / "single.npy"
    return out


@pytest.mark.parametrize("name,fragment", [
    ("shape", "'masks' must be bool of shape (2, 101, 101)"),
    ("dtype", "'masks' must be bool of shape"),
    ("dup", "id 'a' appears 2 times"),
    ("conf", "confidence of id 'b' is 1.5, not in [0, 1]"),
    ("noconf", "'confidence' must be float of shape (2,)"),
    ("pickle", "holds an object array (pickled data), refused"),
    ("missing", "is not a pseudo-labels file (no 'confidence' array)"),
    ("cut", "is not a readable .npz pseudo-labels file: corrupt or truncated"),
    ("single", "is a single .npy array, not a .npz pseudo-labels file"),
])
def test_bad_files_are_one_data_error_naming_the_file(tmp_path, name, fragment):
    path = _bad_files(tmp_path)[name]
    with pytest.raises(DataError) as err:
        pseudo.load(path)
    assert fragment in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_ids_not_in_the_test_set_are_refused(tmp_path):
    path = pseudo.save(tmp_path / "p.npz", labels_of(["a", "zz"]))
    with pytest.raises(DataError, match=r"p.npz: 1 ids are not in the test set: zz"):
        pseudo.load(path, test_ids=["a", "b"])


# -- pseudo.py ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny data set, test-set probabilities of it (image 0 unsure), and pseudo.py's file made from them."""
    from datasets.synthetic import write_dataset

    root = tmp_path_factory.mktemp("pseudo")
    write_dataset(root / "data", n_train=40, n_test=8, seed=3)
    test = kaggle.load_test(root / "data")
    rng = np.random.default_rng(0)
    probs = np.where(rng.random((len(test), TILE, TILE)) < 0.4, 0.95, 0.03).astype(np.float32)
    probs[0, :60] = 0.5  # 60% unsure
    probs[1] = 0.02  # predicted empty
    order = np.r_[len(test) - 1:-1:-1]  # the file's order need not be the test set's
    P.save(root / "test-probabilities.npz", test.ids[order], probs[order], None, ["m.pth"], "test")
    P.save(root / "valid-probabilities.npz", test.ids, probs, None, ["m.pth"], "valid")
    assert pseudo_cli.main(["--probabilities", str(root / "test-probabilities.npz"), "--data-dir", str(root / "data"),
                            "--out", str(root / "pseudo-labels.npz")]) == 0
    return {"root": root, "data": root / "data", "labels": root / "pseudo-labels.npz", "probs": probs, "test": test}


def test_pseudo_py_selects_post_processed_masks_and_summarises(tiny, tmp_path, capsys):
    out = tmp_path / "p.npz"
    assert pseudo_cli.main(["--probabilities", str(tiny["root"] / "test-probabilities.npz"), "--data-dir",
                            str(tiny["data"]), "--out", str(out), "--threshold", "0.6", "--cap", "empty=0"]) == 0
    text = capsys.readouterr().out
    test, probs = tiny["test"], tiny["probs"]
    flat = postprocess.flat_images(test.images)
    expect = np.flatnonzero(~flat & (np.arange(len(test)) > 1))  # image 0 unsure, image 1 empty (capped at 0)
    labels = pseudo.load(out, test.ids)
    assert labels.ids.tolist() == test.ids[expect].tolist()
    masks = postprocess.apply(probs, None, test.images, postprocess.PostProcess(threshold=0.6))
    assert np.array_equal(labels.masks, masks[expect])
    assert np.allclose(labels.confidence, 1.0)
    assert f"pseudo-labels: {len(expect)} images of 8 test images" in text and "cap empty: dropped 1" in text
    assert "threshold 0.6" in text and ">50%" in text
    assert '"min_confidence": 0.9' in labels.provenance["rule"] and labels.provenance["source"].endswith(
        "test-probabilities.npz")


@pytest.mark.parametrize("extra,fragment", [
    (["--probabilities", "{root}/valid-probabilities.npz"], "holds 'valid' predictions"),
    (["--probabilities", "{root}/nowhere.npz"], "--probabilities {root}/nowhere.npz does not exist"),
    (["--min-confidence", "1.0", "--lo", "0.01", "--hi", "0.99"], "no test image of"),
    (["--cap", "huge=0.5"], "--cap 'huge': not a coverage bin"),
    (["--cap", "empty"], "is not BIN=SHARE"),
    (["--lo", "0.9"], "need 0 <= lo < hi <= 1"),
])
def test_pseudo_py_refusals_are_one_line(tiny, tmp_path, capsys, extra, fragment):
    root = str(tiny["root"])
    argv = ["--probabilities", f"{root}/test-probabilities.npz", "--data-dir", str(tiny["data"]),
            "--out", str(tmp_path / "p.npz")] + [x.format(root=root) for x in extra]
    assert pseudo_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and fragment.format(root=root) in err, err
    assert not (tmp_path / "p.npz").exists()


# -- the sampler ------------------------------------------------------------------------------------------------------
def epoch_batches(sampler, epoch):
    sampler.set_epoch(epoch)
    return list(sampler)


@pytest.mark.parametrize("world", [1, 2])
def test_ranks_share_no_pseudo_image_while_an_epoch_stays_in_one_permutation(world):
    n_real, n_pseudo, bs, k = 37, 48, 8, 2  # 3 batches x 2 x 2 ranks = 12 of the 48 per epoch (world 2)
    samplers = [MixedBatchSampler(n_real, n_pseudo, bs, k, num_replicas=world, rank=r, seed=5) for r in range(world)]
    per_epoch = len(samplers[0]) * k * world
    seen = []
    for epoch in range(n_pseudo // per_epoch):  # the first permutation, epoch by epoch
        fake = [i for s in samplers for b in epoch_batches(s, epoch) for i in b if i >= n_real]
        assert len(fake) == per_epoch and len(set(fake)) == len(fake)
        seen += fake
    assert sorted(seen) == list(range(n_real, n_real + n_pseudo))  # every image once before any twice


@pytest.mark.parametrize("world", [1, 2])
def test_mixed_batches_carry_the_share(world):
    n_real, n_pseudo, bs, k = 37, 11, 8, 2
    samplers = [MixedBatchSampler(n_real, n_pseudo, bs, k, num_replicas=world, rank=r, seed=5) for r in range(world)]
    per_rank_real = -(-n_real // world)
    for epoch in range(4):
        ranks = [epoch_batches(s, epoch) for s in samplers]
        for batches in ranks:
            assert len(batches) == per_rank_real // (bs - k)  # set by the real images
            for b in batches:
                assert len(b) == bs and sum(i >= n_real for i in b) == k
        real = [i for batches in ranks for b in batches for i in b if i < n_real]
        fake = [i for batches in ranks for b in batches for i in b if i >= n_real]
        assert len(set(real)) == len(real) or world > 1  # one pass (DDP pads by repeating a few)
        assert len(fake) == len(batches) * k * world
        assert epoch_batches(samplers[0], epoch) == ranks[0]  # a pure function of (seed, epoch)
    assert epoch_batches(samplers[0], 0) != epoch_batches(samplers[0], 1)


def test_the_pseudo_stream_uses_every_image_once_before_any_twice():
    world, n_pseudo = 2, 7
    samplers = [MixedBatchSampler(30, n_pseudo, 6, 2, num_replicas=world, rank=r, seed=1) for r in range(world)]
    stream = []
    for epoch in range(5):  # the stream order: position j of rank r is stream entry r + world * j
        per_rank = [[i - 30 for b in epoch_batches(s, epoch) for i in b if i >= 30] for s in samplers]
        stream += [per_rank[r][j] for j in range(len(per_rank[0])) for r in range(world)]
    assert len(stream) > 3 * n_pseudo
    for m in range(len(stream) // n_pseudo):
        assert sorted(stream[m * n_pseudo:(m + 1) * n_pseudo]) == list(range(n_pseudo))


@pytest.mark.parametrize("n_real,bs,world", [(36, 8, 1), (37, 8, 2), (17, 8, 2), (8, 8, 1), (5, 8, 1), (18, 8, 2)])
def test_without_pseudo_images_in_a_batch_the_batches_are_train_pys(n_real, bs, world):
    for rank in range(world):
        mixed = MixedBatchSampler(n_real, 4, bs, 0, num_replicas=world, rank=rank, seed=3)
        plain = DistributedSampler(range(n_real), num_replicas=world, rank=rank, shuffle=True, seed=3,
                                   drop_last=False)
        loader = DataLoader(list(range(n_real)), batch_size=bs, sampler=plain, drop_last=n_real // world > bs)
        for epoch in range(2):
            plain.set_epoch(epoch)
            assert epoch_batches(mixed, epoch) == [b.tolist() for b in loader]


def test_pretrain_epochs_are_pseudo_images_alone_then_real_alone():
    s = MixedBatchSampler(20, 10, 4, 0, pseudo_only_epochs=2, seed=0)
    for epoch in (0, 1):
        batches = epoch_batches(s, epoch)
        assert len(batches) == 10 // 4 and all(len(b) == 4 and min(b) >= 20 for b in batches)
    for epoch in (2, 3):
        batches = epoch_batches(s, epoch)
        assert len(batches) == 5 and all(len(b) == 4 and max(b) < 20 for b in batches)
        assert sorted(i for b in batches for i in b) == list(range(20))


# -- training ---------------------------------------------------------------------------------------------------------
def run_train(tiny, log_dir, *extra):
    return train_cli.main(["--data-dir", str(tiny["data"]), "--log-dir", str(log_dir), *TINY, *extra])


def test_training_batches_validation_and_the_pseudo_images(tiny, tmp_path):
    cfg = train_cli.parse(["--data-dir", str(tiny["data"]), "--log-dir", str(tmp_path / "r"), *TINY,
                           "--pseudo-labels", str(tiny["labels"]), "--pseudo-fraction", "0.4"])
    ctx = trainer.setup(cfg, distributed.DistInfo())
    try:
        train, tr, va = trainer.load_split(cfg)
        labels = pseudo.load(tiny["labels"])
        test = tiny["test"]
        assert ctx.n_real == len(tr) == 36 and len(ctx.pseudo) == len(labels)
        # the pseudo images are the labelled test images with their labels, after the fold's training images
        rows = [test.ids.tolist().index(i) for i in labels.ids]
        assert np.array_equal(ctx.train_set.images[:36], train.images[tr])
        assert np.array_equal(ctx.train_set.images[36:], test.images[rows])
        assert np.array_equal(ctx.train_set.masks[36:], labels.masks)
        # validation: the fold's real images only, never a pseudo (test) image
        assert np.array_equal(ctx.valid_images, train.images[va]) and np.array_equal(ctx.valid_masks, train.masks[va])
        assert not set(labels.ids) & set(train.ids[va])
        seen = {img.tobytes() for img in ctx.valid_images}
        assert not any(img.tobytes() in seen for img in ctx.train_set.images[36:])
        # every batch: round(0.4 x 8) = 3 pseudo images (indices >= 36), 5 real ones
        ctx.train_sampler.set_epoch(0)
        counts = [(int((index >= 36).sum()), int((index < 36).sum())) for _, _, index in ctx.train_loader]
        assert counts == [(3, 5)] * (36 // 5)
    finally:
        ctx.writer.close()


def test_labels_with_a_training_id_are_refused(tiny):
    labels = pseudo.load(tiny["labels"])
    with pytest.raises(DataError, match="ids are training ids too"):
        engine_pseudo.for_training(tiny["labels"], tiny["data"], train_ids=labels.ids[:1])


def test_loss_is_the_weighted_mean_over_the_images():
    from losses import build_loss

    torch.manual_seed(0)
    logits = torch.randn(6, 1, 16, 16)
    y = (torch.rand(6, 1, 16, 16) > 0.5).float()
    pseudo_mask = torch.tensor([False, True, False, False, True, False])
    crit = build_loss("lovasz")
    per_image = torch.stack([crit(logits[i:i + 1], y[i:i + 1]) for i in range(6)])
    for w in (0.0, 0.5, 1.0, 3.0):
        weights = torch.where(pseudo_mask, w, 1.0)
        loss, parts = trainer.batch_loss(crit, logits, y, pseudo_mask, w)
        torch.testing.assert_close(loss, (weights * per_image).sum() / weights.sum())
        assert parts["loss"][1] == 6 and parts["pseudo_loss"][1] == 2 and parts["real_loss"][1] == 4
        torch.testing.assert_close(parts["pseudo_loss"][0], per_image[pseudo_mask].mean())
    torch.testing.assert_close(trainer.batch_loss(crit, logits, y, pseudo_mask, 0.0)[0], crit(logits[~pseudo_mask],
                                                                                              y[~pseudo_mask]))
    torch.testing.assert_close(trainer.batch_loss(crit, logits, y, pseudo_mask, 1.0)[0], crit(logits, y))
    # a batch of one kind: the criterion on the batch, whatever the weight
    assert trainer.batch_loss(crit, logits, y, torch.ones(6, dtype=torch.bool), 0.0)[0] == crit(logits, y)
    # the deep loss's dict outputs are split image by image (its per-image parts are exact with W = 1)
    deep = build_loss("deep")
    out = {"logits": logits, "aux": [torch.randn(6, 1, 16, 16)], "image_logit": torch.randn(6)}
    _, parts = trainer.batch_loss(deep, out, y, pseudo_mask, 1.0)
    deep(out, y)
    for key in ("final_lovasz", "image_bce"):
        torch.testing.assert_close(parts[key][0], deep.last_parts[key])


def test_pretrain_schedule_trains(tiny, tmp_path):
    log = tmp_path / "pre"
    assert run_train(tiny, log, "--max-epochs", "2", "--pseudo-labels", str(tiny["labels"]), "--pseudo-schedule",
                     "pretrain", "--pseudo-epochs", "1") == 0
    ck = models.read_checkpoint(log / "checkpoints" / "last-checkpoint-fold0.pth")
    # epoch 0: the (fewer than 8) pseudo images in one batch; epoch 1: the 36 real ones in 4 batches
    assert len(pseudo.load(tiny["labels"])) < 8 and ck["extra"]["state"]["step"] == 1 + 36 // 8


def test_resume_is_exact_with_pseudo_labels_and_refused_with_others(tiny, tmp_path, capsys):
    import pandas as pd

    flags = ["--pseudo-labels", str(tiny["labels"]), "--pseudo-weight", "0.5"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run_train(tiny, straight, "--max-epochs", "3", *flags) == 0
    assert run_train(tiny, split, "--max-epochs", "1", *flags) == 0
    ck = split / "checkpoints" / "last-checkpoint-fold0.pth"
    meta = models.read_checkpoint(ck)["meta"]
    assert meta["pseudo_labels"] == {"path": str(tiny["labels"]), "digest": pseudo.digest(tiny["labels"]),
                                     "images": len(pseudo.load(tiny["labels"]))}
    assert meta["config"]["pseudo_weight"] == 0.5
    # another labels file (one image fewer), or none: refused
    other = tmp_path / "other.npz"
    labels = pseudo.load(tiny["labels"])
    pseudo.save(other, pseudo.PseudoLabels(labels.ids[1:], labels.masks[1:], labels.confidence[1:]))
    capsys.readouterr()
    assert run_train(tiny, split, "--max-epochs", "3", "--resume", str(ck), "--pseudo-labels", str(other),
                     "--pseudo-weight", "0.5") == 2
    err = capsys.readouterr().err
    assert "was trained on other pseudo-labels" in err and err.count("\n") == 1, err
    assert run_train(tiny, split, "--max-epochs", "3", "--resume", str(ck)) == 2
    assert "give the same --pseudo-labels" in capsys.readouterr().err
    assert run_train(tiny, split, "--max-epochs", "3", "--resume", str(ck), "--pseudo-labels", str(tiny["labels"])) == 2
    assert "pseudo_weight 0.5 -> 1.0" in capsys.readouterr().err
    # the same labels: the resumed run equals the straight one
    assert run_train(tiny, split, "--max-epochs", "3", "--resume", str(ck), *flags) == 0
    a = torch.load(straight / "checkpoints" / "last-checkpoint-fold0.pth", weights_only=True)
    b = torch.load(ck, weights_only=True)
    assert a["meta"]["epoch"] == b["meta"]["epoch"] == 2
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    m = pd.read_csv(straight / "metrics.csv")
    pd.testing.assert_frame_equal(m.drop(columns="time_s"), pd.read_csv(split / "metrics.csv").drop(columns="time_s"))
    assert {"train_real_loss", "train_pseudo_loss"} <= set(m.columns)


def test_bad_pseudo_label_files_through_train_py(tiny, tmp_path, capsys):
    bad = _bad_files(tmp_path)
    unknown = pseudo.save(tmp_path / "unknown.npz", labels_of(["nope", tiny["test"].ids[0]]))
    cases = [(bad["shape"], "'masks' must be bool of shape"), (bad["pickle"], "pickled data"),
             (bad["cut"], "corrupt or truncated"), (unknown, "1 ids are not in the test set: nope"),
             (tmp_path / "nowhere.npz", "--pseudo-labels " + str(tmp_path / "nowhere.npz") + " does not exist")]
    for path, fragment in cases:
        assert run_train(tiny, tmp_path / "r", "--max-epochs", "1", "--pseudo-labels", str(path)) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and fragment in err and str(path) in err, err


def test_overwrite_with_a_bad_labels_file_keeps_the_old_run(tiny, tmp_path, capsys):
    log = tmp_path / "old"
    assert run_train(tiny, log, "--max-epochs", "1") == 0
    before = sorted(p.name for p in log.rglob("*") if p.is_file())
    assert run_train(tiny, log, "--max-epochs", "1", "--overwrite", "--pseudo-labels", str(tmp_path / "no.npz")) == 2
    assert "does not exist" in capsys.readouterr().err
    assert sorted(p.name for p in log.rglob("*") if p.is_file()) == before


@pytest.mark.parametrize("flags,fragment", [
    (["--pseudo-fraction", "1"], "--pseudo-fraction: must be < 1, got 1"),
    (["--pseudo-weight", "-1"], "--pseudo-weight: must be >= 0, got -1"),
    (["--pseudo-schedule", "both"], "--pseudo-schedule: 'both' is not one of mix, pretrain"),
    (["--pseudo-fraction", "0.3"], "--pseudo-fraction needs --pseudo-labels"),
    (["--pseudo-labels", "p.npz", "--pseudo-fraction", "0.05"], "puts no pseudo-labelled image into a batch of 8"),
    (["--pseudo-labels", "p.npz", "--pseudo-fraction", "0.95"], "leaves no real image in a batch of 8"),
    (["--pseudo-labels", "p.npz", "--pseudo-epochs", "2"], "--pseudo-epochs goes with --pseudo-schedule pretrain"),
    (["--pseudo-labels", "p.npz", "--pseudo-schedule", "pretrain"], "needs --pseudo-epochs N >= 1"),
    (["--pseudo-labels", "p.npz", "--pseudo-schedule", "pretrain", "--pseudo-epochs", "3", "--max-epochs", "3"],
     "leaves none of the --max-epochs 3 epochs"),
    (["--pseudo-labels", "p.npz", "--pseudo-schedule", "pretrain", "--pseudo-epochs", "1", "--pseudo-weight", "2"],
     "--pseudo-weight goes with --pseudo-schedule mix"),
])
def test_bad_pseudo_options(tmp_path, capsys, flags, fragment):
    assert train_cli.main(["--log-dir", str(tmp_path / "r"), "--batch-size", "8", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and fragment in err, err


def test_pseudo_options_from_yaml_pass_the_same_checks(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("pseudo_labels: p.npz\npseudo-fraction: 0.5\npseudo_weight: 2\n")
    c = train_cli.parse(["--config", str(cfg)])
    assert (c.pseudo.pseudo_labels, c.pseudo.pseudo_fraction, c.pseudo.pseudo_weight) == ("p.npz", 0.5, 2.0)
    assert c.pseudo.per_batch(32) == 16 and c.replace(pseudo_fraction=0.25).pseudo.per_batch(10) == 3  # half up
    cfg.write_text("pseudo_labels: p.npz\npseudo_fraction: '0.5'\n")
    with pytest.raises(UserError, match=r"key pseudo_fraction: '0.5' is not a number"):
        train_cli.parse(["--config", str(cfg)])
    cfg.write_text("pseudo_epochs: 2\n")
    with pytest.raises(UserError, match=r"c.yaml, key pseudo_epochs needs --pseudo-labels"):
        train_cli.parse(["--config", str(cfg)])


@pytest.mark.slow
def test_ddp_two_gloo_processes_with_pseudo_labels(tiny, tmp_path):
    """Under torchrun each rank draws its own shard: the epochs run (equal batch counts, no hang) and record the
    labels; 2 ranks x 18 real images per rank -> 3 batches of 5 real + 3 pseudo each."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
           "--master_addr=127.0.0.1", str(root / "train.py"), "--data-dir", str(tiny["data"]), "--log-dir", str(log),
           *TINY, "--max-epochs", "2", "--pseudo-labels", str(tiny["labels"]), "--pseudo-fraction", "0.4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    ck = models.read_checkpoint(log / "checkpoints" / "last-checkpoint-fold0.pth")
    assert ck["extra"]["state"]["step"] == 2 * 3 and ck["meta"]["pseudo_labels"]["digest"] == pseudo.digest(
        tiny["labels"])


def test_fold_labels_never_carry_the_masks_of_the_folds_own_tiles(tiny, tmp_path):
    """Mosaic rules on pseudo-labels (``--pseudo-source fold``): a vertical train tile V above test tile T carries
    its wall down into T's label, unless V is one of the fold's validation tiles (``unknown_ids``)."""
    import shutil

    import cv2

    data = tmp_path / "data"
    shutil.copytree(tiny["data"], data, ignore=shutil.ignore_patterns(".cache"))
    train_ids = kaggle.load_train(data, cache=False).ids
    test = tiny["test"]
    v, t = train_ids[0], test.ids[3]
    wall = np.zeros((TILE, TILE), np.uint8)
    wall[:, 30:] = 255  # all rows equal, partly salt: a vertical mask
    assert cv2.imwrite(str(data / "train" / "masks" / f"{v}.png"), wall)
    mosaics = tmp_path / "mosaics.csv"
    mosaics.write_text(f"id,mosaic,row,col\n{v},0,0,0\n{t},0,1,0\n")
    post = postprocess.PostProcess(rules=("vertical",))
    rule = pseudo.Rule(min_confidence=0.0)
    src = tiny["root"] / "test-probabilities.npz"
    plain, _ = engine_pseudo.make(src, data, tmp_path / "plain.npz", rule=rule, cache=False)
    carried, _ = engine_pseudo.make(src, data, tmp_path / "known.npz", post=post, rule=rule, cache=False,
                                    mosaics=mosaics)
    hidden, _ = engine_pseudo.make(src, data, tmp_path / "unknown.npz", post=post, rule=rule, cache=False,
                                   mosaics=mosaics, unknown_ids=[v])
    row = {name: labels.masks[labels.ids.tolist().index(t)] for name, labels in
           (("plain", plain), ("carried", carried), ("hidden", hidden))}
    assert np.array_equal(row["carried"], np.broadcast_to(wall[-1] > 0, (TILE, TILE)))  # V's last row, repeated
    assert not np.array_equal(row["plain"], row["carried"])
    assert np.array_equal(row["hidden"], row["plain"])  # V unknown: T keeps its own prediction
