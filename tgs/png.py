"""PNG tiles: decoding the competition's 101x101 images and masks into compact arrays.

Images come as 8-bit RGB with three equal channels, 8-bit L, or 16-bit; masks as 8-bit 0/255 or 16-bit 0/65535
(any non-zero pixel is salt). :func:`read_pngs` decodes a whole list of ids into one (N, 101, 101) array (uint8
images or bool masks) with a thread pool (OpenCV releases the GIL while decoding).

A file that is missing, not a PNG, truncated (no PNG end marker: libpng would otherwise print its own
``Read Error`` line before ours) or of the wrong size is a :class:`~tgs.errors.DataError` naming the id and the
file. The size is read from the PNG header before anything is decoded (a 1 MB file may declare 30000x30000
pixels), and a file larger than any tile can need is refused before it is read."""
from __future__ import annotations

import os
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from tgs import TILE
from tgs.errors import DataError
from tgs.options import Option

SIGNATURE = b"\x89PNG\r\n\x1a\n"
END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk every complete PNG ends with
HEADER = 33  # signature (8) + the IHDR chunk (length 4, type 4, data 13, CRC 4): width and height at 16..24
# the decoding threads of read_pngs (0: automatic), a flag of every script that reads a dataset's PNGs; how many
# never changes what is decoded
DECODE_THREADS = Option("int", "PNG decoding threads, 0: automatic", low=0, high=1024, run_only=True)
MAX_BYTES = 16 << 20  # a 101x101 tile is at most ~82 KB of pixels (RGBA, 16 bit); the rest would be extra chunks

try:  # OpenCV's own warnings about broken files would precede our one line
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
except AttributeError:  # an OpenCV build without the logging module
    pass


def default_workers() -> int:
    """Decoding threads when none are asked for: the cores, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


def check_header(head: bytes, path: Path, ident: str, kind: str) -> None:
    """The size a PNG declares in its IHDR chunk (bytes 16-24: width, height), checked before anything is
    decoded: a small file may declare a huge image (zlib packs zeros tightly), which the decoder would allocate."""
    if len(head) < HEADER or head[12:16] != b"IHDR":
        raise DataError(f"id {ident}: {kind} file {path} is not a readable PNG (no IHDR header)")
    width, height = struct.unpack(">II", head[16:24])
    if (width, height) != (TILE, TILE):
        raise DataError(f"id {ident}: {kind} file {path} is {width}x{height}, expected {TILE}x{TILE}")


def decode(path: Path, ident: str, kind: str = "image") -> np.ndarray:
    """One tile: (101, 101) uint8 for ``kind='image'``, bool for ``kind='mask'``."""
    try:
        size = os.path.getsize(path)
        if size > MAX_BYTES:
            raise DataError(f"id {ident}: {kind} file {path} is {size} bytes, more than a {TILE}x{TILE} tile can "
                            f"need ({MAX_BYTES}); refused before reading it")
        data = np.fromfile(path, np.uint8)
    except FileNotFoundError:
        raise DataError(f"id {ident}: {kind} file {path} is missing") from None
    except OSError as exc:
        raise DataError(f"id {ident}: cannot read {kind} file {path} ({exc.strerror or exc})") from None
    head, tail = data[:8].tobytes(), data[-12:].tobytes()
    if head != SIGNATURE:
        raise DataError(f"id {ident}: {kind} file {path} is not a PNG file")
    if tail != END:
        raise DataError(f"id {ident}: {kind} file {path} is truncated (no PNG end marker)")
    check_header(data[:HEADER].tobytes(), path, ident, kind)
    raw = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise DataError(f"id {ident}: {kind} file {path} is not a readable PNG (corrupt data)")
    if raw.shape[:2] != (TILE, TILE):
        raise DataError(f"id {ident}: {kind} file {path} is {raw.shape[1]}x{raw.shape[0]}, expected {TILE}x{TILE}")
    if kind == "mask":
        return (raw > 0).any(axis=2) if raw.ndim == 3 else raw > 0
    if raw.dtype == np.uint16:
        raw = (raw >> 8).astype(np.uint8)
    elif raw.dtype != np.uint8:
        raise DataError(f"id {ident}: image file {path} has pixel type {raw.dtype}, expected 8 or 16 bit")
    if raw.ndim == 3:
        colour = raw[..., :3]
        if (colour == colour[..., :1]).all():
            return np.ascontiguousarray(colour[..., 0])
        return cv2.cvtColor(np.ascontiguousarray(colour), cv2.COLOR_BGR2GRAY)
    return raw


def read_pngs(folder: str | os.PathLike, ids: Sequence[str], kind: str = "image",
              workers: int | None = None, progress=None) -> np.ndarray:
    """Decode ``folder/<id>.png`` for every id into one array: uint8 images or bool masks, (N, 101, 101).

    ``progress(n)`` (optional) is called with the number of tiles each finished block decoded."""
    folder = Path(folder)
    out = np.zeros((len(ids), TILE, TILE), dtype=bool if kind == "mask" else np.uint8)
    if len(ids) == 0:
        return out

    def work(block: range) -> None:
        for i in block:
            out[i] = decode(folder / f"{ids[i]}.png", ids[i], kind)
        if progress is not None:
            progress(len(block))

    workers = workers or default_workers()
    step = max(64, -(-len(ids) // (workers * 4)))
    blocks = [range(s, min(s + step, len(ids))) for s in range(0, len(ids), step)]
    if workers == 1 or len(blocks) == 1:
        for b in blocks:
            work(b)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(work, blocks))  # re-raises the first DataError
    return out


def stems(folder: str | os.PathLike) -> set[str]:
    """The ids of the PNG files in a folder."""
    return {e.name[:-4] for e in os.scandir(folder) if e.name.endswith(".png")}
