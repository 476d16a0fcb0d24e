"""The order in which `avseg train` visits the training videos, resumable at any iteration.

Every random choice of the data pipeline is derived from (seed, iteration, slot), so iteration i draws the
same video and the same augmentation seed whether the run got there in one go or was resumed on the way.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from models.errors import AVSegError


def _sample_seed(seed: int, iteration: int, slot: int) -> int:
    """The seed of the random choices (frames, short side, flip) of batch slot `slot` at `iteration`."""
    return int(np.random.SeedSequence([seed, iteration, slot]).generate_state(1)[0])


class ResumableBatchSampler:
    """Yields, for iterations start..stop-1, a list of (video_index, sample_seed) per batch.

    Videos are visited in a fresh permutation per epoch, derived from (seed, epoch) alone, so the
    sequence does not depend on where a run was resumed.
    """

    def __init__(self, num_videos: int, batch_size: int, seed: int, start: int, stop: int,
                 shuffle_audio: bool = False) -> None:
        if num_videos == 0:
            raise AVSegError("the training split has no videos")
        self.num_videos = num_videos
        self.batch_size = batch_size
        self.seed = seed
        self.start = start
        self.stop = stop
        self.shuffle_audio = shuffle_audio

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def _video_at(self, position: int) -> int:
        epoch, offset = divmod(position, self.num_videos)
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_videos)
        return int(perm[offset])

    def __iter__(self) -> Iterator[list[tuple]]:
        for iteration in range(self.start, self.stop):
            batch = []
            for slot in range(self.batch_size):
                position = iteration * self.batch_size + slot
                item = (self._video_at(position), _sample_seed(self.seed, iteration, slot))
                if self.shuffle_audio:
                    other = np.random.default_rng([self.seed, iteration, slot, 7]).integers(self.num_videos)
                    item = item + (int(other),)
                batch.append(item)
            yield batch
