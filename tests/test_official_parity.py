"""avseg against the official OV-AVSS code itself, run side by side on the same weights and inputs.

These tests need a checkout of github.com/ruohaoguo/ovavss (AVSEG_OFFICIAL_REPO), detectron2's source on
PYTHONPATH and the official code's own imports (`pip install -e '.[parity]'`); without them they skip.
`make parity OFFICIAL=... DETECTRON2=...` runs them (README "Parity with the official code"). They are
the strongest check of checkpoint compatibility: the official model is built from its own config files,
its state_dict is saved as an official checkpoint file and loaded by avseg's loader, and both codes run.
How the official CUDA-only steps are run on the CPU: `tests/official_code.py`.
"""

from __future__ import annotations

import copy
import json
import sys
import types
import wave
from pathlib import Path

import numpy as np
from PIL import Image
import pytest
import torch

from official_code import (
    PARITY_CLIP,
    import_official,
    no_dropout,
    official_cpu_bridges,
    openai_clip_from_open_clip,
    perturbed_state,
)

VOCABULARY = ("violin", "dog", "man")  # few names, so CLIP's probabilities pass the 0.3 threshold
FRAMES, HEIGHT, WIDTH = 5, 200, 300  # unpadded; the network pads to 224 x 320


@pytest.fixture(scope="module")
def official() -> types.SimpleNamespace:
    return import_official()


@pytest.fixture(scope="module")
def parity_clip(tmp_path_factory):
    """(open_clip model, its folder for `--clip-weights`, the same weights in the OpenAI `clip` package)."""
    from open_clip.model import CLIP

    from ov_synthetic import save_clip_folder

    torch.manual_seed(3)
    model = CLIP(**PARITY_CLIP).eval()
    with torch.no_grad():  # OpenAI's CLIP builder stores weights in float16 (the released weights are float16)
        for tensor in model.state_dict().values():
            tensor.copy_(tensor.half().float())
        model.visual.conv1.weight.mul_(16)  # crops, not the class token, then decide the image embedding
    folder = tmp_path_factory.mktemp("parity_clip")
    save_clip_folder(model, folder)
    config = json.loads((folder / "open_clip_config.json").read_text())
    config["model_cfg"] = PARITY_CLIP
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    return model, folder, openai_clip_from_open_clip(model)


def build_official_model(official, config: str, clip_model: torch.nn.Module) -> torch.nn.Module:
    """The official `OV_AVSS` meta-architecture from its config file, random weights, eval mode.

    Its CLIP is `clip_model` (instead of a download) and its VGGish is random (instead of a file).
    """
    cfg = official.cfg(config)
    audio_cfg = official.meta.vgg_cfg.TRAIN
    saved = (official.adapter.build_clip_model, audio_cfg.FREEZE_AUDIO_EXTRACTOR)
    official.adapter.build_clip_model = lambda name: copy.deepcopy(clip_model)  # nothing leaks between tests
    audio_cfg.FREEZE_AUDIO_EXTRACTOR = False
    try:
        torch.manual_seed(0)
        model = official.build_model(cfg)
    finally:
        official.adapter.build_clip_model, audio_cfg.FREEZE_AUDIO_EXTRACTOR = saved
    state = model.state_dict()  # keeps its `_metadata` (the head's version: no legacy key renaming)
    state.update(perturbed_state({k: v for k, v in state.items() if k.startswith(("backbone.", "sem_seg_head."))}))
    model.load_state_dict(state)
    return model.eval()


def save_official_checkpoint(model: torch.nn.Module, path: Path) -> Path:
    """What the official detectron2 checkpointer writes: {"model": state_dict, "iteration": n}."""
    torch.save({"model": model.state_dict(), "iteration": 96227}, path)
    return path


