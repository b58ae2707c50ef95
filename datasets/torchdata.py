"""PyTorch datasets over in-memory arrays.

Samples come out at the original 101x101 as ``(image uint8 (1, 101, 101), mask bool (1, 101, 101), index)``;
the batch is padded or resized to the model's input on the device by :class:`tgs.inputs.InputSpec`.

Augmentation randomness is a pure function of ``(seed, epoch, index)``: every sample re-seeds the transform, so a
run gives the same batches whatever the number of loader workers, and a resumed run continues exactly.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


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
