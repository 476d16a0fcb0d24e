"""Bi-directional audio-visual attention (spec §3) against an independent float64 reference."""

from __future__ import annotations

import math

import pytest
import torch

from models.ovavss.fusion import AudioVisualFusion, BiAttentionBlock, BiMultiHeadAttention

torch.set_num_threads(1)


def layer_norm(x, weight, bias, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def softmax_rows(x):
    e = torch.exp(x - x.max(dim=-1, keepdim=True).values)
    return e / e.sum(-1, keepdim=True)


def reference_attention(attn, v, l):  # noqa: E741
    """The spec's formulas, one sample and one head at a time, with explicit weight matrices."""
    def linear(layer, x):
        return x @ layer.weight.detach().T + layer.bias.detach()

    heads, dim = attn.num_heads, attn.embed_dim // attn.num_heads
    delta_v, delta_l = [], []
    for n in range(v.shape[0]):
        per_head_v, per_head_l = [], []
        for h in range(heads):
            cols = slice(h * dim, (h + 1) * dim)
            q = linear(attn.v_proj, v[n])[:, cols] * dim ** -0.5  # (S, d)
            k = linear(attn.l_proj, l[n])[:, cols]  # (A, d)
            val_v = linear(attn.values_v_proj, v[n])[:, cols]  # (S, d)
            val_l = linear(attn.values_l_proj, l[n])[:, cols]  # (A, d)
            scores = (q @ k.T).clamp(-50000, 50000)  # (S, A)
            probs_v = softmax_rows(scores)  # over the audio axis
            audio_scores = scores.T - scores.T.max(dim=1, keepdim=True).values
            probs_l = softmax_rows(audio_scores.clamp(-50000, 50000))  # over all S visual tokens
            per_head_v.append(probs_v @ val_l)
            per_head_l.append(probs_l @ val_v)
        delta_v.append(linear(attn.out_v_proj, torch.cat(per_head_v, dim=1)))
        delta_l.append(linear(attn.out_l_proj, torch.cat(per_head_l, dim=1)))
    return torch.stack(delta_v), torch.stack(delta_l)


def perturbed_block(v_dim=12, l_dim=6, embed_dim=16, heads=4, seed=0):
    torch.manual_seed(seed)
    block = BiAttentionBlock(v_dim, l_dim, embed_dim, heads).double().eval()
    with torch.no_grad():
        for p in block.parameters():  # random LN affine, biases and gammas, so every term matters
            p.add_(0.5 * torch.randn_like(p))
    return block


@pytest.mark.parametrize("num_audio", [1, 3])
def test_block_matches_reference(num_audio):
    block = perturbed_block()
    v = 2 * torch.randn(2, 9, 12, dtype=torch.float64) + 1
    l = torch.randn(2, num_audio, 6, dtype=torch.float64)  # noqa: E741
    got_v, got_l = block(v, l)

    v_hat = layer_norm(v, block.layer_norm_v.weight.detach(), block.layer_norm_v.bias.detach())
    l_hat = layer_norm(l, block.layer_norm_l.weight.detach(), block.layer_norm_l.bias.detach())
    delta_v, delta_l = reference_attention(block.attn, v_hat, l_hat)
    want_v = v_hat + block.gamma_v.detach() * delta_v
    want_l = l_hat + block.gamma_l.detach() * delta_l
    assert got_v.shape == v.shape and got_l.shape == l.shape
    assert (got_v - want_v).abs().max().item() < 1e-12
    assert (got_l - want_l).abs().max().item() < 1e-12


def test_single_audio_token_adds_one_vector_to_every_visual_token():
    block = perturbed_block(seed=1)
    v = torch.randn(3, 10, 12, dtype=torch.float64)
    l = torch.randn(3, 1, 6, dtype=torch.float64)  # noqa: E741
    got_v, _ = block(v, l)
    v_hat = layer_norm(v, block.layer_norm_v.weight.detach(), block.layer_norm_v.bias.detach())
    added = got_v - v_hat  # (N, S, Cv)
    assert torch.allclose(added, added[:, :1].expand_as(added), atol=1e-12)
    # ... and that vector is gamma_v * out_v_proj(values_l_proj(LN_l(l))) (v_proj / l_proj play no part).
    l_hat = layer_norm(l, block.layer_norm_l.weight.detach(), block.layer_norm_l.bias.detach())
    attn = block.attn
    expected = block.gamma_v * attn.out_v_proj(attn.values_l_proj(l_hat))
    assert torch.allclose(added[:, :1], expected, atol=1e-12)


def test_score_clamp_changes_audio_side_weights():
    # One head, hand-set projections: scores of the three visual tokens become 60000, 70000 and 1. After
    # clamping to 50000 the first two tie, so the audio token averages their values (no clamp -> token 2).
    attn = BiMultiHeadAttention(v_dim=2, l_dim=1, embed_dim=2, num_heads=1, dropout=0.0).double().eval()
    with torch.no_grad():
        for layer in (attn.v_proj, attn.l_proj, attn.values_v_proj, attn.values_l_proj,
                      attn.out_v_proj, attn.out_l_proj):
            layer.bias.zero_()
        attn.v_proj.weight.copy_(torch.eye(2) * math.sqrt(2))  # cancels the 2**-0.5 scale
        attn.l_proj.weight.copy_(torch.tensor([[1.0], [0.0]]))
        attn.values_v_proj.weight.copy_(torch.eye(2))
        attn.out_l_proj.weight.copy_(torch.tensor([[1.0, 10.0]]))
    v = torch.tensor([[[60000.0, 1.0], [70000.0, 2.0], [1.0, 4.0]]], dtype=torch.float64)
    l = torch.ones(1, 1, 1, dtype=torch.float64)  # noqa: E741
    _, delta_l = attn(v, l)
    # 0.5 * (values of tokens 0 and 1) = (65000, 1.5) -> out_l_proj -> 65000 + 15
    assert delta_l.item() == pytest.approx(65015.0, abs=1e-6)


def test_dropout_only_in_training():
    block = perturbed_block(seed=2)
    v = torch.randn(2, 20, 12, dtype=torch.float64)
    l = torch.randn(2, 1, 6, dtype=torch.float64)  # noqa: E741
    eval_v, eval_l = block(v, l)
    assert torch.equal(block(v, l)[0], eval_v)  # deterministic in eval
    block.train()
    torch.manual_seed(0)
    train_v, train_l = block(v, l)
    assert not torch.allclose(train_v, eval_v) and not torch.allclose(train_l, eval_l)
    block.attn.dropout = 0.0
    assert torch.allclose(block(v, l)[0], eval_v, atol=1e-12)


def test_init_values_and_parameter_names():
    block = BiAttentionBlock()
    assert torch.equal(block.gamma_v, torch.full((256,), 1 / 6))
    assert torch.equal(block.gamma_l, torch.full((128,), 1 / 6))
    assert BiAttentionBlock(8, 4, 8, 2, init_values=0.25).gamma_l.detach().tolist() == [0.25] * 4
    for name in ("v_proj", "l_proj", "values_v_proj", "values_l_proj", "out_v_proj", "out_l_proj"):
        layer = getattr(block.attn, name)
        assert layer.bias.abs().max() == 0
        bound = math.sqrt(6 / (layer.in_features + layer.out_features))  # xavier-uniform
        assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.9 * bound
    assert block.attn.scale == 128 ** -0.5
    with pytest.raises(ValueError, match="divisible"):
        BiMultiHeadAttention(8, 4, 10, 3)


def test_zero_gamma_gives_layer_normed_inputs():
    block = BiAttentionBlock(12, 6, 16, 4, init_values=0.0).double().eval()
    v = 5 * torch.randn(2, 4, 12, dtype=torch.float64) + 3
    l = torch.randn(2, 1, 6, dtype=torch.float64)  # noqa: E741
    out_v, out_l = block(v, l)
    assert torch.allclose(out_v.mean(-1), torch.zeros(2, 4, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(out_v.var(-1, unbiased=False), torch.ones(2, 4, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(out_l, layer_norm(l, 1.0, 0.0), atol=1e-12)


def test_fusion_default_keys_and_parameter_count():
    fusion = AudioVisualFusion()
    shapes = {k: tuple(v.shape) for k, v in fusion.state_dict().items()}
    expected = {
        "b_attn.layer_norm_v.weight": (256,), "b_attn.layer_norm_v.bias": (256,),
        "b_attn.layer_norm_l.weight": (128,), "b_attn.layer_norm_l.bias": (128,),
        "b_attn.attn.v_proj.weight": (1024, 256), "b_attn.attn.v_proj.bias": (1024,),
        "b_attn.attn.l_proj.weight": (1024, 128), "b_attn.attn.l_proj.bias": (1024,),
        "b_attn.attn.values_v_proj.weight": (1024, 256), "b_attn.attn.values_v_proj.bias": (1024,),
        "b_attn.attn.values_l_proj.weight": (1024, 128), "b_attn.attn.values_l_proj.bias": (1024,),
        "b_attn.attn.out_v_proj.weight": (256, 1024), "b_attn.attn.out_v_proj.bias": (256,),
        "b_attn.attn.out_l_proj.weight": (128, 1024), "b_attn.attn.out_l_proj.bias": (128,),
        "b_attn.gamma_v": (256,), "b_attn.gamma_l": (128,),
    }
    assert shapes == expected
    assert sum(p.numel() for p in fusion.parameters()) == 1_185_280


def test_fusion_forward_shapes_tiny():
    fusion = AudioVisualFusion(visual_dim=64, audio_dim=128, embed_dim=128, num_heads=4).eval()
    visual, audio = fusion(torch.randn(2, 30, 64), torch.randn(2, 1, 128))
    assert visual.shape == (2, 30, 64) and audio.shape == (2, 1, 128)
    assert torch.isfinite(visual).all() and torch.isfinite(audio).all()
