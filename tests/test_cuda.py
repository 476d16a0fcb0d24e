"""The CUDA paths compute what the CPU paths compute (skipped without a GPU; run on a lent GPU machine).

Each check compares a CUDA result with a float64 CPU computation of the same function on fresh random
inputs, by relative error ||cuda - ref|| / ||ref||. Bounds: float32 kernels land far below 1e-4; cuDNN
convolutions use TF32 by default (about 3e-4 per product), which a 50-layer backbone compounds; bf16
autocast has 8 mantissa bits (about 4e-3 per rounding), fp16 10.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.ovavss.deform_attn import MSDeformAttn, multi_scale_deformable_attn
from models.ovavss.model import build_ovavss
from models.predictor import AVSegPredictor
from test_cpu_fast_paths import perturb
from test_predictor import VOCABULARY, make_tiny_checkpoint, make_tiny_clip_dir, random_clip_input

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

CUDA = torch.device("cuda")


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    value = value.detach().double().cpu()
    reference = reference.detach().double().cpu()
    assert torch.isfinite(value).all()
    return float((value - reference).norm() / reference.norm())


@pytest.mark.parametrize("method", ["gather", "grid_sample", "auto"])
def test_deformable_sampling_on_cuda_matches_float64(method):
    gen = torch.Generator().manual_seed(5)
    shapes = [(23, 41), (12, 21), (6, 11), (3, 6)]
    total = sum(h * w for h, w in shapes)
    value = torch.randn(2, total, 8, 32, generator=gen, dtype=torch.float64)
    locations = torch.rand(2, 300, 8, 4, 4, 2, generator=gen, dtype=torch.float64) * 1.4 - 0.2
    weights = torch.rand(2, 300, 8, 4, 4, generator=gen, dtype=torch.float64)
    spatial = torch.tensor(shapes)
    reference = multi_scale_deformable_attn(value, spatial, locations, weights, "grid_sample")
    out = multi_scale_deformable_attn(value.float().to(CUDA), spatial.to(CUDA), locations.float().to(CUDA),
                                      weights.float().to(CUDA), method)
    assert out.device.type == "cuda" and out.shape == (2, 300, 256)
    assert relative_error(out, reference) < 1e-5

    # gradients of all three differentiable inputs agree too
    grads = {}
    for name, device, dtype in (("ref", "cpu", torch.float64), ("cuda", CUDA, torch.float32)):
        inputs = [t.detach().to(device, dtype).clone().requires_grad_() for t in (value, locations, weights)]
        result = multi_scale_deformable_attn(inputs[0], spatial.to(device), inputs[1], inputs[2],
                                             "grid_sample" if name == "ref" else method)
        result.backward(torch.ones_like(result))
        grads[name] = [t.grad for t in inputs]
    for got, want in zip(grads["cuda"], grads["ref"]):
        assert relative_error(got, want) < 1e-4


def test_auto_sampling_is_grid_sample_on_cuda(monkeypatch):
    from models.ovavss import deform_sampling

    called = []
    monkeypatch.setattr(deform_sampling, "sample_with_grid_sample",
                        lambda *args: called.append("grid_sample") or torch.zeros(1))
    monkeypatch.setattr(deform_sampling, "sample_with_gather", lambda *args: called.append("gather") or torch.zeros(1))
    value = torch.randn(1, 4, 1, 2, device=CUDA)
    deform_sampling.multi_scale_deformable_attn(value, torch.tensor([[2, 2]], device=CUDA),
                                                torch.rand(1, 3, 1, 1, 2, 2, device=CUDA),
                                                torch.rand(1, 3, 1, 1, 2, device=CUDA))
    assert called == ["grid_sample"]


@pytest.mark.parametrize("config,size,amp,mask_bound,sound_bound", [
    ("tiny", (96, 160), "off-no-tf32", 1e-4, 1e-4),
    ("tiny", (96, 160), "off", 1e-2, 1e-2),
    ("tiny", (96, 160), "bf16", 1e-1, 1e-1),
    ("tiny", (96, 160), "fp16", 2e-2, 3e-2),
    ("r50", (192, 320), "off-no-tf32", 1e-4, 1e-4),
    ("r50", (192, 320), "off", 1e-2, 1e-2),
    ("r50", (192, 320), "bf16", 1e-1, 1e-1),
    ("r50", (192, 320), "fp16", 3e-2, 3e-2),
])
def test_network_forward_on_cuda_matches_float64_cpu(config, size, amp, mask_bound, sound_bound, monkeypatch):
    """Masks by relative error; the sound head by P(sounding) (its two logits are close, so their relative
    error says little). "off" is float32 with PyTorch's defaults (cuDNN convolutions in TF32, measured
    ~1e-3); "off-no-tf32" turns TF32 off, which must bring float32 close to float64."""
    if amp == "off-no-tf32":
        # matrix products are full float32 by PyTorch's default; cuDNN convolutions are not. (Setting
        # torch.backends.cuda.matmul.allow_tf32 fails on newer PyTorch, whose matmul switch is fp32_precision.)
        assert torch.get_float32_matmul_precision() == "highest"
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
        amp = "off"
    from models.pipeline.train import _autocast

    torch.manual_seed(0)
    model = build_ovavss(config).double().eval()
    # The backbone keeps its init: perturbing all 50 ResNet layers grows activations to ~1e8 (fp16 overflows),
    # which no trained network does.
    perturb(model, seed=1, keep=("backbone.",))
    gen = torch.Generator().manual_seed(2)
    images = torch.randn(1, 5, 3, *size, generator=gen, dtype=torch.float64)
    audio = torch.randn(1, 5, 128, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        reference = model(images, audio_embeddings=audio)
        model.float().to(CUDA)
        with _autocast(CUDA, amp):
            out = model(images.float().to(CUDA), audio_embeddings=audio.float().to(CUDA))
    masks = relative_error(out["pred_masks"], reference["pred_masks"])
    sound = out["pred_logits"].float().softmax(-1)[..., 0].double().cpu()
    sound_error = float((sound - reference["pred_logits"].softmax(-1)[..., 0]).abs().max())
    print(f"{config} amp={amp}: relative error of masks {masks:.2e}, largest P(sounding) error {sound_error:.2e}")
    assert masks < mask_bound and sound_error < sound_bound
    assert reference["pred_masks"].std() > 0.1  # not a degenerate case
    assert reference["pred_logits"].softmax(-1)[..., 0].std() > 0.01


@pytest.fixture
def tiny_files(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    """A tiny avseg checkpoint and a tiny open_clip folder (the helpers of test_predictor)."""
    monkeypatch.setenv("AVSEG_CACHE", str(tmp_path / "cache"))
    make_tiny_checkpoint(tmp_path / "tiny.pt")
    return tmp_path / "tiny.pt", make_tiny_clip_dir(tmp_path / "clip")


@pytest.mark.parametrize("amp", ["off", "bf16", "fp16"])
def test_training_on_cuda_runs_checkpoints_and_resumes(tmp_path: Path, amp: str, recwarn):
    from models.data.synthetic import make_synthetic_avsbench
    from models.pipeline.prepare import prepare_dataset
    from models.pipeline.train import TrainOptions, train

    make_synthetic_avsbench(tmp_path / "root", num_train=4, num_val=1, num_test=1, seed=3)
    prepare_dataset(tmp_path / "root", tmp_path / "data")

    def options(max_iters: int, resume: bool = False) -> TrainOptions:
        return TrainOptions(data_dir=tmp_path / "data", config_name="tiny", out_dir=tmp_path / "run",
                            device="cuda", max_iters=max_iters, resume=resume, amp=amp, checkpoint_period=3,
                            log_period=1, vggish_weights="random", overrides={"train_num_points": 256})

    first = train(options(3), warn=lambda *_: None)
    assert first.iterations == 3
    after_three = torch.load(tmp_path / "run" / "last.pt", weights_only=True, map_location="cpu")
    resumed = train(options(6, resume=True), warn=lambda *_: None)
    assert resumed.iterations == 6
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in rows)
    final = torch.load(tmp_path / "run" / "last.pt", weights_only=True, map_location="cpu")
    assert final["iteration"] == 6
    assert all(t.device.type == "cpu" for t in final["model"].values())
    changed = [k for k in final["model"] if not torch.equal(final["model"][k], after_three["model"][k])]
    assert changed  # the resumed iterations updated the weights
    assert all(torch.isfinite(t).all() for t in final["model"].values() if t.is_floating_point())
    # fp16's GradScaler skips the first steps; the schedule's PyTorch warning about it is not shown to users
    assert not [w for w in recwarn if "lr_scheduler.step" in str(w.message)]


def test_predictor_on_cuda_matches_the_cpu_predictor(tiny_files):
    checkpoint, clip_dir = tiny_files
    clip = random_clip_input(5, 72, 128, seed=4)
    results = {}
    for device in ("cpu", "cuda"):
        predictor = AVSegPredictor.from_checkpoint(checkpoint, device=device, clip_weights=clip_dir)
        predictor.set_vocabulary(VOCABULARY)
        results[device] = predictor.predict_clip(clip)
    agree = [float((a.label_map == b.label_map).mean()) for a, b in zip(results["cpu"], results["cuda"])]
    assert min(agree) > 0.99, agree
    assert sum(len(f.instances) for f in results["cpu"]) > 0
    for a, b in zip(results["cpu"], results["cuda"]):
        sound_cpu = sorted(round(i.sound_score, 3) for i in a.instances)
        sound_cuda = sorted(round(i.sound_score, 3) for i in b.instances)
        assert len(sound_cpu) == len(sound_cuda)
        np.testing.assert_allclose(sound_cuda, sound_cpu, atol=2e-3)


def test_msdeformattn_module_on_cuda_uses_grid_sample_and_matches_gather():
    torch.manual_seed(3)
    module = MSDeformAttn(d_model=64, n_levels=3, n_heads=4, n_points=4).to(CUDA)
    shapes = torch.tensor([[16, 24], [8, 12], [4, 6]], device=CUDA)
    starts = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    total = int((shapes[:, 0] * shapes[:, 1]).sum())
    query = torch.randn(2, 50, 64, device=CUDA)
    inputs = torch.randn(2, total, 64, device=CUDA)
    points = torch.rand(2, 50, 3, 2, device=CUDA)
    with torch.no_grad():
        auto = module(query, points, inputs, shapes, starts)
        module.sampling = "gather"
        gathered = module(query, points, inputs, shapes, starts)
    assert relative_error(auto, gathered) < 1e-5


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_predictor_amp_weights_change_speed_not_results(tiny_files, amp):
    """Weights stored in the amp dtype (the default) against float32 weights under the same autocast."""
    checkpoint, clip_dir = tiny_files
    clip = random_clip_input(5, 72, 128, seed=6)
    results = {}
    for amp_weights in (False, True):
        predictor = AVSegPredictor.from_checkpoint(checkpoint, device="cuda", clip_weights=clip_dir,
                                                   amp=amp, amp_weights=amp_weights)
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[amp] if amp_weights else torch.float32
        assert next(predictor.model.backbone.parameters()).dtype == dtype
        assert next(predictor.model.sem_seg_head.predictor.parameters()).dtype == dtype
        assert next(predictor.clip.model.visual.parameters()).dtype == dtype
        assert next(predictor.model.sem_seg_head.pixel_decoder.parameters()).dtype == torch.float32
        assert predictor.clip.model.token_embedding.weight.dtype == torch.float32
        predictor.set_vocabulary(VOCABULARY)
        results[amp_weights] = predictor.predict_clip(clip)
    agree = [float((a.label_map == b.label_map).mean()) for a, b in zip(results[False], results[True])]
    assert min(agree) > 0.98, agree
    assert sum(len(f.instances) for f in results[False]) > 0


def test_criterion_waits_for_the_gpu_once_per_training_step():
    """The losses of the final and the 9 aux predictions read the device back once (the matcher's cost
    tables, which scipy needs on the host); nothing else in the criterion synchronises. (Written without a
    GPU at hand, 2026-12-07: first to run on the next lent machine.)"""
    import warnings

    from models.ovavss.criterion import SetCriterion, default_weight_dict
    from models.ovavss.matcher import HungarianMatcher

    gen = torch.Generator().manual_seed(3)
    masks = torch.zeros(2, 5, 96, 160)
    masks[0, :, 10:50, 20:90] = 1
    masks[1, :, 40:90, 100:150] = 1
    frames = torch.arange(5)
    predictions = [{"pred_logits": torch.randn(1, 100, 2, generator=gen),
                    "pred_masks": torch.randn(1, 100, 5, 24, 40, generator=gen)} for _ in range(10)]
    outputs = dict(predictions[0], aux_outputs=predictions[1:])
    moved = {"pred_logits": outputs["pred_logits"].to(CUDA), "pred_masks": outputs["pred_masks"].to(CUDA),
             "aux_outputs": [{k: v.to(CUDA) for k, v in aux.items()} for aux in outputs["aux_outputs"]]}
    targets = [{"labels": torch.zeros(2, dtype=torch.long, device=CUDA), "masks": masks.to(CUDA),
                "frame_indices": frames}]  # as `train` passes them: frame indices stay on the host
    criterion = SetCriterion(matcher=HungarianMatcher(num_points=500), weight_dict=default_weight_dict(9),
                             num_points=500).to(CUDA)
    criterion(moved, targets)  # warm-up (first-call allocations)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = criterion(moved, targets)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) == 1, syncs
    assert len(result) == 30 and all(torch.isfinite(v) for v in result.values())


def test_train_batches_are_pinned_for_asynchronous_copies():
    """(Written without a GPU at hand, 2026-12-07.) `TrainBatch.pin_memory` gives page-locked tensors, which
    `train`'s non_blocking copies need to not wait for the GPU."""
    from models.data.clips import TrainBatch

    batch = TrainBatch(images=torch.rand(1, 2, 3, 32, 32), audio_examples=torch.rand(1, 2, 1, 96, 64),
                       targets=[{"labels": torch.zeros(1, dtype=torch.long), "masks": torch.rand(1, 2, 32, 32),
                                 "frame_indices": torch.arange(2)}],
                       image_sizes=[(32, 32)], uids=["v"], frame_ids=torch.tensor([[0, 1]])).pin_memory()
    assert batch.images.is_pinned() and batch.audio_examples.is_pinned()
    assert batch.targets[0]["labels"].is_pinned() and batch.targets[0]["masks"].is_pinned()
    copied = batch.images.to(CUDA, non_blocking=True)
    torch.cuda.synchronize()
    assert torch.equal(copied.cpu(), batch.images)


