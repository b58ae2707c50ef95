"""Unpacking the competition zip (nested train.zip / test.zip) into Kaggle's layout, and refusing bad archives:
one line, exit code 2, and nothing half-made left behind."""
import io
import os
import resource
import signal
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from datasets import kaggle, prepare
from tgs.errors import DataError

ROOT = Path(__file__).resolve().parents[1]


def _zip_bytes(files: dict, compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def _split_files(src, split: str, prefix: str = "") -> dict:
    kinds = ("images", "masks") if split == "train" else ("images",)
    return {f"{prefix}{k}/{p.name}": p.read_bytes() for k in kinds for p in sorted((src / split / k).iterdir())}


def competition_files(src) -> dict:
    """The members of a competition zip made from the dataset at ``src`` (nested train.zip and test.zip)."""
    outer = {"train.zip": _zip_bytes(_split_files(src, "train")), "test.zip": _zip_bytes(_split_files(src, "test")),
             "flamingo.zip": _zip_bytes({"x": b"1"}), "../evil.csv": b"id,z\n", "__MACOSX/._train.csv": b"junk"}
    return outer | {n: (src / n).read_bytes() for n in ("train.csv", "depths.csv", "sample_submission.csv")}


def make_competition_zip(src, path):
    path.write_bytes(_zip_bytes(competition_files(src)))


def _lie_about_size(data: bytes, member: str, size: int) -> bytes:
    """The zip ``data`` with ``member``'s uncompressed size set to ``size`` in both its local header and its
    central directory entry (a zip bomb hiding behind a small header)."""
    buf = bytearray(data)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        infos, pos = z.infolist(), z.start_dir
    for info in infos:
        assert buf[info.header_offset:info.header_offset + 4] == b"PK\x03\x04"
        assert buf[pos:pos + 4] == b"PK\x01\x02"
        if info.filename == member:
            struct.pack_into("<I", buf, info.header_offset + 22, size)
            struct.pack_into("<I", buf, pos + 24, size)
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", buf, pos + 28)
        pos += 46 + name_len + extra_len + comment_len
    with zipfile.ZipFile(io.BytesIO(bytes(buf))) as z:
        assert z.getinfo(member).file_size == size
    return bytes(buf)


def _flip_data_byte(data: bytes, member: str) -> bytes:
    """The zip ``data`` with one byte of ``member``'s compressed data flipped (its headers intact)."""
    buf = bytearray(data)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        info = z.getinfo(member)
    name_len, extra_len = struct.unpack_from("<HH", buf, info.header_offset + 26)
    start = info.header_offset + 30 + name_len + extra_len
    buf[start + info.compress_size // 2] ^= 0xFF
    return bytes(buf)


@pytest.fixture
def workdir(tmp_path):
    """An empty folder to unpack into (``workdir / 'data'``) whose listing is checked after a refusal."""
    d = tmp_path / "work"
    d.mkdir()
    return d


def _refused(rc, capsys, folder: Path, before: set, *words: str) -> str:
    """Exit code 2, exactly one line on stderr starting with 'error:' (holding ``words``), and ``folder``'s
    listing is exactly ``before`` (no output folder, no temporary one)."""
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.endswith("\n") and err.count("\n") == 1 and err.startswith("error: "), err
    for word in words:
        assert word in err, err
    assert {p.name for p in folder.iterdir()} == before
    return err


def test_prepare_round_trip(synthetic_root, tmp_path, capsys):
    z = tmp_path / "tgs-salt-identification-challenge.zip"
    make_competition_zip(synthetic_root, z)
    out = tmp_path / "data"
    assert prepare.main([str(z), "--out", str(out)]) == 0
    assert "unpacked into" in capsys.readouterr().out
    assert not (tmp_path / "evil.csv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", z.name]  # no temporary folder left
    assert not list(out.glob(".*"))  # nor a nested zip's temporary copy
    a = kaggle.load_train(synthetic_root, cache=False)
    b = kaggle.load_train(out, cache=False)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks)
    assert np.array_equal(a.depths, b.depths)
    assert np.array_equal(kaggle.load_test(out, cache=False).images,
                          kaggle.load_test(synthetic_root, cache=False).images)
    assert (out.stat().st_mode & 0o777) == (0o777 & ~_umask())  # the usual permissions, not a private temp dir


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_prepare_from_folder_of_downloads(synthetic_root, tmp_path):
    dl = tmp_path / "downloads"
    dl.mkdir()
    (dl / "train.zip").write_bytes(_zip_bytes(_split_files(synthetic_root, "train", "train/")))
    (dl / "test.zip").write_bytes(_zip_bytes(_split_files(synthetic_root, "test")))
    for n in ("train.csv", "depths.csv", "sample_submission.csv"):
        (dl / n).write_bytes((synthetic_root / n).read_bytes())
    out = tmp_path / "new" / "data"  # missing parents are made
    assert prepare.main([str(dl), "--out", str(out)]) == 0
    assert len(kaggle.load_train(out, cache=False)) == 120


def test_prepare_bad_input(tmp_path, workdir, capsys):
    _refused(prepare.main([str(tmp_path / "missing.zip"), "--out", str(workdir / "d")]), capsys, workdir, set(),
             "does not exist")
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"nope")
    _refused(prepare.main([str(bad), "--out", str(workdir / "d")]), capsys, workdir, set(), "is not a zip file")


