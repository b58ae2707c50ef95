"""The 9th-place recipe's augmentations (albumentations), applied to 101x101 uint8 images and bool masks.

- cutout: one hole of up to 30x30 px, p=0.5, filled with the training set's mean intensity (mask unchanged);
- horizontal flip, p=0.5;
- each geometric op at p=0.125, borders reflect-101: random crop-and-rescale of up to 20%, horizontal shear up to
  0.07 (about 4 degrees), rotation up to 15 degrees, grid distortion up to 0.15;
- each photometric op at p=0.165: brightness shift +-0.1 (of 255), brightness scale +-8%, gamma +-8%.

Augmentation happens at the original 101x101; padding or resizing to the model's size is done afterwards, on the
batch, by :class:`tgs.inputs.InputSpec` (the one place that knows how an image enters a model).
"""
from __future__ import annotations

import albumentations as A  # noqa: E402
import cv2
import numpy as np

import tgs.compat  # noqa: F401  (sets NO_ALBUMENTATIONS_UPDATE, defines torchvision's schemas)
from tgs import TILE as SIZE

GEOMETRIC_P = 0.125
PHOTOMETRIC_P = 0.165
REFLECT = cv2.BORDER_REFLECT_101


def recipe(mean: float = 120.0, cutout: bool = True, size: int = SIZE) -> A.Compose:
    """The training augmentation; ``mean`` (0..255) fills the cutout hole."""
    ops = []
    if cutout:
        ops.append(A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(1, 30), hole_width_range=(1, 30),
                                   fill=float(mean), fill_mask=None, p=0.5))
    ops += [
        A.HorizontalFlip(p=0.5),
        A.RandomSizedCrop(min_max_height=(int(round(0.8 * size)), size), size=(size, size), p=GEOMETRIC_P),
        A.Affine(shear={"x": (-4.0, 4.0), "y": (0.0, 0.0)}, border_mode=REFLECT, p=GEOMETRIC_P),
        A.Rotate(limit=15, border_mode=REFLECT, p=GEOMETRIC_P),
        A.GridDistortion(distort_limit=0.15, border_mode=REFLECT, p=GEOMETRIC_P),
        A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.0, p=PHOTOMETRIC_P),
        A.RandomBrightnessContrast(brightness_limit=0.0, contrast_limit=0.08, p=PHOTOMETRIC_P),
        A.RandomGamma(gamma_limit=(92, 108), p=PHOTOMETRIC_P),
    ]
    return A.Compose(ops, seed=None)


def apply(transform: A.Compose, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One image (H, W) uint8 and mask (H, W) bool through ``transform``; same shapes and dtypes out."""
    out = transform(image=image, mask=mask.astype(np.uint8))
    return out["image"], out["mask"] > 0
