"""Salt on whole seismic sections and volumes (section.py): a section or a volume in, the salt probability, the
post-processed mask and pictures out.

A line (a 2D section, or one inline / crossline of a volume) goes: amplitudes -> 8-bit grey by the clip
(:class:`engine.section_tiles.Clip`) -> optionally resampled by ``scale`` -> overlapping 101x101 windows, reflected
at the borders (:class:`engine.section_tiles.Tiling`) -> every model with flip TTA, each with its own checkpoint's
input spec, batched (:class:`engine.inference.Ensemble`, the code path of test.py) -> blended back with smooth
weights -> resampled back. A volume goes line by line, so memory holds one line and the models whatever its size;
with ``both_directions`` the crosslines are predicted too and averaged with the inlines.

A volume's results are written into hidden partial files in the output folder, and a small state file records the
last finished line after that line has reached the file: ``resume`` continues from there, and the finished volume
is byte for byte the one an uninterrupted run writes. Every final output appears by an atomic rename.

Post-processing on a section: a pixel is salt where its probability is above the threshold, a line of one value
only (no data) has no salt (the flat rule), and salt bodies (connected pixels, per line) smaller than the min area
are removed: the section's form of the tile rule "fewer salt pixels than the min area: empty". The image-level
gate has no meaning on a section and is not used.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from datasets import segy
from engine import distributed, inference, logs
from engine.section_sources import mosaic_section, open_input
from engine.section_tiles import Clip, Tiling, estimate_clip
from tgs import TILE, postprocess, runtime
from tgs.errors import UserError
from tgs.io import FolderLock, atomic_path, remove_stale_temporaries
from tgs.progress import bar

STATE = ".section-state.json"
PARTIAL = {"inline": ".probability-inline.sgy.partial", "both": ".probability-both.sgy.partial",
           "mask": ".mask.sgy.partial"}


@dataclass(frozen=True)
class SectionOptions:
    """section.py's options (cli/section.py builds them)."""

    models: tuple
    out: str
    input: str | None = None
    mosaics: str | None = None
    mosaic: int | None = None
    data_dir: str | None = None
    clip: tuple | None = None  # (lo, hi) amplitudes; None: percentiles of a sample
    clip_percentiles: tuple = (1.0, 99.0)
    clip_traces: int = 500
    scale: float = 1.0
    overlap: int = TILE // 2
    both_directions: bool = False
    inlines: tuple = ()
    crosslines: tuple = ()
    time_slices: tuple = ()
    resume: bool = False
    post: postprocess.PostProcess = postprocess.DEFAULTS
    post_source: str = "defaults"
    device: str = "auto"
    batch_size: int = 64
    amp: str = "none"
    channels_last: bool = False
    threads: int = 0


# -- the models ------------------------------------------------------------------------------------------------------
class Predictor:
    """Every model loaded once; ``predictor(windows)`` is the mean flip-TTA probability of (N, 101, 101) uint8
    windows over the models (engine.inference.Ensemble: each model's own input spec, batched)."""

    def __init__(self, paths, device: torch.device, batch_size: int = 64, amp: str = "none",
                 channels_last: bool = False):
        import models

        self.device, self.batch_size, self.amp, self.channels_last = device, batch_size, amp, channels_last
        self.loaded = [(str(p), models.load(p, device=device)) for p in paths]
        for _, m in self.loaded:
            if channels_last:
                m.model.to(memory_format=torch.channels_last)
        self.windows = 0

    def describe(self) -> str:
        parts = [f"{Path(p).name} ({m.input_spec.mode} {m.input_spec.source}->{m.input_spec.size})"
                 for p, m in self.loaded]
        return f"{len(parts)} model{'s' if len(parts) != 1 else ''} with flip TTA on {self.device}: " + ", ".join(parts)

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        ens = inference.Ensemble(len(windows))
        for path, m in self.loaded:
            ens.add_model(m.model, m.input_spec, windows, self.device, batch_size=self.batch_size, tta=True,
                          amp=self.amp, channels_last=self.channels_last, name=path)
        self.windows += len(windows)
        return ens.result()[0]


# -- one line --------------------------------------------------------------------------------------------------------
def resample(image: np.ndarray, shape: tuple, interpolation: str) -> np.ndarray:
    """``image`` resized to ``shape`` (rows, cols) with OpenCV (area when shrinking grey, linear otherwise)."""
    import cv2

    if image.shape == tuple(shape):
        return image
    flag = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR}[interpolation]
    return cv2.resize(image, (int(shape[1]), int(shape[0])), interpolation=flag)


