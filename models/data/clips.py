"""Training clips: frame sampling, augmentation, class-agnostic targets, audio examples, batching.

What one training sample is (ovavss-spec.md §1.1, §6.1, §9; avsbench-data.md §4):

- `clip_len` (5) frames of one video: a random reference frame plus `clip_len - 1` other distinct frames
  from the window reference ± `frame_range` (20, i.e. the whole video), sorted. A 5-frame video thus
  always gives frames 0..4. When some frames have no label (v1s train: only frame 0), the first
  labelled frame is made the reference, so it is always in the clip.
- One shortest-edge size per clip drawn from `short_sides`, PIL bilinear; one horizontal flip decision
  per clip (frames and masks together).
- Targets: AVSBench has no instance ids, so there is one instance per class id present in the
  a_obj-filtered label maps of the sampled labelled frames ("one track per category per video"). A class
  absent from a frame has an empty mask there; classes absent from every sampled frame are dropped.
  Labels are all 0 (training is class-agnostic: "sounding object" vs no-object).
- Audio: the VGGish log-mel examples of the whole file (zero-padded to 10), frame k taking example k.

All randomness of a sample comes from `np.random.default_rng(seed)` with the seed given in the index,
drawn in this order: frames, short side, flip. The same (video, seed) always gives the same clip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from models.data.labels import apply_aobj_filter, read_label
from models.data.prepared import PreparedData, VideoRecord
from models.data.transforms import (
    MAX_SIZE,
    SIZE_DIVISIBILITY,
    frames_to_tensor,
    hflip,
    normalize_and_pad,
    pad_bottom_right,
    read_frame,
    resize_frame,
    resize_index_map,
    resize_shortest_edge_size,
)
from models.errors import AVSegError

NUM_AUDIO_EXAMPLES = 10
"""VGGish examples per video after zero-padding (10 one-second-ish examples)."""

FRAME_RANGE = 20
"""`INPUT.SAMPLING_FRAME_RANGE`: other frames are drawn within reference ± this (= the whole video)."""


def sample_clip_frames(
    num_frames: int,
    clip_len: int = 5,
    *,
    rng: np.random.Generator,
    must_include: int | None = None,
    frame_range: int = FRAME_RANGE,
) -> list[int]:
    """Choose the frame indices of one training clip, sorted (the official sampling rule).

    The reference frame is `must_include` when given, else uniform over the video; the other
    `clip_len - 1` frames are distinct and drawn without replacement from reference ± `frame_range`.
    If that window holds fewer than `clip_len - 1` other frames (a video shorter than the clip), every
    window frame is used once and the rest of the clip repeats frames drawn with replacement, so the
    clip always has `clip_len` entries (sorted, with duplicates).

    Args:
        num_frames: frames in the video (>= 1).
        clip_len: frames per clip (>= 1).
        rng: the only source of randomness.
        must_include: a frame index that must be in the clip (v1s train: 0, its only labelled frame).
        frame_range: half-width of the sampling window around the reference.

    Returns:
        `clip_len` frame indices in increasing order.
    """
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {num_frames}")
    if clip_len < 1:
        raise ValueError(f"clip_len must be at least 1, got {clip_len}")
    if must_include is not None and not 0 <= must_include < num_frames:
        raise ValueError(f"must_include={must_include} is outside the video's {num_frames} frames")
    reference = int(rng.integers(num_frames)) if must_include is None else int(must_include)
    start = max(0, reference - frame_range)
    stop = min(num_frames, reference + frame_range + 1)
    window = np.array([k for k in range(start, stop) if k != reference], dtype=np.int64)
    wanted = clip_len - 1
    if len(window) >= wanted:
        others = rng.choice(window, wanted, replace=False) if wanted > 0 else window[:0]
    else:
        pool = np.concatenate([window, [reference]])
        extra = rng.choice(pool, wanted - len(window), replace=True)
        others = np.concatenate([window, extra])
    return sorted([reference] + [int(k) for k in others])


def load_audio_examples(path: Path, num_examples: int = NUM_AUDIO_EXAMPLES) -> torch.Tensor:
    """VGGish log-mel examples of a whole wav, zero-padded: float32 (num_examples, 1, 96, 64)."""
    from models.ovavss.audio import read_wav_examples

    return read_wav_examples(path, num_examples=num_examples)


def select_audio_examples(examples: torch.Tensor, frame_ids: Sequence[int], path: Path) -> torch.Tensor:
    """(E, 1, 96, 64) examples -> (T, 1, 96, 64): frame k takes example k (one clear error if k >= E)."""
    if frame_ids and max(frame_ids) >= examples.shape[0]:
        raise AVSegError(
            f"audio too short for frame {max(frame_ids)}: {path} gives {examples.shape[0]} VGGish examples"
        )
    return examples[torch.as_tensor(list(frame_ids), dtype=torch.long)].to(torch.float32)


def read_resized_frames(record: VideoRecord, root: Path, frame_ids: Sequence[int], short_side: int,
                        max_size: int = MAX_SIZE) -> tuple[torch.Tensor, tuple[int, int]]:
    """Read frames `frame_ids` of a video and resize them to one shortest-edge size.

    The size is computed from the first listed frame (all AVSBench frames of a video share one size; a
    frame of another size is resized to the same output size so the clip stacks).

    Returns:
        frames: uint8 (T, 3, H, W); original_size: (h, w) of the first frame before resizing.
    """
    cache: dict[int, np.ndarray] = {}
    for k in frame_ids:
        if k not in cache:
            cache[k] = read_frame(record.frame_path(root, k))
    first = cache[frame_ids[0]]
    original_size = (int(first.shape[0]), int(first.shape[1]))
    size = resize_shortest_edge_size(*original_size, short_side, max_size)
    resized = {k: resize_frame(frame, size) for k, frame in cache.items()}
    return frames_to_tensor([resized[k] for k in frame_ids]), original_size


def read_filtered_label(record: VideoRecord, root: Path, k: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """Label of frame k as (H, W) uint8 class ids with the a_obj filter applied; NEAREST-resized to `size` = (h, w)."""
    index = apply_aobj_filter(read_label(record.label_path(root, k)).index, record.class_ids)
    return index if size is None else resize_index_map(index, size)


@dataclass
class TrainClip:
    """One augmented training clip of T frames, T_t of them labelled, N target instances.

    Attributes:
        uid: the video.
        frames: uint8 (T, 3, H, W), resized and flipped, not normalised, not padded.
        frame_ids: long (T,), original frame indices (sorted).
        audio_examples: float32 (T, 1, 96, 64), VGGish log-mel example `frame_ids[j]` for position j.
        masks: bool (N, T_t, H, W), instance n in labelled position t.
        labels: long (N,), all 0 (class-agnostic).
        frame_indices: long (T_t,), the clip positions (0..T-1) that carry labels.
        class_ids: long (N,), the class id (1..70) of each instance, increasing.
        short_side: the drawn short side; flipped: whether the clip was mirrored.
    """

    uid: str
    frames: torch.Tensor
    frame_ids: torch.Tensor
    audio_examples: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor
    frame_indices: torch.Tensor
    class_ids: torch.Tensor
    short_side: int = 0
    flipped: bool = False

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the frames."""
        return int(self.frames.shape[-2]), int(self.frames.shape[-1])


