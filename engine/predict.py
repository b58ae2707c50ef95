"""Running a model on 101x101 images: the one code path for validation (train.py) and prediction (test.py).

A batch of uint8 images goes in at 101x101; :class:`tgs.inputs.InputSpec` pads or resizes it for the model, and
the model's outputs come back at 101x101. Flip TTA averages the probabilities of the image and of its horizontal
mirror (whose prediction is mirrored back).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from tgs.inputs import InputSpec

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, amp: str):
    dtype = AMP_DTYPES[amp]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass
class Prediction:
    probs: torch.Tensor  # (N, 1, 101, 101) float32, salt probability
    image_prob: torch.Tensor  # (N,) float32, probability from the image-level head
    outputs: dict  # the un-flipped forward's raw outputs at the model's resolution (for a loss)


def batches(arrays, batch_size: int, device: torch.device):
    """Consecutive slices of in-memory (N, 101, 101) arrays (uint8 images, bool masks) as (B, 1, 101, 101)
    tensors on ``device``, with the position of each batch: ``for first, (images, masks) in batches(...)``.
    No Dataset / DataLoader (nothing to do per image); pinned and non-blocking on CUDA."""
    import numpy as np

    pin = device.type == "cuda"
    for first in range(0, len(arrays[0]), batch_size):
        out = []
        for a in arrays:
            t = torch.from_numpy(np.ascontiguousarray(a[first:first + batch_size]))[:, None]
            out.append((t.pin_memory() if pin else t).to(device, non_blocking=pin))
        yield first, out


def forward(model, spec: InputSpec, images: torch.Tensor, *, tta: bool = False, amp: str = "none",
            channels_last: bool = False) -> Prediction:
    """``images`` (N, 1, 101, 101) uint8 or float [0, 1] on the model's device."""
    x = spec.encode_images(images)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(x.device, amp):
        out = model(x)
    logits = out["logits"].float()
    probs = torch.sigmoid(logits)
    image_prob = torch.sigmoid(out["image_logit"].float())
    if tta:
        with autocast(x.device, amp):
            flipped = model(torch.flip(x, dims=[3]))
        probs = 0.5 * (probs + torch.flip(torch.sigmoid(flipped["logits"].float()), dims=[3]))
        image_prob = 0.5 * (image_prob + torch.sigmoid(flipped["image_logit"].float()))
    return Prediction(spec.decode(probs), image_prob, out)


def crop_to_source(out: dict, spec: InputSpec) -> dict:
    """The model's output dict restricted to the original image's pixels (pad mode: the central 101x101)."""
    rows, cols = spec.centre()
    return {
        "logits": out["logits"][..., rows, cols],
        "aux": [a[..., rows, cols] for a in out.get("aux", [])],
        "image_logit": out["image_logit"],
    }
