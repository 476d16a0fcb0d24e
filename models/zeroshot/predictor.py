"""`ZeroShotPredictor`: the training-free method (`--method zeroshot`) behind the `VideoPredictor` interface.

Audio -> text -> masks with downloadable foundation models only (the OpenAVS / Sam4AVS family):

    predictor = ZeroShotPredictor.from_pretrained()            # CLAP, Grounding DINO, SAM, CLIP ViT-B/16
    predictor.set_vocabulary(["violin", "man", "dog"])
    frames = predictor.predict_clip(ClipInput(frames, audio_examples, waveform_16k, times))
    for frames in predictor.predict_clips(clips): ...           # the same, clip after clip

What happens to each frame is described in `models.zeroshot.fusion`; the knobs are `ZeroShotConfig`.
`Instance.sound_score` is the CLAP probability that the instance's class is sounding in that frame.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Protocol, Sequence

import numpy as np
import torch

from models.errors import AVSegError
from models.ovavss.prompts import fill_template
from models.prediction import ClipInput, FramePrediction, Instance, checked_frames
from models.zeroshot.config import ZeroShotConfig
from models.zeroshot.fusion import (
    audio_probabilities,
    combine_scores,
    frame_candidates,
    paint_label_map,
    relative_motion,
    select_instances,
    sounding_classes,
    window_loudness_dbfs,
)

SAMPLE_RATE_16K = 16_000

MAX_SAMPLE_MAGNITUDE = 64.0
"""A float waveform whose samples reach this (+36 dB over full scale) holds integer-scaled samples, not audio in
[-1, 1]: refused. Decoded float audio may pass 1.0 a little (codec overshoot), never by this much."""

WAVEFORM_HINT = "mono 16 kHz float samples in [-1, 1] (16-bit integers divided by 32768, channels averaged)"
"""What `ClipInput.waveform_16k` must hold, for error messages."""
ZEROSHOT_EXTRA_HINT = "pip install 'transformers>=5,<6' (part of avseg's default install)"


class AudioTagger(Protocol):
    """Scores texts against sound windows (CLAP)."""

    @property
    def logit_scale(self) -> float: ...

    def similarities(self, windows_16k: Sequence[np.ndarray], names: Sequence[str]) -> np.ndarray:
        """(W, K) cosine similarities of W mono 16 kHz windows to K texts."""


class BoxDetector(Protocol):
    """Boxes for class names (Grounding DINO, OWLv2); returns one `Detections` (boxes, class_scores) per frame."""

    name: str

    def detect(self, frames: Sequence[np.ndarray], names: Sequence[str]) -> list: ...


class BoxSegmenter(Protocol):
    """Masks from boxes (SAM)."""

    def segment(self, frame: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """frame uint8 (H, W, 3), boxes (N, 4) xyxy -> masks (N, H, W) bool, quality (N,)."""


class RegionClassifier(Protocol):
    """Vocabulary probabilities of masked regions (`CropRescorer`)."""

    def set_vocabulary(self, names: Sequence[str]) -> None: ...

    def probabilities(self, frame: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """frame uint8 (H, W, 3), masks (N, H, W) bool -> (N, V) probabilities."""


@dataclass(frozen=True)
class FrameEvidence:
    """What the audio said about one frame (kept for inspection and tests).

    Attributes:
        probabilities: (V,) CLAP probability of each class.
        loudness_dbfs: RMS level of the frame's window.
        sounding: (V,) bool.
    """

    probabilities: np.ndarray
    loudness_dbfs: float
    sounding: np.ndarray


class ZeroShotPredictor:
    """Training-free sounding-object segmentation (implements `models.prediction.VideoPredictor`).

    Args:
        tagger: CLAP (audio -> class probabilities).
        detector: text-conditioned box detector.
        segmenter: SAM (boxes -> masks).
        rescorer: CLIP region classifier, or None to name objects by the detector alone.
        config: thresholds and policies.
        sources: where each model's weights came from ({"clap": folder, ...}), for `describe()`.
        clip_len: frames per `predict_clip` call (5, like OV-AVSS; frames of a clip are analysed together and
            give each other their motion cue).
        device: where the models run (reported by `describe()`).
    """

    def __init__(
        self,
        tagger: AudioTagger,
        detector: BoxDetector,
        segmenter: BoxSegmenter,
        rescorer: RegionClassifier | None = None,
        config: ZeroShotConfig = ZeroShotConfig(),
        sources: dict | None = None,
        clip_len: int = 5,
        device: str = "cpu",
    ) -> None:
        check_config(config)
        if config.rescore and rescorer is None:
            raise ValueError("config.rescore is on but no rescorer was given")
        self.tagger = tagger
        self.detector = detector
        self.segmenter = segmenter
        self.rescorer = rescorer if config.rescore else None
        self.config = config
        self.sources = dict(sources or {})
        self.device = device
        self.clip_len = int(clip_len)
        self.needs_waveform = True  # evaluation passes ClipInput.waveform_16k only to predictors that ask
        self.audio_description = (f"CLAP on the {config.audio_window_s:g} s of 16 kHz sound starting at each frame's "
                                  "time (upsampled to 48 kHz)")
        self.vocabulary: tuple[str, ...] = ()
        self.last_evidence: list[FrameEvidence] = []

    # ---------------------------------------------------------------------------------- construction
    @classmethod
    def from_pretrained(
        cls,
        config: ZeroShotConfig = ZeroShotConfig(),
        device: str | torch.device = "auto",
        *,
        clap_weights: str | os.PathLike | None = None,
        detector_weights: str | os.PathLike | None = None,
        sam_weights: str | os.PathLike | None = None,
        clip_weights: str | os.PathLike | None = None,
        offline: bool = False,
        on_found: Callable[[], None] | None = None,
    ) -> "ZeroShotPredictor":
        """Load CLAP, the detector, SAM and (with `config.rescore`) CLIP, downloading what is missing.

        `on_found` is called once every model is on this machine, before they are loaded (the command line says
        "loading ..." then, so an offline error stays its one line).

        Each `*_weights` is a local folder as written by `save_pretrained` / `snapshot_download` (CLIP: a weights
        file or an open_clip folder, as for OV-AVSS); None looks in the avseg cache, then the Hugging Face cache,
        then downloads the pinned revision (`avseg weights list`), unless offline.

        Raises:
            TypeError: `config` is not a `ZeroShotConfig`.
            AVSegError: transformers missing, weights missing offline (one line: what, where from, where to put it),
                unreadable, incomplete or mismatched model folders.
        """
        check_config(config)
        from models.device import resolve_device
        from models.hub_models import resolve_hub_model
        from models.weights import get_weight

        import importlib.util

        if importlib.util.find_spec("transformers") is None:
            raise AVSegError(f"the zero-shot method needs the transformers package: {ZEROSHOT_EXTRA_HINT}")
        torch_device = resolve_device(device)
        detector_weight = get_weight("grounding-dino-tiny" if config.detector == "grounding-dino" else "owlv2-base")
        wanted = {
            "clap": (get_weight("clap-htsat-unfused"), clap_weights),
            "detector": (detector_weight, detector_weights),
            "sam": (get_weight("sam-vit-base"), sam_weights),
        }
        folders, missing = {}, []
        for part, (weight, explicit) in wanted.items():
            try:
                folders[part] = resolve_hub_model(weight, explicit, offline=offline)
            except AVSegError as error:
                missing.append((weight.name, error))
        rescorer = None
        clip_source = None
        if config.rescore:
            from models.clip_loading import load_pretrained_clip
            from models.zeroshot.rescore import CropRescorer

            try:
                clip, clip_source = load_pretrained_clip(config.clip_model, config.clip_pretrained, torch_device,
                                                         clip_weights=clip_weights, offline=offline)
                rescorer = CropRescorer(clip, templates=config.clip_templates, device=torch_device)
            except AVSegError as error:
                missing.append((f"CLIP {config.clip_model}", error))
        if missing:
            first = missing[0][1]
            if len(missing) > 1:
                others = ", ".join(name for name, _ in missing[1:])
                raise AVSegError(f"{first.message} (also missing: {others}; with network, `avseg weights fetch "
                                 f"zeroshot` fetches every zero-shot model, `avseg weights list` shows where each is)",
                                 exit_code=first.exit_code) from first
            raise first
        if on_found is not None:
            on_found()
        from models.zeroshot.audio_text import ClapAudioTagger
        from models.zeroshot.detector import load_detector
        from models.zeroshot.segmenter import SamBoxSegmenter

        tagger = ClapAudioTagger.from_folder(folders["clap"], torch_device, prompt="{}")
        detector_options = {"input_short_side": config.detector_short_side} if config.detector_short_side else {}
        detector = load_detector(config.detector, folders["detector"], torch_device, **detector_options)
        segmenter = SamBoxSegmenter.from_folder(folders["sam"], torch_device)
        sources = {  # absolute: the same folders given as another relative path are the same run's models
            "clap": _absolute(folders["clap"]),
            "detector": _absolute(folders["detector"]),
            "sam": _absolute(folders["sam"]),
            "clip": _absolute(clip_source) if clip_source is not None and os.path.exists(clip_source) else clip_source,
        }
        return cls(tagger, detector, segmenter, rescorer, config, sources, device=str(torch_device))

    # ------------------------------------------------------------------------------------- vocabulary
    def set_vocabulary(self, names: Sequence[str]) -> None:
        """Choose the class names (CLAP and CLIP text encodings are made once and memoised)."""
        from models.ovavss.text_embeddings import validate_class_names

        names = validate_class_names(names)
        if self.rescorer is not None:
            self.rescorer.set_vocabulary(names)
        self.vocabulary = names

    # ------------------------------------------------------------------------------------- prediction
    def audio_windows(self, clip: ClipInput) -> list[np.ndarray]:
        """The sound window of each frame: `audio_window_s` seconds of `clip.waveform_16k` from the frame's time.

        `waveform_16k` starts at the first frame's time rounded to 10 ms (as `FrameAudio.waveform_span` cuts it).
        Every window has the full length: samples past the end of the waveform are silence (zeros), as they are
        where the real pipeline cuts the span at the end of a video's audio (and as OV-AVSS's examples past the end
        of the track are); a missing waveform gives all-zero windows.

        Raises:
            TypeError: a waveform that is not float samples, times that are not numbers.
            ValueError: a waveform that is not 1-D, holds NaN / infinities or integer-scaled samples; not one time
                per frame; negative or non-finite times.
        """
        from models.pipeline.frame_audio import STFT_HOP_SAMPLES, log_mel_start

        count = len(clip.frames)
        length = max(1, int(round(self.config.audio_window_s * SAMPLE_RATE_16K)))
        if clip.waveform_16k is None:
            return [np.zeros(length, dtype=np.float32) for _ in range(count)]
        times = checked_times(clip.times, count)
        waveform = checked_waveform(clip.waveform_16k)
        base = log_mel_start(min(times)) * STFT_HOP_SAMPLES
        windows = []
        for time in times:
            start = log_mel_start(time) * STFT_HOP_SAMPLES - base
            window = np.zeros(length, dtype=np.float32)
            available = waveform[start : start + length]
            window[: available.size] = available
            windows.append(window)
        return windows

    def audio_evidence(self, clip: ClipInput) -> list[FrameEvidence]:
        """CLAP probabilities, loudness and the sounding classes of every frame of the clip."""
        config = self.config
        windows = self.audio_windows(clip)
        loudness = np.array([window_loudness_dbfs(w) for w in windows], dtype=np.float64)
        count, vocabulary_size = len(windows), len(self.vocabulary)
        probabilities = np.zeros((count, vocabulary_size), dtype=np.float32)
        audible = np.flatnonzero(loudness >= config.silence_dbfs)
        if audible.size:
            texts = [fill_template(config.audio_prompt, name) for name in self.vocabulary] + list(config.null_prompts)
            similarities = self.tagger.similarities([windows[i] for i in audible], texts)
            probabilities[audible] = audio_probabilities(similarities, self.tagger.logit_scale, vocabulary_size)
        sounding = sounding_classes(probabilities, loudness, config.audio_threshold, config.max_sounding,
                                    config.silence_dbfs)
        return [FrameEvidence(probabilities[t], float(loudness[t]), sounding[t]) for t in range(count)]

    def predict_clip(self, clip: ClipInput) -> list[FramePrediction]:
        """Named masks of the sounding objects, one `FramePrediction` per frame at the original resolution.

        Args:
            clip: frames uint8 (T, H, W, 3), `waveform_16k` ((N,) mono 16 kHz float samples in [-1, 1] from the
                first frame's time on, as `models.pipeline.frame_audio.waveform_span` cuts them; or None for
                silence) and `times` (T,) finite seconds >= 0; `audio_examples` are not used. A waveform that ends
                before the last frame's window is read as silence after its end (the video's audio ended there).

        Raises:
            TypeError, ValueError: frames, waveform or times of the wrong kind (see `audio_windows`).
        """
        if not self.vocabulary:
            raise RuntimeError("call set_vocabulary(names) before predict_clip")
        frames = checked_frames(clip, self.clip_len)
        count = frames.shape[0]
        evidence = self.audio_evidence(clip)
        self.last_evidence = evidence
        queried = np.flatnonzero(np.any([e.sounding for e in evidence], axis=0))
        active = [t for t in range(count) if evidence[t].sounding.any()]
        detections = {}
        if active and queried.size:
            names = [self.vocabulary[i] for i in queried]
            for t, found in zip(active, self.detector.detect([frames[t] for t in active], names)):
                detections[t] = found
        predictions = []
        for t in range(count):
            if t not in detections:
                empty = np.zeros((0,) + frames.shape[1:3], bool)
                predictions.append(FramePrediction(label_map=paint_label_map(
                    empty, np.zeros(0, np.int64), frames.shape[1:3], len(self.vocabulary))))
                continue
            neighbour = frames[t - 1] if t > 0 else (frames[1] if count > 1 else None)
            predictions.append(self._frame_prediction(frames[t], neighbour, detections[t], queried, evidence[t]))
        return predictions

    def predict_clips(self, clips: Iterable[ClipInput]) -> Iterator[list[FramePrediction]]:
        """`predict_clip` of each clip, in order, as a generator (`clips` may be one too; read one clip at a time)."""
        for clip in clips:
            yield self.predict_clip(clip)

    def _frame_prediction(self, frame: np.ndarray, neighbour: np.ndarray | None, detections, queried: np.ndarray,
                          evidence: FrameEvidence) -> FramePrediction:
        config = self.config
        shape = frame.shape[:2]
        candidates = frame_candidates(detections.boxes, detections.class_scores, queried, evidence.sounding,
                                      config.effective_box_threshold, config.nms_iou, config.max_boxes_per_class)
        masks = np.zeros((0,) + shape, dtype=bool)
        if len(candidates):
            masks, _ = self.segmenter.segment(frame, candidates.boxes)
            masks = np.asarray(masks, dtype=bool)
            big = masks.reshape(masks.shape[0], -1).sum(axis=1) >= config.min_mask_pixels
            candidates, masks = candidates.take(np.flatnonzero(big)), masks[big]
        if not len(candidates):
            return FramePrediction(label_map=paint_label_map(masks, np.zeros(0, np.int64), shape, len(self.vocabulary)))
        clip_probabilities = self.rescorer.probabilities(frame, masks) if self.rescorer is not None else None
        scores = combine_scores(candidates.detector_scores, clip_probabilities, evidence.sounding,
                                config.rescore_weight)
        labels = scores.argmax(axis=1)
        best = scores[np.arange(len(labels)), labels]
        motion = relative_motion(masks, frame, neighbour) if config.instance_policy == "motion" else None
        keep = select_instances(labels, best, motion, config.instance_policy, config.keep_ratio,
                                config.motion_weight, config.score_threshold, config.max_instances)
        instances = [
            Instance(mask=masks[i], label=self.vocabulary[labels[i]], class_index=int(labels[i]), score=float(best[i]),
                     sound_score=float(evidence.probabilities[labels[i]]), query=int(i))
            for i in keep
        ]
        label_map = paint_label_map(masks[keep], labels[keep], shape, len(self.vocabulary))
        return FramePrediction(label_map=label_map, instances=instances)

    # ------------------------------------------------------------------------------------------ report
    def describe(self) -> dict:
        """Method, models and options (JSON-ready) for the annotate JSON and eval reports."""
        return {
            "method": "zeroshot",
            "detector": getattr(self.detector, "name", type(self.detector).__name__),
            "weights": dict(self.sources),
            "device": self.device,
            "options": self.config.to_dict(),
            "clip_len": self.clip_len,
            "vocabulary_size": len(self.vocabulary),
        }


def _absolute(path: str | os.PathLike) -> str:
    """A model folder or file as an absolute path without symlinks (how `describe()` names it)."""
    return str(Path(path).resolve())


def check_config(config: object) -> None:
    """TypeError unless `config` is a `ZeroShotConfig` (a dict of options is not one)."""
    if not isinstance(config, ZeroShotConfig):
        raise TypeError(f"config must be a ZeroShotConfig, got {type(config).__name__} (build one with "
                        "models.zeroshot.config.ZeroShotConfig(detector=..., ...))")


def checked_times(times: Sequence[float], count: int) -> list[float]:
    """`times` as floats: one finite, non-negative number of seconds per frame.

    Raises:
        TypeError: an entry that is not a number.
        ValueError: not `count` times, a negative, NaN or infinite time.
    """
    if isinstance(times, (str, bytes)) or len(times) != count:
        size = "a string" if isinstance(times, (str, bytes)) else len(times)
        raise ValueError(f"the zero-shot method needs one timestamp per frame, got {size} for {count}")
    checked = []
    for time in times:
        if isinstance(time, (bool, np.bool_)) or not isinstance(time, (int, float, np.integer, np.floating)):
            raise TypeError(f"frame times must be numbers of seconds, got {type(time).__name__} {time!r}")
        if not math.isfinite(time) or time < 0:
            raise ValueError(f"frame times must be finite seconds >= 0, got {time}")
        checked.append(float(time))
    return checked


def checked_waveform(waveform: object) -> np.ndarray:
    """`waveform` as float32 (N,) after checking it holds mono 16 kHz float samples in [-1, 1].

    Raises:
        TypeError: integer (or other non-float) samples.
        ValueError: not 1-D (e.g. (channels, N) stereo), NaN or infinite samples, samples far outside [-1, 1].
    """
    samples = np.asarray(waveform)
    if not np.issubdtype(samples.dtype, np.floating):
        raise TypeError(f"waveform_16k must be {WAVEFORM_HINT}, got {samples.dtype} samples")
    if samples.ndim != 1:
        raise ValueError(f"waveform_16k must be {WAVEFORM_HINT}: a 1-D (N,) array, got shape {samples.shape}")
    samples = samples.astype(np.float32, copy=False)
    if not np.isfinite(samples).all():
        raise ValueError("waveform_16k holds NaN or infinite values")
    peak = float(np.abs(samples).max()) if samples.size else 0.0
    if peak >= MAX_SAMPLE_MAGNITUDE:
        raise ValueError(f"waveform_16k must be {WAVEFORM_HINT}, got samples up to {peak:g}")
    return samples
