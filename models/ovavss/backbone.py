"""Image backbones of the segmentation network: the common interface and the builders.

Every backbone maps normalised images (N, 3, H, W), H and W multiples of 32, to a dict of four feature
maps `res2..res5` (NCHW, strides 4/8/16/32) and exposes `out_channels` and `out_strides`:

| builder                 | class                    | out_channels res2..res5 | parameters |
|-------------------------|--------------------------|-------------------------|------------|
| `build_resnet50()`      | ResNet (FrozenBN)        | 256 / 512 / 1024 / 2048 | 23,454,912 |
| `build_swin_base()`     | SwinTransformer (Swin-B) | 128 / 256 / 512 / 1024  | 86,880,376 |
| `build_tiny_backbone()` | ResNet (GroupNorm)       | 32 / 64 / 128 / 256     | 309,904    |

The model registers the backbone as `backbone`, so its keys appear as `backbone.<key>` in checkpoints.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from models.errors import AVSegError
from models.ovavss.resnet import ResNet, ResNetConfig
from models.ovavss.swin import SwinConfig, SwinTransformer

#: The tiny backbone: one bottleneck block per stage, bottleneck width = half the output width, GroupNorm.
TINY_RESNET = ResNetConfig(
    stem_channels=16,
    blocks_per_stage=(1, 1, 1, 1),
    bottleneck_channels=(16, 32, 64, 128),
    out_channels=(32, 64, 128, 256),
    norm="GN",
    gn_groups=8,
)


@runtime_checkable
class Backbone(Protocol):
    """What the rest of the network relies on (ResNet and SwinTransformer satisfy it).

    __call__: images (N, 3, H, W) float, H and W multiples of `size_divisibility` ->
    {"res2": (N, C2, H/4, W/4), "res3": (N, C3, H/8, W/8), "res4": (N, C4, H/16, W/16), "res5": (N, C5, H/32, W/32)}.
    """

    out_channels: dict[str, int]
    out_strides: dict[str, int]
    size_divisibility: int

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]: ...


def build_resnet50() -> ResNet:
    """ResNet-50 as detectron2 builds it for OV-AVSS (FrozenBN, stride in the 3x3, nothing frozen)."""
    return ResNet(ResNetConfig())


def build_swin_base() -> SwinTransformer:
    """Swin-B, window 12, drop path 0.3, as Mask2Former's D2SwinTransformer for the OV-AVSS Swin-B config."""
    return SwinTransformer(SwinConfig())


def build_tiny_backbone() -> ResNet:
    """A small ResNet (one block per stage, GroupNorm, 32/64/128/256 channels) for tests and CPU training."""
    return ResNet(TINY_RESNET)


BACKBONE_BUILDERS = {
    "r50": build_resnet50,
    "swinb": build_swin_base,
    "tiny": build_tiny_backbone,
}


def build_backbone(name: str) -> ResNet | SwinTransformer:
    """The backbone called `name`: "r50", "swinb" or "tiny"."""
    try:
        builder = BACKBONE_BUILDERS[name]
    except KeyError:
        raise AVSegError(f"unknown backbone {name!r}; expected one of {', '.join(BACKBONE_BUILDERS)}") from None
    return builder()
