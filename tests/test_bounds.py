"""Every input bounded before it costs memory: crafted "bombs" (a few KB or MB that declare gigabytes) are refused with
one line, read in a subprocess under an address-space limit (RLIMIT_AS) well below what they declare, so a reader
that trusted them would fail with a MemoryError instead of the line. The files are made here, in a few ms each."""
from __future__ import annotations

import io
import os
import resource
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 768 << 20  # address space of the reading subprocess; numpy and the readers import in less than 512 MiB

READ = {
    "probabilities": "from tgs import probabilities; probabilities.load(sys.argv[1])",
    "pseudo": "from tgs import pseudo; pseudo.load(sys.argv[1])",
    "config": "from engine.config import read_yaml; read_yaml(sys.argv[1])",
    "post": "from tgs.postprocess import load_setting; load_setting(sys.argv[1])",
    "png": "from pathlib import Path; from tgs import png; png.decode(Path(sys.argv[1]), 'x', 'image')",
}


def read_limited(kind: str, path: Path) -> subprocess.CompletedProcess:
    """Run one reader on ``path`` in a subprocess under :data:`LIMIT`; a UserError becomes ``error: ...``, exit 2."""
    code = ("import sys\nfrom tgs.errors import UserError\ntry:\n    " + READ[kind] +
            "\nexcept UserError as exc:\n    print(f'error: {exc}', file=sys.stderr)\n    sys.exit(2)")

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=ROOT, env=env,
                          preexec_fn=limit, timeout=120)


def one_line(r: subprocess.CompletedProcess, *fragments: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr[-1500:])
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr[-1500:]
    assert all(f in r.stderr for f in fragments), r.stderr
    return r.stderr


# -- .npz bombs ---------------------------------------------------------------------------------------------------
def npy_header(shape: tuple, descr: str) -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": descr, "fortran_order": False, "shape": shape})
    return out.getvalue()


def deflate_zeros(head: bytes, total: int) -> bytes:
    """A raw deflate stream of ``head`` then zeros up to ``total`` bytes: one compressed MiB of zeros, after a full
    flush (no back-reference across it), repeated; a few KB per GB. (Its CRC is not computed: the readers must
    refuse it from the declared sizes, long before the end of the stream where the CRC is checked.)"""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts = [c.compress(head), c.flush(zlib.Z_FULL_FLUSH)]
    block = 1 << 20
    piece = c.compress(bytes(block)) + c.flush(zlib.Z_FULL_FLUSH)
    n, rest = divmod(total - len(head), block)
    parts += [piece * n, c.compress(bytes(rest)), c.flush()]
    return b"".join(parts)


def write_zip(path: Path, members: dict[str, tuple[bytes, int, int]]) -> Path:
    """A zip of raw deflate ``members`` ``{name: (data, uncompressed size, crc)}``, the sizes as given (a
    hostile archive declares what it likes)."""
    with open(path, "wb") as f:
        central = []
        for name, (data, size, crc) in members.items():
            n, offset = name.encode(), f.tell()
            f.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(data), size, len(n), 0))
            f.write(n + data)
            central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc, len(data), size,
                                       len(n), 0, 0, 0, 0, 0, offset) + n)
        start, directory = f.tell(), b"".join(central)
        f.write(directory)
        f.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central), len(directory), start, 0))
    return path


def member(array: np.ndarray) -> tuple[bytes, int, int]:
    """An honest member: the array's .npy bytes, deflated."""
    raw = io.BytesIO()
    np.save(raw, array, allow_pickle=False)
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    data = raw.getvalue()
    return c.compress(data) + c.flush(), len(data), zlib.crc32(data)


def bomb(shape: tuple, descr: str) -> tuple[bytes, int, int]:
    """A member whose header declares ``shape`` of ``descr`` and whose stream really inflates to all of it."""
    head = npy_header(shape, descr)
    total = len(head) + int(np.prod(shape)) * np.dtype(descr).itemsize
    return deflate_zeros(head, total), total, 0


def liar(shape: tuple, descr: str) -> tuple[bytes, int, int]:
    """A member whose header declares ``shape`` but whose archive entry holds a few bytes: numpy would allocate the
    header's size before finding the stream short."""
    data = npy_header(shape, descr) + bytes(64)
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush(), len(data), zlib.crc32(data)


def probabilities_members(n: int = 2) -> dict:
    return {"ids.npy": member(np.array([f"id{i}" for i in range(n)])),
            "probs.npy": member(np.zeros((n, 101, 101), np.uint8)),
            "image_probs.npy": member(np.full(n, np.nan, np.float32)),
            "models.npy": member(np.array([], str)), "split.npy": member(np.asarray("test"))}


def pseudo_members(n: int = 2) -> dict:
    return {"ids.npy": member(np.array([f"id{i}" for i in range(n)])),
            "masks.npy": member(np.zeros((n, 101, 101), bool)),
            "confidence.npy": member(np.ones(n, np.float32)),
            **{f"{k}.npy": member(np.asarray("")) for k in ("source", "rule", "postprocess")}}