def load_avseg_network(path: Path, delete: bool = False) -> torch.nn.Module:
    """avseg's network from a checkpoint file; `delete` removes the file afterwards (they are 0.5-0.7 GB, and
    pytest keeps the temporary folders of its last three runs)."""
    from models.checkpoint_parts import build_network, read_checkpoint_parts, setup_vggish

    parts = read_checkpoint_parts(path)
    model = build_network(parts, str(path))
    setup_vggish(model, parts, None, offline=True)
    if delete:
        path.unlink()
    return model.eval()


def compare(ours: torch.Tensor, theirs: torch.Tensor, what: str, atol: float = 1e-4, rtol: float = 1e-4) -> None:
    assert ours.shape == theirs.shape, f"{what}: shape {tuple(ours.shape)} vs official {tuple(theirs.shape)}"
    torch.testing.assert_close(ours.float(), theirs.float(), atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")


# ---------------------------------------------------------------------------------------------- network
@pytest.mark.parametrize("config", ["r50", "swinb"])
def test_network_matches_official(official, parity_clip, config: str, tmp_path: Path):
    """Official checkpoint file -> avseg's loader -> the same outputs as the official model, in eval mode and
    in training mode (dropout and stochastic depth off), every decoder layer."""
    model = build_official_model(official, config, parity_clip[2])
    ours = load_avseg_network(save_official_checkpoint(model, tmp_path / f"model_ov_avss_{config}.pth"), delete=True)
    assert set(ours.trained_state_dict()) == {
        k for k in model.state_dict() if k.startswith(("backbone.", "sem_seg_head."))
    }

    generator = torch.Generator().manual_seed(2)
    images = torch.randn(FRAMES, 3, 224, 320, generator=generator)
    audio = torch.relu(torch.randn(FRAMES, 128, generator=generator))  # VGGish embeddings are post-ReLU
    for mode in ("eval", "train"):
        model.train(mode == "train")
        ours.train(mode == "train")
        no_dropout(model, ours)
        with torch.no_grad():
            theirs = model.sem_seg_head(audio, model.backbone(images))
            mine = ours(images[None], audio_embeddings=audio[None])
        # float32 rounding differs (e.g. the deformable attention's sampling: the official grid_sample against
        # avseg's gather); a mask logit within rounding of the masked attention's 0.5 threshold propagates it
        compare(mine["pred_logits"], theirs["pred_logits"], f"{config} {mode} pred_logits", atol=1e-3, rtol=1e-3)
        compare(mine["pred_masks"], theirs["pred_masks"], f"{config} {mode} pred_masks", atol=1e-3, rtol=1e-3)
        assert len(mine["aux_outputs"]) == len(theirs["aux_outputs"]) == 9
        for layer, (a, b) in enumerate(zip(mine["aux_outputs"], theirs["aux_outputs"])):
            compare(a["pred_logits"], b["pred_logits"], f"{config} {mode} layer {layer} pred_logits", atol=1e-3,
                    rtol=1e-3)
            if mode == "train":
                compare(a["pred_masks"], b["pred_masks"], f"{config} {mode} layer {layer} pred_masks", atol=1e-3,
                        rtol=1e-3)
        assert theirs["pred_masks"].abs().max() > 1.0  # not a degenerate all-zero comparison


# ---------------------------------------------------------------------------------------------- training
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
    configs, on the same predictions and targets, sampling at the same points: every loss term equal."""
    from models.ovavss.config import TrainConfig, get_config
    from models.ovavss.criterion import SetCriterion, default_weight_dict
    from models.ovavss.matcher import HungarianMatcher

    model = build_official_model(official, "r50", parity_clip[2])
    train_cfg = TrainConfig()
    weight_dict = default_weight_dict(get_config("r50").dec_layers, class_weight=train_cfg.class_weight,
                                      mask_weight=train_cfg.mask_weight, dice_weight=train_cfg.dice_weight)
    assert weight_dict == model.criterion.weight_dict
    matcher = HungarianMatcher(cost_class=train_cfg.class_weight, cost_mask=train_cfg.mask_weight,
                               cost_dice=train_cfg.dice_weight, num_points=train_cfg.train_num_points)
    ours = SetCriterion(num_classes=1, matcher=matcher, weight_dict=weight_dict, eos_coef=train_cfg.no_object_weight,
                        num_points=train_cfg.train_num_points, oversample_ratio=train_cfg.oversample_ratio,
                        importance_sample_ratio=train_cfg.importance_sample_ratio)
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
    from models.ovavss.config import TrainConfig
    from models.ovavss.criterion import SetCriterion, default_weight_dict, weighted_total
    from models.ovavss.matcher import HungarianMatcher
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

    train_cfg = TrainConfig()
    weight_dict = default_weight_dict(9, class_weight=train_cfg.class_weight, mask_weight=train_cfg.mask_weight,
                                      dice_weight=train_cfg.dice_weight)
    criterion = SetCriterion(
        num_classes=1, weight_dict=weight_dict, eos_coef=train_cfg.no_object_weight,
        matcher=HungarianMatcher(cost_class=train_cfg.class_weight, cost_mask=train_cfg.mask_weight,
                                 cost_dice=train_cfg.dice_weight, num_points=train_cfg.train_num_points),
        num_points=train_cfg.train_num_points, oversample_ratio=train_cfg.oversample_ratio,
        importance_sample_ratio=train_cfg.importance_sample_ratio)

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
        pytest.skip(f"the official train_net cannot be imported here ({error})")
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
    from models.official import load_matching, read_init_checkpoint
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


# ------------------------------------------------------------------------------------------------ audio
def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    data = np.clip(samples * 32767, -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1 if data.ndim == 1 else data.shape[1])
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(data.tobytes())
    return path


@pytest.fixture(scope="module")
def official_vggish(official, tmp_path_factory):
    """(the official VGGish with random weights, avseg's VGGish loading them from a vggish-10086976.pth file)."""
    from models.ovavss.vggish import VGGish, load_vggish_weights

    audio_cfg = official.meta.vgg_cfg
    saved = audio_cfg.TRAIN.FREEZE_AUDIO_EXTRACTOR
    audio_cfg.TRAIN.FREEZE_AUDIO_EXTRACTOR = False
    try:
        torch.manual_seed(5)
        theirs = official.vggish.VGGish(audio_cfg, torch.device("cpu")).eval()
    finally:
        audio_cfg.TRAIN.FREEZE_AUDIO_EXTRACTOR = saved
    weights = tmp_path_factory.mktemp("vggish") / "vggish-10086976.pth"
    torch.save(theirs.state_dict(), weights)
    ours = VGGish().eval()
    load_vggish_weights(ours, weights)
    weights.unlink()  # 288 MB
    return theirs, ours


@pytest.mark.parametrize(
    "seconds, rate, channels",
    [(10.0, 16000, 1), (10.0, 44100, 2), (5.0, 48000, 1), (4.3, 16000, 2), (10.5, 22050, 1)],
)
def test_audio_front_end_and_vggish_match_official(official, official_vggish, tmp_path: Path, seconds, rate,
                                                   channels):
    """wav file -> 10 log-mel examples (zero-padded or cut) -> VGGish embeddings, both codes, same weights."""
    from models.ovavss.audio_frontend import read_wav_examples

    rng = np.random.default_rng(int(seconds * 10) + rate + channels)
    times = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 440 * times) * (1 + np.sin(2 * np.pi * 0.5 * times))
    samples = tone[:, None] + 0.05 * rng.standard_normal((times.size, channels))
    path = write_wav(tmp_path / "audio.wav", samples[:, 0] if channels == 1 else samples, rate)

    theirs_net, ours_net = official_vggish
    theirs_examples = theirs_net._preprocess([str(path)])  # (10, 1, 96, 64)
    ours_examples = read_wav_examples(path)
    compare(ours_examples, theirs_examples, "log-mel examples", atol=1e-4, rtol=1e-5)
    with torch.no_grad():
        theirs = official.vggish.VGG.forward(theirs_net, theirs_examples)
        mine = ours_net(ours_examples)
    compare(mine, theirs, "VGGish embeddings", atol=1e-4, rtol=1e-4)
    assert theirs.abs().max() > 0


# ------------------------------------------------------------------------------------------------ CLIP
def test_prompt_templates_and_text_embeddings_match_official(official, parity_clip):
    """The 14 ViLD templates verbatim, and the prompt-ensembled class embeddings of all 70 names."""
    from models.data.classes import CLASS_NAMES
    from models.ovavss.clip_model import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, LoadedClip
    from models.ovavss.prompts import VILD_TEMPLATES
    from models.ovavss.text_embeddings import class_name_embeddings
    from open_clip.tokenizer import SimpleTokenizer

    official_templates = official.text_prompt.get_predefined_templates("vild")
    assert tuple(official_templates) == VILD_TEMPLATES

    model, _, openai_model = parity_clip
    adapter = official.adapter.ClipAdapter.__new__(official.adapter.ClipAdapter)
    torch.nn.Module.__init__(adapter)
    adapter.clip_model, adapter.templates, adapter.text_cache = openai_model, official_templates, {}
    names = list(CLASS_NAMES[1:])
    with torch.no_grad():
        theirs = adapter.encode_text(names)
    clip = LoadedClip(model=model, tokenizer=SimpleTokenizer(context_length=77), model_name="parity",
                      weights_id=None, image_size=32, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD, quick_gelu=True)
    mine = class_name_embeddings(clip, names, VILD_TEMPLATES, use_cache=False)
    compare(mine, theirs, "text embeddings", atol=1e-5, rtol=1e-4)


def random_mask_logits(num_queries: int, generator: torch.Generator, height: int = 224, width: int = 320):
    """(Q, T, height, width) logits of blobs of many sizes, some touching the padding, some empty, none
    within 0.02 of the 0.5 threshold (so float32 and float16 probabilities binarise alike)."""
    low = torch.randn(num_queries, FRAMES, 7, 10, generator=generator) * 3 - 1.5
    low[::7] = -8.0  # empty in every frame
    logits = torch.nn.functional.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)
    return torch.where(logits.abs() < 0.08, torch.sign(logits + 1e-6) * 0.08, logits)


