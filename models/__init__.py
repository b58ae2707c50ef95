"""Models of the TGS salt pipeline: one UNet factory, one checkpoint format.

Public API::

    build_model(config=None, **overrides) -> SaltUNet      # ModelConfig, dict or keyword arguments
    ModelConfig(...)      # to_dict() / from_dict(); defaults = 9th-place recipe
    list_encoders(pattern="*") -> list[str]                 # unet, unet_nopool, recipe aliases, timm models
    save_checkpoint(path, model, input_spec, meta=None, extra=None) -> Path   # atomic
    read_checkpoint(path) -> dict                           # validated raw dict (resume state under "extra")
    load(path, device="cpu") -> Loaded(model, input_spec, config, meta, extra)   # model in eval mode

``model(x)`` takes (N, 1, H, W) float in [0, 1] (H, W multiples of ``model.size_divisor``, 32 for usual
encoders) and returns ``{"logits": (N, 1, H, W), "aux": [(N, 1, H, W), ...], "image_logit": (N,)}``.
"""
import tgs.compat  # noqa: F401  (must run before the first timm / torchvision import)

from .blocks import SCSE, SKIP_MODES, DecoderBlock, OCBlock, SelfAttention2d
from .checkpoint import (
                         FORMAT,
                         FORMAT_VERSION,
                         Loaded,
                         load,
                         model_from_checkpoint,
                         read_checkpoint,
                         save_checkpoint,
                         unwrap_model,
)
from .config import ModelConfig
from .encoders import ALIASES, ENCODERS, SCRATCH_ENCODERS, TimmEncoder, UNetEncoder, list_encoders, resolve_encoder
from .pretrained import LoadReport, load_encoder_weights
from .unet import SaltUNet, build_model

__all__ = [
    "ALIASES", "ENCODERS", "FORMAT", "FORMAT_VERSION", "SCRATCH_ENCODERS", "SKIP_MODES",
    "DecoderBlock", "Loaded", "LoadReport", "ModelConfig", "OCBlock", "SCSE", "SaltUNet", "SelfAttention2d",
    "TimmEncoder", "UNetEncoder",
    "build_model", "list_encoders", "load", "load_encoder_weights", "model_from_checkpoint",
    "read_checkpoint",
    "resolve_encoder", "save_checkpoint", "unwrap_model",
]