@pytest.mark.parametrize("training", [False, True])
def test_the_network_forward_never_waits_for_the_gpu(training):
    """No host read in the forward (tests/test_host_reads.py checks it with TorchDynamo on the CPU); here the
    CUDA runtime's own count: the level sizes' divisor goes up without a sync. (Written without a GPU at hand,
    2026-12-07.)"""
    import warnings

    from test_host_reads import tiny_inputs

    config, images, audio = tiny_inputs()
    torch.manual_seed(0)
    model = build_ovavss(config).to(CUDA).train(training)
    images, audio = images.to(CUDA), audio.to(CUDA)
    with torch.set_grad_enabled(training):
        model(images, audio_examples=audio)  # warm-up (first-call allocations, cuDNN plans)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                outputs = model(images, audio_examples=audio)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message)]
    assert syncs == []
    assert outputs["pred_masks"].shape[:3] == (1, config.num_queries, 3)


@pytest.mark.parametrize("amp", [None, torch.float16])
def test_graphed_network_replays_the_eager_forward(amp):
    """CUDA graphs (`GraphedNetwork`): the first call of a shape captures, later calls replay with new inputs;
    results equal the eager forward's, outputs belong to the caller, at most `max_graphs` shapes are kept.
    (Written without a GPU at hand, 2026-12-07.)"""
    import contextlib

    from models.ovavss.graphed_network import GraphedNetwork
    from test_host_reads import tiny_inputs

    config, images, audio = tiny_inputs()
    torch.manual_seed(0)
    model = build_ovavss(config).to(CUDA).eval()
    graphed = GraphedNetwork(model, amp, max_graphs=2)
    gen = torch.Generator().manual_seed(1)
    bound = 1e-5 if amp is None else 3e-3

    def eager(x, a):
        with torch.autocast("cuda", dtype=amp) if amp is not None else contextlib.nullcontext():
            return model(x, audio_examples=a)

    with torch.inference_mode():
        outputs = []
        for step in range(3):
            x = (images + step * torch.randn(images.shape, generator=gen)).to(CUDA)
            a = (audio + step * torch.randn(audio.shape, generator=gen)).to(CUDA)
            want, got = eager(x, a), graphed(x, a)
            assert relative_error(got["pred_masks"], want["pred_masks"]) < bound, step
            assert relative_error(got["pred_logits"], want["pred_logits"]) < bound, step
            outputs.append(got["pred_masks"])
        assert graphed.failed is None and len(graphed.captures) == 1
        assert relative_error(outputs[0], outputs[2]) > 1e-2  # new inputs, new results: not a stale replay
        kept = outputs[2].clone()
        graphed(images.to(CUDA), audio.to(CUDA))
        assert torch.equal(outputs[2], kept)  # a later replay does not overwrite what a caller holds
        for frames in (2, 1):  # shorter clips: a graph each, the least recently used dropped beyond 2
            short = graphed(images[:, :frames].to(CUDA), audio[:, :frames].to(CUDA))
            assert relative_error(short["pred_masks"], eager(images[:, :frames].to(CUDA),
                                                             audio[:, :frames].to(CUDA))["pred_masks"]) < bound
        assert len(graphed.captures) == 2
        assert [key[0][1] for key in graphed.captures] == [2, 1]


