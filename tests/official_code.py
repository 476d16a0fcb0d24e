"""The official OV-AVSS code (github.com/ruohaoguo/ovavss), imported from a checkout, and the helpers both parity
test modules share (`test_official_parity.py`, `test_official_parity_training.py`).

Nothing of it is copied into avseg: `AVSEG_OFFICIAL_REPO` names a checkout that is imported as it is,
next to detectron2 (its source tree on PYTHONPATH is enough: nothing used here needs its compiled ops) and
the official code's own imports (`pip install -e '.[parity]'`; see README "Parity with the official code").

The official code is written for CUDA. To run it on any machine, this module bridges three things, each
for the official code only and only inside `official_cpu_bridges()`:

* the compiled `MultiScaleDeformableAttention` op is absent: its forward raises, and the official module
  then takes its own pure-PyTorch fallback (`ms_deform_attn_core_pytorch`, the same formula);
* `Tensor.cuda()` returns the tensor itself where CUDA is absent (the crop code and the audio path move
  tensors to CUDA unconditionally);
* the official fp16 steps of the CLIP branch run in float32: `roi_align` on the half-precision crops is
  computed in float32 and rounded to half (avseg's `half_precision_crops` rounds the same way), and the
  crops enter CLIP as float32 (on CUDA the official code relies on autocast for that).
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
import types
from pathlib import Path
from typing import NoReturn

import pytest
import torch

FRAMES = 5
"""Frames per clip in the parity tests (the official clip length)."""

OFFICIAL_CONFIGS = {
    "r50": "configs/avsbench/OV_AVSS_R50.yaml",
    "swinb": "configs/avsbench/swin/OV_AVSS_SwinB.yaml",
}

PARITY_CLIP = {
    "embed_dim": 64,
    # one attention head per 64 channels, as the OpenAI CLIP builder infers from the weights' shapes
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8, "head_width": 64},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1},
    "quick_gelu": True,
}
"""A tiny open_clip CLIP whose state_dict the OpenAI `clip.model.build_model` rebuilds as the same network."""


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the calling parity test (CI and `make test` have no official checkout), or, when the user asked for the
    parity tests (`make parity` sets AVSEG_PARITY_REQUIRED=1), fail it: a wrong path must not pass as "skipped"."""
    if os.environ.get("AVSEG_PARITY_REQUIRED") == "1":
        pytest.fail(f"parity cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


def official_repo() -> Path:
    """The checkout named by AVSEG_OFFICIAL_REPO, or skip the calling test."""
    value = os.environ.get("AVSEG_OFFICIAL_REPO")
    if not value:
        skip_or_fail("AVSEG_OFFICIAL_REPO is not set (a checkout of github.com/ruohaoguo/ovavss)")
    repo = Path(value).expanduser()
    if not (repo / "ov_avss" / "ov_avss.py").is_file():
        skip_or_fail(f"AVSEG_OFFICIAL_REPO={repo} is not a checkout of ruohaoguo/ovavss")
    return repo


def _absent_op(*args, **kwargs):
    raise RuntimeError("MultiScaleDeformableAttention is not compiled here")


def import_official() -> types.SimpleNamespace:
    """Import the official package (once per process) and what the tests call; skip if anything is missing."""
    repo = official_repo()
    for path in (repo / "third_parties" / "mask_adapted_clip", repo):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    if "MultiScaleDeformableAttention" not in sys.modules:
        op = types.ModuleType("MultiScaleDeformableAttention")
        op.ms_deform_attn_forward = op.ms_deform_attn_backward = _absent_op
        sys.modules["MultiScaleDeformableAttention"] = op
    try:
        from detectron2.config import get_cfg
        from detectron2.modeling import build_model
        from detectron2.projects.deeplab import add_deeplab_config

        from ov_avss import config as official_config
        from ov_avss import ov_avss as official_meta
        from ov_avss.modeling.audio_encoder import vggish as official_vggish
        from ov_avss.modeling.clip_adapter import adapter as official_adapter
        from ov_avss.modeling.clip_adapter import text_prompt as official_text_prompt
    except ImportError as error:
        skip_or_fail(f"the official code cannot be imported here ({error}); see README 'Parity with the official "
                     "code'")

    def official_cfg(config: str):
        cfg = get_cfg()
        add_deeplab_config(cfg)
        official_config.add_maskformer2_config(cfg)
        official_config.add_maskformer2_video_config(cfg)
        official_config.add_minvis_config(cfg)
        official_config.add_open_vocabulary_config(cfg)
        cfg.merge_from_file(str(repo / OFFICIAL_CONFIGS[config]))
        cfg.MODEL.DEVICE = "cpu"
        cfg.MODEL.WEIGHTS = ""
        return cfg

    return types.SimpleNamespace(
        repo=repo, cfg=official_cfg, build_model=build_model, meta=official_meta, vggish=official_vggish,
        adapter=official_adapter, text_prompt=official_text_prompt,
    )


def _float32_roi_align(roi_align):
    def bridged(input, boxes, *args, **kwargs):
        return roi_align(input.float(), boxes.float(), *args, **kwargs).to(input.dtype)

    return bridged


@contextlib.contextmanager
def official_cpu_bridges(official: types.SimpleNamespace):
    """The three bridges of the module docstring, undone on exit."""
    patches = []

    def patch(owner, name, value):
        patches.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)

    if not torch.cuda.is_available():
        patch(torch.Tensor, "cuda", lambda self, *args, **kwargs: self)
    patch(official.adapter, "roi_align", _float32_roi_align(official.adapter.roi_align))
    encode_image = official.adapter.ClipAdapter.encode_image
    patch(official.adapter.ClipAdapter, "encode_image", lambda self, image: encode_image(self, image.float()))
    try:
        yield
    finally:
        for owner, name, value in reversed(patches):
            setattr(owner, name, value)