def test_region_crops_match_official(official):
    """valid (frame, query) masks, square boxes anchored at the top-left and the masked roi_align crops,
    in the official fp16 regime (`half_precision_crops`), bit for bit."""
    from models.ovavss.square_crop import crop_regions, mask_boxes, square_boxes

    generator = torch.Generator().manual_seed(4)
    frames = torch.randint(0, 256, (FRAMES, 3, HEIGHT, WIDTH), generator=generator).float()
    logits = random_mask_logits(20, generator)
    adapter = official.adapter.ClipAdapter.__new__(official.adapter.ClipAdapter)
    torch.nn.Module.__init__(adapter)
    adapter.input_resolution = 32
    with official_cpu_bridges(official):
        regions, valid = adapter._preprocess_image(frames, logits.sigmoid().transpose(0, 1))  # (T, Q) order

    found = mask_boxes(logits, half_precision=True)
    assert torch.equal(found.valid, valid.T)
    assert 0 < int(valid.sum()) < valid.numel()
    frame_index, query_index = valid.nonzero(as_tuple=True)  # the official (frame-major) order
    squares = square_boxes(found.boxes[query_index, frame_index])
    mine = crop_regions(frames, logits, query_index, frame_index, squares, 32, half_precision=True)
    compare(mine, regions.float(), "masked square crops", atol=0.0, rtol=0.0)