def test_truncated_archive(synthetic_root, tmp_path, workdir, capsys):
    whole = _zip_bytes(competition_files(synthetic_root))
    z = tmp_path / "cut.zip"
    z.write_bytes(whole[:len(whole) // 2])
    _refused(prepare.main([str(z), "--out", str(workdir / "data")]), capsys, workdir, set(),
             str(z), "truncated")


def test_truncated_nested_zip(synthetic_root, tmp_path, workdir, capsys):
    files = competition_files(synthetic_root)
    files["test.zip"] = files["test.zip"][:len(files["test.zip"]) // 2]  # a consistent (CRC-correct) half
    z = tmp_path / "c.zip"
    z.write_bytes(_zip_bytes(files))
    _refused(prepare.main([str(z), "--out", str(workdir / "data")]), capsys, workdir, set(),
             f"{z}:test.zip", "truncated")


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_corrupt_member_half_way_leaves_nothing(synthetic_root, tmp_path, workdir, capsys, compression):
    """A flipped byte in a member after others were written: the archive and member are named, as corrupt (a
    stored member fails its CRC, a deflated one its CRC or its compressed stream), and no folder is left."""
    train = _split_files(synthetic_root, "train")
    last = list(train)[-1]
    files = competition_files(synthetic_root)
    files["train.zip"] = _flip_data_byte(_zip_bytes(train, compression), last)
    z = tmp_path / "c.zip"
    z.write_bytes(_zip_bytes(files))
    err = _refused(prepare.main([str(z), "--out", str(workdir / "data")]), capsys, workdir, set(),
                   f"{z}:train.zip", repr(last), "corrupt or truncated")
    if compression == zipfile.ZIP_STORED:
        assert "Bad CRC-32" in err


def test_png_over_the_bound_honest_header(synthetic_root, tmp_path, workdir, capsys):
    """A small compressed member that expands past the PNG bound, its header saying so: refused from the
    header, before anything of it is read."""
    train = _split_files(synthetic_root, "train") | {"images/bomb.png": bytes(prepare.LIMITS.png + 1)}
    files = competition_files(synthetic_root) | {"train.zip": _zip_bytes(train)}
    z = tmp_path / "bomb.zip"
    z.write_bytes(_zip_bytes(files))
    assert z.stat().st_size < 3 * 2 ** 20  # the bomb compresses to a few KB
    _refused(prepare.main([str(z), "--out", str(workdir / "data")]), capsys, workdir, set(),
             "'images/bomb.png'", f"says it is {prepare.LIMITS.png + 1} bytes, over the bound of 1 MiB for a PNG")


def test_csv_bomb_with_lying_header(tmp_path, workdir, capsys):
    """A CSV of 65 MiB (past the 64 MiB bound) whose headers claim 100 bytes: the reading stops there, the
    member is refused (its data do not match its header), and nothing is left."""
    z = tmp_path / "liar.zip"
    z.write_bytes(_lie_about_size(_zip_bytes({"train.csv": bytes(prepare.LIMITS.csv + 2 ** 20)}), "train.csv", 100))
    assert z.stat().st_size < 2 ** 20
    _refused(prepare.main([str(z), "--out", str(workdir / "data")]), capsys, workdir, set(),
             str(z), "'train.csv'", "corrupt or truncated")


def test_nested_zip_bomb_with_lying_header(synthetic_root, tmp_path, workdir, capsys):
    """A nested zip's member lying about its size: refused naming the nested archive and the member."""
    train = _split_files(synthetic_root, "train") | {"images/bomb.png": bytes(50 * 2 ** 20)}
    liar = _lie_about_size(_zip_bytes(train), "images/bomb.png", 1000)
    files = competition_files(synthetic_root) | {"train.zip": liar}
    z = tmp_path / "liar.zip"
    z.write_bytes(_zip_bytes(files))
    _refused(prepare.main([str(z), "--out", str(workdir / "data")]), capsys, workdir, set(),
             f"{z}:train.zip", "'images/bomb.png'", "corrupt or truncated")


def test_copy_is_bounded_whatever_the_stream_gives(tmp_path):
    """The bound is enforced on the bytes that come, not on a header: a stream longer than the limit stops
    after at most limit + 1 bytes read and limit bytes written."""
    src = io.BytesIO(bytes(10 * 2 ** 20))
    with pytest.raises(prepare.TooBig):
        prepare.copy_bounded(src, tmp_path / "x", 1000)
    assert src.tell() <= 1001 and (tmp_path / "x").stat().st_size <= 1000
    assert prepare.copy_bounded(io.BytesIO(b"abc"), tmp_path / "y", 3) == 3
    assert (tmp_path / "y").read_bytes() == b"abc"


def test_total_and_member_count_bounds(synthetic_root, tmp_path, workdir):
    z = tmp_path / "c.zip"
    make_competition_zip(synthetic_root, z)
    with pytest.raises(DataError, match="bound for the whole dataset"):
        prepare.prepare(z, workdir / "data", limits=prepare.Limits(total=100_000))
    with pytest.raises(DataError, match="over the bound of 50"):
        prepare.prepare(z, workdir / "data", limits=prepare.Limits(members=50))
    assert list(workdir.iterdir()) == []


def test_zips_nested_too_deep(tmp_path, workdir, capsys):
    z = tmp_path / "deep.zip"
    z.write_bytes(_zip_bytes({"competition_data.zip": _zip_bytes({"train.zip": _zip_bytes({
        "train.zip": _zip_bytes({"train.csv": b"id,rle_mask\n"})})})}))
    _refused(prepare.main([str(z), "--out", str(workdir / "data")]), capsys, workdir, set(), "nested more than 2")


def test_incomplete_layout(tmp_path, workdir, capsys):
    z = tmp_path / "csv-only.zip"
    z.write_bytes(_zip_bytes({"train.csv": b"id,rle_mask\n", "sample_submission.csv": b"id,rle_mask\n"}))
    _refused(prepare.main([str(z), "--out", str(workdir / "data")]), capsys, workdir, set(),
             str(z), "holds no train/images")


def test_path_traversal_stays_inside(synthetic_root, tmp_path, capsys):
    """Members naming places outside DATA are skipped; every file written is in Kaggle's layout."""
    train = _split_files(synthetic_root, "train") | {
        "../../escape.png": b"x", "images/../../../up.png": b"x", "/abs/images/.hidden.png": b"x",
        "images/..\\..\\win.png": b"x", "masks/sub/deeper.png": b"x"}
    files = competition_files(synthetic_root) | {"train.zip": _zip_bytes(train), "../../evil2.csv": b"id\n",
                                                 "/etc/passwd.csv": b"x"}
    z = tmp_path / "evil.zip"
    z.write_bytes(_zip_bytes(files))
    out = tmp_path / "work" / "data"
    assert prepare.main([str(z), "--out", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.rglob("*") if not p.is_relative_to(out)) == ["evil.zip", "work"]
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    expected = ({f"train/{n}" for n in _split_files(synthetic_root, "train")}
                | {f"test/{n}" for n in _split_files(synthetic_root, "test")}
                | {"train.csv", "depths.csv", "sample_submission.csv"})
    assert names == expected


def test_out_is_a_file(synthetic_root, tmp_path, workdir, capsys):
    z = tmp_path / "c.zip"
    make_competition_zip(synthetic_root, z)
    (workdir / "data").write_text("keep")
    _refused(prepare.main([str(z), "--out", str(workdir / "data")]), capsys, workdir, {"data"}, "is a file")
    assert (workdir / "data").read_text() == "keep"


def test_out_non_empty_is_refused_and_force_replaces_only_on_success(synthetic_root, tmp_path, workdir, capsys):
    good, bad = tmp_path / "good.zip", tmp_path / "bad.zip"
    make_competition_zip(synthetic_root, good)
    bad.write_bytes(_zip_bytes({"train.csv": b"id,rle_mask\n"}))  # incomplete layout: fails at the end
    out = workdir / "data"
    out.mkdir()
    (out / "old.txt").write_text("keep")
    _refused(prepare.main([str(good), "--out", str(out)]), capsys, workdir, {"data"}, "not empty", "--force")
    _refused(prepare.main([str(bad), "--out", str(out), "--force"]), capsys, workdir, {"data"}, "holds no")
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    assert prepare.main([str(good), "--out", str(out), "--force"]) == 0
    assert not (out / "old.txt").exists() and len(kaggle.load_train(out, cache=False)) == 120
    assert [p.name for p in workdir.iterdir()] == ["data"]


def test_out_empty_folder_is_used(synthetic_root, tmp_path, workdir):
    z = tmp_path / "c.zip"
    make_competition_zip(synthetic_root, z)
    (workdir / "data").mkdir()
    assert prepare.main([str(z), "--out", str(workdir / "data")]) == 0
    assert len(kaggle.load_test(workdir / "data", cache=False)) == 40


def test_ctrl_c_half_way_leaves_nothing(synthetic_root, tmp_path, workdir, capsys, monkeypatch):
    z = tmp_path / "c.zip"
    make_competition_zip(synthetic_root, z)
    copy, calls = prepare.copy_bounded, []

    def interrupted_on_the_tenth(src, dest, limit):
        calls.append(dest)
        if len(calls) == 10:
            raise KeyboardInterrupt
        return copy(src, dest, limit)

    monkeypatch.setattr(prepare, "copy_bounded", interrupted_on_the_tenth)
    assert prepare.main([str(z), "--out", str(workdir / "data")]) == 130
    assert len(calls) == 10 and list(workdir.iterdir()) == []


def test_full_disk_is_one_line_and_leaves_nothing(tmp_path, workdir):
    """Writes fail with EFBIG past a file-size limit (SIGXFSZ ignored), as on a full disk: one line naming the
    file being written, exit code 2, no folder left."""
    limit = 200_000
    z = tmp_path / "big.zip"
    z.write_bytes(_zip_bytes({"train.csv": b"id,rle_mask\n" + b"0123456789,1 1\n" * (2 * limit // 15)}))

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    r = subprocess.run([sys.executable, "-m", "datasets.prepare", str(z), "--out", str(workdir / "data")],
                       capture_output=True, text=True, cwd=ROOT, env=env, preexec_fn=small_files, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: "), r.stderr
    assert f"cannot write {workdir / 'data' / 'train.csv'}: File too large" in r.stderr
    assert list(workdir.iterdir()) == []


def test_crafted_zip_helpers():
    """The crafted-zip helpers do what they say (so the tests above test what they claim)."""
    data = _zip_bytes({"a.csv": b"x" * 1000}, zipfile.ZIP_STORED)
    with zipfile.ZipFile(io.BytesIO(_flip_data_byte(data, "a.csv"))) as z, pytest.raises(zipfile.BadZipFile):
        z.read("a.csv")
    with zipfile.ZipFile(io.BytesIO(_lie_about_size(data, "a.csv", 10))) as z:
        assert z.getinfo("a.csv").file_size == 10 and z.getinfo("a.csv").CRC == zlib.crc32(b"x" * 1000)
