"""The CPU inference fast paths change speed, not results.

On the CPU the network runs with channels-last frames, the fused-gather deformable sampling and (outside
training) intermediate attention masks computed at each level's size. Here the whole `tiny` and `r50`
networks are run both ways: the plain way (contiguous frames, grid_sample, stride-4 auxiliary masks, as the
official code) and the model's own forward, and their outputs must agree.
"""

from __future__ import annotations

import pytest
import torch

from models.ovavss.deform_attn import MSDeformAttn
from models.ovavss.model import build_ovavss


def perturb(model: torch.nn.Module, seed: int, keep: tuple[str, ...] = ()) -> None:
    """Spread the random init so sampling offsets, attention weights and masks are far from their defaults.

    Norm parameters and those whose names start with a prefix in `keep` keep their init.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" not in name and param.dim() >= 1 and not name.startswith(keep):
                param.add_(0.05 * torch.randn(param.shape, generator=gen, dtype=param.dtype))


def _plain_forward(model, images, audio):
    """The official computation: contiguous frames, grid_sample, aux masks at stride 4."""
    attention = [m for m in model.modules() if isinstance(m, MSDeformAttn)]
    for module in attention:
        module.sampling = "grid_sample"
    try:
        b, t = images.shape[:2]
        features = model.backbone(images.flatten(0, 1).contiguous())
        decoded = model.sem_seg_head.pixel_decoder(features, audio.flatten(0, 1).float())  # as OVAVSS.forward
        return model.sem_seg_head.predictor(decoded.multi_scale_features, decoded.mask_features, decoded.audio, t,
                                            aux_masks=True)
    finally:
        for module in attention:
            module.sampling = "auto"


@pytest.mark.parametrize("config,size,tol", [("tiny", (96, 128), 1e-9), ("r50", (64, 96), 1e-8)])
def test_model_forward_equals_the_plain_computation(config, size, tol):
    torch.manual_seed(0)
    model = build_ovavss(config).double().eval()
    perturb(model, seed=1)
    gen = torch.Generator().manual_seed(2)
    images = torch.randn(1, 3, 3, *size, generator=gen, dtype=torch.float64)
    audio = torch.randn(1, 3, 128, generator=gen, dtype=torch.float64)
    seen_layouts = []
    hook = model.backbone.register_forward_pre_hook(
        lambda _m, args: seen_layouts.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    with torch.no_grad():
        fast = model(images, audio_embeddings=audio)
        plain = _plain_forward(model, images, audio)
    hook.remove()
    assert seen_layouts == [True, False]  # the model's own forward did take the channels-last path
    assert fast["pred_masks"].shape == plain["pred_masks"].shape == (1, model.config.num_queries, 3,
                                                                      size[0] // 4, size[1] // 4)
    torch.testing.assert_close(fast["pred_masks"], plain["pred_masks"], rtol=0, atol=tol)
    torch.testing.assert_close(fast["pred_logits"], plain["pred_logits"], rtol=0, atol=tol)
    assert len(fast["aux_outputs"]) == len(plain["aux_outputs"])
    for fast_aux, plain_aux in zip(fast["aux_outputs"], plain["aux_outputs"]):
        assert set(fast_aux) == {"pred_logits"}
        torch.testing.assert_close(fast_aux["pred_logits"], plain_aux["pred_logits"], rtol=0, atol=tol)
    # The case is not degenerate: masks differ between queries and frames.
    assert fast["pred_masks"].std() > 0.1


def test_training_mode_keeps_aux_masks_and_gradients_flow_through_the_gather():
    torch.manual_seed(0)
    model = build_ovavss("tiny").train()
    images = torch.randn(1, 2, 3, 64, 64)
    audio = torch.randn(1, 2, 128)
    out = model(images, audio_embeddings=audio)
    assert all("pred_masks" in aux for aux in out["aux_outputs"])
    loss = out["pred_masks"].sigmoid().mean() + sum(aux["pred_masks"].sigmoid().mean() for aux in out["aux_outputs"])
    loss.backward()
    attention = next(m for m in model.modules() if isinstance(m, MSDeformAttn))
    # Gradients reach the sampling offsets and attention weights only through the sampled locations / weights.
    assert attention.sampling_offsets.weight.grad.abs().sum() > 0
    assert attention.attention_weights.weight.grad.abs().sum() > 0
    assert attention.value_proj.weight.grad.abs().sum() > 0