def test_predictor_with_cuda_graphs_gives_the_eager_results(tiny_files):
    """(Written without a GPU at hand, 2026-12-07.)"""
    checkpoint, clip_dir = tiny_files
    clips = [random_clip_input(5, 72, 128, seed=seed) for seed in (7, 8)] + [random_clip_input(3, 72, 128, seed=9)]
    results = {}
    for cuda_graphs in (False, True):
        predictor = AVSegPredictor.from_checkpoint(checkpoint, device="cuda", clip_weights=clip_dir,
                                                   amp="fp16", cuda_graphs=cuda_graphs)
        predictor.set_vocabulary(VOCABULARY)
        results[cuda_graphs] = [frame for clip in clips for frame in predictor.predict_clip(clip)]
        assert predictor.describe()["cuda_graphs"] is cuda_graphs
    assert predictor._network.failed is None and len(predictor._network.captures) == 2
    agree = [float((a.label_map == b.label_map).mean()) for a, b in zip(results[False], results[True])]
    assert min(agree) > 0.999, agree
    assert sum(len(f.instances) for f in results[True]) > 0


def test_the_swin_backbone_never_waits_for_the_gpu():
    """The shifted-window masks reach the device once per padded size (they were a blocking copy per stage
    and forward). (Written without a GPU at hand, 2026-12-07.)"""
    import warnings

    from models.ovavss.swin import SwinConfig, SwinTransformer

    torch.manual_seed(0)
    model = SwinTransformer(SwinConfig(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4),
                                       window_size=12)).to(CUDA).eval()
    images = torch.randn(2, 3, 96, 160, device=CUDA)
    with torch.inference_mode():
        reference = model(images)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                again = model(images)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert [str(w.message) for w in caught if "synchroniz" in str(w.message)] == []
    assert all(torch.equal(reference[name], again[name]) for name in reference)


