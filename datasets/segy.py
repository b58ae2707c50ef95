"""SEG-Y files in and out, through segyio (Equinor's reader and writer): what section.py reads and writes.

- :func:`open_segy` checks a file before anything is read from it and returns a :class:`SegyVolume`: the byte
  order (from the binary header's sample format code, so big- and little-endian files both open), the sample
  format (IBM float, IEEE float, integers; others are refused), the geometry (segyio's inline / crossline inference
  for a 3D volume sorted either way; a file whose geometry it cannot infer is read as a 2D list of traces when its
  inline or crossline numbers are constant, and refused otherwise), and pre-stack data (more than one offset).
  Each problem is one :class:`tgs.errors.DataError` line naming the file: not a SEG-Y, empty, truncated, an
  unsupported sample format, pre-stack, an inconsistent geometry, no traces.
- A line (:meth:`SegyVolume.line`) is a 2D array ``(samples, traces)``: depth down the rows, as the competition's
  tiles. A 2D file has one line; a 3D volume has its inlines and crosslines.
- :func:`create_like` writes a new file with the source's geometry, text, binary and trace headers, and float32
  samples (IEEE, the source's byte order); :class:`SegyWriter` fills it line by line (so memory holds one line),
  and reopens a partial file to continue.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tgs.errors import DataError

TEXT_HEADER = 3200
BINARY_HEADER = 400
HEADER = TEXT_HEADER + BINARY_HEADER
TRACE_HEADER = 240
FORMAT_BYTE = 3224  # the binary header's sample format code (2 bytes)
SAMPLES_BYTE = 3220  # samples per trace (2 bytes)
# sample format code -> bytes per sample, for the formats segyio reads as numbers
FORMATS = {1: 4, 2: 4, 3: 2, 5: 4, 6: 8, 8: 1, 9: 8, 10: 4, 11: 2, 12: 8, 16: 1}
FORMAT_NAMES = {1: "IBM float", 2: "int32", 3: "int16", 4: "fixed point with gain", 5: "IEEE float",
                6: "IEEE double", 7: "int24", 8: "int8", 9: "int64", 10: "uint32", 11: "uint16", 12: "uint64",
                15: "uint24", 16: "uint8"}
IEEE_FLOAT = 5


@dataclass(frozen=True)
class Header:
    """What the binary header says: byte order, sample format code, samples per trace."""

    endian: str  # "big" or "little"
    format: int
    samples: int


def read_header(path: str | os.PathLike) -> Header:
    """The byte order and sample format of a SEG-Y file, from its binary header; one DataError line when the file
    is empty, shorter than its headers, not a SEG-Y, or of an unsupported sample format."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"{path} is empty")
    if size < HEADER:
        raise DataError(f"{path} is not a SEG-Y file ({size} bytes, shorter than the 3600 bytes of its headers)")
    with open(path, "rb") as fh:
        fh.seek(SAMPLES_BYTE)
        samples_raw = fh.read(2)
        fh.seek(FORMAT_BYTE)
        code = fh.read(2)
    for endian in ("big", "little"):
        fmt = int.from_bytes(code, endian)
        if fmt in FORMAT_NAMES:
            if fmt not in FORMATS:
                raise DataError(f"{path}: unsupported SEG-Y sample format {fmt} ({FORMAT_NAMES[fmt]}); supported: "
                                + ", ".join(f"{k} ({FORMAT_NAMES[k]})" for k in FORMATS))
            samples = int.from_bytes(samples_raw, endian)
            if samples == 0:
                raise DataError(f"{path}: its binary header gives 0 samples per trace")
            return Header(endian, fmt, samples)
    raise DataError(f"{path} is not a SEG-Y file (no known sample format code in its binary header: bytes "
                    f"3225-3226 are {code.hex()})")


