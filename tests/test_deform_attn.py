"""Multi-scale deformable attention against an explicit float64 bilinear-interpolation reference."""

from __future__ import annotations

import math

import pytest
import torch

from models.ovavss import deform_sampling
from models.ovavss.deform_attn import MSDeformAttn, multi_scale_deformable_attn, softmax_over_samples

METHODS = ["gather", "grid_sample"]

torch.set_num_threads(1)


def reference_msda(value, shapes, locations, weights):
    """Slow reference: every sampling point read by hand from its four neighbouring pixels.

    A normalised location (x, y) on an h x w map sits at pixel coordinate (x * w - 0.5, y * h - 0.5) (pixel
    centres at integer + 0.5 in location * size units); neighbours outside the map contribute zero.
    """
    n_batch, _, n_heads, head_dim = value.shape
    _, n_queries, _, n_levels, n_points, _ = locations.shape
    out = torch.zeros(n_batch, n_queries, n_heads, head_dim, dtype=torch.float64)
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    for n in range(n_batch):
        for q in range(n_queries):
            for m in range(n_heads):
                for lev, (h, w) in enumerate(shapes):
                    for p in range(n_points):
                        x = locations[n, q, m, lev, p, 0].item() * w - 0.5
                        y = locations[n, q, m, lev, p, 1].item() * h - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        fx, fy = x - x0, y - y0
                        sample = torch.zeros(head_dim, dtype=torch.float64)
                        for xi, yi, coef in ((x0, y0, (1 - fx) * (1 - fy)), (x0 + 1, y0, fx * (1 - fy)),
                                             (x0, y0 + 1, (1 - fx) * fy), (x0 + 1, y0 + 1, fx * fy)):
                            if 0 <= xi < w and 0 <= yi < h:
                                sample += coef * value[n, starts[lev] + yi * w + xi, m].double()
                        out[n, q, m] += weights[n, q, m, lev, p].item() * sample
    return out.reshape(n_batch, n_queries, n_heads * head_dim)