def official_demo_modules(official):
    """The official evaluation scripts' modules (`demo_video/`: the demo predictor, painting and metrics)."""
    folder = str(official.repo / "demo_video")
    sys.path.insert(0, folder)
    try:
        import avsbench_dataloader
        import avsbench_eval
        import avsbench_utils
        from predictor import VideoPredictor, VisualizationDemo
    finally:
        sys.path.remove(folder)
    return types.SimpleNamespace(eval=avsbench_eval, utils=avsbench_utils, demo=VisualizationDemo,
                                 video_predictor=VideoPredictor, dataloader=avsbench_dataloader)


@pytest.mark.parametrize("config", ["r50", "swinb"])
def test_open_vocabulary_prediction_matches_official(official, parity_clip, config: str, tmp_path: Path, monkeypatch):
    """One clip through the official model (network, VGGish, CLIP crops, top-10) and its evaluation script
    (threshold 0.3, sorting, painting, PNGs, 224 x 224 resize, per-frame metrics), and through avseg loading
    the official checkpoint file.

    Step by step on the official intermediate values (exact up to float rounding): avseg's CLIP
    classification of the official network's outputs gives the official per-query class probabilities, and
    avseg's selection and painting of the official probabilities give the official label maps, PNG colours
    and metrics. End to end (avseg's own network, VGGish and CLIP): the same top-10 scores within 1e-4.
    """
    from dataclasses import replace

    from models.data.classes import CLASS_NAMES, PALETTE
    from models.io.masks import resize_nearest
    from models.metrics import AVSBenchFrameMetrics
    from models.ovavss.audio_frontend import read_wav_examples
    from models.ovavss.mask_canvas import MaskCanvas
    from models.predictor import AVSegPredictor

    scripts = official_demo_modules(official)
    _, clip_folder, openai_model = parity_clip
    model = build_official_model(official, config, openai_model)
    model.class_names = list(VOCABULARY)
    path = save_official_checkpoint(model, tmp_path / f"model_ov_avss_{config}.pth")

    generator = torch.Generator().manual_seed(6)
    frames = torch.randint(0, 256, (FRAMES, 3, HEIGHT, WIDTH), generator=generator, dtype=torch.uint8)
    rate = 16000
    times = np.arange(10 * rate) / rate
    wav = write_wav(tmp_path / "audio.wav", 0.4 * np.sin(2 * np.pi * 330 * times) * (times % 1 < 0.6), rate)
    batched_inputs = [{
        "image": [frame.float() for frame in frames],
        "file_names": [f"video/{k}.png" for k in range(FRAMES)],
        "wav_data": str(wav),
        "height": HEIGHT,
        "width": WIDTH,
    }]
    network_out, classified_out = {}, {}
    model.sem_seg_head.register_forward_hook(lambda module, args, output: network_out.update(output))
    classify_official = model.open_vocabulary_inference
    model.open_vocabulary_inference = lambda *args: classified_out.setdefault("probs", classify_official(*args))
    with torch.no_grad(), official_cpu_bridges(official):
        video_output = model(batched_inputs)
    official_probs = classified_out["probs"][0]  # (N, K), the N queries with a valid mask, ascending
    demo = types.SimpleNamespace(predictor=lambda inputs: video_output)
    labels, masks = scripts.demo.run_on_video_avsbench(demo, None, None, None, 0.3)
    assert len(video_output["pred_scores"]) == 10 and len(labels) >= 2, "too few pairs for a meaningful test"

    monkeypatch.chdir(tmp_path)  # the official script reads its palette file from a relative path
    label_file = tmp_path / "datasets" / "AVSBench-semantic" / "label2idx.json"
    label_file.parent.mkdir(parents=True)
    label_file.write_text(json.dumps({name: i for i, name in enumerate(CLASS_NAMES)}))
    gt_rng = np.random.default_rng(7)
    gt = [torch.from_numpy(gt_rng.integers(0, 5, (1, 224, 224))) for _ in range(FRAMES)]
    names = [(f"{k}.png",) for k in range(FRAMES)]
    iou_sum, fscore_sum, counts, official_maps = scripts.utils.save_and_compute(
        labels, masks, str(tmp_path / "official_png"), names, gt)
    official_maps = official_maps.numpy().astype(np.int64)

    predictor = AVSegPredictor.from_checkpoint(path, device="cpu", clip_weights=clip_folder)
    path.unlink()  # 0.5-0.7 GB
    predictor.set_vocabulary(VOCABULARY)
    canvas = MaskCanvas(network_out["pred_masks"][0], (224, 320))
    with torch.no_grad():
        classified = predictor.classifier.classify(
            frames, canvas, network_out["pred_logits"][0], predictor._text_embeddings)
    assert len(classified.query_index) == len(official_probs) > 10
    compare(classified.probs, official_probs, "class probabilities of the official network's queries", atol=5e-5)

    painted = predictor.classifier.paint(replace(classified, probs=official_probs), canvas, (HEIGHT, WIDTH),
                                         (HEIGHT, WIDTH))
    assert painted.scores.tolist() == sorted((s for s in video_output["pred_scores"] if s > 0.3), reverse=True)
    mine_maps = np.stack([resize_nearest(m, 224, 224) for m in painted.semantic_maps.numpy()]).astype(np.int64)
    assert len(np.unique(mine_maps)) >= 2
    assert np.array_equal(mine_maps, official_maps), f"{(mine_maps != official_maps).mean():.3%} of pixels differ"
    for k in range(FRAMES):  # the official PNG colours are the AVSBench palette's
        official_rgb = np.asarray(Image.open(tmp_path / "official_png" / f"{k}.png").convert("RGB"))
        assert np.array_equal(official_rgb, PALETTE[painted.semantic_maps[k].numpy()])
    metrics = AVSBenchFrameMetrics()
    for k in range(FRAMES):
        metrics.update(gt[k][0].numpy(), mine_maps[k])
    np.testing.assert_allclose(metrics.iou_sum, iou_sum.numpy(), atol=1e-6)
    np.testing.assert_allclose(metrics.fscore_sum, fscore_sum.numpy(), atol=1e-6)
    assert np.array_equal(metrics.frame_counts, counts.numpy())

    # end to end; random weights give near-equal scores, so which of two near-tied queries makes the top 10
    # may differ: compare the sorted scores, not the queries
    frames_out = predictor.predict_resized(frames, read_wav_examples(wav)[:FRAMES], (HEIGHT, WIDTH))
    kept = {(i.query, i.class_index): i.score for frame in frames_out for i in frame.instances}
    np.testing.assert_allclose(sorted(kept.values()), sorted(s for s in video_output["pred_scores"] if s > 0.3),
                               atol=1e-4)