@dataclass
class TrainBatch:
    """B collated clips, the model's and the criterion's inputs.

    Attributes:
        images: float32 (B, T, 3, Hp, Wp), normalised then zero-padded to a multiple of 32.
        audio_examples: float32 (B, T, 1, 96, 64).
        targets: B dicts {"labels": long (N,), "masks": float (N, T_t, Hp, Wp) zero-padded,
            "frame_indices": long (T_t,)}.
        image_sizes: B unpadded (h, w).
        uids: B video uids.
        frame_ids: long (B, T).
        class_ids: B long (N,) tensors, the class of each target instance (debugging, metrics).
    """

    images: torch.Tensor
    audio_examples: torch.Tensor
    targets: list[dict[str, torch.Tensor]]
    image_sizes: list[tuple[int, int]]
    uids: list[str]
    frame_ids: torch.Tensor
    class_ids: list[torch.Tensor] = field(default_factory=list)

    def pin_memory(self) -> "TrainBatch":
        """The batch with the tensors training copies to the GPU in page-locked memory (called by a
        `DataLoader(pin_memory=True)`), so those copies run asynchronously instead of waiting for the GPU."""
        return replace(
            self,
            images=self.images.pin_memory(),
            audio_examples=self.audio_examples.pin_memory(),
            targets=[{key: (value.pin_memory() if key in ("labels", "masks") else value) for key, value in t.items()}
                     for t in self.targets],
        )


