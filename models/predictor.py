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
operands, norm scales rounded once, CLIP's image tower fused; `amp_weights=False` is the official regime bit for
bit). `amp="bf16"` also runs on CPUs with native bfloat16 (AMX / AVX512-BF16), where it is faster than float32.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from models.checkpoint_parts import build_network, read_checkpoint_parts
from models.clip_loading import load_classifier_clip
from models.device import cpu_supports_bf16, resolve_device
from models.errors import AVSegError, UsageError
from models.numbers_check import real_number, whole_number
from models.ovavss.classifier import ClassifierConfig, OpenVocabularyClassifier, PairLogits
from models.ovavss.clip_model import LoadedClip
from models.ovavss.clip_tower_fusion import fuse_image_tower
from models.ovavss.config import ModelConfig
from models.ovavss.mask_canvas import MaskCanvas
from models.ovavss.prompts import (
    TEMPLATE_SETS,
    VILD_TEMPLATES,
    resolve_templates,
    template_set_id,
    validate_templates,
)
from models.ovavss.square_crop import CROP_PROTOCOLS
from models.prediction import ClipInput, FramePrediction, Instance, checked_audio_examples, checked_frames
from models.vggish_setup import setup_checkpoint_vggish

AMP_MODES = ("off", "fp16", "bf16")


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
            scales and shifts are rounded once (at most 2^-11 relative). The CLIP image tower is also fused
            (`models.ovavss.clip_tower_fusion`: QuickGELU as one SiLU with 1.702 folded into its MLP weights,
            layer norms in the amp dtype), which rounds the two MLP matrices' scaled values instead. False
            keeps float32 weights and the tower as it is: the official regime bit for bit, but a cast of every
            weight on every call (measured on an H100: CLIP ViT-B/16 encodes 4,600 crops/s that way, 7,700
            with half weights).
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
        for name in ("top_k", "max_crops_per_frame", "short_side", "crop_batch_size"):
            if getattr(self, name) is not None:  # stored as int: recorded options stay JSON-able
                object.__setattr__(self, name, whole_number(name, getattr(self, name), UsageError))
        for name in ("score_threshold", "sound_gate"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, real_number(name, getattr(self, name), UsageError))
        for name in ("amp_weights", "cuda_graphs"):
            if not isinstance(getattr(self, name), bool):
                raise UsageError(f"{name} must be True or False, got {getattr(self, name)!r}")
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
    decoder (float32 by design), all buffers and the CLIP text tower (class embeddings) keep their dtype.
    The image tower is first fused (`fuse_image_tower`: QuickGELU as one SiLU, folded in float32 before the
    cast; layer norms in the amp dtype)."""
    visual = getattr(clip_model, "visual", None)
    if visual is not None:
        fuse_image_tower(visual)
    parts = [model.backbone, model.sem_seg_head.predictor, model.audio_encoder, visual]
    with torch.no_grad():
        for part in filter(None, parts):
            for param in part.parameters():
                if param.is_floating_point():
                    param.data = param.data.to(dtype)


# --------------------------------------------------------------------------------------------- predictor
@dataclass(frozen=True)
class _NetworkOutput:
    """One clip after the network: frames (T, 3, h, w) uint8 on the device, (h, w) before padding, the original
    (H, W), sound logits (Q, 2) and the mask logits' canvas (Q, T, Hp, Wp)."""

    frames: torch.Tensor
    image_size: tuple[int, int]
    original_size: tuple[int, int]
    sound_logits: torch.Tensor
    mask_logits: MaskCanvas


@dataclass(frozen=True)
class _PendingClip:
    """One clip whose CLIP work is issued but not read back."""

    network: _NetworkOutput
    pairs: PairLogits