def _check_size(path: Path, header: Header) -> int:
    """The number of traces; a DataError when the file ends inside a trace (truncated) or holds none."""
    size = path.stat().st_size
    trace_bytes = TRACE_HEADER + header.samples * FORMATS[header.format]
    body = size - HEADER
    if body == 0:
        raise DataError(f"{path}: a SEG-Y file with no traces")
    if body % trace_bytes:  # extended text headers are whole 3200-byte blocks: try them before calling it truncated
        ext = [k for k in range(1, 8) if body - k * TEXT_HEADER > 0 and (body - k * TEXT_HEADER) % trace_bytes == 0]
        if not ext:
            whole = body // trace_bytes
            raise DataError(f"{path} is truncated: {body} bytes after the headers are not a whole number of "
                            f"{trace_bytes}-byte traces ({whole} whole, the next cut short)")
        body -= ext[0] * TEXT_HEADER
    return body // trace_bytes


class _OpenSegy:
    """What a SEG-Y file open for reading (:class:`SegyVolume`) and one open for writing (:class:`SegyWriter`)
    share: segyio's handle ``f``, lines and time slices read through it, closing, and the ``with`` statement.
    ``geometry`` is the :class:`SegyVolume` whose kind (2D or 3D) and line numbers index the file."""

    f: object
    geometry: "SegyVolume"

    def _lines(self, direction: str):
        """segyio's lines of ``direction`` (its inlines or crosslines mode)."""
        return self.f.iline if direction == "inline" else self.f.xline

    def line(self, direction: str = "inline", k: int = 0) -> np.ndarray:
        """Line ``k`` (an index, not a line number) as float32 (samples, traces)."""
        if self.geometry.kind == "2d":
            data = self.f.trace.raw[:]
        else:
            data = self._lines(direction)[int(self.geometry.numbers(direction)[k])]
        return np.ascontiguousarray(np.asarray(data, np.float32).T)

    def time_slice(self, k: int) -> np.ndarray:
        """Sample ``k`` of every trace of a 3D volume as (inlines, crosslines) float32 (segyio's depth slice is
        (slow, fast): (crosslines, inlines) in a crossline-sorted file)."""
        data = np.asarray(self.f.depth_slice[k], np.float32)
        return np.ascontiguousarray(data.T) if self.f.sorting == 1 else data

    def close(self) -> None:
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SegyVolume(_OpenSegy):
    """An open SEG-Y file, 2D (``kind == '2d'``: one line of traces) or 3D (``'3d'``: inlines x crosslines).

    ``line(direction, k)`` reads one line as float32 ``(samples, traces)``; ``sample_traces`` a bounded, evenly
    spread sample of traces (the amplitude clip); ``time_slice(k)`` one sample of every trace."""

    def __init__(self, path: Path, header: Header, handle, kind: str):
        self.path, self.header, self.f, self.kind = path, header, handle, kind
        self.geometry = self

    # -- shape ---------------------------------------------------------------------------------------------------
    @property
    def samples(self) -> int:
        return len(self.f.samples)

    @property
    def traces(self) -> int:
        return self.f.tracecount

    @property
    def shape(self) -> tuple:
        """(inlines, crosslines, samples) of a 3D volume; (traces, samples) of a 2D line."""
        if self.kind == "2d":
            return (self.traces, self.samples)
        return (len(self.f.ilines), len(self.f.xlines), self.samples)

    @property
    def sorting(self) -> str:
        if self.kind == "2d":
            return "a 2D line"
        return "inline-sorted" if self.f.sorting == 2 else "crossline-sorted"

    def numbers(self, direction: str) -> np.ndarray:
        """The inline or crossline numbers of a 3D volume."""
        return np.asarray(self.f.ilines if direction == "inline" else self.f.xlines)

    def lines(self, direction: str = "inline") -> int:
        return 1 if self.kind == "2d" else len(self.numbers(direction))

    def describe(self) -> str:
        fmt = f"{FORMAT_NAMES[self.header.format]}, {self.header.endian}-endian"
        if self.kind == "2d":
            return f"2D line of {self.traces} traces x {self.samples} samples ({fmt})"
        il, xl, ns = self.shape
        return f"3D volume of {il} inlines x {xl} crosslines x {ns} samples, {self.sorting} ({fmt})"

    # -- reading -------------------------------------------------------------------------------------------------
    def sample_traces(self, limit: int) -> np.ndarray:
        """At most ``limit`` traces spread evenly over the file, (n, samples) float32 (never the whole file)."""
        index = np.unique(np.linspace(0, self.traces - 1, min(limit, self.traces)).round().astype(np.int64))
        return np.stack([np.asarray(self.f.trace[int(i)], np.float32) for i in index])  # loop per sampled trace