def test_kept_constants_on_cuda_change_no_result():
    """r50 (FrozenBN folds, encodings, reference points kept on the GPU): a repeated forward equals a fresh copy's
    bit for bit, a CUDA-graph replay (which computes them inside the graph) equals the eager forward, and moving
    the model to the CPU leaves nothing kept on the GPU. (Written without a GPU at hand, 2026-12-07.)"""
    import copy

    from models.ovavss.device_constants import DeviceConstants
    from models.ovavss.frozen_bn import FrozenBatchNorm2d
    from models.ovavss.graphed_network import GraphedNetwork
    from test_host_reads import tiny_inputs

    _, images, audio = tiny_inputs(num_frames=3, height=128, width=224)
    torch.manual_seed(0)
    pristine = build_ovavss("r50").eval()
    model = copy.deepcopy(pristine).to(CUDA)
    images, audio = images.to(CUDA), audio.to(CUDA)
    with torch.inference_mode():
        first = model(images, audio_examples=audio)["pred_masks"]
        again = model(images, audio_examples=audio)["pred_masks"]
        fresh = copy.deepcopy(pristine).to(CUDA)(images, audio_examples=audio)["pred_masks"]
        assert torch.equal(again, first) and torch.equal(fresh, first)
        graphed = GraphedNetwork(model)
        for _ in range(2):
            replayed = graphed(images, audio)["pred_masks"]
            assert relative_error(replayed, first) < 1e-5
        assert graphed.failed is None and len(graphed.captures) == 1
    assert any(t.is_cuda for t in DeviceConstants.entries_in(model))
    model.cpu()
    assert DeviceConstants.entries_in(model) == []
    assert all(m._folded is None for m in model.modules() if isinstance(m, FrozenBatchNorm2d))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fused_clip_tower_on_cuda_is_as_accurate_as_the_unfused_one(dtype):
    """The fused CLIP image tower (QuickGELU as one SiLU, layer norms in the amp dtype, skipping CUDA autocast's
    float32 round trip) against the float64 CPU tower: as close as the unfused tower under the same autocast,
    and its layer norms run in the amp dtype with autocast off. (Written without a GPU at hand, 2026-12-07.)"""
    from test_clip_tower_fusion import fused_and_unfused_errors

    errors, norms = fused_and_unfused_errors(CUDA, dtype, num_images=16)
    assert errors[True] < 0.03 and errors[True] < 1.5 * errors[False] + 1e-3, errors
    assert norms[True] and set(norms[True]) == {(dtype, False)}, norms[True]
    assert norms[False] and {enabled for _, enabled in norms[False]} == {True}


