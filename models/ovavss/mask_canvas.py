"""Mask logits on the padded input canvas, upsampled from the network's output only where they are read.

The official post-processing upsamples every query's mask logits (Q = 100 queries x T frames) to the padded
input size before cropping: 100 x 5 x 384 x 640 floats (~490 MB) per 360p clip, of which, with the crop cap
or the sound gate, only a handful of queries are ever looked at. `MaskCanvas` holds the stride-4 logits and
upsamples (bilinear, align_corners=False, as `F.interpolate` on the whole tensor) just the queries or
(query, frame) pairs it is indexed with. Every plane is interpolated on its own, so the values are the same
as upsampling everything at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class MaskCanvas:
    """Lazily upsampled (Q, T, Hp, Wp) mask logits.

    Args:
        low_res: (Q, T, h, w) mask logits (the network's `pred_masks` of one clip).
        size: (Hp, Wp) the padded input size they are upsampled to.

    Indexing follows a (Q, T, Hp, Wp) tensor for the two forms the classifier uses:
    `canvas[queries]` (a slice or a (n,) index tensor) -> (n, T, Hp, Wp) and
    `canvas[query_index, frame_index]` ((M,) index tensors) -> (M, Hp, Wp).
    """

    def __init__(self, low_res: torch.Tensor, size: tuple[int, int]) -> None:
        if low_res.dim() != 4:
            raise ValueError(f"mask logits must be (Q, T, h, w), got {tuple(low_res.shape)}")
        self.low_res = low_res
        self.size = (int(size[0]), int(size[1]))

    @property
    def shape(self) -> torch.Size:
        return torch.Size((*self.low_res.shape[:2], *self.size))

    @property
    def device(self) -> torch.device:
        return self.low_res.device

    @property
    def dtype(self) -> torch.dtype:
        return self.low_res.dtype

    def _upsample(self, planes: torch.Tensor) -> torch.Tensor:
        """(n, C, h, w) -> (n, C, Hp, Wp)."""
        if planes.shape[0] == 0:
            return planes.new_zeros(0, planes.shape[1], *self.size)
        return F.interpolate(planes, size=self.size, mode="bilinear", align_corners=False)

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, tuple):
            if len(key) != 2:
                raise IndexError("index a MaskCanvas with queries or with (query_index, frame_index)")
            query_index, frame_index = (k.to(self.device) if torch.is_tensor(k) else k for k in key)
            return self._upsample(self.low_res[query_index, frame_index].unsqueeze(1)).squeeze(1)
        if isinstance(key, int):
            return self._upsample(self.low_res[key].unsqueeze(0))[0]  # negative indices as a tensor takes them
        if torch.is_tensor(key):
            key = key.to(self.device)
        return self._upsample(self.low_res[key])

    def materialize(self) -> torch.Tensor:
        """All of it as one (Q, T, Hp, Wp) tensor."""
        return self._upsample(self.low_res)
