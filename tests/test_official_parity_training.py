"""avseg's training against the official OV-AVSS code itself: criterion, a whole training step, optimizer, lr
schedule and initialisation, side by side on the same weights and data (see `test_official_parity.py` for what
these tests need; they skip without it)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from official_code import (
    FRAMES,
    build_official_model,
    compare,
    load_avseg_network,
    no_dropout,
    official_cpu_bridges,
    save_official_checkpoint,
    skip_or_fail,
)

def fixed_points_rand(count: int = 40000, seed: int = 9):
    """A stand-in for `torch.rand(..., n, 2)` that always returns the same first n points (broadcast over the
    leading dimensions), so two codes that draw their sampling points in different batches (the official one
    per layer and per clip, avseg for all of them at once) sample at the same points."""
    points = torch.rand(count, 2, generator=torch.Generator().manual_seed(seed))
    real_rand = torch.rand

    def rand(*size, **kwargs):
        size = tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size
        if kwargs.get("generator") is not None or len(size) < 2 or size[-1] != 2:
            return real_rand(*size, **kwargs)
        return points[: size[-2]].to(kwargs.get("device") or "cpu").expand(*size).clone()

    return rand


def blob_masks(count: int, frames: int, generator: torch.Generator) -> torch.Tensor:
    low = torch.randn(count, frames, 7, 10, generator=generator) * 2 - 1
    return torch.nn.functional.interpolate(low, size=(224, 320), mode="bilinear", align_corners=False) > 0


@pytest.mark.parametrize("subset", ["v2", "v1s"])
def test_matching_and_losses_match_official(official, parity_clip, subset: str, monkeypatch):
    """The official criterion (Hungarian matching, 2-way CE with no-object weight 0.1, PointRend-sampled BCE
    and dice, deep supervision; v1s clips supervised on their first frame only) and avseg's, built from their
    configs (avseg's: `build_criterion`, what `avseg train` uses), on the same predictions and targets, sampling
    at the same points: every loss term equal."""
    from models.ovavss.config import TrainConfig, get_config
    from models.ovavss.criterion import build_criterion

    model = build_official_model(official, "r50", parity_clip[2])
    ours = build_criterion(TrainConfig(), get_config("r50").dec_layers)
    assert ours.weight_dict == model.criterion.weight_dict
    assert torch.equal(ours.empty_weight, model.criterion.empty_weight)

    generator = torch.Generator().manual_seed(10)

    def predictions():
        torch.manual_seed(11)
        out = {"pred_logits": torch.randn(1, 100, 2), "pred_masks": torch.randn(1, 100, FRAMES, 56, 80) * 3}
        out["aux_outputs"] = [{"pred_logits": torch.randn(1, 100, 2), "pred_masks": torch.randn(1, 100, FRAMES, 56, 80)}
                              for _ in range(9)]
        return out
    target_frames = 1 if subset == "v1s" else FRAMES
    masks = blob_masks(3, target_frames, generator).float()
    theirs_targets = [{"labels": torch.zeros(3, dtype=torch.long), "ids": torch.zeros(3, target_frames), "masks": masks}]
    ours_targets = [{"labels": torch.zeros(3, dtype=torch.long), "masks": masks,
                     "frame_indices": torch.arange(target_frames)}]

    monkeypatch.setattr(torch, "rand", fixed_points_rand())
    with torch.no_grad():
        theirs = model.criterion(predictions(), theirs_targets, [subset])
        mine = ours(predictions(), ours_targets)
    assert set(mine) == set(theirs) and len(mine) == 30
    for name in sorted(theirs):
        compare(mine[name], theirs[name], f"{subset} {name}", atol=1e-5, rtol=1e-5)
    assert all(float(theirs[name]) > 0 for name in theirs)


@pytest.mark.parametrize("subset", ["v2", "v1s"])
def test_training_step_matches_official(official, parity_clip, subset: str, tmp_path: Path, monkeypatch):
    """One training step from data to gradients: an avseg training clip of a synthetic AVSBench video (frames,
    audio examples by frame id, targets) against the official training forward on the same clip in the
    official input format (frames, per-frame `Instances` with ids, file names, wav path, subset label), which
    normalises and pads the frames, runs VGGish on the wav and picks each frame's example, builds padded
    targets (v1s: first frame only), and returns the weighted losses: every weighted loss term and the
    gradient of every trained parameter equal (fusion dropout off, the same sampling points)."""
    from detectron2.structures import BitMasks, Instances

    from models.data.clips import TrainClipDataset, collate_train_clips
    from models.data.prepared import PreparedData
    from models.data.synthetic import SyntheticVideoSpec, make_synthetic_avsbench
    from models.ovavss.config import TrainConfig, get_config
    from models.ovavss.criterion import build_criterion, weighted_total
    from models.pipeline.prepare import prepare_dataset

    root = tmp_path / "AVSBench-semantic"
    make_synthetic_avsbench(root, [SyntheticVideoSpec("train", subset, ("dog", "piano"), ("car",))], seed=5)
    prepare_dataset(root, tmp_path / "data")
    data = PreparedData.open(tmp_path / "data")
    clip = TrainClipDataset(data, "train", short_sides=(128,), flip_prob=1.0)[(0, 7)]
    record = data.load_split("train")[0]
    batch = collate_train_clips([clip])

    model = build_official_model(official, "r50", parity_clip[2])
    ours = load_avseg_network(save_official_checkpoint(model, tmp_path / "model.pth"), delete=True)
    model.train()
    ours.train()
    no_dropout(model, ours)

    height, width = clip.image_size
    instances = []
    for t in range(clip.frames.shape[0]):
        frame = Instances((height, width))
        position = (clip.frame_indices == t).nonzero()
        masks = clip.masks[:, int(position)] if len(position) else torch.zeros(len(clip.labels), height, width, dtype=torch.bool)
        present = masks.flatten(1).any(1)
        frame.gt_masks = BitMasks(masks)
        frame.gt_ids = torch.where(present, torch.arange(len(clip.labels)), torch.full_like(clip.labels, -1))
        frame.gt_classes = clip.labels.clone()
        instances.append(frame)
    batched_inputs = [{
        "image": [frame.float() for frame in clip.frames],
        "instances": instances,
        "file_names": [f"{record.uid}/{int(k)}.jpg" for k in clip.frame_ids],
        "wav_data": str(record.audio_path(root)),
        "label": subset,
        "height": height,
        "width": width,
    }]

    criterion = build_criterion(TrainConfig(), get_config("r50").dec_layers)
    weight_dict = criterion.weight_dict

    monkeypatch.setattr(torch, "rand", fixed_points_rand())
    with official_cpu_bridges(official):
        theirs = model(batched_inputs)
    sum(theirs.values()).backward()
    with torch.no_grad():
        embeddings = ours.embed_audio(batch.audio_examples)
    outputs = ours(batch.images, audio_embeddings=embeddings)
    mine = criterion(outputs, batch.targets)
    total = weighted_total(mine, weight_dict)
    total.backward()

    assert set(mine) == set(theirs) and len(theirs) == 30
    for name in sorted(theirs):
        compare(mine[name] * weight_dict[name], theirs[name], f"{subset} {name}", atol=1e-4, rtol=1e-4)
    # Gradients relative to their norm. The float32 noise floor of this random, deep network is ~2.5e-3 (avseg's
    # own float32 gradients against its float64 ones, same inputs); a wrong term would give O(1). A gradient that
    # is zero in exact arithmetic (the fusion's v_proj.bias: one audio token per frame, so the vision-to-audio
    # softmax is constant) is float noise of ~1e-8 in both, hence the absolute 1e-6.
    theirs_params = dict(model.named_parameters())
    checked = 0
    for name, param in ours.named_parameters():
        if param.requires_grad and name.startswith(("backbone.", "sem_seg_head.")):
            theirs_grad = theirs_params[name].grad
            assert param.grad is not None and theirs_grad is not None, name
            difference = float((param.grad - theirs_grad).norm())
            assert difference <= 1e-2 * float(theirs_grad.norm()) + 1e-6, (name, difference, float(theirs_grad.norm()))
            checked += 1
    assert checked > 400


def official_trainer(official):
    """The official `train_net.Trainer` (its optimizer and lr-schedule builders)."""
    sys.path.insert(0, str(official.repo))
    try:
        import train_net
    except ImportError as error:
        skip_or_fail(f"the official train_net cannot be imported here ({error})")
    return train_net.Trainer


def test_optimizer_schedule_and_clipped_steps_match_official(official, parity_clip, tmp_path: Path):
    """The official training recipe's optimizer (per-parameter lr and weight decay, AdamW, full-model gradient
    clipping at 0.01) and lr schedule against avseg's on the R50 model: the same settings for every trained
    parameter, the same lr at every one of the 96,228 iterations, the same weights after clipped steps."""
    from models.ovavss.config import TrainConfig
    from models.ovavss.optim import build_optimizer, build_scheduler, clip_full_model_grad_norm, parameter_settings

    trainer = official_trainer(official)
    cfg = official.cfg("r50")
    model = build_official_model(official, "r50", parity_clip[2])
    ours = load_avseg_network(save_official_checkpoint(model, tmp_path / "model_ov_avss_r50.pth"), delete=True)
    train_cfg = TrainConfig()

    theirs_optimizer = trainer.build_optimizer(cfg, model)
    names = {id(param): name for name, param in model.named_parameters()}
    theirs_settings = {names[id(group["params"][0])]: (group["lr"], group["weight_decay"])
                       for group in theirs_optimizer.param_groups}
    # The official optimizer also lists VGGish (requires_grad is left on, but its features are computed under
    # no_grad, so it never has a gradient and AdamW and the clipping skip it); avseg freezes it instead.
    theirs_settings = {k: v for k, v in theirs_settings.items() if not k.startswith("audio_encoder.")}
    ours_settings = {name: (lr, wd) for name, _, lr, wd in parameter_settings(ours, train_cfg)}
    assert ours_settings == theirs_settings
    # backbone lr x 0.1; no decay for norms (the R50's FrozenBN has no parameters) and embeddings
    assert set(ours_settings.values()) == {(1e-4, 0.05), (1e-4, 0.0), (1e-5, 0.05)}

    probe = torch.nn.Parameter(torch.zeros(1))
    theirs_schedule = trainer.build_lr_scheduler(cfg, torch.optim.SGD([probe], lr=cfg.SOLVER.BASE_LR))
    ours_schedule = build_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=train_cfg.base_lr),
                                    train_cfg)
    assert cfg.SOLVER.MAX_ITER == train_cfg.max_iter == 96228
    theirs_lr, ours_lr = [], []
    for _ in range(cfg.SOLVER.MAX_ITER):
        theirs_lr.append(theirs_schedule.get_last_lr()[0])
        ours_lr.append(ours_schedule.get_last_lr()[0])
        theirs_schedule.step()
        ours_schedule.step()
    np.testing.assert_allclose(ours_lr, theirs_lr, rtol=1e-12, atol=0)
    assert sorted(set(np.round(theirs_lr, 12))) == [1e-6, 1e-5, 1e-4]

    ours_optimizer = build_optimizer(ours, train_cfg, fused=False)
    ours_params = [p for p in ours.parameters() if p.requires_grad]
    theirs_params = dict(model.named_parameters())
    generator = torch.Generator().manual_seed(12)
    for _ in range(3):
        for name, param in ours.named_parameters():
            if param.requires_grad:
                grad = torch.randn(param.shape, generator=generator) * 0.01  # global norm ~ 1 > 0.01: clipped
                param.grad = grad.clone()
                theirs_params[name].grad = grad.clone()
        theirs_optimizer.step()  # clips inside
        assert float(clip_full_model_grad_norm(ours_params, train_cfg.clip_grad_norm)) > 0.5
        ours_optimizer.step()
    for name, param in ours.named_parameters():
        if param.requires_grad:
            compare(param.detach(), theirs_params[name].detach(), f"{name} after 3 steps", atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("config, kind", [("r50", "pkl"), ("swinb", "pkl"), ("r50", "pth")])
def test_training_initialisation_matches_official(official, parity_clip, config: str, kind: str, tmp_path: Path):
    """`avseg train --init FILE` against the official start of training (detectron2's `DetectionCheckpointer`,
    as `train_net.py` loads MODEL.WEIGHTS): the same parameters are taken from the file, with the same values.

    "pkl": a Mask2Former COCO model-zoo pickle (the model zoo's key names and shapes). Not taken: the class head
    and `empty_weight` (shapes differ), the audio parts (absent) and, which the spec did not expect, the whole
    pixel decoder: the official head's legacy-format hook renames its keys away because detectron2's name
    matching hands over a dict without module versions. "pth": a PyTorch file of an OV-AVSS state_dict, whose
    module versions survive, so everything is taken."""
    from collections import OrderedDict

    from detectron2.checkpoint import DetectionCheckpointer

    import fake_official
    from models.training_init import load_matching, read_init_checkpoint
    from models.ovavss.model import build_ovavss

    model = build_official_model(official, config, parity_clip[2])
    if kind == "pkl":
        path = tmp_path / "model_final.pkl"
        arrays = {k: torch.from_numpy(v) for k, v in fake_official.make_fake_mask2former_pkl(path, config, 13).items()}
    else:
        path = tmp_path / "model_ov_avss.pth"
        donor = model.state_dict()  # an OrderedDict with the modules' versions, as torch.save keeps it
        for key, value in donor.items():
            if value.is_floating_point() and key.startswith(("backbone.", "sem_seg_head.")):
                donor[key] = value + 1.0
        torch.save({"model": donor}, path)
        arrays = OrderedDict(donor)
    DetectionCheckpointer(model).load(str(path))
    theirs_state = model.state_dict()
    trained = ("backbone.", "sem_seg_head.")
    theirs_loaded = {k for k, v in arrays.items() if k.startswith(trained) and k in theirs_state
                     and theirs_state[k].shape == v.shape and torch.equal(theirs_state[k], v.to(theirs_state[k].dtype))}

    ours = build_ovavss(config)
    init_state, left_out = read_init_checkpoint(path)
    path.unlink()  # 0.2-0.7 GB
    report = load_matching(ours, init_state)
    assert {k for k in report.loaded if k.startswith(trained)} == theirs_loaded
    pixel_decoder = {k for k in arrays if k.startswith("sem_seg_head.pixel_decoder.")}
    if kind == "pkl":
        assert set(left_out) == pixel_decoder and not pixel_decoder & theirs_loaded
        assert {"sem_seg_head.predictor.class_embed.weight", "criterion.empty_weight"} <= set(arrays) - theirs_loaded
    else:
        assert not left_out and pixel_decoder <= theirs_loaded
    ours_state = ours.state_dict()
    for key in theirs_loaded:
        assert torch.equal(ours_state[key], theirs_state[key]), key
    assert len(theirs_loaded) > 300 and any(k.startswith("sem_seg_head.predictor.") for k in theirs_loaded)