def _segyio_open(path: Path, header: Header, ignore_geometry: bool, mode: str = "r"):
    import segyio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return segyio.open(str(path), mode, endian=header.endian, ignore_geometry=ignore_geometry)


def _unstructured_kind(path: Path, f) -> str:
    """A file whose geometry segyio cannot infer: a 2D line when its inline or crossline numbers are constant
    (a list of traces along one line), else refused with the reason."""
    import segyio

    il = np.asarray(f.attributes(segyio.TraceField.INLINE_3D)[:])
    xl = np.asarray(f.attributes(segyio.TraceField.CROSSLINE_3D)[:])
    off = np.asarray(f.attributes(segyio.TraceField.offset)[:])
    positions = np.unique(np.stack([il, xl], 1), axis=0)
    varying = (len(np.unique(il)) > 1) + (len(np.unique(xl)) > 1)
    if varying and len(positions) < len(il) and len(np.unique(off)) > 1:
        raise DataError(f"{path} is a pre-stack file ({len(np.unique(off))} offsets per position); give stacked "
                        "data (one trace per position)")
    if varying == 2:
        raise DataError(f"{path}: inconsistent geometry: its inline and crossline numbers (bytes 189 and 193) both "
                        f"vary but do not form a regular grid ({len(positions)} positions for {len(il)} traces)")
    return "2d"


def open_segy(path: str | os.PathLike) -> SegyVolume:
    """Open and check a SEG-Y file (see the module's docstring); the caller closes it."""
    path = Path(path)
    header = read_header(path)
    _check_size(path, header)
    try:
        f = _segyio_open(path, header, ignore_geometry=False)
    except (RuntimeError, ValueError):  # no geometry segyio can infer: look at the trace headers
        f = None
    except (OSError, IndexError) as exc:
        raise DataError(f"{path} is not a readable SEG-Y file ({str(exc).splitlines()[0]})") from None
    if f is None:
        try:
            f = _segyio_open(path, header, ignore_geometry=True)
        except (RuntimeError, OSError, IndexError, ValueError) as exc:
            raise DataError(f"{path} is not a readable SEG-Y file ({str(exc).splitlines()[0]})") from None
        try:
            kind = _unstructured_kind(path, f)
        except DataError:
            f.close()
            raise
        return SegyVolume(path, header, f, kind)
    if len(f.offsets) > 1:
        n = len(f.offsets)
        f.close()
        raise DataError(f"{path} is a pre-stack file ({n} offsets per position); give stacked data (one trace per "
                        "position)")
    kind = "2d" if min(len(f.ilines), len(f.xlines)) == 1 else "3d"
    return SegyVolume(path, header, f, kind)


def create_like(source: SegyVolume, path: str | os.PathLike) -> None:
    """A new SEG-Y file at ``path`` with ``source``'s geometry, byte order, text, binary and trace headers, and
    IEEE float32 samples (their values are undefined until written: every caller writes every line).

    A source of 4-byte samples is copied as it is and its binary header told that the samples are IEEE floats
    (the file's layout is unchanged); other sources get a new file with every header copied through segyio."""
    import shutil

    import segyio

    src = source.f
    if FORMATS[source.header.format] == 4:
        shutil.copyfile(source.path, path)
        header = Header(source.header.endian, source.header.format, source.samples)
        with _segyio_open(Path(path), header, ignore_geometry=True, mode="r+") as dst:
            dst.bin.update(format=IEEE_FLOAT)
        return
    spec = segyio.tools.metadata(src)
    spec.format = IEEE_FLOAT
    spec.ext_headers = 0
    if source.kind == "2d" or src.unstructured:
        for name in ("ilines", "xlines", "offsets", "sorting"):
            if hasattr(spec, name):
                delattr(spec, name)
        spec.tracecount = src.tracecount
    with segyio.create(str(path), spec) as dst:
        dst.text[0] = src.text[0]
        dst.bin = src.bin
        dst.bin.update(format=IEEE_FLOAT, exth=0)
        dst.header = src.header  # loop per trace inside segyio
        zeros = np.zeros(len(src.samples), np.float32)
        for i in range(src.tracecount):  # loop per trace, once: every trace exists in the new file
            dst.trace[i] = zeros


