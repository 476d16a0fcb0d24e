"""The outputs of one analysed frame (overlay frames, mask PNG, JSON record), made by a thread or a process.

`annotate` hands every analysed frame's result to a pool as a `FrameJob`; `finish_frame` renders the
frames that show it, writes its index PNG and builds its JSON record, and returns a `FrameResult`. It only
reads its job and writes its own PNG, so jobs run in any order, in threads or in worker processes.

Processes (`render_pool(kind="processes")`) matter with a GPU predictor: its Python side (thousands of
kernel launches per clip) holds the GIL, and so does most rendering work (PIL text, numpy on small arrays,
RLE), so render threads do not overlap it (measured with `benchmarks/bench_annotate.py --fake-busy-ms`).
Worker processes are started with "spawn" (safe next to CUDA), ignore Ctrl-C (the parent handles it and
shuts the pool down before removing partial outputs) and import no torch.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from models.prediction import FramePrediction

POOL_KINDS = ("threads", "processes")


@dataclass
class FrameJob:
    """One analysed frame's result and what to make of it.

    Attributes:
        position: the frame's place among the block's analysed frames (orders the JSON records).
        source: its index in the video; timestamp: its time in seconds.
        frames: (H, W, 3) uint8 source frames that show this result (the analysed one and those it is held
            for); empty when no video is written.
        prediction: the predictor's result for the frame.
        mask_path: where to write the index PNG (None: no masks).
        want_record: build the JSON record.
        class_names: "background" then the vocabulary (legend names); alpha: fill opacity.
    """

    position: int
    source: int
    timestamp: float
    frames: list[np.ndarray]
    prediction: FramePrediction
    mask_path: Path | None
    want_record: bool
    class_names: tuple[str, ...]
    alpha: float


@dataclass
class FrameResult:
    """What `finish_frame` made: the rendered frames (same order as the job's) and the JSON record."""

    position: int
    rendered: list[np.ndarray] = field(default_factory=list)
    record: dict | None = None


def instance_records(prediction: FramePrediction) -> list[dict]:
    """The JSON records of a frame's instances (`models.io.rle.instance_record`, class_id = vocabulary index + 1)."""
    from models.io.rle import instance_record

    return [instance_record(instance.label, instance.score, instance.mask, class_id=instance.class_index + 1,
                            sound_score=instance.sound_score, query=instance.query)
            for instance in prediction.instances]


def render_prediction(frame: np.ndarray, prediction: FramePrediction, class_names: Sequence[str],
                      alpha: float) -> np.ndarray:
    """(H, W, 3) uint8 frame with the prediction's label map and tagged instances drawn over it."""
    from models.io.render import OverlayInstance, render_overlay

    instances = [
        OverlayInstance(item.label, float(item.score), int(item.class_index) + 1, item.mask)
        for item in prediction.instances
    ]
    return render_overlay(frame, np.asarray(prediction.label_map), instances, class_names=class_names, alpha=alpha)


def finish_frame(job: FrameJob) -> FrameResult:
    """Render the job's frames, write its index PNG, build its JSON record (see the module docstring)."""
    result = FrameResult(job.position)
    result.rendered = [render_prediction(frame, job.prediction, job.class_names, job.alpha) for frame in job.frames]
    if job.mask_path is not None:
        from models.io.masks import write_index_mask

        write_index_mask(job.mask_path, job.prediction.label_map)
    if job.want_record:
        from models.io.rle import frame_record

        result.record = frame_record(job.source, job.timestamp, instance_records(job.prediction))
    return result


def _ignore_interrupts() -> None:
    """Worker-process initializer: Ctrl-C reaches the whole process group; only the parent handles it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def render_pool(workers: int, kind: str = "threads") -> Iterator[Executor | None]:
    """A pool of `workers` threads or processes for `finish_frame` (None for one thread: run inline).

    On exit it waits for running jobs and cancels queued ones, so partial outputs can then be removed.
    """
    if kind not in POOL_KINDS:
        raise ValueError(f"unknown pool kind {kind!r}: use one of {', '.join(POOL_KINDS)}")
    if kind == "threads" and workers <= 1:
        yield None
        return
    if kind == "threads":
        pool: Executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="avseg-annotate")
    else:
        pool = ProcessPoolExecutor(max_workers=max(1, workers), mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_ignore_interrupts)
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
