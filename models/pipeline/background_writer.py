"""Writing finished video frames from a background thread, so encoding overlaps the next block's prediction.

`annotate` finishes frames a block at a time (all of a block's clips must be predicted before its frames can be
written in order). Writing them to the encoder pipe in the main thread blocked the predictor for as long as x264
took to take them (a few ms per 360p frame, much more at 1080p). `BackgroundFrameWriter` hands them to one thread
through a queue bounded in bytes, so the main thread decodes and predicts the next block meanwhile, and memory
stays bounded (at most `max_bytes` of frames waiting, beyond the block being built).
"""

from __future__ import annotations

import queue
import threading
from typing import Protocol

import numpy as np

DEFAULT_MAX_BYTES = 256 * 2**20
_STOP = None


class FrameSink(Protocol):
    def write(self, frame: np.ndarray) -> None: ...


class BackgroundFrameWriter:
    """Context manager: `put` frames in order; one thread writes them to `sink` in that order.

    Args:
        sink: anything with `write(frame)` (a `models.io.mux.VideoWriter`).
        frame_bytes: size of one frame, for the bound.
        max_bytes: at most this many bytes of frames wait in the queue (at least 2 frames); `put` blocks
            beyond it.

    A failure of `sink.write` is raised in the caller's thread by the next `put` or by leaving the `with`
    block (once). Leaving it normally waits until every frame is written; leaving it with an exception
    drops the frames still waiting.
    """

    def __init__(self, sink: FrameSink, frame_bytes: int, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.sink = sink
        self.capacity = max(2, int(max_bytes // max(1, frame_bytes)))
        self._queue: queue.Queue = queue.Queue(maxsize=self.capacity)
        self._error: BaseException | None = None
        self._aborted = threading.Event()
        self._thread = threading.Thread(target=self._run, name="avseg-video-writer", daemon=True)

    def __enter__(self) -> "BackgroundFrameWriter":
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            frame = self._queue.get()
            if frame is _STOP or self._aborted.is_set():
                return
            try:
                self.sink.write(frame)
            except BaseException as error:  # handed to the caller's thread
                self._error = error
                self._aborted.set()
                return

    def _raise_pending(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def put(self, frame: np.ndarray) -> None:
        """Queue the next frame (blocks while `capacity` frames wait); raises an earlier write failure."""
        while True:
            self._raise_pending()
            if self._aborted.is_set():
                raise RuntimeError("the background frame writer has stopped")
            try:
                self._queue.put(frame, timeout=0.1)
                return
            except queue.Full:
                continue

    def _stop(self) -> None:
        """Queue the stop marker after the waiting frames. While the thread still writes, this waits for room;
        once it has stopped (an error, or leaving with one), waiting frames are dropped to make room."""
        while True:
            try:
                self._queue.put(_STOP, timeout=0.1)
                return
            except queue.Full:
                if self._aborted.is_set() or not self._thread.is_alive():
                    try:
                        self._queue.get_nowait()
                    except queue.Empty:
                        pass

    def __exit__(self, exc_type, exc, traceback) -> bool:
        if exc_type is not None:
            self._aborted.set()
        self._stop()
        if exc_type is None:
            self._thread.join()
            self._raise_pending()
        else:
            # a write blocked in a stalled encoder ends when the caller then kills it (VideoWriter's exit)
            self._thread.join(timeout=5.0)
        return False