def test_the_crafted_archives_are_what_they_claim(tmp_path):
    """The helpers: honest members load; a bomb's stream inflates to exactly what its header declares."""
    from tgs import probabilities

    assert len(probabilities.load(write_zip(tmp_path / "ok.npz", probabilities_members(3)))) == 3
    data, size, _ = bomb((3_000_000,), "<U10")
    assert len(data) < 200_000 and size > 100_000_000
    assert len(zlib.decompressobj(-15).decompress(data)) == size


@pytest.mark.parametrize("kind,members,fragment", [
    # 50 million ids of 10 characters: 2 GB in a file of a few MB
    ("probabilities", {"ids.npy": bomb((50_000_000,), "<U10")}, "'ids' declares 50000000 strings"),
    ("pseudo", {"ids.npy": bomb((50_000_000,), "<U10")}, "'ids' declares 50000000 strings"),
    # honest ids, but the tiles of 100,000 images (1 GB) declared for them
    ("probabilities", {"probs.npy": bomb((100_000, 101, 101), "|u1")}, "'probs' must be uint8 of shape (2, 101, 101)"),
    ("pseudo", {"masks.npy": bomb((100_000, 101, 101), "|b1")}, "'masks' must be bool of shape (2, 101, 101)"),
    # a header that lies about the member's size
    ("probabilities", {"ids.npy": liar((50_000_000,), "<U10")}, "corrupt ('ids' declares"),
    ("pseudo", {"confidence.npy": liar((400_000_000,), "<f4")}, "corrupt ('confidence' declares"),
    # one string of 100 million characters
    ("pseudo", {"rule.npy": bomb((), "<U100000000")}, "'rule' declares 1 strings of 100000000 characters"),
])
def test_npz_bombs_are_refused_from_their_declared_shapes(tmp_path, kind, members, fragment):
    honest = probabilities_members() if kind == "probabilities" else pseudo_members()
    path = write_zip(tmp_path / "bomb.npz", {**honest, **members})
    assert path.stat().st_size < 4 << 20
    one_line(read_limited(kind, path), str(path), fragment)


def test_the_report_finds_valid_predictions_without_reading_a_bomb(tmp_path):
    from engine.report.runs import find_valid_probabilities

    valid = {**probabilities_members(), "split.npy": member(np.asarray("valid"))}
    write_zip(tmp_path / "a-probabilities.npz", valid)
    write_zip(tmp_path / "b-probabilities.npz", {**valid, "split.npy": bomb((), "<U400000000")})
    assert find_valid_probabilities(tmp_path) == [tmp_path / "a-probabilities.npz"]


# -- configuration files -------------------------------------------------------------------------------------------
def alias_bomb(levels: int = 9) -> str:
    """The "billion laughs": a list whose each item is a list of nine aliases of the item before (9**9 strings in
    ~600 bytes), as the value of a real option, so a reader that expands it reaches the check that formats it."""
    names = "abcdefghij"[:levels]
    items = ["&a [x, x, x, x, x, x, x, x, x]"]
    items += [f"&{n} [{', '.join(['*' + p] * 9)}]" for p, n in zip(names, names[1:])]
    return "comment: [\n  " + ",\n  ".join(items) + "]\n"