class TrainClipDataset(torch.utils.data.Dataset):
    """Training clips of one split of a prepared data folder, indexed by (video_index, seed).

    Videos without any a_obj class (e.g. `off-the-screen`) have no annotation at all and are left out,
    as the official `FILTER_EMPTY_ANNOTATIONS` does; `skipped_uids` lists them.

    Args:
        data: the opened DATA_DIR.
        split: which split file to read.
        clip_len: frames per clip (T).
        short_sides: candidate short sides, one drawn per clip ((240, 360, 480) for R50).
        max_size: cap on the long side.
        flip_prob: probability of mirroring a clip.
        num_audio_examples: VGGish examples per video after zero-padding.
        frame_range: sampling window half-width around the reference frame.
    """

    def __init__(
        self,
        data: PreparedData,
        split: str = "train",
        clip_len: int = 5,
        short_sides: Sequence[int] = (240, 360, 480),
        max_size: int = MAX_SIZE,
        flip_prob: float = 0.5,
        num_audio_examples: int = NUM_AUDIO_EXAMPLES,
        frame_range: int = FRAME_RANGE,
    ) -> None:
        if not short_sides:
            raise ValueError("short_sides must not be empty")
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob}")
        self.root = Path(data.root)
        self.split = split
        self.clip_len = int(clip_len)
        self.short_sides = tuple(int(s) for s in short_sides)
        self.max_size = int(max_size)
        self.flip_prob = float(flip_prob)
        self.num_audio_examples = int(num_audio_examples)
        self.frame_range = int(frame_range)
        records = data.load_split(split)
        self.records: list[VideoRecord] = [r for r in records if r.class_ids and r.labelled_frames]
        self.skipped_uids: list[str] = [r.uid for r in records if not (r.class_ids and r.labelled_frames)]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item: tuple[int, int] | tuple[int, int, int]) -> TrainClip:
        """Build the clip of video `item[0]` with randomness seeded by `item[1]`.

        An optional third entry names another video whose audio is used instead (the audio-shuffle
        control: same frames and targets, mismatched sound).
        """
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            raise TypeError(f"index a TrainClipDataset with (video_index, seed[, audio_video_index]), got {item!r}")
        video_index, seed = int(item[0]), int(item[1])
        record = self.records[video_index]
        audio_record = self.records[int(item[2])] if len(item) == 3 else record
        rng = np.random.default_rng(seed)

        labelled = set(record.labelled_frames)
        must_include = None if len(labelled) >= record.num_frames else min(labelled)
        frame_ids = sample_clip_frames(
            record.num_frames, self.clip_len, rng=rng, must_include=must_include, frame_range=self.frame_range
        )
        short_side = self.short_sides[int(rng.integers(len(self.short_sides)))]
        flipped = bool(rng.random() < self.flip_prob)

        frames, _ = read_resized_frames(record, self.root, frame_ids, short_side, self.max_size)
        size = (int(frames.shape[-2]), int(frames.shape[-1]))

        frame_indices = [j for j, k in enumerate(frame_ids) if k in labelled]
        label_maps = {}
        for j in frame_indices:
            k = frame_ids[j]
            if k not in label_maps:
                label_maps[k] = read_filtered_label(record, self.root, k, size)
        stacked = np.stack([label_maps[frame_ids[j]] for j in frame_indices])  # (T_t, H, W)
        class_ids = [int(c) for c in np.unique(stacked) if c != 0]
        if class_ids:
            masks = torch.from_numpy(stacked[None] == np.array(class_ids, dtype=np.uint8)[:, None, None, None])
        else:
            masks = torch.zeros((0, *stacked.shape), dtype=torch.bool)

        if flipped:
            frames = hflip(frames)
            masks = hflip(masks)

        audio_path = audio_record.audio_path(self.root)
        examples = load_audio_examples(audio_path, max(self.num_audio_examples, audio_record.num_frames))
        audio = select_audio_examples(examples, frame_ids, audio_path)

        return TrainClip(
            uid=record.uid,
            frames=frames.contiguous(),
            frame_ids=torch.tensor(frame_ids, dtype=torch.long),
            audio_examples=audio,
            masks=masks.contiguous(),
            labels=torch.zeros(len(class_ids), dtype=torch.long),
            frame_indices=torch.tensor(frame_indices, dtype=torch.long),
            class_ids=torch.tensor(class_ids, dtype=torch.long),
            short_side=short_side,
            flipped=flipped,
        )


def collate_train_clips(clips: Sequence[TrainClip], size_divisibility: int = SIZE_DIVISIBILITY) -> TrainBatch:
    """Batch clips of equal T: normalise + pad the frames to one size, pad the masks to the same size.

    Returns:
        a `TrainBatch`; `targets[b]["masks"]` is float (N_b, T_t, Hp, Wp) with zeros in the padding.
    """
    if not clips:
        raise ValueError("cannot collate an empty list of clips")
    lengths = {int(clip.frames.shape[0]) for clip in clips}
    if len(lengths) != 1:
        raise ValueError(f"clips of one batch must have the same number of frames, got {sorted(lengths)}")
    images, image_sizes = normalize_and_pad([clip.frames for clip in clips], size_divisibility)
    padded = (int(images.shape[-2]), int(images.shape[-1]))
    targets = [
        {
            "labels": clip.labels,
            "masks": pad_bottom_right(clip.masks.to(torch.float32), padded),
            "frame_indices": clip.frame_indices,
        }
        for clip in clips
    ]
    return TrainBatch(
        images=images,
        audio_examples=torch.stack([clip.audio_examples for clip in clips]),
        targets=targets,
        image_sizes=image_sizes,
        uids=[clip.uid for clip in clips],
        frame_ids=torch.stack([clip.frame_ids for clip in clips]),
        class_ids=[clip.class_ids for clip in clips],
    )