def test_evaluation_inputs_match_official(official, tmp_path: Path, monkeypatch):
    """What the official test script feeds the model and scores against, on a synthetic AVSBench-semantic tree
    (v1s and v2 videos, frames of 150x266, 480x360 and 720x1280, labels with a class outside a_obj):
    its frames (detectron2 `read_image`, BGR -> RGB, `ResizeShortestEdge(360, 1333)` in its `VideoPredictor`)
    equal avseg's evaluation clips pixel for pixel, and its GT (`AVSBenchTest`: labels_rgb, NEAREST 224 x 224,
    palette decoding, classes outside the video's a_obj dropped) equals avseg's `gt_index_maps`."""
    from detectron2.data import transforms
    from detectron2.data.detection_utils import read_image

    from models.data.classes import CLASS_NAMES
    from models.data.eval_clips import EVAL_GT_SIZE, gt_index_maps, load_eval_video
    from models.data.prepared import PreparedData
    from models.data.synthetic import SyntheticVideoSpec, make_synthetic_avsbench
    from models.pipeline.prepare import prepare_dataset

    specs = [
        SyntheticVideoSpec("test", "v1s", ("dog",), ("piano",), noise_class="horse", size=(150, 266)),
        SyntheticVideoSpec("test", "v2", ("violin", "man"), ("car",), noise_class="baby", size=(480, 360)),
        SyntheticVideoSpec("test", "v2", ("guitar",), size=(720, 1280)),
        SyntheticVideoSpec("train", "v2", ("cat",)),
    ]
    root = tmp_path / "AVSBench-semantic"
    make_synthetic_avsbench(root, specs, seed=3)
    prepare_dataset(root, tmp_path / "data")
    data = PreparedData.open(tmp_path / "data")
    records = {record.uid: record for record in data.load_split("test")}
    assert len(records) == 3

    scripts = official_demo_modules(official)
    images = tmp_path / "JPEGImages"  # the official test folder: one folder of frames per test video
    for uid, record in records.items():
        (images / uid).mkdir(parents=True)
        for k in range(record.num_frames):
            (images / uid / f"{k}.jpg").symlink_to(record.frame_path(root, k))
    palette_file = tmp_path / "label2idx.json"
    palette_file.write_text(json.dumps({name: i for i, name in enumerate(CLASS_NAMES)}))
    test_set = scripts.dataloader.AVSBenchTest(str(images), str(root), str(palette_file), str(root / "metadata.csv"))

    cfg = official.cfg("r50")
    video_predictor = scripts.video_predictor.__new__(scripts.video_predictor)  # its preprocessing, no model
    video_predictor.aug = transforms.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
    video_predictor.input_format = cfg.INPUT.FORMAT  # what DefaultPredictor.__init__ sets
    model_inputs = []
    video_predictor.model = lambda batch: model_inputs.append(batch[0])

    for index in range(len(test_set)):
        frame_paths, annos, uid, frame_names, audio = test_set[index]
        record = records[uid]
        model_inputs.clear()
        video_predictor([[read_image(path, format="BGR") for path in frame_paths], frame_names, audio])
        theirs_frames = torch.stack(model_inputs[0]["image"])  # float32 (T, 3, h, w), RGB 0..255
        ours = load_eval_video(record, root)
        ours_frames = torch.cat([clip.frames for clip in ours.clips])
        assert ours_frames.shape == theirs_frames.shape
        assert torch.equal(ours_frames.float(), theirs_frames), uid
        assert (model_inputs[0]["height"], model_inputs[0]["width"]) == ours.clips[0].original_size
        assert audio == str(record.audio_path(root))

        ours_gt = gt_index_maps(record, root, EVAL_GT_SIZE)
        assert len(annos) == len(ours_gt) == len(record.labelled_frames)  # v1s: the first frame only
        for k, anno in zip(sorted(ours_gt), annos):
            assert np.array_equal(ours_gt[k], anno[0]), (uid, k)
        assert len(np.unique(np.concatenate([a.ravel() for a in annos]))) >= 2


