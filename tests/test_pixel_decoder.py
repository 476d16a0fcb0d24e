"""The pixel decoder (spec §4): official keys and counts, shapes, order of operations, audio path, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models.ovavss.pixel_decoder import MSDeformAttnPixelDecoder, PixelDecoderOutput

torch.set_num_threads(1)

R50_CHANNELS = {"res2": 256, "res3": 512, "res4": 1024, "res5": 2048}
SWIN_CHANNELS = {"res2": 128, "res3": 256, "res4": 512, "res5": 1024}
TINY_CHANNELS = {"res2": 32, "res3": 48, "res4": 64, "res5": 96}
TINY = dict(conv_dim=64, mask_dim=64, num_encoder_layers=2, encoder_ffn_dim=128, num_heads=4, num_points=2,
            audio_dim=128, fusion_embed_dim=128, fusion_heads=4)


def backbone_features(channels, batch, height, width, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {name: torch.randn(batch, c, height // 2 ** int(name[3:]), width // 2 ** int(name[3:]),
                              generator=gen, dtype=dtype) for name, c in channels.items()}


def tiny_decoder(num_encoder_layers=2, seed=0, perturb=True, dtype=torch.float64):
    torch.manual_seed(seed)
    decoder = MSDeformAttnPixelDecoder(TINY_CHANNELS, **{**TINY, "num_encoder_layers": num_encoder_layers})
    decoder = decoder.to(dtype).eval()
    if perturb:  # the Deformable-DETR init zeroes the query -> offset / weight maps; make every path matter
        with torch.no_grad():
            for p in decoder.parameters():
                p.add_(0.2 * torch.randn_like(p))
    return decoder


def test_r50_keys_and_shapes_equal_the_spec_table():
    expected = {}
    for i, c in enumerate((2048, 1024, 512)):  # input_proj.0 <-> res5
        expected |= {f"input_proj.{i}.0.weight": (256, c, 1, 1), f"input_proj.{i}.0.bias": (256,),
                     f"input_proj.{i}.1.weight": (256,), f"input_proj.{i}.1.bias": (256,)}
    expected["transformer.level_embed"] = (3, 256)
    fusion = "transformer.encoder.vl_layer.b_attn."
    expected |= {fusion + "layer_norm_v.weight": (256,), fusion + "layer_norm_v.bias": (256,),
                 fusion + "layer_norm_l.weight": (128,), fusion + "layer_norm_l.bias": (128,),
                 fusion + "gamma_v": (256,), fusion + "gamma_l": (128,)}
    for name, (out_dim, in_dim) in {"v_proj": (1024, 256), "l_proj": (1024, 128), "values_v_proj": (1024, 256),
                                    "values_l_proj": (1024, 128), "out_v_proj": (256, 1024),
                                    "out_l_proj": (128, 1024)}.items():
        expected |= {f"{fusion}attn.{name}.weight": (out_dim, in_dim), f"{fusion}attn.{name}.bias": (out_dim,)}
    for j in range(6):
        layer = f"transformer.encoder.layers.{j}."
        for name, (out_dim, in_dim) in {"self_attn.sampling_offsets": (192, 256),
                                        "self_attn.attention_weights": (96, 256),
                                        "self_attn.value_proj": (256, 256), "self_attn.output_proj": (256, 256),
                                        "linear1": (1024, 256), "linear2": (256, 1024)}.items():
            expected |= {f"{layer}{name}.weight": (out_dim, in_dim), f"{layer}{name}.bias": (out_dim,)}
        for norm in ("norm1", "norm2"):
            expected |= {f"{layer}{norm}.weight": (256,), f"{layer}{norm}.bias": (256,)}
    expected |= {"mask_features.weight": (256, 256, 1, 1), "mask_features.bias": (256,),
                 "adapter_1.weight": (256, 256, 1, 1), "adapter_1.norm.weight": (256,),
                 "adapter_1.norm.bias": (256,), "layer_1.weight": (256, 256, 3, 3),
                 "layer_1.norm.weight": (256,), "layer_1.norm.bias": (256,)}

    decoder = MSDeformAttnPixelDecoder(R50_CHANNELS)
    got = {k: tuple(v.shape) for k, v in decoder.state_dict().items()}
    assert sorted(got) == sorted(expected)
    assert got == expected
    assert sum(p.numel() for p in decoder.parameters()) == 7_221_184


def test_swin_parameter_count_and_adapter_shape():
    decoder = MSDeformAttnPixelDecoder(SWIN_CHANNELS)
    assert sum(p.numel() for p in decoder.parameters()) == 6_729_664
    assert tuple(decoder.adapter_1.weight.shape) == (256, 128, 1, 1)
    assert tuple(decoder.input_proj[0][0].weight.shape) == (256, 1024, 1, 1)


def test_r50_output_shapes_on_a_non_square_input():
    decoder = MSDeformAttnPixelDecoder(R50_CHANNELS).eval()
    features = backbone_features(R50_CHANNELS, batch=2, height=96, width=160)
    with torch.no_grad():
        out = decoder(features, torch.randn(2, 128))
    assert isinstance(out, PixelDecoderOutput)
    assert out.mask_features.shape == (2, 256, 24, 40)
    assert [tuple(f.shape) for f in out.multi_scale_features] == [(2, 256, 3, 5), (2, 256, 6, 10), (2, 256, 12, 20)]
    assert out.audio.shape == (2, 128)
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all()
               for t in (out.mask_features, out.audio, *out.multi_scale_features))


def test_tiny_output_shapes():
    decoder = MSDeformAttnPixelDecoder(TINY_CHANNELS, **TINY).eval()
    out = decoder(backbone_features(TINY_CHANNELS, batch=3, height=64, width=96), torch.randn(3, 128))
    assert out.mask_features.shape == (3, 64, 16, 24)
    assert [tuple(f.shape) for f in out.multi_scale_features] == [(3, 64, 2, 3), (3, 64, 4, 6), (3, 64, 8, 12)]
    assert out.audio.shape == (3, 128)


def sine_position(height, width, num_feats):
    """Spec §4 formula, float64: channels [pos_y, pos_x], sin on even and cos on odd channel indices."""
    def encode(count):
        coords = torch.arange(1, count + 1, dtype=torch.float64) / (count + 1e-6) * 2 * math.pi
        rates = torch.tensor([10000 ** (2 * (k // 2) / num_feats) for k in range(num_feats)], dtype=torch.float64)
        angles = coords[:, None] / rates
        return torch.where(torch.arange(num_feats) % 2 == 0, angles.sin(), angles.cos())  # (count, F)
    pos_y = encode(height)[:, None, :].expand(height, width, num_feats)
    pos_x = encode(width)[None, :, :].expand(height, width, num_feats)
    return torch.cat((pos_y, pos_x), dim=-1).reshape(height * width, 2 * num_feats)


def reference_decode(decoder, features, audio):
    """Spec §3/§4 order of operations composed by hand (MSDA and fusion modules reused as building blocks)."""
    levels = ["res5", "res4", "res3"]
    sources, pos, shapes = [], [], []
    for i, name in enumerate(levels):
        conv, norm = decoder.input_proj[i][0], decoder.input_proj[i][1]
        x = F.group_norm(F.conv2d(features[name], conv.weight, conv.bias), 32, norm.weight, norm.bias)
        h, w = x.shape[-2:]
        shapes.append((h, w))
        sources.append(x.flatten(2).transpose(1, 2))
        pos.append(sine_position(h, w, x.shape[1] // 2) + decoder.transformer.level_embed[i])
    tokens, pos = torch.cat(sources, 1), torch.cat(pos, 0)[None]
    fused, fused_audio = decoder.transformer.encoder.vl_layer(tokens, audio[:, None, :])

    ref = torch.cat([torch.stack(torch.meshgrid((torch.arange(w) + 0.5) / w, (torch.arange(h) + 0.5) / h,
                                                indexing="xy"), -1).reshape(-1, 2) for h, w in shapes])
    ref = ref.to(tokens.dtype)[None, :, None, :].expand(tokens.shape[0], -1, 3, -1)
    spatial = torch.tensor(shapes)
    starts = torch.tensor([0, shapes[0][0] * shapes[0][1], shapes[0][0] * shapes[0][1] + shapes[1][0] * shapes[1][1]])
    x = fused
    for layer in decoder.transformer.encoder.layers:
        x = F.layer_norm(x + layer.self_attn(x + pos, ref, x, spatial, starts), (x.shape[-1],),
                         layer.norm1.weight, layer.norm1.bias)
        ffn = F.linear(F.relu(F.linear(x, layer.linear1.weight, layer.linear1.bias)), layer.linear2.weight,
                       layer.linear2.bias)
        x = F.layer_norm(x + ffn, (x.shape[-1],), layer.norm2.weight, layer.norm2.bias)

    maps, start = [], 0
    for h, w in shapes:
        maps.append(x[:, start:start + h * w].transpose(1, 2).reshape(x.shape[0], -1, h, w))
        start += h * w
    adapter, layer = decoder.adapter_1, decoder.layer_1
    lateral = F.group_norm(F.conv2d(features["res2"], adapter.weight), 32, adapter.norm.weight, adapter.norm.bias)
    y = lateral + F.interpolate(maps[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
    y = F.relu(F.group_norm(F.conv2d(y, layer.weight, padding=1), 32, layer.norm.weight, layer.norm.bias))
    mask = F.conv2d(y, decoder.mask_features.weight, decoder.mask_features.bias)
    return mask, maps, fused_audio[:, 0]


def test_position_formula_matches_the_module():
    decoder = tiny_decoder(perturb=False)
    x = torch.zeros(1, 64, 5, 7)
    got = decoder.pe_layer(x)[0].flatten(1).T.double()
    assert (got - sine_position(5, 7, 32)).abs().max() < 1e-5


def test_forward_matches_step_by_step_reference():
    decoder = tiny_decoder()
    features = backbone_features(TINY_CHANNELS, batch=2, height=64, width=96, dtype=torch.float64)
    audio = torch.randn(2, 128, dtype=torch.float64)
    with torch.no_grad():
        out = decoder(features, audio)
        mask, maps, fused_audio = reference_decode(decoder, features, audio)
    assert out.mask_features.dtype == torch.float64
    # Tolerance covers only the float32 positional encoding; any ordering mistake is O(1).
    assert (out.mask_features - mask).abs().max() < 2e-5
    for got, want in zip(out.multi_scale_features, maps, strict=True):
        assert (got - want).abs().max() < 2e-5
    assert (out.audio - fused_audio).abs().max() < 1e-12


def test_fusion_runs_once_on_unpositioned_projected_sources_before_the_encoder():
    decoder = tiny_decoder()
    calls = []
    fusion = decoder.transformer.encoder.vl_layer
    first_layer = decoder.transformer.encoder.layers[0]
    fusion_hook = fusion.register_forward_hook(lambda m, args, out: calls.append(("fusion", args, out)))
    layer_hook = first_layer.register_forward_pre_hook(lambda m, args: calls.append(("layer0", args, None)))
    features = backbone_features(TINY_CHANNELS, batch=2, height=64, width=96, dtype=torch.float64)
    audio = torch.randn(2, 128, dtype=torch.float64)
    with torch.no_grad():
        out = decoder(features, audio)
        projected = [decoder.input_proj[i](features[name]).flatten(2).transpose(1, 2)
                     for i, name in enumerate(["res5", "res4", "res3"])]
    fusion_hook.remove()
    layer_hook.remove()
    assert [c[0] for c in calls] == ["fusion", "layer0"]
    (_, (visual_in, audio_in), (visual_out, audio_out)), (_, layer_args, _) = calls
    assert torch.equal(visual_in, torch.cat(projected, dim=1))  # res5, res4, res3; no positions added
    assert torch.equal(audio_in, audio[:, None, :])
    assert torch.equal(layer_args[0], visual_out)  # the encoder starts from the fused tokens
    assert torch.equal(out.audio, audio_out[:, 0])


def test_without_encoder_layers_outputs_are_the_fused_tokens():
    decoder = tiny_decoder(num_encoder_layers=0)
    features = backbone_features(TINY_CHANNELS, batch=1, height=32, width=64, dtype=torch.float64)
    audio = torch.randn(1, 128, dtype=torch.float64)
    with torch.no_grad():
        out = decoder(features, audio)
        projected = torch.cat([decoder.input_proj[i](features[name]).flatten(2).transpose(1, 2)
                               for i, name in enumerate(["res5", "res4", "res3"])], dim=1)
        fused, _ = decoder.transformer.encoder.vl_layer(projected, audio[:, None])
    flat = torch.cat([f.flatten(2).transpose(1, 2) for f in out.multi_scale_features], dim=1)
    assert torch.equal(flat, fused)


def test_audio_changes_the_output_and_is_updated():
    decoder = tiny_decoder(perturb=False, dtype=torch.float32)
    features = backbone_features(TINY_CHANNELS, batch=2, height=64, width=96)
    audio_a, audio_b = torch.randn(2, 128), torch.randn(2, 128)
    with torch.no_grad():
        out_a = decoder(features, audio_a)
        out_b = decoder(features, audio_b)
        again = decoder(features, audio_a)
    assert torch.equal(out_a.mask_features, again.mask_features)
    assert (out_a.mask_features - out_b.mask_features).abs().max() > 1e-3
    assert (out_a.multi_scale_features[0] - out_b.multi_scale_features[0]).abs().max() > 1e-3
    assert (out_a.audio - audio_a).abs().max() > 1e-2
    # The returned audio is LayerNorm-ed plus gamma times the visual summary, not the input.
    assert out_a.audio.mean(-1).abs().max() < 0.5


def test_autocast_is_disabled_and_half_features_are_accepted():
    decoder = tiny_decoder(perturb=False, dtype=torch.float32)
    features = backbone_features(TINY_CHANNELS, batch=1, height=64, width=64, dtype=torch.bfloat16)
    audio = torch.randn(1, 128).to(torch.bfloat16)
    with torch.no_grad():
        plain = decoder({k: v.float() for k, v in features.items()}, audio.float())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = decoder(features, audio)
    assert autocast.mask_features.dtype == torch.float32 and autocast.audio.dtype == torch.float32
    assert torch.allclose(autocast.mask_features, plain.mask_features, atol=1e-5)
    assert all(f.dtype == torch.float32 for f in autocast.multi_scale_features)


def test_gradient_reaches_every_parameter():
    decoder = tiny_decoder(dtype=torch.float32)
    decoder.train()
    features = backbone_features(TINY_CHANNELS, batch=2, height=64, width=64)
    out = decoder(features, torch.randn(2, 128))
    loss = out.mask_features.square().mean() + out.audio.square().mean()
    loss = loss + sum(f.square().mean() for f in out.multi_scale_features)
    loss.backward()
    dead = [name for name, p in decoder.named_parameters() if p.grad is None or p.grad.abs().max() == 0]
    assert dead == []


def test_invalid_inputs_and_sizes():
    decoder = MSDeformAttnPixelDecoder(TINY_CHANNELS, **TINY)
    features = backbone_features(TINY_CHANNELS, batch=1, height=32, width=32)
    with pytest.raises(ValueError, match="res2"):
        decoder({k: v for k, v in features.items() if k != "res2"}, torch.randn(1, 128))
    with pytest.raises(ValueError, match=r"\(N, 128\)"):
        decoder(features, torch.randn(1, 1, 128))
    with pytest.raises(ValueError, match="multiple of 32"):
        MSDeformAttnPixelDecoder(TINY_CHANNELS, conv_dim=48)
    with pytest.raises(ValueError, match="res6"):
        MSDeformAttnPixelDecoder(TINY_CHANNELS, transformer_in_features=("res4", "res5", "res6"))
