"""Optimizer parameter groups and learning-rate schedule of the official recipe (ovavss-spec.md §9)."""

from __future__ import annotations

import bisect

import torch
from torch import nn

from models.ovavss.config import TrainConfig

_NORM_TYPES = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm, nn.LocalResponseNorm,
)  # fmt: skip
_NO_DECAY_NAMES = ("relative_position_bias_table", "absolute_pos_embed")


def build_param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """One group per trainable parameter, as detectron2's `get_default_optimizer_params` + Mask2Former:

    - lr x `backbone_multiplier` if the owning module's name contains "backbone";
    - weight decay 0 for parameters of normalisation layers and `nn.Embedding`s, and for Swin's relative
      position bias tables; `weight_decay` otherwise (the pixel decoder's `level_embed` parameter and the
      fusion gammas do get decay, as in the official code).
    Frozen parameters (requires_grad False: VGGish, FrozenBN buffers) are left out.
    """
    groups: list[dict] = []
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            lr = cfg.base_lr
            weight_decay = cfg.weight_decay
            if "backbone" in module_name:
                lr = lr * cfg.backbone_multiplier
            if isinstance(module, _NORM_TYPES):
                weight_decay = cfg.weight_decay_norm
            elif isinstance(module, nn.Embedding):
                weight_decay = cfg.weight_decay_embed
            if param_name in _NO_DECAY_NAMES:
                weight_decay = 0.0
            groups.append({"params": [param], "lr": lr, "weight_decay": weight_decay,
                           "name": f"{module_name}.{param_name}" if module_name else param_name})
    return groups


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW (betas 0.9/0.999, eps 1e-8) over `build_param_groups`."""
    return torch.optim.AdamW(build_param_groups(model, cfg), lr=cfg.base_lr, betas=(0.9, 0.999), eps=1e-8)


def lr_factor(iteration: int, cfg: TrainConfig) -> float:
    """detectron2 `WarmupMultiStepLR` factor: linear warmup, then x gamma at each step passed."""
    factor = cfg.lr_gamma ** bisect.bisect_right(list(cfg.lr_steps), iteration)
    if iteration < cfg.warmup_iters:
        alpha = iteration / cfg.warmup_iters
        factor *= cfg.warmup_factor * (1 - alpha) + alpha
    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration schedule; `scheduler.step()` once after every optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, cfg))


def clip_full_model_grad_norm(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """detectron2 `CLIP_TYPE full_model`: one L2 norm over all parameters' gradients, clipped to max_norm."""
    return torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=2.0)