def test_dataset_metrics_match_official(official):
    """AVSBench-OV's reported numbers (`scores_gzsl`: base / novel / harmonic / overall mIoU) on random maps."""
    from models.data.classes import BASE_IDS, NOVEL_IDS
    from models.metrics import ConfusionMatrix

    scripts = official_demo_modules(official)
    rng = np.random.default_rng(8)
    gts, preds = [], []
    for _ in range(12):
        gt = rng.integers(0, 71, (224, 224)) * (rng.random((224, 224)) < 0.5)
        pred = np.where(rng.random((224, 224)) < 0.6, gt, rng.integers(0, 71, (224, 224)))
        gts.append(gt)
        preds.append(pred)
    preds[0][:] = 0  # a frame with nothing predicted
    theirs, _ = scripts.eval.scores_gzsl(gts, preds, 71, list(BASE_IDS), list(NOVEL_IDS))
    matrix = ConfusionMatrix()
    for gt, pred in zip(gts, preds):
        matrix.update(gt, pred)
    scores = matrix.scores()
    assert scores.miou == pytest.approx(theirs["Mean IoU"], abs=1e-12)
    assert scores.base_miou == pytest.approx(theirs["Mean IoU Seen"], abs=1e-12)
    assert scores.novel_miou == pytest.approx(theirs["Mean IoU Unseen"], abs=1e-12)
    assert scores.harmonic_miou == pytest.approx(theirs["Mean IoU Harmonic"], abs=1e-12)
