"""swa.py: equal weight average, BatchNorm statistics recomputed on the fold's training images, refusals."""
import shutil

import pytest
import torch

import models
from cli import swa
from datasets import folds, kaggle
from tgs.inputs import InputSpec

SMALL = dict(encoder="unet", encoder_width=4, decoder_channels=8, center_channels=16, input_upsample=1,
             oc_decoder=False, fuse_channels=8, image_channels=8, dropout=0.0, oc_dropout=0.0)
SPEC = InputSpec(mode="resize", size=32)
BN_STATS = ("running_mean", "running_var", "num_batches_tracked")




def tiny(seed: int, **kw) -> models.SaltUNet:
    torch.manual_seed(seed)
    model = models.build_model(**{**SMALL, **kw}).train()
    with torch.no_grad():  # BN running stats away from their init (they must be replaced by swa.py)
        model(torch.rand(4, 1, 32, 32) * (seed + 1))
    return model.eval()


def save(path, model, fold="fold0", data=None, spec=SPEC, epoch=0, kind="last"):
    meta = {"epoch": epoch, "kind": kind, "config": {"data_dir": str(data), "data_fold": fold, "folds_file": None,
                                                     "drop_mask_threshold": 0, "batch_size": 16}}
    return models.save_checkpoint(path, model, spec, meta)


@pytest.fixture(scope="module")
def pair(synthetic_root, tmp_path_factory):
    d = tmp_path_factory.mktemp("swa")
    a = save(d / "models" / "best-metric-fold0.pth", tiny(0), data=synthetic_root, epoch=3, kind="best-metric")
    b = save(d / "models" / "last-fold0.pth", tiny(1), data=synthetic_root, epoch=5)
    return d, a, b


@pytest.fixture(scope="module")
def fold_images(synthetic_root):
    train = kaggle.load_train(synthetic_root)
    tr, _ = folds.split(train.ids, "fold0")
    return train.images[tr]


def sd(path):
    return models.read_checkpoint(path)["state_dict"]


def hand_average(*paths):
    dicts = [sd(p) for p in paths]
    return {k: (sum(d[k].double() for d in dicts) / len(dicts)).float() for k in dicts[0]
            if dicts[0][k].is_floating_point()}


def run(argv, capsys):
    code = swa.main([str(a) for a in argv] + ["--threads", "1", "--device", "cpu"])
    out = capsys.readouterr()
    return code, out.out, out.err


