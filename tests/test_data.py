"""Reading Kaggle's layout: formats the real files use, caching, and clear errors for bad input."""
import os

import cv2
import numpy as np
import pandas as pd
import pytest

from datasets import kaggle
from tgs import rle, submission
from tgs.errors import DataError


def test_load_train_matches_csv_and_formats(synthetic_root):
    tr = kaggle.load_train(synthetic_root, cache=False)
    df = pd.read_csv(synthetic_root / "train.csv", dtype=str, keep_default_na=False)
    assert list(tr.ids) == list(df["id"])
    assert tr.images.shape == (120, 101, 101) and tr.images.dtype == np.uint8
    assert tr.masks.shape == (120, 101, 101) and tr.masks.dtype == bool
    assert np.array_equal(tr.masks, rle.decode(df["rle_mask"].tolist()))
    assert np.isfinite(tr.depths).all()
    # the set exercises both PNG flavours of the real data
    depths16 = [cv2.imread(str(synthetic_root / "train/masks" / f"{i}.png"), cv2.IMREAD_UNCHANGED).dtype
                for i in tr.ids]
    assert np.uint16 in depths16 and np.uint8 in depths16
    ndims = {cv2.imread(str(synthetic_root / "train/images" / f"{i}.png"), cv2.IMREAD_UNCHANGED).ndim
             for i in tr.ids}
    assert ndims == {2, 3}


def test_image_and_mask_formats_decode_the_same(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (101, 101), dtype=np.uint8)
    mask = np.zeros((101, 101), bool)
    mask[10:30, 40:90] = True
    cv2.imwrite(str(tmp_path / "rgb.png"), np.repeat(img[..., None], 3, 2))
    cv2.imwrite(str(tmp_path / "l.png"), img)
    cv2.imwrite(str(tmp_path / "m8.png"), mask.astype(np.uint8) * 255)
    cv2.imwrite(str(tmp_path / "m16.png"), mask.astype(np.uint16) * 65535)
    cv2.imwrite(str(tmp_path / "m1.png"), mask.astype(np.uint8))  # 0/1 masks too
    images = kaggle.read_pngs(tmp_path, ["rgb", "l"], "image", workers=2)
    masks = kaggle.read_pngs(tmp_path, ["m8", "m16", "m1"], "mask")
    assert np.array_equal(images[0], img) and np.array_equal(images[1], img)
    assert all(np.array_equal(m, mask) for m in masks)


def test_colour_image_becomes_gray(tmp_path):
    bgr = np.zeros((101, 101, 3), np.uint8)
    bgr[..., 2] = 200  # pure red
    cv2.imwrite(str(tmp_path / "c.png"), bgr)
    got = kaggle.read_pngs(tmp_path, ["c"])[0]
    assert got.min() == got.max() == cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)[0, 0]


def test_load_test_in_sample_submission_order(synthetic_root):
    te = kaggle.load_test(synthetic_root, cache=False)
    ids = pd.read_csv(synthetic_root / "sample_submission.csv", dtype=str)["id"].tolist()
    assert list(te.ids) == ids and te.images.shape == (40, 101, 101)
    first = cv2.imread(str(synthetic_root / "test/images" / f"{ids[0]}.png"), cv2.IMREAD_GRAYSCALE)
    assert np.array_equal(te.images[0], first)


def test_cache_is_used_and_invalidated(data_copy):
    a = kaggle.load_train(data_copy, cache=True)
    caches = list((data_copy / kaggle.CACHE_DIR).glob("train-*.npz"))
    assert len(caches) == 1
    b = kaggle.load_train(data_copy, cache=True)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks)
    # change one image: the cache key changes and the new pixels are read
    victim = data_copy / "train/images" / f"{a.ids[3]}.png"
    new = np.full((101, 101), 7, np.uint8)
    cv2.imwrite(str(victim), new)
    os.utime(victim, ns=(1, 1))
    c = kaggle.load_train(data_copy, cache=True)
    assert np.array_equal(c.images[3], new)
    assert len(list((data_copy / kaggle.CACHE_DIR).glob("train-*.npz"))) == 1  # the stale one was replaced


def test_missing_folder_names_layout_and_generator(tmp_path):
    with pytest.raises(DataError) as err:
        kaggle.load_train(tmp_path / "nope")
    msg = str(err.value)
    assert "nope" in msg and "train/images" in msg and "datasets.synthetic" in msg


def test_missing_masks_folder(data_copy):
    import shutil

    shutil.rmtree(data_copy / "train/masks")
    with pytest.raises(DataError, match=r"train/masks is missing"):
        kaggle.load_train(data_copy, cache=False)


def test_wrong_size_image_names_id(data_copy):
    ident = pd.read_csv(data_copy / "train.csv", dtype=str)["id"][5]
    cv2.imwrite(str(data_copy / "train/images" / f"{ident}.png"), np.zeros((100, 101), np.uint8))
    with pytest.raises(DataError, match=rf"id {ident}: image file .* is 101x100, expected 101x101"):
        kaggle.load_train(data_copy, cache=False)


def test_unreadable_png_names_id(data_copy):
    ident = pd.read_csv(data_copy / "train.csv", dtype=str)["id"][9]
    (data_copy / "train/masks" / f"{ident}.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=rf"id {ident}: mask file .* is not a PNG file"):
        kaggle.load_train(data_copy, cache=False)


@pytest.mark.parametrize("cut", [0.5, 0.99])
def test_truncated_png_is_one_line_of_ours(data_copy, capfd, cut):
    """A truncated PNG: our one line, and nothing from libpng or OpenCV on the process's stderr."""
    ident = pd.read_csv(data_copy / "train.csv", dtype=str)["id"][4]
    path = data_copy / "train/images" / f"{ident}.png"
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * cut)])
    capfd.readouterr()
    with pytest.raises(DataError, match=rf"id {ident}: image file .* is truncated"):
        kaggle.load_train(data_copy, cache=False)
    assert capfd.readouterr().err == ""


def test_mask_without_image_names_id(data_copy):
    cv2.imwrite(str(data_copy / "train/masks" / "0123456789.png"), np.zeros((101, 101), np.uint8))
    with pytest.raises(DataError, match=r"id 0123456789: mask file .* has no image"):
        kaggle.load_train(data_copy, cache=False)


def test_train_id_without_image_names_id(data_copy):
    ident = pd.read_csv(data_copy / "train.csv", dtype=str)["id"][0]
    (data_copy / "train/images" / f"{ident}.png").unlink()
    (data_copy / "train/masks" / f"{ident}.png").unlink()
    with pytest.raises(DataError, match=rf"id {ident}: image file .* is missing \(1 of the 120 ids"):
        kaggle.load_train(data_copy, cache=False)


def test_bad_csv_header(data_copy):
    (data_copy / "train.csv").write_text("image,mask\na,\n")
    with pytest.raises(DataError, match="header is 'image,mask', expected 'id,rle_mask'"):
        kaggle.load_train(data_copy, cache=False)


def test_load_truth_from_csv_and_folder(synthetic_root):
    ids_csv, m_csv = submission.read_truth(synthetic_root / "train.csv")
    ids_dir, m_dir = submission.read_truth(synthetic_root / "train/masks")
    order = np.argsort(ids_csv)
    assert list(ids_csv[order]) == list(ids_dir)
    assert np.array_equal(m_csv[order], m_dir)
