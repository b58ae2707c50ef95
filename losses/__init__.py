"""Losses for TGS salt segmentation: batched per-image Lovasz hinge (elu+1, symmetric, ignore-empty), BCE, soft
Dice, weighted combinations, and the recipe's deep-supervised criterion.

Usage::

    from losses import build_loss
    criterion = build_loss("deep", image_weight=0.05, aux_weight=0.1, final_weight=1.0)
    loss = criterion(model_out, masks)        # scalar; model_out is the model's dict or a logits tensor
    criterion.last_parts                      # detached parts of that call, e.g. {"image_bce", ..., "loss"}
    criterion.components(model_out, masks)   # the same parts, attached to the graph

Every loss is computed in float32 (float64 inputs stay float64) with autocast disabled, and assumes nothing
about the map size.
"""
from losses.base import LOSSES, Criterion, register_loss
from losses.basic import BCE, SoftDice, bce_loss, soft_dice_loss
from losses.deep import DeepSupervisionLoss
from losses.factory import WeightedSum, build_loss, parse_spec
from losses.focal import FocalLoss, focal_loss
from losses.lovasz import (
    LovaszHinge,
    argsort_descending,
    has_salt,
    lovasz_grad,
    lovasz_hinge,
    lovasz_hinge_per_image,
    masked_mean,
    symmetric_lovasz,
)

__all__ = [
    "BCE",
    "Criterion",
    "DeepSupervisionLoss",
    "FocalLoss",
    "LOSSES",
    "LovaszHinge",
    "SoftDice",
    "WeightedSum",
    "argsort_descending",
    "bce_loss",
    "build_loss",
    "focal_loss",
    "has_salt",
    "lovasz_grad",
    "lovasz_hinge",
    "lovasz_hinge_per_image",
    "masked_mean",
    "parse_spec",
    "register_loss",
    "soft_dice_loss",
    "symmetric_lovasz",
]
