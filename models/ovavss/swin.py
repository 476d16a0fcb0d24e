"""Swin Transformer backbone laid out like Mask2Former's `D2SwinTransformer` (the OV-AVSS Swin-B config).

Behaviour that matters for reproducing the released Swin-B model (spec section 2.2):
- patch embedding: conv 4x4/4 with bias + LayerNorm; no absolute position embedding;
- in every block the LayerNorm-ed map is zero-padded at bottom/right to a multiple of the window, *then*
  cyclically shifted (odd blocks, shift = window // 2), attended window by window with a learned relative
  position bias and, in shifted blocks, the -100 mask between regions that were not neighbours; then
  shifted back and cropped. Padded tokens take part in attention (they are not masked), and the shift is
  applied even when a stage is no larger than one window;
- patch merging: concat of x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2] -> LayerNorm(4C) ->
  Linear(4C -> 2C, no bias), odd sizes padded by one row/column first;
- outputs: stage outputs before merging, each through its own LayerNorm `norm{i}`, as NCHW.

Keys: `patch_embed.proj.*`, `patch_embed.norm.*`, `layers.{l}.blocks.{k}.{norm1, attn.relative_position_bias_table,
attn.relative_position_index, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}.*`, `layers.{0-2}.downsample.{reduction,
norm}.*`, `norm{0-3}.*`. Swin-B has 86,880,376 parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from models.ovavss.device_constants import DeviceConstants, ModuleWithConstants

STAGE_NAMES = ("res2", "res3", "res4", "res5")


@dataclass(frozen=True)
class SwinConfig:
    """Shape of a Swin Transformer. Defaults = Swin-B, window 12 (Mask2Former / OV-AVSS config).

    Attributes:
        patch_size: side of the square patches of the patch embedding (stride of res2 = patch_size).
        embed_dim: channels of stage 1; stage i has embed_dim * 2**i.
        depths: blocks per stage.
        num_heads: attention heads per stage.
        window_size: side of the square attention windows.
        mlp_ratio: hidden width of the MLP relative to the stage width.
        qkv_bias: whether the qkv projection has a bias.
        drop_path_rate: stochastic depth of the last block; rates grow linearly from 0 over all blocks.
    """

    patch_size: int = 4
    embed_dim: int = 128
    depths: tuple[int, int, int, int] = (2, 2, 18, 2)
    num_heads: tuple[int, int, int, int] = (4, 8, 16, 32)
    window_size: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_path_rate: float = 0.3

    def __post_init__(self) -> None:
        if len(self.depths) != 4 or len(self.num_heads) != 4:
            raise ValueError(f"SwinConfig needs 4 stages, got depths={self.depths}, num_heads={self.num_heads}")
        for i, heads in enumerate(self.num_heads):
            if (self.embed_dim * 2**i) % heads:
                raise ValueError(f"stage {i} width {self.embed_dim * 2**i} is not divisible by {heads} heads")


class DropPath(nn.Module):
    """Stochastic depth: in training, zero whole samples with probability p and scale the rest by 1/(1-p).

    forward: (N, ...) -> (N, ...), one keep/drop draw per sample n; the identity in eval mode or with p = 0.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


def relative_position_index(window_size: int) -> torch.Tensor:
    """(S*S, S*S) int64: for query token i=(yi, xi) and key j=(yj, xj) of a window, the row of the bias
    table, (yi - yj + S - 1) * (2S - 1) + (xi - xj + S - 1)."""
    ys, xs = torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + window_size - 1
    dx = xs[:, None] - xs[None, :] + window_size - 1
    return dy * (2 * window_size - 1) + dx