class AVSegPredictor:
    """OV-AVSS: names and segments the sounding objects of clips (implements `VideoPredictor`).

    Args:
        model: the class-agnostic network (`OVAVSS`), weights loaded. Taken over, not copied: it is moved to
            `device` and put in eval mode, and with `options.amp` and `amp_weights` (the default for amp) its
            weights and CLIP's are cast to the amp dtype in place and CLIP's image tower is fused, so the
            modules passed no longer run in float32 afterwards. Pass copies (`copy.deepcopy`) to keep them.
        clip: the frozen CLIP of the classifier (taken over like `model`).
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
        templates_file = None
        if templates is None:
            template_set = VILD_TEMPLATES
        elif isinstance(templates, (str, os.PathLike)):
            template_set = resolve_templates(templates)
            if not (isinstance(templates, str) and templates in TEMPLATE_SETS):  # a file (resolve_templates read it)
                templates_file = str(Path(templates).resolve())
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
        audio_source = setup_checkpoint_vggish(model, parts, vggish_weights, offline)
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
        if templates_file is not None:
            sources["templates_file"] = templates_file
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

    @torch.inference_mode()
    def predict_clip(self, clip: ClipInput) -> list[FramePrediction]:
        """Named masks of one clip, one `FramePrediction` per frame at the frames' original resolution.

        Args:
            clip: frames uint8 (T, H, W, 3) RGB and audio_examples float32 (T, 1, 96, 64), 1 <= T <= clip_len.
        """
        return self._finish(self._classify_pairs(self._run_network(*self._resize(clip))))  # _resize checked the clip

    @torch.inference_mode()
    def predict_clips(self, clips: Iterable[ClipInput]) -> Iterator[list[FramePrediction]]:
        """`predict_clip` of each clip, in order, with the same results; the clips overlap on a GPU.

        The network of clip k+1 is issued before the results of clip k are read back, so the GPU works on clip
        k's CLIP crops while the host launches clip k+1's network kernels (launch-bound on a GPU), instead of
        the host waiting for CLIP and the GPU then waiting for the host. Clips are taken from `clips` one
        ahead of the result yielded: at most two are held.
        """
        pending: _PendingClip | None = None
        for clip in clips:
            network = self._run_network(*self._resize(clip))
            if pending is not None:
                yield self._finish(pending)
            pending = self._classify_pairs(network)
        if pending is not None:
            yield self._finish(pending)

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
        frames = torch.as_tensor(frames)
        if frames.ndim != 4 or frames.shape[1] != 3 or frames.dtype != torch.uint8:
            raise ValueError(f"frames must be uint8 (T, 3, h, w), got {frames.dtype} {tuple(frames.shape)}")
        if not 1 <= frames.shape[0] <= self.clip_len:
            raise ValueError(f"a clip holds 1 to {self.clip_len} frames, got {frames.shape[0]}")
        if isinstance(audio_examples, torch.Tensor):
            audio_examples = audio_examples.detach().cpu()
        audio = torch.as_tensor(checked_audio_examples(audio_examples, frames.shape[0]))
        if len(original_size) != 2 or not all(int(side) == side and side >= 1 for side in original_size):
            raise ValueError(f"original_size must be (H, W) in pixels, got {original_size}")
        original_size = (int(original_size[0]), int(original_size[1]))
        return self._finish(self._classify_pairs(self._run_network(frames, audio, original_size)))

    # ------------------------------------------------------------------------------ prediction steps
    def _resize(self, clip: ClipInput) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """A clip checked and resized on the CPU: (T, 3, h, w) uint8 frames, (T, 1, 96, 64) audio, (H, W)."""
        from models.data.transforms import MAX_SIZE, frames_to_tensor, resize_frame, resize_shortest_edge_size

        if self._text_embeddings is None:
            raise RuntimeError("call set_vocabulary(names) before predict_clip")
        frames = checked_frames(clip, self.clip_len)
        num_frames, height, width = frames.shape[:3]
        audio = torch.as_tensor(checked_audio_examples(clip.audio_examples, num_frames))
        size = resize_shortest_edge_size(height, width, self.short_side, self.config.max_size or MAX_SIZE)
        return frames_to_tensor([resize_frame(frame, size) for frame in frames]), audio, (height, width)

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """A host tensor on the predictor's device. To a GPU through pinned memory without waiting: a plain
        copy from pageable memory would first wait for all the work already queued (the previous clip's)."""
        if self.device.type != "cuda" or tensor.device.type != "cpu":
            return tensor.to(self.device)
        return tensor.pin_memory().to(self.device, non_blocking=True)

    @torch.inference_mode()
    def _run_network(
        self, frames: torch.Tensor, audio_examples: torch.Tensor, original_size: tuple[int, int]
    ) -> "_NetworkOutput":
        """Issue the network on one resized clip (nothing is read back)."""
        from models.data.transforms import normalize_and_pad

        if self._text_embeddings is None:
            raise RuntimeError("call set_vocabulary(names) before predicting")
        frames = self._to_device(frames)  # uint8 to the device, then normalised there (4x fewer bytes to copy)
        audio = self._to_device(audio_examples.to(torch.float32))
        images, sizes = normalize_and_pad([frames], self.config.size_divisibility)
        with self._autocast():
            outputs = self._network(images, audio_examples=audio[None])
            # (Q, T, Hp, Wp) logits on the padded canvas, upsampled only for the queries that are read
            mask_logits = MaskCanvas(outputs["pred_masks"][0], tuple(images.shape[-2:]))
        return _NetworkOutput(frames=frames, image_size=sizes[0], original_size=tuple(original_size),
                              sound_logits=outputs["pred_logits"][0], mask_logits=mask_logits)

    @torch.inference_mode()
    def _classify_pairs(self, network: "_NetworkOutput") -> "_PendingClip":
        """Crop the clip's valid (query, frame) pairs and issue CLIP on them (reads back only the valid pairs)."""
        pairs = self.classifier.classify_pairs(network.frames, network.mask_logits, network.sound_logits,
                                               self._text_embeddings)
        return _PendingClip(network=network, pairs=pairs)

    @torch.inference_mode()
    def _finish(self, pending: "_PendingClip") -> list[FramePrediction]:
        """Per-query class probabilities, painting and the per-frame results on the host."""
        network = pending.network
        classified = self.classifier.mean_over_frames(pending.pairs)
        with self._autocast():
            painted = self.classifier.paint(classified, network.mask_logits, network.image_size, network.original_size)
        return self._frame_predictions(painted, network.sound_logits)

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
            "clip_image_tower_fused": options.amp != "off" and options.amp_weights,
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