class SegyWriter(_OpenSegy):
    """A SEG-Y file made by :func:`create_like`, opened for writing lines (``write(direction, k, data)`` with
    ``data`` (samples, traces)) and reading them back (``line``); ``flush`` makes the written lines reach the
    file."""

    def __init__(self, source: SegyVolume, path: str | os.PathLike):
        self.geometry = source
        header = Header(source.header.endian, IEEE_FLOAT, source.samples)
        self.f = _segyio_open(Path(path), header, ignore_geometry=source.f.unstructured, mode="r+")

    def write(self, direction: str, k: int, data: np.ndarray) -> None:
        traces = np.ascontiguousarray(np.asarray(data, np.float32).T)
        if self.geometry.kind == "2d":
            for i, trace in enumerate(traces):  # loop per trace of one line
                self.f.trace[i] = trace
            return
        self._lines(direction)[int(self.geometry.numbers(direction)[k])] = traces

    def flush(self) -> None:
        self.f.flush()


def write_array(path: str | os.PathLike, data: np.ndarray, fmt: int = IEEE_FLOAT, endian: str = "big",
                sorting: str = "inline", first_inline: int = 1, first_crossline: int = 1,
                interval_us: int = 4000) -> None:
    """Write an in-memory array as a SEG-Y file (synthetic sections, tests): ``data`` (traces, samples) is a 2D
    line (inline and crossline numbers constant / counting, CDP numbered), (inlines, crosslines, samples) a 3D
    volume sorted by ``sorting``; ``fmt`` 1 (IBM float) or 5 (IEEE float), in either byte order."""
    import segyio

    data = np.ascontiguousarray(data, np.float32)
    spec = segyio.spec()
    spec.samples = np.arange(data.shape[-1]) * interval_us / 1000.0
    spec.format = fmt
    spec.endian = endian
    TF = segyio.TraceField
    if data.ndim == 2:
        spec.tracecount = len(data)
        with segyio.create(str(path), spec) as f:
            for i, trace in enumerate(data):  # loop per trace
                f.header[i] = {TF.INLINE_3D: first_inline, TF.CROSSLINE_3D: first_crossline + i, TF.CDP: i + 1,
                               TF.TRACE_SAMPLE_COUNT: data.shape[1], TF.TRACE_SAMPLE_INTERVAL: interval_us}
                f.trace[i] = trace
            f.bin.update(hns=data.shape[1], hdt=interval_us, format=fmt)
        return
    n_il, n_xl, _ = data.shape
    spec.ilines = np.arange(n_il) + first_inline
    spec.xlines = np.arange(n_xl) + first_crossline
    spec.offsets = [1]
    spec.sorting = 2 if sorting == "inline" else 1
    with segyio.create(str(path), spec) as f:
        order = ((i, j) for i in range(n_il) for j in range(n_xl)) if sorting == "inline" else \
            ((i, j) for j in range(n_xl) for i in range(n_il))
        for t, (i, j) in enumerate(order):  # loop per trace
            f.header[t] = {TF.INLINE_3D: int(spec.ilines[i]), TF.CROSSLINE_3D: int(spec.xlines[j]), TF.offset: 1,
                           TF.CDP: t + 1, TF.TRACE_SAMPLE_COUNT: data.shape[2],
                           TF.TRACE_SAMPLE_INTERVAL: interval_us}
            f.trace[t] = data[i, j]
        f.bin.update(hns=data.shape[2], hdt=interval_us, format=fmt, tsort=spec.sorting)