@lru_cache(maxsize=32)
def shifted_window_mask(height: int, width: int, window_size: int, shift: int) -> torch.Tensor:
    """Attention mask of a shifted block for a padded (height, width) map: (num_windows, S*S, S*S) float, CPU.

    After the cyclic shift by -shift, the map splits into 3 x 3 regions (rows [0, H-S), [H-S, H-shift),
    [H-shift, H), same for columns); tokens of different regions in one window get -100, others 0.
    Windows are ordered row-major over the (height / S, width / S) grid. Cached: do not modify the result.
    """
    region = torch.zeros(height, width, device="cpu")
    bounds = ((0, height - window_size), (height - window_size, height - shift), (height - shift, height))
    col_bounds = ((0, width - window_size), (width - window_size, width - shift), (width - shift, width))
    label = 0
    for r0, r1 in bounds:
        for c0, c1 in col_bounds:
            region[max(r0, 0):r1, max(c0, 0):c1] = label
            label += 1
    windows = _partition(region[None, :, :, None], window_size).reshape(-1, window_size * window_size)
    different = windows[:, None, :] != windows[:, :, None]
    return torch.zeros(different.shape, device="cpu").masked_fill_(different, -100.0)


def _partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """(B, H, W, C) with H, W multiples of S -> (B * H/S * W/S, S, S, C), windows row-major per image."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window_size, window_size, w // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, c)


def _unpartition(windows: torch.Tensor, window_size: int, height: int, width: int) -> torch.Tensor:
    """Inverse of `_partition`: (B * H/S * W/S, S, S, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.reshape(-1, height // window_size, width // window_size, window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, c)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative position bias.

    forward: windows (num_windows * B, S*S, C), mask None or (num_windows, S*S, S*S) -> (num_windows * B,
    S*S, C). Scores are q.k / sqrt(head_dim) + bias[relative_position_index] (+ mask).
    """

    def __init__(self, dim: int, window_size: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def position_bias(self) -> torch.Tensor:
        """(num_heads, S*S, S*S) relative position bias."""
        area = self.window_size * self.window_size
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(area, area, self.num_heads).permute(2, 0, 1)

    def forward(self, windows: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        n_total, tokens, dim = windows.shape
        qkv = self.qkv(windows).view(n_total, tokens, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (nW*B, heads, N, d)
        bias = self.position_bias().to(q.dtype)  # (heads, N, N)
        if mask is None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        else:
            num_windows = mask.shape[0]
            shape = (n_total // num_windows, num_windows) + q.shape[1:]
            attn_mask = bias[None] + mask.to(q.dtype)[:, None]  # (nW, heads, N, N), broadcast over B
            out = F.scaled_dot_product_attention(q.view(shape), k.view(shape), v.view(shape), attn_mask=attn_mask)
            out = out.reshape(n_total, self.num_heads, tokens, -1)
        return self.proj(out.transpose(1, 2).reshape(n_total, tokens, dim))


class Mlp(nn.Module):
    """Linear(C -> hidden) -> exact GELU -> Linear(hidden -> C), on (..., C)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinBlock(nn.Module):
    """x + (padded, shifted) window attention of norm1(x), then x + MLP(norm2(x)): (B, H, W, C) -> same.

    `shift` is 0 (regular windows) or window_size // 2 (shifted windows; the caller passes the mask
    from `shifted_window_mask` for the padded size).
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, shift: int, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop_path: float = 0.0) -> None:
        super().__init__()
        if not 0 <= shift < window_size:
            raise ValueError(f"shift {shift} must be in [0, window_size={window_size})")
        self.window_size = window_size
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, shift_mask: torch.Tensor | None) -> torch.Tensor:
        b, h, w, c = x.shape
        size = self.window_size
        y = self.norm1(x)
        pad_h, pad_w = (-h) % size, (-w) % size
        if pad_h or pad_w:
            y = F.pad(y, (0, 0, 0, pad_w, 0, pad_h))
        hp, wp = h + pad_h, w + pad_w
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        windows = _partition(y, size).reshape(-1, size * size, c)
        windows = self.attn(windows, shift_mask if self.shift else None)
        y = _unpartition(windows.reshape(-1, size, size, c), size, hp, wp)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        if pad_h or pad_w:
            y = y[:, :h, :w, :]
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 neighbourhood concat -> LayerNorm(4C) -> Linear(4C -> 2C): (B, H, W, C) -> (B, ceil(H/2), ceil(W/2), 2C)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[1:3]
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class SwinStage(ModuleWithConstants):
    """`depth` blocks alternating regular / shifted windows, then an optional PatchMerging.

    forward: (B, H, W, C) -> (stage output (B, H, W, C), input of the next stage (B, H', W', C')).
    """

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float,
                 qkv_bias: bool, drop_paths: list[float], downsample: bool) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift = window_size // 2
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window_size, 0 if i % 2 == 0 else self.shift, mlp_ratio, qkv_bias,
                      drop_paths[i])
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None
        self._masks = DeviceConstants()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = x.shape[1:3]
        size = self.window_size
        hp, wp = -(-h // size) * size, -(-w // size) * size
        mask = None
        if len(self.blocks) > 1:  # copied to the device once per padded size (no blocking copy per call)
            mask = self._masks.get((hp, wp), lambda: shifted_window_mask(hp, wp, size, self.shift), x.device,
                                   torch.float32)
        for block in self.blocks:
            x = block(x, mask)
        return x, (x if self.downsample is None else self.downsample(x))


class PatchEmbed(nn.Module):
    """Conv patch_size x patch_size / patch_size + LayerNorm: (B, 3, H, W) -> (B, H/p, W/p, C) (NHWC).

    Inputs whose sides are not multiples of the patch size are zero-padded at bottom/right first.
    """

    def __init__(self, patch_size: int = 4, in_channels: int = 3, embed_dim: int = 128) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        pad_h, pad_w = (-h) % self.patch_size, (-w) % self.patch_size
        if pad_h or pad_w:
            images = F.pad(images, (0, pad_w, 0, pad_h))
        return self.norm(self.proj(images).permute(0, 2, 3, 1))


class SwinTransformer(nn.Module):
    """Swin Transformer returning four normalised stage outputs.

    forward: images (N, 3, H, W) float (normalised pixels; the model feeds multiples of 32, other sizes are
    padded as described above) -> {"res2": (N, C, H/4, W/4), "res3": (N, 2C, H/8, W/8), "res4": (N, 4C,
    H/16, W/16), "res5": (N, 8C, H/32, W/32)}, contiguous NCHW.

    Attributes:
        out_channels: {"res2": C, ..., "res5": 8C}; out_strides: {"res2": 4, ..., "res5": 32};
        size_divisibility: 32.
    """

    size_divisibility = 32

    def __init__(self, config: SwinConfig = SwinConfig()) -> None:
        super().__init__()
        self.config = config
        self.patch_embed = PatchEmbed(config.patch_size, 3, config.embed_dim)
        total = sum(config.depths)
        rates = torch.linspace(0, config.drop_path_rate, total, device="cpu").tolist()
        dims = [config.embed_dim * 2**i for i in range(4)]
        self.layers = nn.ModuleList()
        start = 0
        for i in range(4):
            self.layers.append(SwinStage(
                dims[i], config.depths[i], config.num_heads[i], config.window_size, config.mlp_ratio,
                config.qkv_bias, rates[start:start + config.depths[i]], downsample=i < 3))
            start += config.depths[i]
        for i in range(4):
            self.add_module(f"norm{i}", nn.LayerNorm(dims[i]))
        self.out_channels = {name: dims[i] for i, name in enumerate(STAGE_NAMES)}
        self.out_strides = {name: config.patch_size * 2**i for i, name in enumerate(STAGE_NAMES)}
        self.apply(_init_linear_and_norm)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"SwinTransformer expects images of shape (N, 3, H, W), got {tuple(images.shape)}")
        x = self.patch_embed(images)
        features: dict[str, torch.Tensor] = {}
        for i, name in enumerate(STAGE_NAMES):
            stage_out, x = self.layers[i](x)
            features[name] = getattr(self, f"norm{i}")(stage_out).permute(0, 3, 1, 2).contiguous()
        return features


def _init_linear_and_norm(module: nn.Module) -> None:
    """Swin initialisation: truncated-normal(0.02) Linear weights, zero biases, LayerNorm 1 / 0."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