@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_predict_clips_on_cuda_overlaps_without_changing_results(tiny_files, cuda_graphs):
    """`predict_clips` on CUDA: the results of `predict_clip`; issuing a clip's network (inputs copied through
    pinned memory) never waits for the GPU, which is what lets it overlap the previous clip's CLIP work.
    (Written without a GPU at hand, 2026-12-07.)"""
    import warnings

    from test_predictor import assert_same_frames

    checkpoint, clip_dir = tiny_files
    predictor = AVSegPredictor.from_checkpoint(checkpoint, device="cuda", clip_weights=clip_dir, amp="fp16",
                                               cuda_graphs=cuda_graphs)
    predictor.set_vocabulary(VOCABULARY)
    clips = [random_clip_input(5, 72, 128, seed=s) for s in range(4)] + [random_clip_input(3, 90, 60, seed=9)]
    want = [predictor.predict_clip(clip) for clip in clips]
    got = list(predictor.predict_clips(iter(clips)))
    for a, b in zip(got, want):
        assert_same_frames(a, b)
    assert len(got) == len(clips)
    resized = predictor._resize(clips[0])
    predictor._run_network(*resized)  # warm
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            predictor._run_network(*resized)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message)]
    assert syncs == []


def test_paint_semantic_maps_on_cuda_takes_the_first_covering_mask():
    """One `max` over the masks (first maximum's index) paints what the CPU paints, ties included.
    (Written without a GPU at hand, 2026-12-07.)"""
    from models.ovavss.postprocess import paint_semantic_maps

    gen = torch.Generator().manual_seed(0)
    masks = torch.rand(9, 5, 61, 83, generator=gen) > 0.5
    class_index = torch.randint(0, 70, (9,), generator=gen)
    want = paint_semantic_maps(masks, class_index)
    got = paint_semantic_maps(masks.to(CUDA), class_index.to(CUDA))
    assert got.device.type == "cuda" and torch.equal(got.cpu(), want)
