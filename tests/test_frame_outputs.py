"""models.pipeline.frame_outputs (one analysed frame's outputs, in threads or processes) and
models.pipeline.background_writer (frames written from a thread, in order, bounded)."""

from __future__ import annotations

import threading
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.errors import AVSegError
from models.pipeline import annotate as annotate_module
from models.pipeline.background_writer import BackgroundFrameWriter
from models.pipeline.frame_outputs import FrameJob, finish_frame, render_pool, render_prediction
from models.prediction import FramePrediction, Instance


def _prediction(height=24, width=32) -> FramePrediction:
    label_map = np.zeros((height, width), np.uint8)
    label_map[4:12, 6:20] = 2
    mask = label_map == 2
    return FramePrediction(label_map, [Instance(mask, "violin", 1, 0.75, 0.6, 7)])


def _job(tmp_path: Path, frames: int = 2) -> FrameJob:
    rng = np.random.default_rng(0)
    return FrameJob(position=3, source=41, timestamp=1.64, prediction=_prediction(),
                    frames=[rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(frames)],
                    mask_path=tmp_path / "000041.png", want_record=True,
                    class_names=("background", "pipa", "violin"), alpha=0.5)


def test_finish_frame_renders_writes_the_png_and_the_record(tmp_path):
    job = _job(tmp_path)
    result = finish_frame(job)
    assert result.position == 3 and len(result.rendered) == 2
    for frame, rendered in zip(job.frames, result.rendered):
        np.testing.assert_array_equal(rendered, render_prediction(frame, job.prediction, job.class_names, 0.5))
        assert not np.array_equal(rendered, frame)  # something was drawn
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "000041.png")), job.prediction.label_map)
    record = result.record
    assert record["frame"] == 41 and record["time"] == 1.64
    (instance,) = record["instances"]
    assert instance["label"] == "violin" and instance["class_id"] == 2 and instance["query"] == 7
    assert instance["area"] == 8 * 14 and instance["bbox"] == [6, 4, 14, 8]


def test_a_worker_process_returns_what_a_thread_returns_and_raises_what_it_raises(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a-file").write_text("not a folder")
    inline = finish_frame(_job(tmp_path / "a"))
    with render_pool(2, "processes") as pool:
        remote = pool.submit(finish_frame, _job(tmp_path / "b")).result()
        unwritable = pool.submit(finish_frame, _job(tmp_path / "a-file"))
        # the worker's one-line error reaches the caller intact
        with pytest.raises(AVSegError, match=r"cannot write .*a-file.000041\.png") as caught:
            unwritable.result()
        assert "\n" not in caught.value.message
    for a, b in zip(inline.rendered, remote.rendered):
        np.testing.assert_array_equal(a, b)
    assert remote.record == inline.record


def test_a_dead_worker_process_is_one_clear_error():
    class Broken:
        def result(self):
            raise BrokenProcessPool("A process in the process pool was terminated abruptly")

    with pytest.raises(AVSegError, match="render worker process stopped unexpectedly .* --render-workers threads"):
        annotate_module._pool_result(Broken())


def test_render_pool_kinds():
    with render_pool(1, "threads") as inline:
        assert inline is None
    with pytest.raises(ValueError, match="unknown pool kind"):
        with render_pool(2, "fibers"):
            pass


class RecordingSink:
    def __init__(self, fail_at: int | None = None, gate: threading.Event | None = None) -> None:
        self.frames: list[int] = []
        self.fail_at = fail_at
        self.gate = gate

    def write(self, frame: np.ndarray) -> None:
        if self.gate is not None:
            self.gate.wait()
        if self.fail_at is not None and len(self.frames) == self.fail_at:
            raise OSError(28, "No space left on device")
        self.frames.append(int(frame[0, 0, 0]))


def _frame(value: int) -> np.ndarray:
    return np.full((4, 4, 3), value, np.uint8)


def test_background_writer_writes_every_frame_in_order():
    sink = RecordingSink()
    with BackgroundFrameWriter(sink, frame_bytes=48) as writer:
        for value in range(200):
            writer.put(_frame(value))
    assert sink.frames == list(range(200))


def test_background_writer_bounds_the_waiting_frames():
    gate = threading.Event()
    sink = RecordingSink(gate=gate)
    writer = BackgroundFrameWriter(sink, frame_bytes=100, max_bytes=500)
    assert writer.capacity == 5
    with writer:
        done = threading.Event()

        def produce():
            for value in range(20):
                writer.put(_frame(value))
            done.set()

        producer = threading.Thread(target=produce)
        producer.start()
        time.sleep(0.3)
        # the sink is blocked on its first frame: 5 wait in the queue, the producer waits too
        assert not done.is_set() and writer._queue.qsize() == 5
        gate.set()
        producer.join(timeout=10)
        assert done.is_set()
    assert sink.frames == list(range(20))


def test_background_writer_leaving_normally_with_a_full_queue_writes_every_frame():
    gate = threading.Event()
    sink = RecordingSink(gate=gate)
    writer = BackgroundFrameWriter(sink, frame_bytes=100, max_bytes=500)
    with writer:
        for value in range(6):  # one taken by the blocked sink, five fill the queue
            writer.put(_frame(value))
        time.sleep(0.1)
        assert writer._queue.full()
        threading.Timer(0.3, gate.set).start()  # the encoder catches up after the caller has started leaving
    assert sink.frames == list(range(6))


def test_background_writer_failure_reaches_the_caller_once():
    sink = RecordingSink(fail_at=3)
    with pytest.raises(OSError, match="No space left"):
        with BackgroundFrameWriter(sink, frame_bytes=48) as writer:
            for value in range(1000):
                writer.put(_frame(value))
                time.sleep(0.001)
    assert sink.frames == [0, 1, 2]
    sink = RecordingSink(fail_at=1)
    with pytest.raises(OSError, match="No space left"):  # raised when leaving the block
        with BackgroundFrameWriter(sink, frame_bytes=48) as writer:
            writer.put(_frame(0))
            writer.put(_frame(1))


def test_background_writer_leaving_with_an_error_drops_the_waiting_frames_promptly():
    gate = threading.Event()
    sink = RecordingSink(gate=gate)
    started = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        with BackgroundFrameWriter(sink, frame_bytes=48, max_bytes=48 * 10) as writer:
            for value in range(10):
                writer.put(_frame(value))
            gate.set()  # the frame being written completes; the rest are dropped
            raise KeyboardInterrupt
    assert time.perf_counter() - started < 5
    assert len(sink.frames) < 10
