"""Fewer passes over memory in the frozen CLIP image tower under autocast (inference only, same function).

The official protocol sends every valid (query, frame) crop through CLIP's image tower (~350 crops per r50 clip
with ViT-B/16); there the tower is bound by memory traffic, not by its matrix products. Counted per r50 clip in
float32 (`benchmarks/RESULTS.md`), the OpenAI models' QuickGELU, `x * sigmoid(1.702 * x)`, is three elementwise
passes over the (crops, tokens, 4 x width) MLP activation: 72 of the tower's 137 GB. Two rewrites, applied by
`fuse_image_tower` to the image tower when the predictor stores its autocast weights in the amp dtype
(`PredictorOptions.amp_weights`):

- **QuickGELU as one SiLU.** `x * sigmoid(1.702 x) = silu(1.702 x) / 1.702`, so with `c_fc` (weight and bias)
  scaled by 1.702 and `c_proj`'s weight by 1 / 1.702 the MLP computes the same function with one elementwise
  kernel (`QuickGELUAsSiLU`). The scaling is done in float32, before any cast to the amp dtype; the only change
  is the rounding of the scaled weights (in float32 5.7e-7 relative on the embeddings of a random ViT-B/16; in
  bfloat16 the embeddings' error against float32 is the same as without the fold, 0.92% against 0.93%).
- **Layer norms in the amp dtype** (`AmpLayerNorm`, as timm's `fast_norm` and MosaicML's `LPLayerNorm`). CUDA
  autocast runs `layer_norm` in float32: a half-precision input is copied to float32, normalised, and open_clip
  casts the result back, three kernels and two extra passes. The fused kernel already accumulates its
  statistics in float32 for half-precision inputs, so it is called directly on the amp dtype.

The text tower (class-name embeddings, cached on disk) is not touched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

QUICK_GELU_SCALE = 1.702
"""The sigmoid's input scale in OpenAI CLIP's QuickGELU."""


class QuickGELUAsSiLU(nn.SiLU):
    """`silu(x)`: stands in for QuickGELU in an MLP whose `c_fc` was scaled by 1.702 and `c_proj` by 1 / 1.702."""


class AmpLayerNorm(nn.LayerNorm):
    """Layer norm in its input's dtype, also under autocast (whose float32 upcast it skips).

    Args (forward):
        x: (..., C) in any float dtype; the weight and bias are used in that dtype.

    Returns:
        (..., C) in x's dtype. Outside autocast and for float32 inputs, exactly `nn.LayerNorm`.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.to(x.dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        with torch.autocast(x.device.type, enabled=False):
            return F.layer_norm(x, self.normalized_shape, weight, bias, self.eps)


def _is_quick_gelu(module: nn.Module) -> bool:
    return type(module).__name__ == "QuickGELU"  # open_clip.transformer.QuickGELU (and OpenAI clip's)


@torch.no_grad()
def fold_quick_gelu(mlp: nn.Module) -> bool:
    """Turn an open_clip MLP (`c_fc`, `gelu`, `c_proj`) with QuickGELU into the same function with one SiLU.

    Returns True when it folded, False when there was nothing to fold (another activation, or already folded).
    """
    if not _is_quick_gelu(getattr(mlp, "gelu", None)):
        return False
    for param, factor in ((mlp.c_fc.weight, QUICK_GELU_SCALE), (mlp.c_fc.bias, QUICK_GELU_SCALE),
                          (mlp.c_proj.weight, 1.0 / QUICK_GELU_SCALE)):
        if param is not None:
            param.copy_((param.double() * factor).to(param.dtype))
    mlp.gelu = QuickGELUAsSiLU()
    return True


def amp_layer_norm(norm: nn.LayerNorm) -> AmpLayerNorm:
    """An `AmpLayerNorm` sharing `norm`'s parameters."""
    replacement = AmpLayerNorm(norm.normalized_shape, eps=norm.eps, elementwise_affine=False)
    replacement.weight, replacement.bias = norm.weight, norm.bias
    return replacement


def fuse_image_tower(visual: nn.Module) -> dict[str, int]:
    """Apply both rewrites (module docstring) to a CLIP image tower in place; calling it again changes nothing.

    Args:
        visual: an open_clip `VisionTransformer` (`clip.visual`); other towers are left as they are except for
            their layer norms.

    Returns:
        {"mlps": MLPs folded, "layer_norms": layer norms replaced} by this call.
    """
    folded = sum(fold_quick_gelu(module) for module in list(visual.modules()) if hasattr(module, "c_fc"))
    replaced = 0
    for parent in list(visual.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.LayerNorm) and not isinstance(child, AmpLayerNorm):
                setattr(parent, name, amp_layer_norm(child))
                replaced += 1
    return {"mlps": folded, "layer_norms": replaced}