def bn_inputs(model, images, batch_size):
    """Per batch, the input of every BN layer, with the BN layers in training mode (as swa.py runs them)."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    seen = {id(m): [] for m in bns}
    hooks = [m.register_forward_pre_hook(lambda mod, inp: seen[id(mod)].append(inp[0].detach().double()))
             for m in bns]
    model.eval()
    for m in bns:
        m.train()
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            model(SPEC.encode_images(torch.from_numpy(images[i:i + batch_size])[:, None]))
    for h in hooks:
        h.remove()
    return bns, seen


def test_average_is_exact_and_bn_is_recomputed_by_images(pair, fold_images, tmp_path, capsys):
    d, a, b = pair
    out = tmp_path / "fold0_swa.pth"
    code, stdout, err = run(["--input", a, b, "--output", out, "--batch-size", "50"], capsys)
    assert code == 0, err
    assert "average of 2 models" in stdout and f"{len(fold_images)} training images of fold0" in stdout
    got, avg = sd(out), hand_average(a, b)
    for k, v in avg.items():
        if not k.endswith(BN_STATS):
            assert torch.equal(got[k], v), k
    # BN statistics by hand: the average over images of each batch's mean and unbiased variance (50, 50, 8)
    ref = models.build_model(**SMALL)
    ref.load_state_dict({**sd(a), **avg})
    bns, seen = bn_inputs(ref, fold_images, 50)
    names = {id(m): n for n, m in ref.named_modules()}
    assert len(bns) > 5
    for m in bns:
        xs = seen[id(m)]
        sizes = torch.tensor([len(x) for x in xs], dtype=torch.float64)
        assert sizes.tolist() == [50, 50, len(fold_images) - 100]
        means = torch.stack([x.mean(dim=(0, 2, 3)) for x in xs])
        varis = torch.stack([x.transpose(0, 1).reshape(x.shape[1], -1).var(dim=1, unbiased=True) for x in xs])
        w = (sizes / sizes.sum())[:, None]
        name = names[id(m)]
        torch.testing.assert_close(got[f"{name}.running_mean"].double(), (w * means).sum(0), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(got[f"{name}.running_var"].double(), (w * varis).sum(0), rtol=1e-4, atol=1e-5)
        assert int(got[f"{name}.num_batches_tracked"]) == 3
        # and they really changed: not the sources' statistics nor their average
        assert not torch.allclose(got[f"{name}.running_var"], avg[f"{name}.running_var"], rtol=1e-3)
    loaded = models.load(out)
    assert loaded.meta["kind"] == "swa" and loaded.meta["config"]["data_fold"] == "fold0"
    assert loaded.meta["sources"] == [str(a), str(b)] and loaded.meta["source_epochs"] == [3, 5]
    assert loaded.meta["bn_images"] == len(fold_images) and loaded.input_spec == SPEC
    assert [p.name for p in tmp_path.iterdir()] == ["fold0_swa.pth"]  # written atomically, nothing else left


def test_equal_batches_match_torch_update_bn(pair, fold_images, tmp_path, capsys):
    d, a, b = pair
    batch = 36
    assert len(fold_images) % batch == 0
    out = tmp_path / "swa.pth"
    assert run(["--input", a, b, "--output", out, "--batch-size", batch], capsys)[0] == 0
    ref = models.build_model(**SMALL)
    ref.load_state_dict({**sd(a), **hand_average(a, b)})  # dropout is 0: train mode == BN-only train mode
    x = SPEC.encode_images(torch.from_numpy(fold_images)[:, None])
    torch.optim.swa_utils.update_bn([x[i:i + batch] for i in range(0, len(x), batch)], ref)
    got = sd(out)
    for k, v in ref.state_dict().items():
        if k.endswith(("running_mean", "running_var")):
            torch.testing.assert_close(got[k], v, rtol=1e-5, atol=1e-6)


def test_folder_input_counts_identical_weights_once(pair, tmp_path, capsys):
    d, a, b = pair
    folder = tmp_path / "models"
    shutil.copytree(d / "models", folder)
    shutil.copy(folder / "best-metric-fold0.pth", folder / "best-loss-fold0.pth")  # same epoch, same weights
    out = folder / "swa.pth"  # the output inside the input folder is never one of the inputs
    code, stdout, err = run(["--input", folder, folder / "last-fold0.pth", "--output", out, "--batch-size", "36"],
                            capsys)
    assert code == 0, err
    assert "same weights as" in stdout and "1 duplicates skipped" in stdout
    meta = models.read_checkpoint(out)["meta"]
    assert len(meta["sources"]) == 2 and len(meta["duplicates"]) == 1
    got, avg = sd(out), hand_average(a, b)
    assert all(torch.equal(got[k], v) for k, v in avg.items() if not k.endswith(BN_STATS))
    code, stdout, _ = run(["--input", folder, "--output", out, "--batch-size", "36"], capsys)  # again: not itself
    assert code == 0 and "average of 2 models" in stdout


def test_mismatched_models_are_refused_with_one_line(pair, synthetic_root, tmp_path, capsys):
    d, a, b = pair
    other_arch = save(tmp_path / "wide.pth", tiny(2, decoder_channels=12), data=synthetic_root)
    other_mode = save(tmp_path / "pad.pth", tiny(3), data=synthetic_root, spec=InputSpec("pad", 128))
    other_fold = save(tmp_path / "f1.pth", tiny(4), fold="fold1", data=synthetic_root)
    for path, fragment in [(other_arch, "different architectures (decoder_channels 8 vs 12)"),
                           (other_mode, "different input modes"), (other_fold, "different folds (fold0 vs fold1)")]:
        code, _, err = run(["--input", a, path, "--output", tmp_path / "x.pth"], capsys)
        assert code == 2 and err.count("\n") == 1 and fragment in err, err
        assert str(a) in err and str(path) in err
    assert not (tmp_path / "x.pth").exists()
    # an explicit --data-fold allows models of several folds (BN on that fold's training images)
    code, _, err = run(["--input", a, other_fold, "--output", tmp_path / "x.pth", "--data-fold", "fold2"], capsys)
    assert code == 0, err
    assert models.read_checkpoint(tmp_path / "x.pth")["meta"]["config"]["data_fold"] == "fold2"
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    code, _, err = run(["--input", junk, "--output", tmp_path / "y.pth"], capsys)
    assert code == 2 and "junk.pth" in err and err.count("\n") == 1
    code, _, err = run(["--input", tmp_path / "nowhere", "--output", tmp_path / "y.pth"], capsys)
    assert code == 2 and "nowhere does not exist" in err


def test_data_flags_override_the_meta(pair, data_copy, tmp_path, capsys):
    d, a, b = pair
    ids = kaggle.read_train_csv(data_copy / "train.csv")["id"].to_numpy(str)
    (data_copy / "folds.csv").write_text("id,fold\n" + "".join(f"{i},{k % 3}\n" for k, i in enumerate(ids)))
    out = tmp_path / "s.pth"
    code, stdout, err = run(["--input", a, "--output", out, "--data-dir", data_copy, "--folds-file",
                             data_copy / "folds.csv"], capsys)
    assert code == 0, err
    meta = models.read_checkpoint(out)["meta"]
    assert meta["config"]["data_dir"] == str(data_copy) and meta["bn_images"] == len(ids) - len(ids[0::3])
    code, _, err = run(["--input", a, "--output", out, "--data-dir", tmp_path / "nodata"], capsys)
    assert code == 2 and "nodata" in err
