"""Evaluation clips and ground truth, as the official OV-AVSS test script builds them.

Per video (ovavss-spec.md §11.1, avsbench-data.md §6): all frames, read at full resolution and resized to
short side 360 (max 1333) with PIL bilinear, cut into consecutive clips of `clip_len` frames (a 10-frame
video gives frames 0-4 and 5-9, a 5-frame video one clip); every clip takes its audio from the whole
file's 10 zero-padded VGGish examples, frame k using example k. If a video's frame count is not a
multiple of `clip_len`, its last clip is shorter (never the case for AVSBench's 5 and 10 frames).

Ground truth: each `labels_rgb` PNG decoded by exact palette match (optionally NEAREST-resized first,
224x224 in the official protocol) with every class outside the video's a_obj list set to background.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.data.clips import NUM_AUDIO_EXAMPLES, read_resized_frames, select_audio_examples
from models.data import clips as _clips
from models.data.labels import apply_aobj_filter, read_label
from models.data.prepared import PreparedData, VideoRecord
from models.data.transforms import MAX_SIZE

EVAL_SHORT_SIDE = 360
"""`INPUT.MIN_SIZE_TEST`."""

EVAL_GT_SIZE = (224, 224)
"""(h, w) the official evaluator squashes GT and predictions to before scoring."""


@dataclass
class EvalClip:
    """T consecutive frames of one video, ready for the model (after `normalize_and_pad`).

    Attributes:
        uid: the video.
        frames: uint8 (T, 3, H, W), resized to the evaluation short side, not normalised.
        frame_ids: long (T,), original frame indices.
        audio_examples: float32 (T, 1, 96, 64), example `frame_ids[j]` of the whole file for position j.
        original_size: (h, w) of the frames before resizing (predictions are mapped back to it).
    """

    uid: str
    frames: torch.Tensor
    frame_ids: torch.Tensor
    audio_examples: torch.Tensor
    original_size: tuple[int, int]

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the resized frames."""
        return int(self.frames.shape[-2]), int(self.frames.shape[-1])


@dataclass
class EvalVideo:
    """One video's record and its clips, in frame order (together they cover frames 0..num_frames-1)."""

    record: VideoRecord
    clips: list[EvalClip]


def clip_frame_ranges(num_frames: int, clip_len: int = 5) -> list[list[int]]:
    """Consecutive frame index groups: 10 frames -> [[0..4], [5..9]]; a shorter last group if needed."""
    if num_frames < 1 or clip_len < 1:
        raise ValueError(f"need num_frames >= 1 and clip_len >= 1, got {num_frames}, {clip_len}")
    return [list(range(start, min(start + clip_len, num_frames))) for start in range(0, num_frames, clip_len)]


def load_eval_video(
    record: VideoRecord,
    root: Path,
    clip_len: int = 5,
    short_side: int = EVAL_SHORT_SIDE,
    max_size: int = MAX_SIZE,
    num_audio_examples: int = NUM_AUDIO_EXAMPLES,
) -> EvalVideo:
    """Read all frames of one video (resized) and its audio, and cut them into evaluation clips."""
    root = Path(root)
    all_ids = list(range(record.num_frames))
    frames, original_size = read_resized_frames(record, root, all_ids, short_side, max_size)
    audio_path = record.audio_path(root)
    examples = _clips.load_audio_examples(audio_path, max(num_audio_examples, record.num_frames))
    clips = [
        EvalClip(
            uid=record.uid,
            frames=frames[ids[0] : ids[-1] + 1].contiguous(),
            frame_ids=torch.tensor(ids, dtype=torch.long),
            audio_examples=select_audio_examples(examples, ids, audio_path),
            original_size=original_size,
        )
        for ids in clip_frame_ranges(record.num_frames, clip_len)
    ]
    return EvalVideo(record=record, clips=clips)


def iter_eval_clips(
    data: PreparedData,
    split: str,
    clip_len: int = 5,
    short_side: int = EVAL_SHORT_SIDE,
    max_size: int = MAX_SIZE,
) -> Iterator[EvalVideo]:
    """Yield every video of `split` in file order with its evaluation clips (one video in memory at a time)."""
    for record in data.load_split(split):
        yield load_eval_video(record, data.root, clip_len, short_side, max_size)


def gt_index_maps(record: VideoRecord, root: Path, size: tuple[int, int] | None = None) -> dict[int, np.ndarray]:
    """Ground truth of every labelled frame: frame k -> (H, W) uint8 class ids, a_obj-filtered.

    Args:
        record: the video.
        root: the AVSBench-semantic root.
        size: (h, w) to NEAREST-resize the label PNG to before decoding (official: `EVAL_GT_SIZE`);
            None keeps the PNG's own size.
    """
    pil_size = None if size is None else (int(size[1]), int(size[0]))
    return {
        k: apply_aobj_filter(read_label(record.label_path(root, k), pil_size).index, record.class_ids)
        for k in record.labelled_frames
    }