def bare_clip_adapter(official: types.SimpleNamespace, **attributes) -> torch.nn.Module:
    """The official `ClipAdapter` without its constructor (which downloads CLIP), holding only `attributes`
    (e.g. `clip_model`, `templates`, `text_cache`, `input_resolution`) for the method under test."""
    adapter = official.adapter.ClipAdapter.__new__(official.adapter.ClipAdapter)
    torch.nn.Module.__init__(adapter)
    for name, value in attributes.items():
        setattr(adapter, name, value)
    return adapter


def perturbed_state(state: dict[str, torch.Tensor], seed: int = 1) -> dict[str, torch.Tensor]:
    """Random but well-conditioned values for every tensor of a freshly initialised official model.

    Every floating tensor moves away from its initial value, the zero-initialised ones included (the
    deformable attention's sampling offsets and attention weights, biases, the fusion's gammas), so no
    term of the forward is trivially zero; norm scales stay near 1 and FrozenBN variances positive.
    """
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in state.items():
        if not value.is_floating_point():
            out[key] = value.clone()
        elif key.endswith("running_var"):
            out[key] = 0.5 + torch.rand(value.shape, generator=generator)
        elif key.endswith("running_mean"):
            out[key] = 0.1 * torch.randn(value.shape, generator=generator)
        elif "norm" in key.split(".")[-2] or key.split(".")[-2].startswith("bn"):
            base = 1.0 if key.endswith("weight") else 0.0
            out[key] = base + 0.1 * torch.randn(value.shape, generator=generator)
        else:
            scale = 0.1 if "sampling_offsets" in key else 0.02
            out[key] = value + scale * torch.randn(value.shape, generator=generator)
    return out


def no_dropout(*modules: torch.nn.Module) -> None:
    """Switch off every stochastic layer (dropout, attention-probability dropout, stochastic depth)."""
    for root in modules:
        for module in root.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
            if isinstance(getattr(module, "dropout", None), float):
                module.dropout = 0.0
            if hasattr(module, "drop_prob"):
                module.drop_prob = 0.0
            if type(module).__name__ == "DropPath" and hasattr(module, "p"):
                module.p = 0.0


def openai_clip_from_open_clip(open_clip_model: torch.nn.Module) -> torch.nn.Module:
    """The same weights in the OpenAI `clip` package's CLIP (what the official adapter holds), float32, eval."""
    from clip.model import build_model

    state = {k: v.clone() for k, v in open_clip_model.state_dict().items() if k != "attn_mask"}
    return build_model(state).float().eval()


def parity_clip_models(folder: Path):
    """(a tiny open_clip CLIP, its folder for `--clip-weights` written to `folder`, the same weights in the OpenAI
    `clip` package's CLIP)."""
    from open_clip.model import CLIP

    from ov_synthetic import save_clip_folder

    torch.manual_seed(3)
    model = CLIP(**PARITY_CLIP).eval()
    with torch.no_grad():  # OpenAI's CLIP builder stores weights in float16 (the released weights are float16)
        for tensor in model.state_dict().values():
            tensor.copy_(tensor.half().float())
        model.visual.conv1.weight.mul_(16)  # crops, not the class token, then decide the image embedding
    return model, save_clip_folder(model, folder, PARITY_CLIP), openai_clip_from_open_clip(model)


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
    from models.checkpoint_parts import build_network, read_checkpoint_parts
    from models.vggish_setup import setup_checkpoint_vggish

    parts = read_checkpoint_parts(path)
    model = build_network(parts, str(path))
    setup_checkpoint_vggish(model, parts, None, offline=True)
    if delete:
        path.unlink()
    return model.eval()


def compare(ours: torch.Tensor, theirs: torch.Tensor, what: str, atol: float = 1e-4, rtol: float = 1e-4) -> None:
    assert ours.shape == theirs.shape, f"{what}: shape {tuple(ours.shape)} vs official {tuple(theirs.shape)}"
    torch.testing.assert_close(ours.float(), theirs.float(), atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")


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