def predict_line(grey: np.ndarray, predictor, overlap: int = TILE // 2, scale: float = 1.0) -> np.ndarray:
    """(rows, cols) float32 salt probability of a uint8 section: resampled by ``scale``, tiled, predicted, blended,
    resampled back."""
    h, w = grey.shape
    scaled = (max(1, int(round(h * scale))), max(1, int(round(w * scale))))
    image = resample(grey, scaled, "area" if scale < 1 else "linear")
    tiling = Tiling(*image.shape, overlap=overlap)
    prob = tiling.blend(predictor(tiling.windows(image)))
    return np.clip(resample(prob, (h, w), "linear"), 0.0, 1.0)


def salt_mask(prob: np.ndarray, grey: np.ndarray, post: postprocess.PostProcess) -> np.ndarray:
    """The post-processed salt of one line (see the module's docstring): threshold and flat rule by
    tgs.postprocess.apply, then bodies smaller than ``post.min_area`` pixels removed."""
    from scipy import ndimage

    mask = postprocess.apply(prob[None], None, grey[None], replace(post, min_area=0, gate=None))[0]
    if post.min_area > 0 and mask.any():
        labels, n = ndimage.label(mask)
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        small = sizes < post.min_area
        small[0] = False
        mask[small[labels]] = False
    return mask


def picture(grey: np.ndarray, prob: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """BGR uint8: the grey amplitudes with the salt probability over them in red (opacity 0.6 x probability) and
    the post-processed salt's outline in yellow."""
    from scipy import ndimage

    base = np.repeat(grey[..., None].astype(np.float32), 3, axis=2)
    alpha = (0.6 * np.clip(prob, 0, 1))[..., None].astype(np.float32)
    out = base * (1 - alpha) + np.array([0, 0, 255], np.float32) * alpha
    edge = mask & ~ndimage.binary_erosion(mask, border_value=1)
    out[edge] = (0, 255, 255)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# -- outputs ---------------------------------------------------------------------------------------------------------
def write_png(path: Path, image: np.ndarray) -> None:
    import cv2

    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise UserError(f"cannot encode the picture {path}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.tobytes())


def write_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)


def write_segy_line(source, path: Path, data: np.ndarray) -> None:
    """A 2D SEG-Y output with ``source``'s headers, written whole (atomically)."""
    with atomic_path(path) as tmp:
        segy.create_like(source, tmp)
        with segy.SegyWriter(source, tmp) as w:
            w.write("inline", 0, data)


# -- the clip --------------------------------------------------------------------------------------------------------
def choose_clip(source, opts: SectionOptions) -> Clip:
    if opts.clip is not None:
        return Clip(float(opts.clip[0]), float(opts.clip[1]), "--clip")
    if getattr(source, "grey", False):
        return Clip(0.0, 255.0, "8-bit grey input, used as it is")
    return estimate_clip(source.sample_traces(opts.clip_traces), opts.clip_percentiles)


# -- 2D --------------------------------------------------------------------------------------------------------------
def run_2d(source, opts: SectionOptions, predictor, clip: Clip, out: Path) -> list[Path]:
    amplitudes = source.line()
    grey = clip.apply(amplitudes)
    if min(grey.shape) < TILE:
        logs.info(f"note: the section ({grey.shape[0]} x {grey.shape[1]}) is smaller than one {TILE}x{TILE} tile: "
                  "it is reflect-padded up to one")
    progress = bar(total=1, desc="lines", unit="line")
    prob = predict_line(grey, predictor, opts.overlap, opts.scale)
    progress.update(1)
    progress.close()
    valid = getattr(source, "valid", None)
    if valid is not None:
        prob[~valid] = 0.0
    mask = salt_mask(prob, grey, opts.post)
    written = [out / "probability.npy", out / "mask.npy", out / "section.png"]
    write_npy(written[0], prob)
    write_npy(written[1], mask)
    write_png(written[2], picture(grey, prob, mask))
    if isinstance(source, segy.SegyVolume):
        written += [out / "probability.sgy", out / "mask.sgy"]
        write_segy_line(source, written[3], prob)
        write_segy_line(source, written[4], mask.astype(np.float32))
    return written


# -- 3D --------------------------------------------------------------------------------------------------------------
def _file_id(path) -> dict:
    st = os.stat(path)
    return {"path": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def run_key(opts: SectionOptions, clip: Clip) -> dict:
    """What a volume's partial results depend on: a resumed run must have the same."""
    return {"input": _file_id(opts.input), "models": [_file_id(p) for p in opts.models],
            "clip": [clip.lo, clip.hi], "scale": opts.scale, "overlap": opts.overlap,
            "both_directions": opts.both_directions, "amp": opts.amp, "device": opts.device,
            "batch_size": opts.batch_size}


def read_state(out: Path) -> dict | None:
    path = out / STATE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (ValueError, OSError):
        return None


def save_state(out: Path, state: dict) -> None:
    with atomic_path(out / STATE) as tmp:
        tmp.write_text(json.dumps(state, indent=1))


def start_state(out: Path, opts: SectionOptions, clip: Clip, source) -> dict:
    """The state to continue from: the unfinished run's with --continue (same settings, partial files there), else a
    fresh one (old partial files removed)."""
    key = run_key(opts, clip)
    old = read_state(out)
    if opts.resume and old is not None:
        if old.get("key") != key:
            diff = [k for k in key if old.get("key", {}).get(k) != key[k]]
            raise UserError(f"--continue: the unfinished run in {out} used another {', '.join(diff)}; run without "
                            "--continue to start over")
        missing = [PARTIAL[p] for p in old["passes"] if not (out / PARTIAL[p]).is_file()]
        if not missing:
            logs.info(f"resuming: {old['pass']}s done up to line {old['done'] + 1} of {source.lines(old['pass'])}")
            return old
        logs.info(f"note: cannot resume, {out / missing[0]} is missing; starting over")
    elif opts.resume:
        logs.info(f"note: nothing to resume in {out}; starting")
    elif old is not None:
        logs.info(f"note: starting over (an unfinished run is in {out}; --continue continues it)")
    for name in PARTIAL.values():
        (out / name).unlink(missing_ok=True)
    segy.create_like(source, out / PARTIAL["inline"])
    state = {"key": key, "pass": "inline", "done": -1, "passes": ["inline"]}
    save_state(out, state)
    return state


def _line_pass(source, opts, predictor, clip, out, state, direction: str, progress, fail_after=None) -> None:
    """Predict the lines of ``direction`` after the state's last finished one, each written and flushed before
    the state records it."""
    if direction == "crossline" and "both" not in state["passes"]:
        segy.create_like(source, out / PARTIAL["both"])
        state.update({"pass": "crossline", "done": -1, "passes": [*state["passes"], "both"]})
        save_state(out, state)
    import contextlib

    with contextlib.ExitStack() as stack:
        writer = stack.enter_context(segy.SegyWriter(source, out / PARTIAL["inline" if direction == "inline"
                                                                              else "both"]))
        first = stack.enter_context(segy.SegyWriter(source, out / PARTIAL["inline"])) if direction == "crossline" \
            else None
        for k in range(state["done"] + 1, source.lines(direction)):
            prob = predict_line(clip.apply(source.line(direction, k)), predictor, opts.overlap, opts.scale)
            if direction == "crossline":
                prob = 0.5 * (first.line("crossline", k) + prob)
            writer.write(direction, k, prob)
            writer.flush()
            state["done"] = k
            save_state(out, state)
            progress.update(1)
            if fail_after is not None:
                fail_after(direction, k)


def _finish_volume(source, opts, clip, out, state) -> list[Path]:
    """The mask volume (line by line, from the final probability), the pictures, then the renames."""
    final = out / PARTIAL["both" if opts.both_directions else "inline"]
    mask_partial = out / PARTIAL["mask"]
    segy.create_like(source, mask_partial)
    written = []
    with segy.SegyWriter(source, final) as prob_file, segy.SegyWriter(source, mask_partial) as mask_file:
        for k in range(source.lines("inline")):
            grey = clip.apply(source.line("inline", k))
            mask_file.write("inline", k, salt_mask(prob_file.line("inline", k), grey, opts.post).astype(np.float32))
        mask_file.flush()
        for direction, numbers in (("inline", opts.inlines), ("crossline", opts.crosslines)):
            for number in numbers:
                k = int(np.flatnonzero(source.numbers(direction) == number)[0])
                grey = clip.apply(source.line(direction, k))
                path = out / f"{direction}-{number}.png"
                write_png(path, picture(grey, prob_file.line(direction, k), mask_file.line(direction, k) > 0.5))
                written.append(path)
        for k in opts.time_slices:
            grey = clip.apply(source.time_slice(k))
            path = out / f"time-{k}.png"
            write_png(path, picture(grey, prob_file.time_slice(k), mask_file.time_slice(k) > 0.5))
            written.append(path)
    for partial, name in ((final, "probability.sgy"), (mask_partial, "mask.sgy")):
        with open(partial, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(partial, out / name)
        written.insert(0, out / name)
    for name in PARTIAL.values():
        (out / name).unlink(missing_ok=True)
    (out / STATE).unlink(missing_ok=True)
    return written


def run_3d(source, opts: SectionOptions, predictor, clip: Clip, out: Path, fail_after=None) -> list[Path]:
    state = start_state(out, opts, clip, source)
    directions = ["inline"] + (["crossline"] if opts.both_directions else [])
    total = sum(source.lines(d) for d in directions)
    done = state["done"] + 1 + (source.lines("inline") if state["pass"] == "crossline" else 0)
    progress = bar(total=total, initial=done, desc="lines", unit="line")
    for direction in directions:
        if direction == "inline" and state["pass"] == "crossline":
            continue
        _line_pass(source, opts, predictor, clip, out, state, direction, progress, fail_after)
    progress.close()
    return _finish_volume(source, opts, clip, out, state)


# -- the whole run ---------------------------------------------------------------------------------------------------
def check_pictures(source, opts: SectionOptions) -> SectionOptions:
    """The chosen inlines / crosslines / time slices exist (before any work); a volume without a choice gets its
    middle inline's picture."""
    if source.kind == "2d":
        if opts.inlines or opts.crosslines or opts.time_slices:
            raise UserError("--inlines, --crosslines and --time-slices choose pictures of a 3D volume; "
                            f"{source.path} is a 2D section (its picture is section.png)")
        return opts
    for direction, chosen in (("inline", opts.inlines), ("crossline", opts.crosslines)):
        numbers = source.numbers(direction)
        for n in chosen:
            if n not in numbers:
                raise UserError(f"--{direction}s {n}: {source.path} has {direction}s {numbers[0]} .. {numbers[-1]}")
    for k in opts.time_slices:
        if not 0 <= k < source.samples:
            raise UserError(f"--time-slices {k}: {source.path} has samples 0 .. {source.samples - 1}")
    if not (opts.inlines or opts.crosslines or opts.time_slices):
        numbers = source.numbers("inline")
        opts = replace(opts, inlines=(int(numbers[len(numbers) // 2]),))
    return opts


def open_source(opts: SectionOptions):
    if opts.mosaics:
        return mosaic_section(opts.mosaics, opts.mosaic, opts.data_dir or "data")
    return open_input(opts.input)


def run(opts: SectionOptions, fail_after=None) -> int:
    """section.py: predict, post-process and write (``fail_after(direction, k)``: a test's hook after each
    finished line of a volume)."""
    t0 = time.perf_counter()
    runtime.setup_cpu(opts.threads)
    device = distributed.resolve_device(opts.device)
    out = Path(opts.out)
    source = open_source(opts)
    try:
        opts = check_pictures(source, opts)
        if opts.resume and source.kind == "2d":
            logs.info("note: --continue applies to volumes; a 2D section is predicted in one piece")
        logs.info(f"input: {source.path}: {source.describe()}")
        clip = choose_clip(source, opts)
        logs.info(clip.describe())
        with FolderLock(out, "--out"):
            remove_stale_temporaries(out)
            predictor = Predictor(opts.models, device, opts.batch_size, opts.amp, opts.channels_last)
            logs.info(predictor.describe())
            logs.info(f"windows {TILE}x{TILE}, overlap {opts.overlap} px, scale {opts.scale:g}; post-processing: "
                      f"{opts.post.describe()} ({opts.post_source}; per line, min area per salt body)")
            if opts.post.gate is not None:
                logs.info("note: the image-level gate has no meaning on a section and is not used")
            if source.kind == "2d":
                written = run_2d(source, opts, predictor, clip, out)
            else:
                written = run_3d(source, opts, predictor, clip, out, fail_after)
    finally:
        source.close()
    logs.info(f"wrote {', '.join(str(p) for p in written)}")
    logs.info(f"{predictor.windows} windows in {time.perf_counter() - t0:.1f} s")
    return 0

