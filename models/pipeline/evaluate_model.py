"""Class-agnostic evaluation of a trained network: is the union of "sounding" masks the sounding objects?

This is how localization is judged before (and independently of) open-vocabulary classification, in the
style of AVSBench S4 / MS3: per frame, the predicted foreground is the union of the masks (logit > 0)
of the queries that the sound head calls sounding (P(sounding) > `sound_threshold`); the GT foreground is
every non-background pixel of the a_obj-filtered label. Both are compared at 224x224 like the official OV
protocol (GT: PIL NEAREST resize of the label PNG; prediction: torch-nearest resize of the map at
original size). Clips are cut and resized as in the official evaluation (short side 360, 5-frame clips).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from models.progress import NullProgress, Progress


@dataclass
class ClassAgnosticResult:
    split: str
    fg_miou: float
    fscore: float
    num_videos: int
    num_frames: int
    sound_threshold: float

    def to_json(self) -> dict:
        def clean(v: float):
            return None if v != v else float(v)

        return {"mode": "class-agnostic", "split": self.split, "fg_miou": clean(self.fg_miou),
                "fscore": clean(self.fscore), "num_videos": self.num_videos, "num_frames": self.num_frames,
                "sound_threshold": self.sound_threshold}


@torch.inference_mode()
def predict_foreground(model: torch.nn.Module, frames: torch.Tensor, audio_examples: torch.Tensor,
                       original_size: tuple[int, int], sound_threshold: float = 0.5) -> torch.Tensor:
    """Foreground of one clip.

    Args:
        frames: uint8 (T, 3, h, w) resized, unpadded frames.
        audio_examples: (T, 1, 96, 64) VGGish examples of the frames.
        original_size: (H, W) to map the masks back to.
    Returns:
        bool (T, H, W): union of the masks of the queries whose P(sounding) > sound_threshold.
    """
    from models.data.transforms import normalize_and_pad

    device = next(model.parameters()).device
    images, sizes = normalize_and_pad([frames])
    h, w = sizes[0]
    outputs = model(images.to(device), audio_examples=audio_examples[None].to(device))
    sound_prob = outputs["pred_logits"][0].float().softmax(-1)[:, 0]  # (Q,)
    keep = sound_prob > sound_threshold
    t = frames.shape[0]
    if not bool(keep.any()):
        return torch.zeros((t, *original_size), dtype=torch.bool)
    masks = outputs["pred_masks"][0, keep].float()  # (K, T, h4, w4)
    masks = F.interpolate(masks, size=images.shape[-2:], mode="bilinear", align_corners=False)
    masks = masks[..., :h, :w]
    masks = F.interpolate(masks, size=original_size, mode="bilinear", align_corners=False)
    return (masks > 0).any(dim=0).cpu()


def evaluate_class_agnostic(model: torch.nn.Module, data, split: str = "test", sound_threshold: float = 0.5,
                            short_side: int = 360, progress: Progress | None = None) -> ClassAgnosticResult:
    """Foreground mIoU and F-score (AVSBench S4/MS3 definitions, see `models.metrics.BinaryMetrics`)."""
    from models.data.eval_clips import EVAL_GT_SIZE, gt_index_maps, load_eval_video
    from models.io.masks import resize_nearest
    from models.metrics import BinaryMetrics

    progress = progress or NullProgress()
    records = data.load_split(split)
    metrics = BinaryMetrics()
    model.eval()
    progress.start(f"evaluating {split} (class-agnostic)", total=len(records))
    try:
        for record in records:
            video = load_eval_video(record, data.root, clip_len=model.config.clip_len, short_side=short_side,
                                    max_size=model.config.max_size)
            gt = gt_index_maps(record, data.root, size=EVAL_GT_SIZE)
            for clip in video.clips:
                fg = predict_foreground(model, clip.frames, clip.audio_examples, clip.original_size,
                                        sound_threshold)
                for j, k in enumerate(clip.frame_ids.tolist()):
                    if k in gt:
                        pred = resize_nearest(fg[j].numpy().astype(np.uint8), *EVAL_GT_SIZE)
                        metrics.update(gt[k], pred)
            progress.advance(1)
    finally:
        progress.finish()
    scores = metrics.scores()
    return ClassAgnosticResult(split=split, fg_miou=scores.miou, fscore=scores.fscore, num_videos=len(records),
                               num_frames=scores.num_frames, sound_threshold=sound_threshold)