def test_a_yaml_alias_bomb_in_config_is_refused_before_it_is_expanded(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    assert path.stat().st_size < 700
    one_line(read_limited("config", path), f"--config {path}: line 3: alias *a", "aliases")


def test_config_files_larger_than_any_config_are_refused_before_reading(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("comment: '" + "x" * (2 << 20) + "'\n")
    one_line(read_limited("config", big), f"--config {big} is {big.stat().st_size} bytes")
    post = tmp_path / "post.json"
    post.write_text('{"threshold": 0.5, "pad": "' + " " * (2 << 20) + '"}')
    one_line(read_limited("post", post), f"--post-config {post} is {post.stat().st_size} bytes")


def test_aliases_are_refused_but_plain_files_and_lone_anchors_read(tmp_path):
    from engine.config import read_yaml
    from tgs.errors import UserError

    plain = tmp_path / "plain.yaml"
    plain.write_text("comment: &c hello\nbasenet: unet\n")  # an anchor alone expands nothing
    assert read_yaml(plain)["basenet"][0] == "unet"
    small = tmp_path / "small.yaml"
    small.write_text("comment: &c hello\nmessage: *c\n")
    with pytest.raises(UserError, match="line 2: alias \\*c"):
        read_yaml(small)


# -- PNG bombs -----------------------------------------------------------------------------------------------------
def png_bomb(width: int, height: int) -> bytes:
    """A valid 8-bit grey PNG of ``width`` x ``height`` zeros: the pixel rows deflate to almost nothing."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    n = height * (width + 1)  # each row: filter byte 0, then the row
    body = b"\x78\xda" + deflate_zeros(b"", n) + struct.pack(">I", (n % 65521) << 16 | 1)  # adler32 of n zeros
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def test_the_crafted_png_is_a_valid_png():
    import cv2

    small = np.frombuffer(png_bomb(300, 200), np.uint8)
    assert cv2.imdecode(small, cv2.IMREAD_UNCHANGED).shape == (200, 300)


def test_a_png_declaring_a_huge_image_is_refused_from_its_header(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(png_bomb(30000, 30000))  # 900 MB of pixels in under 1 MB
    assert path.stat().st_size < 1 << 20
    one_line(read_limited("png", path), f"image file {path} is 30000x30000, expected 101x101")


def test_a_png_larger_than_any_tile_is_refused_before_reading(tmp_path):
    from tgs import png
    from tgs.errors import DataError

    path = tmp_path / "x.png"
    path.write_bytes(png_bomb(101, 101)[:-12] + b"\0" * (png.MAX_BYTES) + png_bomb(1, 1)[-12:])
    with pytest.raises(DataError, match="more than a 101x101 tile can need"):
        png.decode(path, "x")
    ok = tmp_path / "ok.png"
    ok.write_bytes(png_bomb(101, 101))
    assert png.decode(ok, "ok").shape == (101, 101)


# -- a batch larger than the fold, with pseudo-labels --------------------------------------------------------------
@pytest.mark.parametrize("n_real,n_pseudo,batch,share,world,expected", [
    (72, 24, 100_000, 25_000, 1, 24),  # the case: 72 real images; 25,000 pseudo images per batch before
    (36, 24, 100_000, 25_000, 1, 12),  # 36 x 25,000 / 75,000
    (10, 50, 64, 16, 1, 3),  # 10 x 16 / 48 = 3.3
    (2, 50, 64, 16, 1, 1),  # 0.67 rounds to 1: the pseudo images are still used
    (20, 50, 64, 16, 2, 3),  # per rank: 10 real images
])
def test_a_batch_larger_than_the_fold_keeps_the_pseudo_share(n_real, n_pseudo, batch, share, world, expected):
    from datasets.torchdata import MixedBatchSampler

    for rank in range(world):
        sampler = MixedBatchSampler(n_real, n_pseudo, batch, share, num_replicas=world, rank=rank, seed=2)
        batches = list(sampler)
        assert len(batches) == len(sampler) == 1
        real = [i for i in batches[0] if i < n_real]
        fake = [i for i in batches[0] if i >= n_real]
        assert len(real) == n_real // world and len(fake) == expected
        assert len(set(fake)) == len(fake)  # no pseudo image twice while the set has enough
        assert abs(len(fake) / len(batches[0]) - share / batch) <= 1 / len(batches[0])


def test_a_full_fold_keeps_its_batches():
    """A fold of at least one batch: the batches are as before (the fix touches only the short fold)."""
    from datasets.torchdata import MixedBatchSampler

    sampler = MixedBatchSampler(50, 40, 8, 2, seed=1)
    assert [len(b) for b in sampler] == [8] * (50 // 6)
    assert all(sum(i >= 50 for i in b) == 2 for b in sampler)


# -- swa.py's BatchNorm pass with a last batch of one image ----------------------------------------------------------
def _bottleneck_model():
    import torch

    import models

    torch.manual_seed(0)
    return models.build_model(encoder="unet", encoder_width=4, decoder_channels=8, center_channels=16,
                              input_upsample=1, oc_decoder=False, fuse_channels=8, image_channels=8)


def test_the_batchnorm_pass_merges_a_last_batch_of_one_image():
    """81 images in batches of 8 through a model whose bottleneck is 1x1 at input 32: the 81st image alone made
    BatchNorm fail ("Expected more than 1 value per channel"). Merged into the batch before, the statistics are
    those of all 81 images: the first BN layer's running mean equals that of one batch of all of them."""
    import torch

    from engine import swa
    from tgs.inputs import InputSpec

    assert swa.bn_batches(81, 8)[-1] == (72, 81) and len(swa.bn_batches(81, 8)) == 10
    assert swa.bn_batches(80, 8)[-1] == (72, 80) and swa.bn_batches(1, 8) == [(0, 1)]
    images = np.random.default_rng(0).integers(0, 256, (81, 101, 101), dtype=np.uint8)
    spec, cpu = InputSpec("resize", 32), torch.device("cpu")
    model = _bottleneck_model()
    assert swa.update_bn(model, spec, images, cpu, batch_size=8) == 10
    whole = _bottleneck_model()
    swa.update_bn(whole, spec, images, cpu, batch_size=81)
    first = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)][0]
    reference = [m for m in whole.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)][0]
    torch.testing.assert_close(first.running_mean, reference.running_mean, rtol=1e-5, atol=1e-6)


def test_a_batchnorm_pass_over_a_single_image_through_a_1x1_bottleneck_is_one_line():
    import torch

    from engine import swa
    from tgs.errors import UserError
    from tgs.inputs import InputSpec

    images = np.zeros((1, 101, 101), np.uint8)
    with pytest.raises(UserError, match="cannot recompute BatchNorm over 1 image"):
        swa.update_bn(_bottleneck_model(), InputSpec("resize", 32), images, torch.device("cpu"))
