"""PyTorch datasets over in-memory arrays.

Samples come out at the original 101x101 as ``(image uint8 (1, 101, 101), mask bool (1, 101, 101), index)``;
the batch is padded or resized to the model's input on the device by :class:`tgs.inputs.InputSpec`.

Augmentation randomness is a pure function of ``(seed, epoch, index)``: every sample re-seeds the transform, so a
run gives the same batches whatever the number of loader workers, and a resumed run continues exactly.
:class:`MixedBatchSampler` makes the batches of a run with pseudo-labelled images (a fixed share per batch), again
a pure function of ``(seed, epoch)``.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed for one sample of one epoch (SeedSequence mixes the three numbers)."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index]).generate_state(1)[0])


class SaltDataset(Dataset):
    """Training images (N, 101, 101) uint8 and masks (N, 101, 101) bool, optionally augmented. (Validation and
    prediction slice their in-memory arrays directly: they need no per-sample work.)"""

    def __init__(self, images: np.ndarray, masks: np.ndarray, transform=None, seed: int = 0):
        if len(masks) != len(images):
            raise ValueError(f"{len(images)} images but {len(masks)} masks")
        self.images = images
        self.masks = masks
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = self.images[index]
        mask = self.masks[index]
        if self.transform is not None:
            from datasets.augment import apply

            self.transform.set_random_seed(sample_seed(self.seed, self.epoch, index))
            image, mask = apply(self.transform, image, mask)
        return (torch.from_numpy(np.ascontiguousarray(image))[None],
                torch.from_numpy(np.ascontiguousarray(mask))[None], index)


def batch_shape(count: int, size: int) -> tuple[int, int]:
    """(batches, images per batch) of a pass over ``count`` images in batches of ``size``: the full batches, the
    incomplete last one dropped; a single batch of all of them when there are fewer than ``size``."""
    return (count // size, size) if count >= size else (1, count)


class MixedBatchSampler(Sampler):
    """Batches of indices into a dataset holding ``n_real`` real images (indices ``0 .. n_real-1``) followed by
    ``n_pseudo`` pseudo-labelled ones (``n_real ..``), for one of ``num_replicas`` processes (DDP ``rank``).

    - A mixed epoch is one pass over the real images: they are shuffled and sharded exactly as
      ``DistributedSampler(shuffle=True, seed=seed, drop_last=False)`` does (it is used for them), and each batch
      holds ``batch_size - pseudo_per_batch`` of them and ``pseudo_per_batch`` pseudo images; the number of batches
      is therefore set by the real images (:func:`batch_shape`), the same on every rank. A rank holding fewer real
      images than a batch's real part (a ``--batch-size`` larger than the fold) makes one batch of all of them
      with pseudo images in the same share (``real x pseudo_per_batch / (batch_size - pseudo_per_batch)``,
      rounded half up, at least one): the batch is what the fold can fill, never thousands of repeats of the
      pseudo set.
    - The first ``pseudo_only_epochs`` epochs (the pretrain schedule, with ``pseudo_per_batch`` 0) are passes over
      the pseudo images alone, in batches of ``batch_size``; the later epochs are then the real images alone,
      exactly the batches train.py makes without pseudo-labels.
    - Pseudo images come from one stream: seeded permutations of the pseudo set, one after another, running on
      across epochs (every pseudo image is used once before any is used twice). Epoch ``e`` takes the stream's next
      ``batches x pseudo per batch x num_replicas`` positions, rank ``r`` every ``num_replicas``-th from ``r``: the
      ranks never draw the same position, so within an epoch they share no image unless the epoch's positions run
      from one permutation into the next (or the epoch needs more images than the pseudo set holds).

    Everything is a pure function of ``(seed, epoch)``: a resumed run (``set_epoch``) draws the same batches, and so
    does a run with any number of loader workers.
    """

    STREAM = 0x5053  # mixed into the pseudo stream's seeds, apart from every other seed of the run

    def __init__(self, n_real: int, n_pseudo: int, batch_size: int, pseudo_per_batch: int,
                 pseudo_only_epochs: int = 0, num_replicas: int = 1, rank: int = 0, seed: int = 0):
        if n_real < 1 or n_pseudo < 1:
            raise ValueError(f"need real and pseudo images, got {n_real} and {n_pseudo}")
        if not 0 <= pseudo_per_batch < batch_size:
            raise ValueError(f"{pseudo_per_batch} pseudo images in a batch of {batch_size}: at least one must be real")
        self.n_real, self.n_pseudo = n_real, n_pseudo
        self.batch_size, self.pseudo_per_batch = batch_size, pseudo_per_batch
        self.pseudo_only_epochs = pseudo_only_epochs
        self.num_replicas, self.rank, self.seed = num_replicas, rank, seed
        self.real = DistributedSampler(range(n_real), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed,
                                       drop_last=False)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def shape(self, epoch: int) -> tuple[int, int, int]:
        """(batches, real images per batch, pseudo images per batch) of ``epoch`` on each rank."""
        if epoch < self.pseudo_only_epochs:
            n, size = batch_shape(math.ceil(self.n_pseudo / self.num_replicas), self.batch_size)
            return n, 0, size
        k, count = self.pseudo_per_batch, len(self.real)
        if k == 0:  # real images alone: train.py's DataLoader (drop_last when a rank holds more than a batch)
            drop = self.n_real // self.num_replicas > self.batch_size
            return (count // self.batch_size if drop else math.ceil(count / self.batch_size)), self.batch_size, 0
        real = self.batch_size - k
        n, size = batch_shape(count, real)
        if size < real:  # a fold smaller than a batch: one batch of it, with pseudo images in the same share
            k = min(k, max(1, (2 * size * k + real) // (2 * real)))  # size * k / real, rounded half up
        return n, size, k

    def _drawn(self, epoch: int) -> int:
        """Pseudo images all ranks take from the stream in ``epoch``."""
        n, _, k = self.shape(epoch)
        return n * k * self.num_replicas

    def pseudo_indices(self, epoch: int) -> np.ndarray:
        """This rank's pseudo images of ``epoch`` (positions in the pseudo set), in batch order."""
        start = sum(self._drawn(e) for e in range(epoch))
        positions = start + self.rank + self.num_replicas * np.arange(self._drawn(epoch) // self.num_replicas)
        perm, offset = positions // self.n_pseudo, positions % self.n_pseudo
        out = np.empty(len(positions), np.int64)
        for j in np.unique(perm):
            rng = np.random.default_rng([self.seed & 0xFFFFFFFF, self.STREAM, int(j)])
            out[perm == j] = rng.permutation(self.n_pseudo)[offset[perm == j]]
        return out

    def __len__(self) -> int:
        return self.shape(self.epoch)[0]

    def __iter__(self):
        n, r, k = self.shape(self.epoch)
        real: list[int] = []
        if r:
            self.real.set_epoch(self.epoch)
            real = list(self.real)
        fake = (self.n_real + self.pseudo_indices(self.epoch)).tolist()
        for b in range(n):
            yield real[b * r:(b + 1) * r] + fake[b * k:(b + 1) * k]
