"""Shared core: the input spec (pad/resize in and out of a model), atomic writes, the torchvision shim."""
import cv2
import numpy as np
import pytest
import torch

from tgs.errors import UserError
from tgs.inputs import InputSpec
from tgs.io import atomic_open


def test_pad_is_reflect_101_and_crops_back():
    spec = InputSpec("pad", 128)
    img = np.random.default_rng(0).integers(0, 256, (101, 101), dtype=np.uint8)
    x = spec.encode_images(torch.from_numpy(img)[None, None])
    expected = cv2.copyMakeBorder(img, 13, 14, 13, 14, cv2.BORDER_REFLECT_101).astype(np.float32) / 255
    assert x.shape == (1, 1, 128, 128)
    np.testing.assert_allclose(x[0, 0].numpy(), expected, atol=1e-7)
    assert torch.equal(spec.decode(x), torch.from_numpy(img)[None, None].float() / 255)


def test_resize_round_trip_shapes_and_masks():
    spec = InputSpec("resize", 128)
    m = torch.zeros(2, 1, 101, 101, dtype=torch.bool)
    m[:, :, 20:60, 30:90] = True
    e = spec.encode_masks(m)
    assert e.shape == (2, 1, 128, 128) and set(e.unique().tolist()) <= {0.0, 1.0}
    back = spec.decode(e)
    assert back.shape == (2, 1, 101, 101)
    assert ((back > 0.5) == m).float().mean() > 0.99


def test_spec_round_trips_through_dict_and_validates():
    spec = InputSpec("resize", 160, "replicate")
    assert InputSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(UserError, match="input mode 'crop'"):
        InputSpec("crop")
    with pytest.raises(UserError, match="cannot pad 101 to 96"):
        InputSpec("pad", 96)
    with pytest.raises(ValueError, match="expected model output of 128x128"):
        InputSpec().decode(torch.zeros(1, 1, 101, 101))


def test_atomic_open_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(target, "w") as fh:
            fh.write("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]
    with atomic_open(target, "w") as fh:
        fh.write("new")
    assert target.read_text() == "new"


def test_torchvision_and_timm_import():

    import timm
    import torchvision  # noqa: F401

    m = timm.create_model("resnet18", features_only=True, pretrained=False)
    assert m.feature_info.reduction() == [2, 4, 8, 16, 32]
    for op in ("nms", "qnms"):  # the schemas exist, whoever defined them
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{op}", "")


def test_the_shim_is_needed_exactly_when_it_defines_something():
    """In a fresh interpreter torchvision imports on its own exactly when its compiled extension loads (the shim
    then defines nothing); where the shim defines the schemas, importing torchvision without it fails."""
    import subprocess
    import sys

    import tgs.compat

    bare = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True, text=True)
    shimmed = subprocess.run([sys.executable, "-c", "import tgs.compat, torchvision, timm"], capture_output=True,
                             text=True)
    assert shimmed.returncode == 0, shimmed.stderr[-500:]
    assert (bare.returncode == 0) == (tgs.compat.DEFINED_HERE == []), (tgs.compat.DEFINED_HERE, bare.stderr[-300:])
    if tgs.compat.DEFINED_HERE:
        assert sorted(tgs.compat.DEFINED_HERE) == ["nms", "qnms"] and "torchvision::nms" in bare.stderr


def test_atomic_files_get_umask_permissions(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        with atomic_open(tmp_path / "f.txt", "w") as fh:
            fh.write("x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644
