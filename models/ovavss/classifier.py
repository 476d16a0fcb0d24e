"""Open-vocabulary classification of mask tubes with frozen CLIP (ovavss-spec.md §7, §8).

For every (query, frame) pair whose mask has a pixel with probability > 0.5, a square crop of the frame
times the soft mask (`square_crop`) is encoded by CLIP; logits = 100 x cosine similarity to the class
text embeddings; per query the logits are averaged over its valid frames and softmaxed over the
vocabulary. Queries valid in no frame are dropped. The sound head is not used by the official code;
two opt-in options use it (`sound_gate`, `max_crops_per_frame`).

The outputs are plain tensors (`ClassifiedQueries`, `PaintedClip`) so the predictor can compose them
with the mask network.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.ovavss.clip_model import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, LoadedClip
from models.ovavss.mask_canvas import MaskCanvas
from models.ovavss.postprocess import masks_at_output_size, paint_semantic_maps, select_pairs
from models.ovavss.square_crop import CROP_PROTOCOLS, crop_regions, mask_boxes, square_boxes


@dataclass(frozen=True)
class ClassifierConfig:
    """Options of the open-vocabulary classifier; defaults = the official inference.

    Attributes:
        crop_protocol: "official" (square anchored at the mask box's top-left) or "centered" (paper).
        logit_scale: fixed CLIP temperature (official 100; CLIP's learned `logit_scale` is not used).
        top_k: (query, class) entries considered in post-processing.
        score_threshold: kept entries have probability > this.
        crop_batch_size: crops encoded by CLIP per forward call (bounds memory).
        sound_gate: None (official) or p: queries whose sound-head probability of "sounding" (softmax
            index 0) is below p are not classified.
        max_crops_per_frame: None (official) or n: per frame, only the n valid queries with the highest
            sounding probability are cropped.
        half_precision_crops: round probabilities and crops through float16 like the official code under
            fp16 autocast (for bit-level comparisons; off by default).
    """

    crop_protocol: str = "official"
    logit_scale: float = 100.0
    top_k: int = 10
    score_threshold: float = 0.3
    crop_batch_size: int = 64
    sound_gate: float | None = None
    max_crops_per_frame: int | None = None
    half_precision_crops: bool = False

    def __post_init__(self) -> None:
        if self.crop_protocol not in CROP_PROTOCOLS:
            raise ValueError(f"crop_protocol must be one of {CROP_PROTOCOLS}, got {self.crop_protocol!r}")
        if self.crop_batch_size < 1 or self.top_k < 1:
            raise ValueError("crop_batch_size and top_k must be >= 1")
        if self.max_crops_per_frame is not None and self.max_crops_per_frame < 1:
            raise ValueError("max_crops_per_frame must be >= 1 or None")


@dataclass(frozen=True)
class ClassifiedQueries:
    """CLIP classification of one clip's queries.

    Attributes:
        query_index: (N,) long, the classified queries (valid in >= 1 frame), ascending.
        probs: (N, K) float32, softmax over the vocabulary of the mean logits.
        logits: (N, K) float32, logit_scale x cosine similarity averaged over the query's valid frames.
        valid: (Q, T) bool, the (query, frame) pairs that were cropped and classified.
    """

    query_index: torch.Tensor
    probs: torch.Tensor
    logits: torch.Tensor
    valid: torch.Tensor


@dataclass(frozen=True)
class PairLogits:
    """CLIP logits of one clip's cropped (query, frame) pairs, before the per-query mean (`classify_pairs`).

    Attributes:
        query_index: (M,) long, the query of each pair (query-major order).
        logits: (M, K) logit_scale x cosine similarity of each pair's crop with each class (the CLIP tower's
            dtype under autocast).
        valid: (Q, T) bool, the (query, frame) pairs that were cropped.
    """

    query_index: torch.Tensor
    logits: torch.Tensor
    valid: torch.Tensor


@dataclass(frozen=True)
class PaintedClip:
    """Post-processed output of one clip.

    Attributes:
        semantic_maps: (T, H, W) long, vocabulary index + 1 per pixel, 0 = background.
        query_index: (P,) long, query of each kept (query, class) pair, highest score first.
        class_index: (P,) long, vocabulary index of each kept pair.
        scores: (P,) float, class probability of each kept pair.
        masks: (P, T, H, W) bool, each kept pair's full mask (before first-come-first-served painting).
    """

    semantic_maps: torch.Tensor
    query_index: torch.Tensor
    class_index: torch.Tensor
    scores: torch.Tensor
    masks: torch.Tensor


class OpenVocabularyClassifier(nn.Module):
    """Square crops -> frozen CLIP -> per-query class probabilities -> painted semantic maps.

    Module names follow the official `ClipAdapter` (`clip_model`, buffers `pixel_mean` / `pixel_std`
    = 255 x CLIP mean / std, kept for checkpoint compatibility) so that an owner attribute named
    `clip_adapter` reproduces the official keys `clip_adapter.clip_model.*`.

    Args:
        clip_model: CLIP with `encode_image((N, 3, R, R)) -> (N, D)` (open_clip `CLIP`), frozen.
        image_size: R, the CLIP input side; crops are made at this size.
        mean, std: CLIP normalisation of [0, 1] RGB.
        config: classifier options.
    """

    def __init__(
        self,
        clip_model: nn.Module,
        image_size: int,
        mean: tuple[float, float, float] = OPENAI_CLIP_MEAN,
        std: tuple[float, float, float] = OPENAI_CLIP_STD,
        config: ClassifierConfig = ClassifierConfig(),
    ) -> None:
        super().__init__()
        self.clip_model = clip_model
        self.image_size = int(image_size)
        self.config = config
        self.register_buffer("pixel_mean", 255.0 * torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("pixel_std", 255.0 * torch.tensor(std).view(1, 3, 1, 1))
        self.register_buffer("clip_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("clip_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_loaded(cls, clip: LoadedClip, config: ClassifierConfig = ClassifierConfig()) -> "OpenVocabularyClassifier":
        """A classifier around a `load_clip` result."""
        return cls(clip.model, clip.image_size, clip.mean, clip.std, config)

    @torch.no_grad()
    def encode_regions(self, regions: torch.Tensor) -> torch.Tensor:
        """CLIP image embeddings of crops.

        Args:
            regions: (M, 3, R, R) float RGB in 0..255.

        Returns:
            (M, D) float32 unit vectors.
        """
        images = (regions.float() / 255.0 - self.clip_mean) / self.clip_std
        return F.normalize(self.clip_model.encode_image(images).float(), dim=-1)

    def pairs_to_crop(
        self, mask_logits: torch.Tensor | MaskCanvas, sound_logits: torch.Tensor | None, queries_per_chunk: int = 16
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The (query, frame) pairs to crop and their tight boxes.

        Official: every valid pair. With the sound gate, only queries whose P(sounding) reaches it; with the
        crop cap, per frame the `max_crops_per_frame` valid queries with the highest P(sounding) (ties: lower
        query index first). With either option the queries are examined in descending P(sounding), a chunk at
        a time, and the search stops once every frame has its quota, so a `MaskCanvas` upsamples only the
        masks that can matter.

        Returns:
            valid (Q, T) bool, boxes (Q, T, 4) float32 (zeros where not valid or not examined).
        """
        cfg = self.config
        if cfg.sound_gate is None and cfg.max_crops_per_frame is None:
            found = mask_boxes(mask_logits, half_precision=cfg.half_precision_crops)
            return found.valid, found.boxes
        if sound_logits is None:
            raise ValueError("sound_gate / max_crops_per_frame need the sound-head logits")
        num_queries, num_frames = mask_logits.shape[:2]
        device = mask_logits.device
        sounding = sound_logits.float().softmax(dim=-1)[:, 0].to(device)  # (Q,)
        order = torch.argsort(sounding, descending=True, stable=True)
        if cfg.sound_gate is not None:
            order = order[sounding[order] >= cfg.sound_gate]
        valid = torch.zeros(num_queries, num_frames, dtype=torch.bool, device=device)
        boxes = torch.zeros(num_queries, num_frames, 4, device=device)
        cap = cfg.max_crops_per_frame
        taken = torch.zeros(num_frames, dtype=torch.long, device=device)
        for start in range(0, order.numel(), queries_per_chunk):
            queries = order[start : start + queries_per_chunk]
            found = mask_boxes(mask_logits[queries], half_precision=cfg.half_precision_crops)
            keep = found.valid
            if cap is not None:  # the first `cap` valid queries of each frame, in sounding order
                keep = keep & (taken + keep.long().cumsum(dim=0) <= cap)
                taken += keep.sum(dim=0)
            valid[queries] = keep
            boxes[queries] = found.boxes * keep.unsqueeze(-1)
            if cap is not None and bool((taken >= cap).all()):
                break
        return valid, boxes

    @torch.no_grad()
    def classify(
        self,
        frames: torch.Tensor,
        mask_logits: torch.Tensor | MaskCanvas,
        sound_logits: torch.Tensor | None,
        text_embeddings: torch.Tensor,
    ) -> ClassifiedQueries:
        """Classify one clip's mask tubes against a vocabulary.

        Args:
            frames: (T, 3, H, W) resized, unnormalised, unpadded RGB frames, uint8 or float 0..255.
            mask_logits: (Q, T, Hp, Wp) mask logits bilinearly upsampled to the padded input size, or a
                `MaskCanvas` that upsamples only what is read (same values).
            sound_logits: (Q, 2) sound-head logits (index 0 = sounding), or None (only needed by the
                optional sound options).
            text_embeddings: (K, D) unit class embeddings (`class_name_embeddings`).

        Returns:
            `ClassifiedQueries` (N = queries valid in at least one frame; N may be 0).
        """
        return self.mean_over_frames(self.classify_pairs(frames, mask_logits, sound_logits, text_embeddings))

    @torch.no_grad()
    def classify_pairs(
        self,
        frames: torch.Tensor,
        mask_logits: torch.Tensor | MaskCanvas,
        sound_logits: torch.Tensor | None,
        text_embeddings: torch.Tensor,
    ) -> PairLogits:
        """The first step of `classify` (same arguments): crop the valid pairs and score them with CLIP.

        It reads back from the device only what decides the crops (which pairs are valid); the CLIP work it
        issues is not waited for, so a caller can issue other work (the next clip's network) before
        `mean_over_frames` reads the logits.
        """
        cfg = self.config
        num_queries, num_frames = mask_logits.shape[:2]
        if frames.shape[0] != num_frames:
            raise ValueError(f"frames has {frames.shape[0]} frames, mask_logits {num_frames}")
        if frames.shape[-2] > mask_logits.shape[-2] or frames.shape[-1] > mask_logits.shape[-1]:
            raise ValueError(f"frames {tuple(frames.shape[-2:])} larger than the mask canvas {tuple(mask_logits.shape[-2:])}")
        frames = frames.to(device=mask_logits.device, dtype=torch.float32)
        valid, boxes = self.pairs_to_crop(mask_logits, sound_logits)
        query_index, frame_index = valid.nonzero(as_tuple=True)  # (M,), query-major
        squares = square_boxes(boxes[query_index, frame_index], cfg.crop_protocol)

        text = text_embeddings.to(mask_logits.device, torch.float32)
        pair_logits = []
        for start in range(0, query_index.numel(), cfg.crop_batch_size):
            stop = start + cfg.crop_batch_size
            regions = crop_regions(
                frames, mask_logits, query_index[start:stop], frame_index[start:stop], squares[start:stop],
                self.image_size, half_precision=cfg.half_precision_crops,
            )
            features = self.encode_regions(regions).to(text.device)
            pair_logits.append(cfg.logit_scale * features @ text.T)  # (m, K)
        all_logits = torch.cat(pair_logits) if pair_logits else text.new_zeros(0, text.shape[0])
        return PairLogits(query_index=query_index, logits=all_logits, valid=valid)

    @torch.no_grad()
    def mean_over_frames(self, pairs: PairLogits) -> ClassifiedQueries:
        """The second step of `classify`: each query's logits averaged over its valid frames, then softmax."""
        valid, query_index, all_logits = pairs.valid, pairs.query_index, pairs.logits
        num_queries, num_classes = valid.shape[0], all_logits.shape[1]
        # Under autocast the logits may be fp16/bf16 (the official fp16 regime): accumulate in their dtype,
        # softmax in float32.
        sums = all_logits.new_zeros(num_queries, num_classes).index_add_(0, query_index, all_logits)
        counts = valid.sum(dim=1)  # (Q,)
        classified = counts.nonzero(as_tuple=True)[0]
        mean_logits = sums[classified] / counts[classified].unsqueeze(1).to(sums.dtype)
        return ClassifiedQueries(
            query_index=classified,
            probs=mean_logits.float().softmax(dim=-1),
            logits=mean_logits,
            valid=valid,
        )

    def paint(
        self,
        classified: ClassifiedQueries,
        mask_logits: torch.Tensor | MaskCanvas,
        image_size: tuple[int, int],
        output_size: tuple[int, int],
    ) -> PaintedClip:
        """Official post-processing (§8): top-k pairs above the threshold, painted highest score first.

        Args:
            classified: output of `classify` for this clip.
            mask_logits: (Q, T, Hp, Wp) mask logits on the padded canvas (the same tensor or `MaskCanvas`
                given to classify).
            image_size: (h, w) of the resized unpadded frames.
            output_size: (H, W) of the maps to produce (the original frame size).
        """
        pairs = select_pairs(classified.probs, classified.query_index, self.config.top_k, self.config.score_threshold)
        masks = masks_at_output_size(mask_logits[pairs.query_index.to(mask_logits.device)], image_size, output_size)
        return PaintedClip(
            semantic_maps=paint_semantic_maps(masks, pairs.class_index.to(masks.device)),
            query_index=pairs.query_index,
            class_index=pairs.class_index,
            scores=pairs.scores,
            masks=masks,
        )