def random_case(shapes, n_batch=2, n_queries=7, n_heads=3, head_dim=5, n_points=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    total = sum(h * w for h, w in shapes)
    value = torch.randn(n_batch, total, n_heads, head_dim, generator=gen, dtype=torch.float64)
    locations = torch.rand(n_batch, n_queries, n_heads, len(shapes), n_points, 2, generator=gen,
                           dtype=torch.float64) * 1.6 - 0.3  # about a quarter of the points off the map
    weights = torch.rand(n_batch, n_queries, n_heads, len(shapes), n_points, generator=gen, dtype=torch.float64)
    return value, torch.tensor(shapes, dtype=torch.long), locations, weights


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shapes", [[(3, 5), (6, 4), (1, 1)], [(2, 7), (4, 3), (5, 5), (1, 2)], [(4, 9)]])
def test_matches_explicit_bilinear_reference(shapes, method):
    value, spatial, locations, weights = random_case(shapes)
    assert ((locations < 0) | (locations > 1)).any()  # the case really samples outside the maps
    got = multi_scale_deformable_attn(value, spatial, locations, weights, method)
    want = reference_msda(value, shapes, locations, weights)
    assert got.shape == (2, 7, 15) and got.dtype == torch.float64
    assert (got - want).abs().max().item() < 1e-10


@pytest.mark.parametrize("method", METHODS)
def test_borders_corners_and_far_outside(method):
    shapes = [(3, 4), (2, 5)]
    value, spatial, _, _ = random_case(shapes, n_batch=1, n_queries=1, n_heads=2, head_dim=3, n_points=1)
    # Hand-picked x (same list used for y): the map edges, pixel centres, half a pixel outside, one pixel
    # outside (only zero neighbours) and far away.
    xs = [0.0, 1.0, 0.5 / 4, 3.5 / 4, -0.5 / 4, 1 + 0.5 / 4, -1.0 / 4, 1 + 1.0 / 4, -3.0, 0.37, 0.5, 1e6, -1e6]
    points = torch.tensor([(x, y) for x in xs for y in xs], dtype=torch.float64)  # (Q, 2)
    n_queries = points.shape[0]
    locations = points[None, :, None, None, None, :].expand(1, n_queries, 2, 2, 1, 2).contiguous()
    weights = torch.ones(1, n_queries, 2, 2, 1, dtype=torch.float64)
    got = multi_scale_deformable_attn(value, spatial, locations, weights, method)
    want = reference_msda(value, shapes, locations, weights)
    assert (got - want).abs().max().item() < 1e-10
    # A point one pixel or more outside the map reads exactly zero on every level.
    far = [i for i, (x, y) in enumerate(points.tolist()) if x <= -0.25 or y <= -1.0 / 3 or x >= 1.25 or y >= 1.5]
    assert far and got[0, far].abs().max().item() == 0.0
    # A pixel centre reads exactly that pixel: (x, y) = (0.5/4, 0.5/3) is pixel (0, 0) of level 0.
    single = multi_scale_deformable_attn(
        value, spatial, torch.tensor([0.5 / 4, 0.5 / 3], dtype=torch.float64).expand(1, 1, 2, 2, 1, 2),
        torch.tensor([1.0, 0.0], dtype=torch.float64)[None, None, None, :, None].expand(1, 1, 2, 2, 1), method)
    assert torch.allclose(single[0, 0], value[0, 0].reshape(-1), atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_gradcheck_tiny(method):
    shapes = [(2, 3), (1, 2)]
    value, spatial, locations, weights = random_case(shapes, n_batch=1, n_queries=2, n_heads=2, head_dim=2,
                                                     n_points=2, seed=3)
    locations = locations.clamp(0.02, 0.98)  # stay away from the non-differentiable integer-pixel kinks
    value.requires_grad_(True)
    locations.requires_grad_(True)
    weights.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda v, loc, w: multi_scale_deformable_attn(v, spatial, loc, w, method), (value, locations, weights),
        eps=1e-6, atol=1e-6)


def test_gather_and_grid_sample_agree_in_value_and_gradient_off_the_map():
    """The two forms give the same output and the same gradients, also for points partly or fully outside
    the maps (where the gather form clamps coordinates onto its zero border)."""
    shapes = [(5, 7), (3, 4), (2, 2)]
    case = random_case(shapes, n_batch=2, n_queries=11, n_heads=2, head_dim=3, n_points=3, seed=7)
    value, spatial, locations, weights = case
    locations = locations * 1.5 - 0.25  # about 45 % of the points off the map, some far
    grads = {}
    for method in METHODS:
        inputs = [t.clone().requires_grad_(True) for t in (value, locations, weights)]
        out = multi_scale_deformable_attn(inputs[0], spatial, inputs[1], inputs[2], method)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        grads[method] = (out.detach(), *[t.grad for t in inputs])
    for got, want in zip(grads["gather"], grads["grid_sample"]):
        assert want.abs().max() > 0
        assert (got - want).abs().max().item() < 1e-10


def test_non_finite_locations_read_zero_and_never_index_out_of_range():
    """NaN and +-inf locations (a diverged or corrupt model) contribute nothing, as in grid_sample."""
    shapes = [(3, 4), (2, 2)]
    value, spatial, locations, weights = random_case(shapes, n_batch=1, n_queries=6, n_heads=2, head_dim=3,
                                                     n_points=2, seed=11)
    locations = locations.clamp(0, 1)
    bad = locations.clone()
    bad[0, 0, :, 0, 0, 0] = float("nan")
    bad[0, 1, :, 1, 1, 1] = float("inf")
    bad[0, 2, :, 0, 1, 0] = -float("inf")
    zeroed = weights.clone()
    zeroed[0, 0, :, 0, 0] = zeroed[0, 1, :, 1, 1] = zeroed[0, 2, :, 0, 1] = 0
    got = multi_scale_deformable_attn(value, spatial, bad, weights, "gather")
    want = reference_msda(value, shapes, locations, zeroed)  # the bad points dropped
    assert torch.isfinite(got).all()
    assert (got - want).abs().max().item() < 1e-10


def test_float32_gather_matches_grid_sample_at_model_shapes():
    """At the r50 head shapes (8 heads x 32 channels, 3 levels x 4 points) the float32 forms agree."""
    gen = torch.Generator().manual_seed(0)
    shapes = torch.tensor([[12, 20], [6, 10], [3, 5]])
    total = int((shapes[:, 0] * shapes[:, 1]).sum())
    value = torch.randn(2, total, 8, 32, generator=gen)
    locations = torch.rand(2, total, 8, 3, 4, 2, generator=gen) * 1.2 - 0.1
    weights = torch.rand(2, total, 8, 3, 4, generator=gen).softmax(-1)
    got = multi_scale_deformable_attn(value, shapes, locations, weights, "gather")
    want = multi_scale_deformable_attn(value, shapes, locations, weights, "grid_sample")
    assert (got - want).abs().max().item() < 1e-5


def test_auto_uses_gather_on_cpu_and_unknown_method_is_refused(monkeypatch):
    calls = []
    real = deform_sampling.sample_with_gather
    monkeypatch.setattr(deform_sampling, "sample_with_gather", lambda *a: calls.append(1) or real(*a))
    value, spatial, locations, weights = random_case([(2, 3)])
    multi_scale_deformable_attn(value, spatial, locations, weights)
    assert calls == [1]
    with pytest.raises(ValueError, match="unknown sampling method 'cuda_op'"):
        multi_scale_deformable_attn(value, spatial, locations, weights, "cuda_op")
    with pytest.raises(ValueError, match="unknown sampling method"):
        MSDeformAttn(d_model=8, n_heads=2, sampling="bogus")


def test_rejects_shapes_that_do_not_cover_value():
    value, spatial, locations, weights = random_case([(2, 2), (1, 1)])
    with pytest.raises(ValueError, match="cover"):
        multi_scale_deformable_attn(value, torch.tensor([[2, 2], [1, 2]]), locations, weights)


def test_module_parameter_names_and_shapes():
    attn = MSDeformAttn(d_model=64, n_levels=2, n_heads=4, n_points=3)
    shapes = {k: tuple(v.shape) for k, v in attn.state_dict().items()}
    assert shapes == {
        "sampling_offsets.weight": (4 * 2 * 3 * 2, 64), "sampling_offsets.bias": (48,),
        "attention_weights.weight": (4 * 2 * 3, 64), "attention_weights.bias": (24,),
        "value_proj.weight": (64, 64), "value_proj.bias": (64,),
        "output_proj.weight": (64, 64), "output_proj.bias": (64,),
    }
    with pytest.raises(ValueError, match="divisible"):
        MSDeformAttn(d_model=30, n_heads=4)


def test_reset_parameters_deformable_detr_pattern():
    attn = MSDeformAttn(d_model=32, n_levels=3, n_heads=8, n_points=4)
    assert attn.sampling_offsets.weight.abs().max() == 0
    assert attn.attention_weights.weight.abs().max() == 0 and attn.attention_weights.bias.abs().max() == 0
    assert attn.value_proj.bias.abs().max() == 0 and attn.output_proj.bias.abs().max() == 0
    # Head k points at angle 2*pi*k/8, scaled onto the unit square: E, NE, N, NW, W, SW, S, SE.
    directions = torch.tensor([(1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1)],
                              dtype=torch.float32)
    bias = attn.sampling_offsets.bias.detach().view(8, 3, 4, 2)
    for p in range(4):
        for level in range(3):
            assert torch.allclose(bias[:, level, p], directions * (p + 1), atol=1e-6)
    # xavier-uniform bound sqrt(6 / (fan_in + fan_out)) for the projections.
    bound = math.sqrt(6 / 64)
    assert attn.value_proj.weight.abs().max() <= bound and attn.value_proj.weight.std() > bound / 4


@pytest.mark.parametrize("method", ["auto", *METHODS])
def test_module_forward_matches_reference_composition(method):
    torch.manual_seed(0)
    shapes = [(3, 4), (2, 2), (1, 3)]
    attn = MSDeformAttn(d_model=12, n_levels=3, n_heads=3, n_points=2, sampling=method).double()
    with torch.no_grad():
        for p in attn.parameters():
            p.add_(0.3 * torch.randn_like(p))  # non-trivial offsets and attention weights
    spatial = torch.tensor(shapes)
    total = sum(h * w for h, w in shapes)
    query = torch.randn(2, 5, 12, dtype=torch.float64)
    src = torch.randn(2, total, 12, dtype=torch.float64)
    ref = torch.rand(2, 5, 3, 2, dtype=torch.float64)
    start = torch.tensor([0, 12, 16])
    got = attn(query, ref, src, spatial, start)

    value = (src @ attn.value_proj.weight.T + attn.value_proj.bias).view(2, total, 3, 4)
    offsets = (query @ attn.sampling_offsets.weight.T + attn.sampling_offsets.bias).view(2, 5, 3, 3, 2, 2)
    logits = (query @ attn.attention_weights.weight.T + attn.attention_weights.bias).view(2, 5, 3, 6)
    weights = (logits.exp() / logits.exp().sum(-1, keepdim=True)).view(2, 5, 3, 3, 2)
    locations = torch.empty_like(offsets)
    for lev, (h, w) in enumerate(shapes):
        locations[:, :, :, lev, :, 0] = ref[:, :, None, lev, None, 0] + offsets[:, :, :, lev, :, 0] / w
        locations[:, :, :, lev, :, 1] = ref[:, :, None, lev, None, 1] + offsets[:, :, :, lev, :, 1] / h
    want = reference_msda(value, shapes, locations, weights) @ attn.output_proj.weight.T + attn.output_proj.bias
    assert (got - want).abs().max().item() < 1e-10

    # A padding mask zeroes the masked values: masking everything leaves only the output bias.
    masked = attn(query, ref, src, spatial, start, torch.ones(2, total, dtype=torch.bool))
    assert torch.allclose(masked, attn.output_proj.bias.expand_as(masked), atol=1e-12)


def test_cpu_softmax_over_samples_equals_torch_softmax_in_value_and_gradient():
    """The written-out CPU softmax (short rows) is torch.softmax: values, large and -inf logits, gradients."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 8, 12, generator=gen, dtype=torch.float64) * 5
    logits[0, 0, 0] = torch.linspace(-1e4, 1e4, 12, dtype=torch.float64)  # exp would overflow unshifted
    logits[0, 0, 1, :5] = float("-inf")
    ours = softmax_over_samples(logits)
    torch.testing.assert_close(ours, torch.softmax(logits, dim=-1), rtol=1e-12, atol=1e-15)
    assert torch.allclose(ours.sum(-1), torch.ones(3, 7, 8, dtype=torch.float64))
    assert torch.autograd.gradcheck(softmax_over_samples, (torch.randn(2, 3, 12, generator=gen, dtype=torch.float64,
                                                                      requires_grad=True),))
    upstream = torch.randn(3, 7, 8, 12, generator=gen, dtype=torch.float64)
    finite = logits.clone()
    finite[0, 0, 1, :5] = -30.0
    grads = []
    for function in (softmax_over_samples, lambda x: torch.softmax(x, dim=-1)):
        leaf = finite.clone().requires_grad_()
        (function(leaf) * upstream).sum().backward()
        grads.append(leaf.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-12)
