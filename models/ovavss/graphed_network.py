"""The network's inference forward replayed as a CUDA graph, one graph per input shape.

At 5 x 640x384 the r50 forward launches ~4,000 kernels; on an H100 launching them takes longer than running
them (57 ms per clip eagerly, the GPU mostly idle; benchmarks/RESULTS.md). A CUDA graph records the launches
once and replays them with one call. This needs a forward that never waits for the GPU (no host read, no
blocking copy: tests/test_host_reads.py) and inputs of a fixed shape, so each new (frames, height, width)
is captured once and kept (a video has at most two: its full clips and its shorter last clip).

Rules of capture followed here (PyTorch "CUDA Graphs" notes): warm-up runs on the capture's own side stream
before capturing (lazy library and cuDNN set-up must not happen mid-capture); autocast with its weight cache
off; inputs copied into static tensors before each replay; outputs are the graph's own memory, overwritten
by the next replay, so they are cloned before they are handed out. A graph reads tensors made outside it (the
per-shape constants the modules keep, `DeviceConstants`) by address without holding them, so each capture
keeps a reference to them: a cache dropping an entry (a 65th resolution) must not free memory a kept graph
still reads.
"""

from __future__ import annotations

import collections
import contextlib
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from models.ovavss.device_constants import DeviceConstants

__all__ = ["GraphedNetwork"]


@dataclass
class _Capture:
    graph: "torch.cuda.CUDAGraph"
    images: torch.Tensor
    audio: torch.Tensor
    logits: torch.Tensor
    masks: torch.Tensor
    constants: list[torch.Tensor]  # kept alive while the graph is: it reads them by address


class GraphedNetwork:
    """Calls `model(images, audio_examples=...)` through CUDA graphs; same outputs as the eager call.

    Args:
        model: the network (`OVAVSS`) on a CUDA device, in eval mode.
        amp_dtype: autocast dtype to capture under (None: no autocast).
        max_graphs: captured shapes kept; the least recently used is dropped beyond it (each graph holds
            the memory of one forward's intermediates).
        warmup: eager runs on the side stream before a capture.

    Call with images (B, T, 3, H, W) and audio_examples (B, T, 1, 96, 64) on the model's device; returns
    {"pred_logits": (B, Q, 2), "pred_masks": (B, Q, T, H/4, W/4)} (fresh tensors). If a capture fails, the
    error is reported once as a warning and every later call runs eagerly.
    """

    def __init__(self, model: nn.Module, amp_dtype: torch.dtype | None = None, max_graphs: int = 2,
                 warmup: int = 2) -> None:
        device = next(model.parameters()).device
        if device.type != "cuda":
            raise ValueError(f"CUDA graphs need the model on a CUDA device, it is on {device}")
        if max_graphs < 1 or warmup < 1:
            raise ValueError("max_graphs and warmup must be at least 1")
        self.model = model
        self.device = device
        self.amp_dtype = amp_dtype
        self.max_graphs = int(max_graphs)
        self.warmup = int(warmup)
        self.captures: collections.OrderedDict[tuple, _Capture] = collections.OrderedDict()
        self.failed: str | None = None
        self._stream: torch.cuda.Stream | None = None

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype, cache_enabled=False)

    def _eager(self, images: torch.Tensor, audio: torch.Tensor) -> dict[str, torch.Tensor]:
        with self._autocast():
            outputs = self.model(images, audio_examples=audio)
        return {"pred_logits": outputs["pred_logits"], "pred_masks": outputs["pred_masks"]}

    def _capture(self, images: torch.Tensor, audio: torch.Tensor) -> _Capture:
        stream = self._stream = self._stream or torch.cuda.Stream(self.device)
        static_images, static_audio = images.clone(), audio.clone()
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(self.warmup):
                self._eager(static_images, static_audio)
        stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            outputs = self._eager(static_images, static_audio)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        return _Capture(graph, static_images, static_audio, outputs["pred_logits"], outputs["pred_masks"],
                        DeviceConstants.entries_in(self.model))

    def __call__(self, images: torch.Tensor, audio_examples: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.failed is not None or self.model.training:
            return self._eager(images, audio_examples)
        key = (tuple(images.shape), images.dtype, tuple(audio_examples.shape), audio_examples.dtype,
               torch.is_inference_mode_enabled(), torch.is_grad_enabled())
        capture = self.captures.get(key)
        if capture is None:
            while len(self.captures) >= self.max_graphs:  # before capturing: never hold more graphs' memory
                self.captures.popitem(last=False)
            try:
                capture = self._capture(images, audio_examples)
            except RuntimeError as error:  # e.g. an operation that cannot be captured
                self.failed = str(error).splitlines()[0] if str(error) else type(error).__name__
                self.captures.clear()
                torch.cuda.synchronize(self.device)
                warnings.warn(f"CUDA graph capture failed ({self.failed}); the network runs without CUDA graphs",
                              RuntimeWarning, stacklevel=2)
                return self._eager(images, audio_examples)
            self.captures[key] = capture
        else:
            self.captures.move_to_end(key)
            capture.images.copy_(images)
            capture.audio.copy_(audio_examples)
        capture.graph.replay()
        return {"pred_logits": capture.logits.clone(), "pred_masks": capture.masks.clone()}
