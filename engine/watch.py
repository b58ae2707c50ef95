"""What ensemble.py shows while its folds run, read from the folds' own files (no message passing with the jobs,
so it works the same for local processes and cluster jobs):

- each fold's log (RUN/logs/MODE-FOLD.log) is followed and its new lines echoed with a ``[MODE/FOLD]`` prefix; the
  ``$ COMMAND`` line a job writes before each step tells which step the fold is in (train, swa);
- its ``metrics.csv`` has one row per finished epoch with its ``time_s``, its ``config.yaml`` the ``max_epochs``:
  the epoch it is in, and the time left (:func:`eta_seconds`: the mean epoch time so far, times the epochs left,
  spread over the folds that run at once).

On a terminal a progress bar (``tgs.progress.bar``) shows folds done / total, each running fold's step and the
time left; elsewhere (logs, CI) one status line is printed per finished fold (``folds done 3/20; ETA 5 h 10 min``).
"""
from __future__ import annotations

import csv
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from tgs import progress
from tgs.errors import few

STEPS = ("train", "swa")


@dataclass
class FoldView:
    """What is known of one fold: its files, its state (waiting, queued, train, swa, done, failed), the times of
    its finished epochs and its number of epochs (as asked now; else from its config.yaml; None: not known)."""

    label: str
    log: Path
    metrics: Path
    config: Path
    epochs: int | None = None
    state: str = "waiting"
    times: tuple = ()
    offset: int = 0
    partial: bytes = b""  # the log's last line while it is not finished
    _seen: tuple | None = None  # metrics.csv's (mtime, size) when last read

    @property
    def running(self) -> bool:
        return self.state in ("queued", *STEPS)

    @property
    def finished(self) -> bool:
        return self.state == "done"

    def refresh(self) -> None:
        """Re-read metrics.csv when it changed (and config.yaml while the number of epochs is unknown)."""
        stamp = _stamp(self.metrics)
        if stamp != self._seen:
            self.times = tuple(epoch_times(self.metrics))
            self._seen = stamp
        if self.epochs is None and self.config.is_file():  # the options asked now come first
            self.epochs = max_epochs(self.config)

    def step(self) -> str:
        """The fold's current step in words: ``train epoch 4/250``, ``swa``, ``queued``."""
        if self.state == "train":
            done = len(self.times)
            if self.epochs is None:
                return f"train epoch {done + 1}"
            return f"train epoch {min(done + 1, self.epochs)}/{self.epochs}"
        return self.state


def _stamp(path: Path):
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def epoch_times(path: Path) -> list[float]:
    """``time_s`` of every finished epoch in a run's metrics.csv (empty when it does not exist yet)."""
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, csv.Error, UnicodeDecodeError):
        return []
    out = []
    for row in rows:
        try:
            value = float(row.get("time_s") or "nan")
        except ValueError:
            continue
        if math.isfinite(value):
            out.append(value)
    return out


def max_epochs(path: Path) -> int | None:
    """``max_epochs`` of a run's config.yaml (None when it cannot be read)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
        value = data.get("max_epochs") if isinstance(data, dict) else None
        return int(value) if value is not None else None
    except (OSError, yaml.YAMLError, UnicodeDecodeError, TypeError, ValueError):
        return None


def eta_seconds(views: list[FoldView], width: int) -> float | None:
    """Time left for the folds not finished: the mean time of every epoch finished so far (any fold) times each
    fold's epochs left (the one in progress counted whole), the folds running ``width`` at a time; a run cannot
    end before its longest fold. None when no epoch has finished yet or a fold's number of epochs is unknown.
    Early stopping can only make it shorter; swa.py's time is not counted."""
    times = [t for v in views for t in v.times]
    left_views = [v for v in views if not v.finished]
    if not left_views:
        return 0.0
    if not times or any(v.epochs is None for v in left_views):
        return None
    per_epoch = sum(times) / len(times)
    left = [max(v.epochs - len(v.times), 0) for v in left_views]
    at_once = max(1, min(width, len(left)))
    return per_epoch * max(sum(left) / at_once, max(left))


def duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``5 h 10 min``, ``2 d 3 h`` (rounded to the unit shown last)."""
    s = int(seconds + 0.5)
    if s < 60:
        return f"{s} s"
    minutes = int(s / 60 + 0.5)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min"
    hours = int(s / 3600 + 0.5)
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def status_line(views: list[FoldView], width: int) -> str:
    """``folds done 3/20; ETA 5 h 10 min`` (no ETA when it is not known yet, or no epoch is left)."""
    done = sum(v.finished for v in views)
    eta = eta_seconds(views, width)
    return f"folds done {done}/{len(views)}" + (f"; ETA {duration(eta)}" if eta else "")


def running_text(views: list[FoldView], width: int) -> str:
    """The running folds' steps and the time left, for the progress bar."""
    parts = [f"{v.label} {v.step()}" for v in views if v.running]
    eta = eta_seconds(views, width)
    text = few(parts, 3)
    return text + (f"; ETA {duration(eta)}" if eta else "")


class Monitor:
    """Follows the folds' files while :func:`engine.jobs.schedule` runs them (see the module docstring).
    ``interactive``: show the bar (default: when stderr is a terminal); ``write``: where lines go (default: stdout,
    above the bar)."""

    def __init__(self, views: list[FoldView], width: int, interactive: bool | None = None, write=None):
        self.views = {v.label: v for v in views}
        self.width = width
        for v in views:
            v.refresh()
        self.interactive = progress.interactive() if interactive is None else interactive
        self.bar = None
        if self.interactive:
            self.bar = progress.bar(total=len(views), desc="folds", unit="fold",
                                    initial=sum(v.finished for v in views),
                                    bar_format="{desc} {n_fmt}/{total_fmt} [{elapsed}]{postfix}")
        self._write = write

    def say(self, text: str) -> None:
        if self._write is not None:
            self._write(text)
        elif self.bar is not None:
            self.bar.write(text, file=sys.stdout)
        else:
            print(text, flush=True)

    def start(self, label: str, first: bool = True) -> None:
        """A job of ``label`` was submitted; its log is followed from its present end on the first attempt."""
        v = self.views[label]
        if first:
            v.offset = v.log.stat().st_size if v.log.is_file() else 0
            v.partial = b""
        v.state = "queued"
        self._show()

    def end(self, label: str, ok: bool) -> None:
        v = self.views[label]
        self._follow(v, final=True)
        v.refresh()
        v.state = "done" if ok else "failed"
        if ok:
            if self.bar is not None:
                self.bar.update(1)
            else:
                self.say(status_line(list(self.views.values()), self.width))
        self._show()

    def update(self) -> None:
        for v in self.views.values():
            if v.running:
                self._follow(v)
                v.refresh()
        self._show()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def _show(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(running_text(list(self.views.values()), self.width))

    def _follow(self, v: FoldView, final: bool = False) -> None:
        """Echo the lines added to the fold's log since last time (with ``final``, an unfinished last line too)."""
        try:
            with open(v.log, "rb") as fh:
                fh.seek(v.offset)
                data = fh.read()
        except OSError:
            return
        v.offset += len(data)
        lines = (v.partial + data).split(b"\n")  # bytes: a character cut between two reads stays whole
        v.partial = lines.pop()  # what follows the last newline
        if final and v.partial:
            lines.append(v.partial)
            v.partial = b""
        for line in (raw.decode("utf-8", errors="replace") for raw in lines):
            if line.startswith("$ "):
                v.state = _step_of(line) or v.state
            self.say(f"[{v.label}] {line}")


def _step_of(header: str) -> str | None:
    """The step a ``$ COMMAND`` line starts: its last word (``python -m engine.fold_job FOLDER STEP``), if train or
    swa."""
    words = header[2:].split()
    return words[-1] if words and words[-1] in STEPS else None
