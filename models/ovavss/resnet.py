"""ResNet backbone laid out like detectron2's `build_resnet_backbone` (the OV-AVSS R50 config).

Bottleneck ResNet with the stride in the 3x3 conv (`STRIDE_IN_1X1 = False`), convs without bias, each conv
owning its norm layer as `<conv>.norm`, and a projection shortcut on the first block of a stage. The
state-dict keys are detectron2's:

    stem.conv1.weight, stem.conv1.norm.{weight,bias,running_mean,running_var}
    res{2..5}.{k}.conv{1,2,3}.weight (+ .norm.*), res{s}.0.shortcut.weight (+ .norm.*)

`ResNetConfig()` is ResNet-50 with FrozenBN (23,454,912 parameters, all in convs); `build_tiny_backbone`
uses the same classes with one narrow block per stage and GroupNorm so that it trains from scratch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.ovavss.conv import Conv2dNorm
from models.ovavss.frozen_bn import FrozenBatchNorm2d

STAGE_NAMES = ("res2", "res3", "res4", "res5")
NORMS = ("FrozenBN", "GN")


@dataclass(frozen=True)
class ResNetConfig:
    """Shape of a bottleneck ResNet. Defaults = detectron2 ResNet-50 as used by OV-AVSS.

    Attributes:
        stem_channels: output channels of the 7x7 stem conv.
        blocks_per_stage: bottleneck blocks in res2..res5.
        bottleneck_channels: width of the 1x1/3x3 convs inside the blocks of res2..res5.
        out_channels: output channels of res2..res5.
        norm: "FrozenBN" (fixed statistics, detectron2 default) or "GN" (GroupNorm, trainable).
        gn_groups: number of GroupNorm groups (used only with norm="GN"; must divide every width).
    """

    stem_channels: int = 64
    blocks_per_stage: tuple[int, int, int, int] = (3, 4, 6, 3)
    bottleneck_channels: tuple[int, int, int, int] = (64, 128, 256, 512)
    out_channels: tuple[int, int, int, int] = (256, 512, 1024, 2048)
    norm: str = "FrozenBN"
    gn_groups: int = 32

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"ResNetConfig.norm must be one of {NORMS}, got {self.norm!r}")
        for name in ("blocks_per_stage", "bottleneck_channels", "out_channels"):
            if len(getattr(self, name)) != 4:
                raise ValueError(f"ResNetConfig.{name} needs 4 values (res2..res5), got {getattr(self, name)}")


def make_norm(norm: str, channels: int, gn_groups: int = 32) -> nn.Module:
    """The norm layer that follows a conv: FrozenBatchNorm2d(eps 1e-5) or GroupNorm(gn_groups, channels)."""
    if norm == "FrozenBN":
        return FrozenBatchNorm2d(channels)
    if norm == "GN":
        return nn.GroupNorm(gn_groups, channels)
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")


def _msra_init(conv: nn.Conv2d) -> None:
    """detectron2's c2_msra_fill: Kaiming normal (fan_out, ReLU gain), zero bias."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class BasicStem(nn.Module):
    """conv 7x7/2 (pad 3, no bias) + norm + ReLU + max-pool 3x3/2 (pad 1): (N, 3, H, W) -> (N, C, H/4, W/4)."""

    def __init__(self, in_channels: int = 3, out_channels: int = 64, norm: str = "FrozenBN",
                 gn_groups: int = 32) -> None:
        super().__init__()
        self.conv1 = Conv2dNorm(in_channels, out_channels, 7, stride=2, padding=3, bias=False,
                                norm=make_norm(norm, out_channels, gn_groups))
        _msra_init(self.conv1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu_(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class BottleneckBlock(nn.Module):
    """1x1 -> 3x3 (stride here) -> 1x1, each with norm, ReLU between; residual add; ReLU.

    The shortcut is a strided 1x1 conv + norm when the channels or the resolution change, else identity.
    forward: (N, in_channels, H, W) -> (N, out_channels, H / stride, W / stride).
    """

    def __init__(self, in_channels: int, out_channels: int, bottleneck_channels: int, stride: int = 1,
                 norm: str = "FrozenBN", gn_groups: int = 32) -> None:
        super().__init__()
        if in_channels != out_channels or stride != 1:
            self.shortcut = Conv2dNorm(in_channels, out_channels, 1, stride=stride, bias=False,
                                         norm=make_norm(norm, out_channels, gn_groups))
        else:
            self.shortcut = None
        self.conv1 = Conv2dNorm(in_channels, bottleneck_channels, 1, bias=False,
                                norm=make_norm(norm, bottleneck_channels, gn_groups))
        self.conv2 = Conv2dNorm(bottleneck_channels, bottleneck_channels, 3, stride=stride, padding=1, bias=False,
                                norm=make_norm(norm, bottleneck_channels, gn_groups))
        self.conv3 = Conv2dNorm(bottleneck_channels, out_channels, 1, bias=False,
                                norm=make_norm(norm, out_channels, gn_groups))
        for conv in (self.conv1, self.conv2, self.conv3, self.shortcut):
            if conv is not None:
                _msra_init(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu_(out.add_(identity))


class ResNet(nn.Module):
    """Bottleneck ResNet returning the four stage outputs.

    forward: images (N, 3, H, W) float (normalised pixels) -> {"res2": (N, C2, H/4, W/4), "res3": (N, C3,
    H/8, W/8), "res4": (N, C4, H/16, W/16), "res5": (N, C5, H/32, W/32)} (sizes rounded up for odd inputs;
    the model feeds multiples of 32). Keeps the input's memory format: a channels_last model and input
    give channels_last features.

    Attributes:
        out_channels: {"res2": C2, ..., "res5": C5}.
        out_strides: {"res2": 4, "res3": 8, "res4": 16, "res5": 32}.
        size_divisibility: 32.
    """

    size_divisibility = 32

    def __init__(self, config: ResNetConfig = ResNetConfig()) -> None:
        super().__init__()
        self.config = config
        self.stem = BasicStem(3, config.stem_channels, config.norm, config.gn_groups)
        in_channels = config.stem_channels
        self.out_channels: dict[str, int] = {}
        self.out_strides: dict[str, int] = {}
        for index, name in enumerate(STAGE_NAMES):
            first_stride = 1 if index == 0 else 2
            blocks = []
            for k in range(config.blocks_per_stage[index]):
                blocks.append(BottleneckBlock(
                    in_channels, config.out_channels[index], config.bottleneck_channels[index],
                    stride=first_stride if k == 0 else 1, norm=config.norm, gn_groups=config.gn_groups))
                in_channels = config.out_channels[index]
            self.add_module(name, nn.Sequential(*blocks))
            self.out_channels[name] = config.out_channels[index]
            self.out_strides[name] = 4 * 2**index

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"ResNet expects images of shape (N, 3, H, W), got {tuple(images.shape)}")
        x = self.stem(images)
        features: dict[str, torch.Tensor] = {}
        for name in STAGE_NAMES:
            x = getattr(self, name)(x)
            features[name] = x
        return features


@torch.no_grad()
def fold_frozen_batchnorm_(module: nn.Module) -> nn.Module:
    """Fold every FrozenBN into the conv it follows (in place), for faster inference; returns `module`.

    Each `Conv2dNorm` with a FrozenBatchNorm2d gets weight * scale and bias shift (+ bias * scale) and loses
    its `norm`, removing one elementwise pass per conv (about 17 % of ResNet-50 CPU time). The state-dict
    keys change (`.norm.*` gone, `.bias` added), so load checkpoints *before* folding. GroupNorm is untouched.
    """
    for conv in list(module.modules()):
        if isinstance(conv, Conv2dNorm) and isinstance(conv.norm, FrozenBatchNorm2d):
            scale, shift = conv.norm.scale_and_shift()
            trainable = conv.weight.requires_grad
            weight = conv.weight.detach() * scale.reshape(-1, 1, 1, 1).to(conv.weight.dtype)  # keeps memory format
            bias = shift if conv.bias is None else conv.bias.detach() * scale + shift
            conv.weight = nn.Parameter(weight, requires_grad=trainable)
            conv.bias = nn.Parameter(bias.to(weight.dtype), requires_grad=trainable)
            conv.norm = None
    return module

