r"""Lovasz hinge (Berman, Rannen Triki & Blaschko, CVPR 2018), per image, batched.

For one image with logits :math:`x \in \mathbb{R}^P` and labels :math:`y \in \{0, 1\}^P`:

- signs :math:`s = 2y - 1`, hinge errors :math:`e = 1 - x \odot s`;
- sort the errors in decreasing order, :math:`\pi` the permutation, :math:`g = y_\pi` the sorted labels;
- Jaccard loss of the top-:math:`i` prediction, with :math:`G = \sum g`, :math:`\mathrm{pos}_i = \sum_{j \le i} g_j`,
  :math:`\mathrm{neg}_i = i - \mathrm{pos}_i`:
  :math:`J_i = 1 - (G - \mathrm{pos}_i) / (G + \mathrm{neg}_i)`;
- the Lovasz gradient (the extension's weights) :math:`\delta_1 = J_1`, :math:`\delta_i = J_i - J_{i-1}`;
- loss :math:`= \sum_i f(e_{\pi(i)})\,\delta_i` with :math:`f(e) = \mathrm{elu}(e) + 1` (the smooth hinge used by
  the 1st, 9th and 14th places; ``activation="relu"`` gives Berman's original :math:`f = \mathrm{relu}`).

The weights :math:`\delta` are constants for autograd (the extension is piecewise linear in :math:`f(e)`).

Empty truth (:math:`G = 0`): :math:`J_i = 1` for every :math:`i`, so :math:`\delta = (1, 0, \dots, 0)` and the loss
is :math:`f(\max_i e_i)`: only the most confident false positive is pushed down. This is exactly what Berman's
``lovasz_hinge_flat`` does, and it is kept here. Full truth is not special.

Batched implementation, no Python loop over images: one argsort of the (N, P) errors along the pixel dimension
(:func:`argsort_descending`: ``torch.argsort`` on CUDA, numpy's SIMD argsort on the CPU, several times faster
than ``torch.sort`` there), one ``gather`` of the labels, one cumulative sum along the sorted dimension, and one
``scatter`` of :math:`\delta` back to pixel order, all without autograd; then
``loss_n = sum_p f(e_np) * w_np``, which has the same value and the same gradient as the dot product in sorted
order (each pixel's weight is the :math:`\delta` of its rank), while the backward pass is elementwise (no
scatter through the sort). Ties between errors may be ordered differently from a per-image ``torch.sort``; the
value does not depend on their order (the weights of a run of tied errors always sum to the same Jaccard
difference), only the choice of subgradient does.

Symmetric Lovasz :math:`(L(x, y) + L(-x, 1 - y)) / 2`: the second term has signs :math:`-s` and logits
:math:`-x`, hence the *same* errors :math:`e`; only the labels are complemented. Both terms therefore share the
sort, and :math:`\delta^{sym} = (\delta(g) + \delta(1 - g)) / 2` is computed from the same cumulative sums.

"Ignore empty" (for deep supervision): images whose truth is empty are left out and the mean is taken over the
non-empty images only. When every image of the batch is empty the result is 0, still attached to the graph
(its gradient is 0 everywhere, never NaN).

Everything runs in float32 (float64 inputs stay float64), with autocast disabled.
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from losses._common import final_logits, flatten_pair, float32_region
from losses.base import LOSSES, Criterion

ACTIVATIONS = ("elu", "relu")


def _first_difference(jaccard: torch.Tensor) -> torch.Tensor:
    """:math:`\\delta_1 = J_1`, :math:`\\delta_i = J_i - J_{i-1}` along the last dimension (one pass, no concat)."""
    delta = torch.empty_like(jaccard)
    delta[..., :1] = jaccard[..., :1]
    torch.sub(jaccard[..., 1:], jaccard[..., :-1], out=delta[..., 1:])
    return delta


def lovasz_grad(gt_sorted: torch.Tensor, symmetric: bool = False) -> torch.Tensor:
    r"""Lovasz gradient of the Jaccard loss for labels sorted by decreasing error, batched along dim -1.

    ``gt_sorted``: (..., P) float 0/1. Returns (..., P). Uses :math:`J_i = i / (G + i - \mathrm{pos}_i)` (the
    module docstring's formula with :math:`\mathrm{pos}_i + \mathrm{neg}_i = i`): one cumulative sum, and the
    denominator is >= 1 at every rank, so there is never a division by 0.

    With ``symmetric=True`` returns the mean of the gradients for ``gt_sorted`` and ``1 - gt_sorted``; for the
    complement :math:`G' = P - G` and :math:`\mathrm{pos}'_i = i - \mathrm{pos}_i`, so
    :math:`J'_i = i / (P - G + \mathrm{pos}_i)`, from the same cumulative sum. The first difference is linear, so
    the two curves are averaged before differencing.
    """
    p = gt_sorted.shape[-1]
    total_pos = gt_sorted.sum(-1, keepdim=True)
    cum_pos = gt_sorted.cumsum(-1)
    rank = torch.arange(1, p + 1, dtype=gt_sorted.dtype, device=gt_sorted.device)
    jaccard = rank / (total_pos + rank).sub_(cum_pos)
    if symmetric:
        jaccard_c = rank / (cum_pos + (p - total_pos))
        jaccard = jaccard.add_(jaccard_c).mul_(0.5)
    return _first_difference(jaccard)


def _activation(errors: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "elu":
        return F.elu(errors) + 1.0
    if activation == "relu":
        return F.relu(errors)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


SORT_BACKENDS = ("auto", "torch", "numpy")


def argsort_descending(values: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Indices sorting each row of ``values`` (N, P) in decreasing order, int64, on ``values``' device.

    ``"torch"``: ``torch.argsort(descending=True)``. ``"numpy"`` (CPU only): ``np.argsort`` of the negated
    values, which uses the SIMD sorts of numpy >= 2 (x86-simd-sort) and is several times faster than
    ``torch.sort`` on the CPU (see bench/bench_lovasz.py). ``"auto"``: numpy for float32/float64 CPU tensors that
    numpy can read, torch otherwise (CUDA, half types, tensors under a functorch transform or ``torch.compile``
    tracing). Ties may be ordered differently by the two; the Lovasz value does not depend on the order of ties.
    """
    if backend not in SORT_BACKENDS:
        raise ValueError(f"sort backend must be one of {SORT_BACKENDS}, got {backend!r}")
    if backend == "numpy" and values.device.type != "cpu":
        raise ValueError("the numpy sort backend needs a CPU tensor")
    use_numpy = backend == "numpy" or (
        backend == "auto" and values.device.type == "cpu" and values.dtype in (torch.float32, torch.float64)
    )
    if use_numpy:
        source = values.detach()
        if source.dtype not in (torch.float32, torch.float64):
            source = source.float()  # numpy has no bfloat16; the order is unchanged
        try:
            array = source.numpy()
        except (RuntimeError, TypeError):  # not a plain tensor (functorch, tracing): torch's sort
            if backend == "numpy":
                raise
        else:
            return torch.from_numpy(np.argsort(np.negative(array), axis=-1).astype(np.int64, copy=False))
    return torch.argsort(values, dim=-1, descending=True)


def lovasz_hinge_per_image(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    symmetric: bool = False,
    activation: str = "elu",
    sort_backend: str = "auto",
) -> torch.Tensor:
    """Per-image Lovasz hinge: (N, 1, H, W) logits and 0/1 target -> (N,) losses (float32 or float64).

    ``sort_backend``: see :func:`argsort_descending`.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    with float32_region(logits.device):
        x, y = flatten_pair(logits, target)
        with torch.no_grad():
            signs = torch.mul(y, 2.0).sub_(1.0)
        errors = 1.0 - x * signs
        with torch.no_grad():
            perm = argsort_descending(errors, sort_backend)
            delta = lovasz_grad(y.gather(1, perm), symmetric=symmetric)
            weights = torch.empty_like(delta).scatter_(1, perm, delta)  # delta of each pixel's rank
        return (_activation(errors, activation) * weights).sum(1)


def has_salt(target: torch.Tensor) -> torch.Tensor:
    """(N,) bool: True where the image's mask has at least one non-zero pixel."""
    return target.flatten(1).ne(0).any(1)


def lovasz_hinge(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    symmetric: bool = False,
    ignore_empty: bool = False,
    activation: str = "elu",
    sort_backend: str = "auto",
) -> torch.Tensor:
    """Mean per-image Lovasz hinge (see the module docstring), a scalar.

    ``ignore_empty``: average over the images with non-empty truth only; 0 (with a zero gradient) when there is
    none. An empty batch (N = 0) also gives 0.
    """
    losses = lovasz_hinge_per_image(
        logits, target, symmetric=symmetric, activation=activation, sort_backend=sort_backend
    )
    return masked_mean(losses, has_salt(target) if ignore_empty else None)


def masked_mean(losses: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of the per-image ``losses`` (..., N) over the last dim, over the images where ``keep`` only.

    With no image kept (or N = 0) the result is 0, attached to the graph, with a zero gradient.
    """
    if keep is None:
        keep = torch.ones(losses.shape[-1], dtype=torch.bool, device=losses.device)
    kept = torch.where(keep, losses, torch.zeros_like(losses))
    return kept.sum(-1) / keep.sum().clamp(min=1).to(losses.dtype)


def symmetric_lovasz(logits: torch.Tensor, target: torch.Tensor, *, ignore_empty: bool = False) -> torch.Tensor:
    """:math:`(L(x, y) + L(-x, 1 - y)) / 2` with the elu+1 hinge, mean over images (non-empty ones if asked)."""
    return lovasz_hinge(logits, target, symmetric=True, ignore_empty=ignore_empty)


class LovaszHinge(Criterion):
    """Mean per-image Lovasz hinge on the final logits (``out`` or ``out["logits"]``).

    ``symmetric``: :math:`(L(x, y) + L(-x, 1-y)) / 2`; ``ignore_empty``: mean over non-empty images only (0 when
    all are empty); ``activation``: ``"elu"`` (elu(e)+1, default) or ``"relu"`` (Berman's original).
    """

    def __init__(self, symmetric: bool = False, ignore_empty: bool = False, activation: str = "elu") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.symmetric = symmetric
        self.ignore_empty = ignore_empty
        self.activation = activation

    def components(self, out: Any, target: torch.Tensor) -> dict[str, torch.Tensor]:
        loss = lovasz_hinge(
            final_logits(out),
            target,
            symmetric=self.symmetric,
            ignore_empty=self.ignore_empty,
            activation=self.activation,
        )
        return {"loss": loss}

    def extra_repr(self) -> str:
        return f"symmetric={self.symmetric}, ignore_empty={self.ignore_empty}, activation={self.activation!r}"


def _register_variants() -> None:
    takes = ("activation",)
    LOSSES.add("lovasz", LovaszHinge, help="per-image Lovasz hinge, elu+1", takes=takes, options=())
    LOSSES.add("symmetric_lovasz", functools.partial(LovaszHinge, symmetric=True), takes=takes, options=(),
               help="(L(x, y) + L(-x, 1-y)) / 2")
    LOSSES.add("lovasz_ignore_empty", functools.partial(LovaszHinge, ignore_empty=True), takes=takes, options=(),
               help="Lovasz hinge, mean over non-empty images only")
    LOSSES.add("symmetric_lovasz_ignore_empty", functools.partial(LovaszHinge, symmetric=True, ignore_empty=True),
               takes=takes, options=(), help="symmetric Lovasz, mean over non-empty images only")


_register_variants()
