"""Writing a training run's checkpoint set as a unit: each epoch's state is written once, the other names link to it.

Per epoch, :meth:`CheckpointSaver.save` writes two files, each atomically (temporary file, fsync, rename):

1. ``checkpoints/last-checkpoint-FOLD.pth``: the model and the full resume state;
2. ``models/last-FOLD.pth``: the model alone (for swa.py and test.py);

then every ``best-*`` name whose value improved, and the cosine-cycle snapshot, becomes a hard link to the file of
its folder (a copy where the filesystem has no hard links). The next epoch replaces ``last`` with a new file, so
the links keep the state of the epoch they were made at: 2 writes an epoch instead of up to 9.

The order is the crash guarantee. ``last`` is always written first, so after a kill at any moment every best name
is either current or older than ``last``, never newer; and a best name that should hold ``last``'s epoch (the
resume state's history gives the best epochs) but does not (the kill came between the two steps) is re-linked from
``last`` by :meth:`CheckpointSaver.restore`, which the trainer runs whenever it resumes. Left-over temporary files
of a killed write are removed at the same time.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from engine.layout import BEST, RunLayout
from tgs.io import atomic_path, remove_stale_temporaries


def link(src: Path, dst: Path) -> None:
    """``dst`` becomes the same file as ``src`` (a hard link, or a copy), atomically."""
    with atomic_path(dst) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:  # no hard links here (some network or FAT filesystems): copy
            shutil.copyfile(src, tmp)


def same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


class CheckpointSaver:
    def __init__(self, layout: RunLayout):
        self.layout = layout

    def prepare(self) -> None:
        self.layout.checkpoints.mkdir(parents=True, exist_ok=True)
        self.layout.models.mkdir(parents=True, exist_ok=True)
        for folder in (self.layout.checkpoints, self.layout.models):
            remove_stale_temporaries(folder)

    def save(self, model, spec, meta: dict, extra: dict, improved: list[str], snapshot_epoch: int | None) -> None:
        """One epoch: ``improved`` are the kinds (metric, loss, accuracy) whose best this epoch is."""
        import models

        lay = self.layout
        names = ["last", *(BEST[k] for k in improved)]
        meta = {**meta, "names": names + ([f"snapshot-e{snapshot_epoch:03d}"] if snapshot_epoch is not None else [])}
        models.save_checkpoint(lay.checkpoint("last"), model, spec, meta, extra)
        models.save_checkpoint(lay.model("last"), model, spec, meta)
        for name in names[1:]:
            link(lay.checkpoint("last"), lay.checkpoint(name))
            link(lay.model("last"), lay.model(name))
        if snapshot_epoch is not None:
            link(lay.model("last"), lay.snapshot(snapshot_epoch))

    def restore(self, last_epoch: int, best_epoch: dict, snapshot_epoch: int | None = None) -> list[str]:
        """After a kill between writing ``last`` and linking the other names: every best name whose recorded
        best epoch is ``last_epoch`` (and the snapshot of that epoch) is linked from ``last`` again. Returns the
        names mended."""
        lay = self.layout
        mended = []
        for kind, name in BEST.items():
            if best_epoch.get(kind) != last_epoch:
                continue
            for src, dst in ((lay.checkpoint("last"), lay.checkpoint(name)), (lay.model("last"), lay.model(name))):
                if src.is_file() and not same_file(src, dst):
                    link(src, dst)
                    mended.append(str(dst))
        if snapshot_epoch is not None:
            src, dst = lay.model("last"), lay.snapshot(snapshot_epoch)
            if src.is_file() and not dst.exists():
                link(src, dst)
                mended.append(str(dst))
        return mended

    def describe(self) -> str:
        """What a crash leaves behind, for an error message."""
        last = self.layout.checkpoint("last")
        if last.is_file():
            return f"the last good checkpoint, {last}, is intact"
        return f"no checkpoint was written yet ({self.layout.checkpoints} has none)"
