r"""The recipe's deep-supervised criterion.

With the model's output dict ``out`` (``"logits"`` (N, 1, H, W), ``"aux"`` a list of (N, 1, H, W) pixel logits,
``"image_logit"`` (N,)) and the masks ``y`` (N, 1, H, W):

.. math::

    \mathcal{L} = w_{img}\,\mathrm{BCE}(\mathrm{image\_logit}, [\textstyle\sum y_n > 0])
                + w_{aux} \sum_{a \in \mathrm{aux}} \mathrm{SymLovasz}_{\neg\emptyset}(a, y)
                + w_{fin}\,\mathrm{SymLovasz}(\mathrm{logits}, y)

with :math:`w_{img} = 0.05`, :math:`w_{aux} = 0.1`, :math:`w_{fin} = 1` by default. ``SymLovasz`` is the
symmetric elu+1 Lovasz hinge, mean over images; the subscript :math:`\neg\emptyset` means "mean over the images
with non-empty truth only, 0 if there is none" (an empty mask carries no information for a segmentation-only
head, the image head learns emptiness). The has-salt target of the image BCE is computed from the mask given
here (so from the central crop when train.py crops to 101x101 first).

The final map and every aux map share one batched sort: they are stacked into one (K+1)N x P problem.

``components`` returns the unweighted parts ``image_bce``, ``aux_lovasz`` (the sum over the aux maps),
``final_lovasz``, and the weighted total ``loss``.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from losses._common import as_float, check_pair, float32_region
from losses.base import Criterion, register_loss
from losses.basic import bce_loss
from losses.lovasz import has_salt, lovasz_hinge_per_image, masked_mean
from tgs.options import Declared, Option


@register_loss(
    "deep", help="0.05*BCE(image) + 0.1*sum SymLovasz_nonempty(aux) + 1*SymLovasz(final)", options=(
        Declared("image_loss_weight", 0.05, Option("float", "deep: weight of the image-level BCE", low=0.0),
                 "image_weight"),
        Declared("aux_loss_weight", 0.1, Option("float", "deep: weight of each deep-supervision Lovasz", low=0.0),
                 "aux_weight"),
        Declared("final_loss_weight", 1.0, Option("float", "deep: weight of the final Lovasz", low=0.0),
                 "final_weight")))
class DeepSupervisionLoss(Criterion):
    """``image_weight * BCE(image) + aux_weight * sum(SymLovasz_nonempty(aux)) + final_weight * SymLovasz(final)``.

    ``out`` must be the model's dict. A missing or empty ``"aux"`` contributes 0; a missing ``"image_logit"``
    is an error unless ``image_weight`` is 0. Weights must be finite and >= 0.
    """

    def __init__(self, image_weight: float = 0.05, aux_weight: float = 0.1, final_weight: float = 1.0) -> None:
        super().__init__()
        for name, w in (("image_weight", image_weight), ("aux_weight", aux_weight), ("final_weight", final_weight)):
            if not (isinstance(w, (int, float)) and 0.0 <= float(w) < float("inf")):
                raise ValueError(f"{name} must be a finite number >= 0, got {w!r}")
        if image_weight == aux_weight == final_weight == 0:
            raise ValueError("the deep loss's three weights are all 0 (nothing would be learned)")
        self.image_weight = float(image_weight)
        self.aux_weight = float(aux_weight)
        self.final_weight = float(final_weight)

    def components(self, out: Any, target: torch.Tensor) -> dict[str, torch.Tensor]:
        if not isinstance(out, Mapping) or "logits" not in out:
            raise TypeError(
                "the deep-supervision loss needs the model's output dict with 'logits', 'aux', 'image_logit'"
            )
        logits = out["logits"]
        aux = list(out.get("aux") or [])
        maps = [logits] + aux
        for m in maps:
            check_pair(m, target)
        n = logits.shape[0]
        with float32_region(logits.device):
            if all(m.shape == logits.shape for m in maps):  # one sort for every map
                x = torch.cat([as_float(m).flatten(1) for m in maps], 0)
                y = as_float(target).flatten(1).repeat(len(maps), 1)
                per_image = lovasz_hinge_per_image(x, y, symmetric=True).view(len(maps), n)
            else:
                per_image = torch.stack([lovasz_hinge_per_image(m, target, symmetric=True) for m in maps])
            final = per_image[0].mean() if n else per_image[0].sum()
            if aux:
                aux_sum = masked_mean(per_image[1:], has_salt(target)).sum()
            else:
                aux_sum = per_image.new_zeros(())
            image_logit = out.get("image_logit")
            if image_logit is not None:
                image = bce_loss(image_logit.reshape(-1), has_salt(target).to(per_image.dtype))
            elif self.image_weight == 0.0:
                image = per_image.new_zeros(())
            else:
                raise ValueError("model output has no 'image_logit' but image_weight is not 0")
        loss = self.image_weight * image + self.aux_weight * aux_sum + self.final_weight * final
        return {"image_bce": image, "aux_lovasz": aux_sum, "final_lovasz": final, "loss": loss}

    def extra_repr(self) -> str:
        return f"image_weight={self.image_weight}, aux_weight={self.aux_weight}, final_weight={self.final_weight}"
