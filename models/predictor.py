"""`AVSegPredictor`: the public inference API of OV-AVSS (frames + audio + vocabulary -> named masks).

In the spirit of segment-anything's `SamPredictor`:

    predictor = AVSegPredictor.from_checkpoint("model_ov_avss_r50.pth")
    predictor.set_vocabulary(["pipa", "violin", "man"])     # text encoded once (and cached on disk)
    frames = predictor.predict_clip(ClipInput(frames, audio_examples))   # one FramePrediction per frame

One clip (ovavss-spec.md §0, §7, §8): frames (T, H, W, 3) uint8 at the original resolution are resized to
the config's test short side (PIL bilinear, long side <= 1333), normalised and zero-padded to a multiple of
32; the network gives per query a sound logit pair and a mask tube; the mask logits are bilinearly
upsampled to the padded size; every (query, frame) mask with a pixel above 0.5 is cropped (square, black
outside the mask) and classified by frozen CLIP against the vocabulary (mean logits over the query's valid
frames, softmax); the top-k (query, class) pairs above the threshold are painted first-come-first-served at
the original resolution, label = vocabulary index + 1. The sound head is not used by the official protocol;
its probability is recorded per instance, and two opt-in options use it (`sound_gate`, `max_crops_per_frame`).

Checkpoints: avseg training checkpoints, `avseg weights convert` outputs, and the official
`model_ov_avss_{r50,swinb}.pth` (detectron2 layout, `module.` prefixes allowed, CLIP / VGGish used when
inside). Precision: float32; on CUDA `amp="fp16"` runs the network, the CLIP image tower and the painting
under fp16 autocast like the official test (and rounds crops through fp16); the per-query logit mean stays
float32 (the official code keeps it in fp16), which can only move probabilities in the last fp16 digit. By
default the autocast parts also keep their weights in fp16 (`PredictorOptions.amp_weights`: the same matrix
operands, norm scales rounded once; `amp_weights=False` is the official regime bit for bit). `amp="bf16"`
also runs on CPUs with native bfloat16 (AMX / AVX512-BF16), where it is faster than float32.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from models.device import cpu_supports_bf16, resolve_device  # noqa: F401 (resolve_device re-exported)
from models.errors import AVSegError, UsageError
from models.ovavss.classifier import ClassifierConfig, OpenVocabularyClassifier
from models.ovavss.clip_model import LoadedClip
from models.ovavss.config import ModelConfig
from models.ovavss.mask_canvas import MaskCanvas
from models.ovavss.prompts import VILD_TEMPLATES, resolve_templates, template_set_id, validate_templates
from models.ovavss.square_crop import CROP_PROTOCOLS
from models.prediction import ClipInput, FramePrediction, Instance

AMP_MODES = ("off", "fp16", "bf16")
RANDOM = "random"
"""Value of `vggish_weights` / `clip_weights` for freshly initialised weights (tests, benchmarks)."""


# ----------------------------------------------------------------------------------------------- options
@dataclass(frozen=True)
class PredictorOptions:
    """How predictions are made; defaults = the official inference.

    Attributes:
        protocol: square-crop protocol, "official" (anchored at the mask box's top-left) or "centered".
        score_threshold: kept (query, class) pairs have probability > this (official 0.3).
        top_k: (query, class) pairs considered per clip (official 10).
        sound_gate: None (official) or p in [0, 1]: queries with P(sounding) < p are not classified.
        max_crops_per_frame: None (official) or n >= 1: per frame only the n most sounding valid queries.
        amp: "off" (float32), "fp16" (official regime, CUDA only) or "bf16" (CUDA, or a CPU with native
            bfloat16: AMX / AVX512-BF16).
        templates: prompt templates (ViLD's 14 by default).
        short_side: resize short side; None = the config's `test_short_side` (360 for r50 / swinb).
        crop_batch_size: CLIP crops per forward pass (bounds memory, not results).
        amp_weights: with amp, store the weights of the backbone, the transformer decoder, VGGish and the
            CLIP image tower in the amp dtype once (the pixel decoder, which runs outside autocast, stays
            float32; buffers such as FrozenBN statistics stay float32). Autocast rounds those weights to the
            same dtype at every use anyway, so matrix products see the same operands; only the norm layers'
            scales and shifts are rounded once (at most 2^-11 relative). False keeps float32 weights: the
            official regime bit for bit, but a cast of every weight on every call (measured on an H100:
            CLIP ViT-B/16 encodes 4,600 crops/s that way, 7,700 with half weights).
        cuda_graphs: on CUDA, replay the network's forward as a CUDA graph per input shape
            (`models.ovavss.graphed_network`): the same computation without launching its ~4,000 kernels
            one by one. Costs one capture per new clip shape and the memory of one forward per kept graph.
    """

    protocol: str = "official"
    score_threshold: float = 0.3
    top_k: int = 10
    sound_gate: float | None = None
    max_crops_per_frame: int | None = None
    amp: str = "off"
    templates: tuple[str, ...] = VILD_TEMPLATES
    short_side: int | None = None
    crop_batch_size: int = 64
    amp_weights: bool = True
    cuda_graphs: bool = False

    def __post_init__(self) -> None:
        if self.protocol not in CROP_PROTOCOLS:
            raise UsageError(f"unknown crop protocol {self.protocol!r}: choose one of {', '.join(CROP_PROTOCOLS)}")
        if self.amp not in AMP_MODES:
            raise UsageError(f"unknown amp mode {self.amp!r}: choose one of {', '.join(AMP_MODES)}")
        if not 0.0 <= self.score_threshold <= 1.0:
            raise UsageError(f"score threshold must lie in [0, 1], got {self.score_threshold}")
        if self.top_k < 1:
            raise UsageError(f"top_k must be at least 1, got {self.top_k}")
        if self.sound_gate is not None and not 0.0 <= self.sound_gate <= 1.0:
            raise UsageError(f"sound gate must lie in [0, 1], got {self.sound_gate}")
        if self.max_crops_per_frame is not None and self.max_crops_per_frame < 1:
            raise UsageError(f"max crops per frame must be at least 1, got {self.max_crops_per_frame}")
        if self.short_side is not None and self.short_side < 32:
            raise UsageError(f"short side must be at least 32 pixels, got {self.short_side}")
        if self.crop_batch_size < 1:
            raise UsageError(f"crop batch size must be at least 1, got {self.crop_batch_size}")
        validate_templates(self.templates)

    def classifier_config(self) -> ClassifierConfig:
        return ClassifierConfig(
            crop_protocol=self.protocol, top_k=self.top_k, score_threshold=self.score_threshold,
            crop_batch_size=self.crop_batch_size, sound_gate=self.sound_gate,
            max_crops_per_frame=self.max_crops_per_frame, half_precision_crops=self.amp == "fp16",
        )


AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def check_amp_device(amp: str, device: torch.device) -> None:
    """fp16 needs CUDA; bf16 runs on CUDA and on CPUs with native bfloat16 (`cpu_supports_bf16`), where it is
    faster than float32 (AMX / AVX512-BF16); one-line `AVSegError` otherwise."""
    if amp == "off" or device.type == "cuda":
        return
    if amp == "bf16" and device.type == "cpu":
        if cpu_supports_bf16():
            return
        raise AVSegError("--amp bf16 on the CPU needs bfloat16 instructions (AVX512-BF16 or AMX), which this CPU "
                         "lacks (use --amp off)")
    raise AVSegError(f"--amp {amp} needs a CUDA device; on the CPU avseg runs in float32 or, with bfloat16 "
                     "instructions, --amp bf16 (use --amp off)")


def check_cuda_graphs_device(cuda_graphs: bool, device: torch.device) -> None:
    """One-line `AVSegError` when CUDA graphs are asked for on a device other than CUDA."""
    if cuda_graphs and device.type != "cuda":
        raise AVSegError(f"CUDA graphs need a CUDA device, the predictor runs on {device} (leave them off)")


def cast_inference_weights(model: torch.nn.Module, clip_model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Store, in place, the parameters of the parts that run under autocast in its dtype (see
    `PredictorOptions.amp_weights`): backbone, transformer decoder, VGGish, CLIP image tower. The pixel
    decoder (float32 by design), all buffers and the CLIP text tower (class embeddings) keep their dtype."""
    parts = [model.backbone, model.sem_seg_head.predictor, model.audio_encoder, getattr(clip_model, "visual", None)]
    with torch.no_grad():
        for part in filter(None, parts):
            for param in part.parameters():
                if param.is_floating_point():
                    param.data = param.data.to(dtype)


# ------------------------------------------------------------------------------------ checkpoint reading
@dataclass
class CheckpointParts:
    """What a checkpoint file provides, read onto the CPU.

    Attributes:
        kind: "avseg" (training checkpoint), "converted-official" (`avseg weights convert`),
            "official-ovavss-r50" / "official-ovavss-swinb" (the released .pth files).
        config: the network configuration.
        config_name: its name (r50, swinb, tiny, ...).
        model_state: backbone.* and sem_seg_head.* tensors.
        audio_state: VGGish tensors (torchvggish keys) when the file has them.
        clip_state: CLIP tensors (OpenAI / open_clip keys) when the file has them.
        iteration: training iteration, if stored.
        random_vggish_seed: set for avseg runs trained with `--vggish-weights random`.
        module_prefix_stripped: every key had a `module.` prefix.
    """

    kind: str
    config: ModelConfig
    config_name: str
    model_state: dict[str, torch.Tensor]
    audio_state: dict[str, torch.Tensor] | None = None
    clip_state: dict[str, torch.Tensor] | None = None
    iteration: int | None = None
    random_vggish_seed: int | None = None
    module_prefix_stripped: bool = False


def _as_tensor(value: Any) -> Any:
    if isinstance(value, (np.ndarray, np.generic)):
        return torch.from_numpy(np.ascontiguousarray(value).copy())
    return value


def read_checkpoint_parts(path: str | os.PathLike) -> CheckpointParts:
    """Read any checkpoint the predictor accepts (see `CheckpointParts.kind`) in one pass.

    Raises:
        AVSegError: missing / corrupt / foreign file, a Mask2Former or VGGish file given as a model, or an avseg
            file without a model configuration.
    """
    from models.checkpoint import check_avseg_checkpoint, load_torch_file
    from models.official import (
        KIND_OFFICIAL_R50,
        KIND_OFFICIAL_SWINB,
        convert_official_state_dict,
        detect_kind,
        read_checkpoint_file,
        strip_module_prefix,
    )
    from models.ovavss.config import get_config
    from models.pipeline.network import RANDOM_VGGISH_SEED_KEY
    from models.weights import CONVERTED_KIND

    path = Path(path)
    try:
        obj = load_torch_file(path, allow_numpy=True)
    except AVSegError as error:
        if not path.is_file():
            raise
        # Not a PyTorch file (e.g. a pickled .pkl): the general reader knows the other formats.
        try:
            state, info = read_checkpoint_file(path)
        except AVSegError:
            raise error from None
        if info.kind not in (KIND_OFFICIAL_R50, KIND_OFFICIAL_SWINB):
            raise _not_a_model(path, info.kind) from None
        obj = {"model": state, "iteration": info.iteration}

    if isinstance(obj, dict) and "avseg_format" in obj:
        checkpoint = check_avseg_checkpoint(obj, path)
        if not isinstance(checkpoint.get("config"), dict):
            raise AVSegError(f"{path} holds no model configuration (not a training or converted checkpoint)")
        config = ModelConfig.from_dict(checkpoint["config"])
        extra = checkpoint.get("extra") or {}
        seed = None
        if extra.get("vggish_weights_arg") == RANDOM:
            seed = int(extra.get(RANDOM_VGGISH_SEED_KEY, 0) or 0)
        iteration = checkpoint.get("iteration")
        return CheckpointParts(
            kind=CONVERTED_KIND if checkpoint.get("kind") == CONVERTED_KIND else "avseg",
            config=config,
            config_name=str(checkpoint.get("config_name") or config.name),
            model_state={k: _as_tensor(v) for k, v in checkpoint["model"].items()},
            audio_state=checkpoint.get("audio") or None,
            clip_state=checkpoint.get("clip") or None,
            iteration=int(iteration) if isinstance(iteration, int) else None,
            random_vggish_seed=seed,
            module_prefix_stripped=bool(extra.get("module_prefix_stripped", False)),
        )

    if not isinstance(obj, dict):
        _, info = read_checkpoint_file(path)  # raises "foreign checkpoint" with the standard wording
        raise _not_a_model(path, info.kind)
    wrapped = isinstance(obj.get("model"), dict)
    raw = obj["model"] if wrapped else obj
    if not all(isinstance(k, str) for k in raw):
        _, info = read_checkpoint_file(path)
        raise _not_a_model(path, info.kind)
    raw, stripped = strip_module_prefix(raw)
    detected = detect_kind(raw)
    if detected is None:
        read_checkpoint_file(path)  # raises the standard "foreign checkpoint" message
        raise AVSegError(f"foreign checkpoint: {path}")
    kind = detected[0]
    if kind not in (KIND_OFFICIAL_R50, KIND_OFFICIAL_SWINB):
        raise _not_a_model(path, kind)
    converted = convert_official_state_dict({k: _as_tensor(v) for k, v in raw.items()})
    config_name = "r50" if kind == KIND_OFFICIAL_R50 else "swinb"
    iteration = obj.get("iteration") if wrapped else None
    return CheckpointParts(
        kind=kind, config=get_config(config_name), config_name=config_name, model_state=converted.model,
        audio_state=converted.audio, clip_state=converted.clip,
        iteration=int(iteration) if isinstance(iteration, (int, np.integer)) else None,
        module_prefix_stripped=stripped,
    )


def _not_a_model(path: Path, kind: str) -> AVSegError:
    if kind.startswith("mask2former"):
        return AVSegError(
            f"{path} is a Mask2Former COCO checkpoint (a training initialisation, not an OV-AVSS model): "
            f"use it with avseg train --init"
        )
    if kind == "vggish":
        return AVSegError(f"{path} holds VGGish weights, not an OV-AVSS model: pass it as the VGGish weights")
    return AVSegError(f"{path} is not an OV-AVSS checkpoint ({kind})")


def build_network(parts: CheckpointParts, source: str) -> torch.nn.Module:
    """The network of `parts` with its trained weights loaded (strict on backbone + sem_seg_head)."""
    from models.ovavss.model import build_ovavss

    model = build_ovavss(parts.config)
    result = model.load_state_dict(parts.model_state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("audio_encoder.")]
    if missing or result.unexpected_keys:
        first = (missing + list(result.unexpected_keys))[0]
        raise AVSegError(
            f"{source} does not fit config {parts.config_name}: {len(missing)} missing and "
            f"{len(result.unexpected_keys)} unexpected keys (first: {first})"
        )
    return model


def setup_vggish(model: torch.nn.Module, parts: CheckpointParts, vggish_weights: str | os.PathLike | None,
                 offline: bool) -> str:
    """Fill the frozen VGGish: explicit path / "random" > weights inside the checkpoint > the run's random seed >
    the cache (downloaded when allowed). Returns where the weights came from."""
    from models.ovavss.audio import load_vggish_weights
    from models.pipeline.network import random_vggish_
    from models.weights import VGGISH, ensure_weight

    if vggish_weights is not None and str(vggish_weights) == RANDOM:
        seed = parts.random_vggish_seed or 0
        random_vggish_(model.audio_encoder, seed)
        return f"random (seed {seed})"
    if vggish_weights is not None:
        path = Path(vggish_weights).expanduser()
        load_vggish_weights(model.audio_encoder, path)
        return str(path)
    if parts.audio_state is not None:
        backbone = model.audio_encoder.audio_backbone
        expected = backbone.state_dict()
        bad = [k for k in expected if k not in parts.audio_state
               or tuple(parts.audio_state[k].shape) != tuple(expected[k].shape)]
        if bad or set(parts.audio_state) - set(expected):
            raise AVSegError(f"the VGGish weights inside the checkpoint do not fit VGGish (e.g. {(bad or ['?'])[0]})")
        backbone.load_state_dict({k: v.float() for k, v in parts.audio_state.items()}, strict=True)
        return "checkpoint"
    if parts.random_vggish_seed is not None:
        random_vggish_(model.audio_encoder, parts.random_vggish_seed)
        return f"random (seed {parts.random_vggish_seed}, as trained)"
    path = ensure_weight(VGGISH, offline=offline)
    load_vggish_weights(model.audio_encoder, path)
    return str(path)


# -------------------------------------------------------------------------------------------------- CLIP
def _digest_tensors(state: dict[str, torch.Tensor], keep=lambda key: True) -> str:
    digest = hashlib.sha256()
    for key in sorted(state):
        if keep(key):
            tensor = state[key].detach().to("cpu").reshape(-1).contiguous()
            digest.update(key.encode())
            digest.update(str(tensor.dtype).encode())
            digest.update(tensor.view(torch.uint8).numpy() if tensor.numel() else b"")
    return digest.hexdigest()[:16]


def _digest_folder(folder: Path) -> str:
    from models.ovavss.clip_model import file_sha256

    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        digest.update(path.name.encode())
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()[:16]


def load_classifier_clip(
    config: ModelConfig,
    device: torch.device,
    clip_weights: str | os.PathLike | None = None,
    clip_state: dict[str, torch.Tensor] | None = None,
    clip_model: str | None = None,
    offline: bool = False,
    state_source: str = "checkpoint",
) -> tuple[LoadedClip, str]:
    """The frozen CLIP of the classifier and where its weights came from.

    Order: `clip_weights` (a weights file for `clip_model or config.clip_model`; an open_clip folder
    with `open_clip_config.json` + weights, which names its own architecture; or "random") > `clip_state`
    (CLIP inside the checkpoint) > the avseg / Hugging Face cache > open_clip's download (not offline).

    Raises:
        AVSegError: missing / mismatching files; offline with nothing cached (one line: file, URL, cache path).
    """
    from models.ovavss.clip_model import load_clip, load_clip_weights

    name = clip_model or config.clip_model
    tag = config.clip_pretrained or None
    if clip_weights is None and clip_state is not None:
        clip = load_clip(name, pretrained=None, device="cpu", quick_gelu=True)  # OpenAI weights use QuickGELU
        load_clip_weights(clip.model, clip_state, source=state_source, model_name=name)
        clip.model.to(device)
        text_id = _digest_tensors(clip_state, keep=lambda key: not key.startswith("visual."))
        return replace(clip, weights_id=f"text-sha256-{text_id}", quick_gelu=True), "checkpoint"
    return load_pretrained_clip(name, tag, device, clip_weights=clip_weights, offline=offline)


def load_pretrained_clip(
    name: str,
    tag: str | None,
    device: torch.device,
    clip_weights: str | os.PathLike | None = None,
    offline: bool = False,
) -> tuple[LoadedClip, str]:
    """A frozen open_clip model `name` with pretrained tag `tag`, and where its weights came from.

    Order: `clip_weights` (a weights file; an open_clip folder with `open_clip_config.json` + weights, which
    names its own architecture; or "random") > the avseg / Hugging Face cache > open_clip's download (not
    offline). Used by the OV-AVSS classifier and by the zero-shot method's re-scoring.

    Raises:
        AVSegError: missing / mismatching files; offline with nothing cached (one line: file, URL, cache path).
    """
    from models.download import offline_reason
    from models.ovavss.clip_model import load_clip
    from models.weights import cache_dir, cached_path, clip_download_unreachable, clip_weight

    if clip_weights is not None and str(clip_weights) == RANDOM:
        return load_clip(name, pretrained=None, device=device, quick_gelu=tag == "openai"), RANDOM
    if clip_weights is not None:
        path = Path(clip_weights).expanduser()
        if path.is_dir():
            if not (path / "open_clip_config.json").is_file():
                raise AVSegError(f"CLIP weights folder {path} has no open_clip_config.json (give a weights file instead)")
            clip = load_clip(f"local-dir:{path.resolve()}", device=device)
            return replace(clip, weights_id=f"local-dir-sha256-{_digest_folder(path)}"), str(path)
        if not path.is_file():
            raise AVSegError(f"CLIP weights not found: {path}")
        return load_clip(name, pretrained=tag, weights_path=path, device=device), str(path)
    if tag is None:
        raise AVSegError(f"no CLIP weights for {name}: pass a CLIP weights file")
    weight = clip_weight(name, tag)
    local = cached_path(weight)
    if local is not None:
        return load_clip(name, pretrained=tag, weights_path=local, device=device), str(local)
    reason = offline_reason(offline)
    if reason is not None:
        raise AVSegError(
            f"CLIP {name} '{tag}' weights not found and downloads are off ({reason}): download {weight.url} and "
            f"put it at {cache_dir() / weight.filename} (or pass --clip-weights PATH)"
        )
    unreachable = clip_download_unreachable(name, tag)  # huggingface_hub would retry for half a minute
    if unreachable is not None:
        raise AVSegError(
            f"CLIP {name} '{tag}' weights not found and {unreachable}: download {weight.url} and put it at "
            f"{cache_dir() / weight.filename} (or pass --clip-weights PATH)"
        )
    return load_clip(name, pretrained=tag, device=device), f"open_clip:{tag}"


# --------------------------------------------------------------------------------------------- predictor
class AVSegPredictor:
    """OV-AVSS: names and segments the sounding objects of clips (implements `VideoPredictor`).

    Args:
        model: the class-agnostic network (`OVAVSS`), weights loaded.
        clip: the frozen CLIP of the classifier.
        config: the network configuration (sizes, resize rule, clip length).
        device: where everything runs.
        options: prediction options (defaults = official inference).
        sources: where the weights came from, for `describe()`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        clip: LoadedClip,
        config: ModelConfig,
        device: str | torch.device = "cpu",
        options: PredictorOptions = PredictorOptions(),
        sources: dict | None = None,
    ) -> None:
        self.device = resolve_device(device)
        check_amp_device(options.amp, self.device)
        check_cuda_graphs_device(options.cuda_graphs, self.device)
        self.model = model.to(self.device).eval()
        self.clip = clip
        self.config = config
        self.options = options
        if options.amp != "off" and options.amp_weights:
            cast_inference_weights(model, clip.model, AMP_DTYPES[options.amp])
        self.classifier = OpenVocabularyClassifier.from_loaded(clip, options.classifier_config()).to(self.device)
        # CLIP's image tower runs under the amp autocast; the rest of `classify` runs outside it, because its
        # float32 per-query sums cannot take half-precision logits (index_add_ needs one dtype).
        encode_regions = self.classifier.encode_regions

        def encode_regions_with_amp(regions: torch.Tensor) -> torch.Tensor:
            with self._autocast():
                return encode_regions(regions)

        self.classifier.encode_regions = encode_regions_with_amp
        self._network = self.model
        if options.cuda_graphs:
            from models.ovavss.graphed_network import GraphedNetwork

            self._network = GraphedNetwork(self.model, AMP_DTYPES.get(options.amp))
        self.clip_len = int(config.clip_len)
        self.sources = dict(sources or {})
        self.vocabulary: tuple[str, ...] = ()
        self._text_embeddings: torch.Tensor | None = None

    # ---------------------------------------------------------------------------------- construction
    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | os.PathLike,
        device: str | torch.device = "auto",
        vggish_weights: str | os.PathLike | None = None,
        clip_weights: str | os.PathLike | None = None,
        *,
        protocol: str = "official",
        sound_gate: float | None = None,
        max_crops_per_frame: int | None = None,
        amp: str = "off",
        score_threshold: float = 0.3,
        top_k: int = 10,
        templates: str | os.PathLike | Sequence[str] | None = None,
        offline: bool = False,
        clip_model: str | None = None,
        short_side: int | None = None,
        amp_weights: bool = True,
        cuda_graphs: bool = False,
    ) -> "AVSegPredictor":
        """Load a predictor from an avseg checkpoint, a converted one, or an official OV-AVSS `.pth`.

        Args:
            checkpoint: the model file.
            device: "auto", "cpu", "cuda" or "cuda:N".
            vggish_weights: VGGish file, "random", or None (inside the checkpoint, else the cache).
            clip_weights: CLIP weights file, an open_clip folder (open_clip_config.json + weights; it names the
                architecture), "random", or None (inside the checkpoint, else open_clip `openai`).
            protocol, sound_gate, max_crops_per_frame, amp, score_threshold, top_k, amp_weights, cuda_graphs:
                see `PredictorOptions`.
            templates: None (ViLD), a built-in set name, a template file path, or a list of templates.
            offline: never download (also AVSEG_OFFLINE=1 / HF_HUB_OFFLINE=1).
            clip_model: open_clip architecture overriding the config's (e.g. for a CLIP weights file of
                another architecture).
            short_side: resize short side overriding the config's test size.
        """
        if templates is None:
            template_set = VILD_TEMPLATES
        elif isinstance(templates, (str, os.PathLike)):
            template_set = resolve_templates(templates)
        else:
            template_set = validate_templates(templates)
        options = PredictorOptions(
            protocol=protocol, score_threshold=score_threshold, top_k=top_k, sound_gate=sound_gate,
            max_crops_per_frame=max_crops_per_frame, amp=amp, templates=template_set, short_side=short_side,
            amp_weights=amp_weights, cuda_graphs=cuda_graphs,
        )
        torch_device = resolve_device(device)
        check_amp_device(amp, torch_device)
        check_cuda_graphs_device(cuda_graphs, torch_device)
        path = Path(checkpoint).expanduser()
        parts = read_checkpoint_parts(path)
        model = build_network(parts, str(path))
        audio_source = setup_vggish(model, parts, vggish_weights, offline)
        clip, clip_source = load_classifier_clip(
            parts.config, torch_device, clip_weights=clip_weights, clip_state=parts.clip_state, clip_model=clip_model,
            offline=offline, state_source=f"{path} (clip_adapter.clip_model.*)" if parts.clip_state else "checkpoint",
        )
        sources = {
            "checkpoint": str(path.resolve()),
            "checkpoint_kind": parts.kind,
            "config": parts.config_name,
            "iteration": parts.iteration,
            "vggish": audio_source,
            "clip_source": clip_source,
        }
        return cls(model, clip, parts.config, torch_device, options, sources)

    # ------------------------------------------------------------------------------------- vocabulary
    def set_vocabulary(self, names: Sequence[str]) -> None:
        """Encode the class names once (prompt ensemble; cached on disk for pretrained CLIP weights).

        Label maps then hold vocabulary index + 1 (0 = background).
        """
        from models.ovavss.text_embeddings import class_name_embeddings, validate_class_names

        names = validate_class_names(names)
        if names == self.vocabulary and self._text_embeddings is not None:
            return
        if len(names) > np.iinfo(np.uint16).max - 1:
            raise AVSegError(f"the vocabulary has {len(names)} names; at most 65534 are supported")
        self._text_embeddings = class_name_embeddings(self.clip, names, self.options.templates).to(self.device)
        self.vocabulary = names

    # ------------------------------------------------------------------------------------- prediction
    @property
    def short_side(self) -> int:
        """The short side frames are resized to before the network."""
        return int(self.options.short_side or self.config.test_short_side)

    def _autocast(self):
        if self.options.amp == "off":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=AMP_DTYPES[self.options.amp])

    def predict_clip(self, clip: ClipInput) -> list[FramePrediction]:
        """Named masks of one clip, one `FramePrediction` per frame at the frames' original resolution.

        Args:
            clip: frames uint8 (T, H, W, 3) RGB and audio_examples float32 (T, 1, 96, 64), 1 <= T <= clip_len.
        """
        from models.data.transforms import MAX_SIZE, frames_to_tensor, resize_frame, resize_shortest_edge_size

        if self._text_embeddings is None:
            raise RuntimeError("call set_vocabulary(names) before predict_clip")
        frames = np.asarray(clip.frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
        num_frames, height, width = frames.shape[:3]
        if not 1 <= num_frames <= self.clip_len:
            raise ValueError(f"a clip holds 1 to {self.clip_len} frames, got {num_frames}")
        audio = torch.as_tensor(np.asarray(clip.audio_examples), dtype=torch.float32)
        if tuple(audio.shape) != (num_frames, 1, 96, 64):
            raise ValueError(f"audio_examples must be ({num_frames}, 1, 96, 64), got {tuple(audio.shape)}")
        size = resize_shortest_edge_size(height, width, self.short_side, self.config.max_size or MAX_SIZE)
        resized = frames_to_tensor([resize_frame(frame, size) for frame in frames])
        return self.predict_resized(resized, audio, (height, width))

    @torch.inference_mode()
    def predict_resized(
        self, frames: torch.Tensor, audio_examples: torch.Tensor, original_size: tuple[int, int]
    ) -> list[FramePrediction]:
        """Like `predict_clip` for frames already resized to the network's input size.

        Args:
            frames: uint8 (T, 3, h, w) resized, unnormalised, unpadded frames.
            audio_examples: (T, 1, 96, 64) VGGish log-mel examples.
            original_size: (H, W) the masks and label maps are produced at.
        """
        from models.data.transforms import normalize_and_pad

        if self._text_embeddings is None:
            raise RuntimeError("call set_vocabulary(names) before predicting")
        device = self.device
        frames = frames.to(device)  # uint8 to the device, then normalised there (4x fewer bytes to copy)
        images, sizes = normalize_and_pad([frames], self.config.size_divisibility)
        with self._autocast():
            outputs = self._network(images, audio_examples=audio_examples[None].to(device, torch.float32))
            sound_logits = outputs["pred_logits"][0]  # (Q, 2)
            # (Q, T, Hp, Wp) logits on the padded canvas, upsampled only for the queries that are read
            mask_logits = MaskCanvas(outputs["pred_masks"][0], tuple(images.shape[-2:]))
        classified = self.classifier.classify(frames, mask_logits, sound_logits, self._text_embeddings)
        with self._autocast():
            painted = self.classifier.paint(classified, mask_logits, sizes[0], tuple(original_size))
        return self._frame_predictions(painted, sound_logits)

    def _frame_predictions(self, painted, sound_logits: torch.Tensor) -> list[FramePrediction]:
        small = len(self.vocabulary) < 255
        label_dtype = np.uint8 if small else np.uint16
        # narrowed on the device before the copy: 1 (or 4) bytes per pixel instead of int64's 8
        label_maps = painted.semantic_maps.to(torch.uint8 if small else torch.int32).to("cpu").numpy()
        label_maps = label_maps.astype(label_dtype, copy=False)
        masks = painted.masks.to("cpu").numpy()  # (P, T, H, W) bool
        sounding = sound_logits.float().softmax(dim=-1)[:, 0].to("cpu")
        queries = painted.query_index.tolist()
        classes = painted.class_index.tolist()
        scores = painted.scores.float().tolist()
        predictions = []
        for t in range(label_maps.shape[0]):
            instances = [
                Instance(mask=masks[p, t], label=self.vocabulary[c], class_index=int(c), score=float(s),
                         sound_score=float(sounding[q]), query=int(q))
                for p, (q, c, s) in enumerate(zip(queries, classes, scores))
                if masks[p, t].any()
            ]
            predictions.append(FramePrediction(label_map=label_maps[t], instances=instances))
        return predictions

    # ------------------------------------------------------------------------------------------ report
    def describe(self) -> dict:
        """What produces the predictions: method, checkpoint, weights sources and options (JSON-ready)."""
        options = self.options
        return {
            "method": "ov-avss",
            **self.sources,
            "clip_model": self.clip.model_name,
            "clip_weights": self.clip.weights_id,
            "clip_image_size": self.clip.image_size,
            "device": str(self.device),
            "amp": options.amp,
            "amp_weights": options.amp_weights if options.amp != "off" else None,
            "cuda_graphs": options.cuda_graphs,
            "protocol": options.protocol,
            "score_threshold": options.score_threshold,
            "top_k": options.top_k,
            "sound_gate": options.sound_gate,
            "max_crops_per_frame": options.max_crops_per_frame,
            "templates": "vild" if options.templates == VILD_TEMPLATES else template_set_id(options.templates),
            "short_side": self.short_side,
            "clip_len": self.clip_len,
            "vocabulary_size": len(self.vocabulary),
        }
