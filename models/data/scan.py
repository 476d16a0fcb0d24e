"""Checking one AVSBench-semantic video folder: frames, labels and audio, cheaply, without changing it.

For a `VideoRecord` the folder `<root>/<subset>/<uid>/` must hold `frames/0.jpg … frames/{T-1}.jpg`,
`labels_rgb/<k>.png` for every labelled frame k, and `audio.wav` long enough for T VGGish examples
(0.96 s each, plus the 15 ms the first 25 ms window needs beyond its hop: 4.815 s for 5 frames,
9.615 s for 10; see avsbench-data.md §4). What is checked:

- frames: PIL opens the header (this gives the video's height/width from frame 0) and `verify()`s it;
  a JPEG must also end with its end-of-image marker (a cheap truncation check);
- labels: decoded fully; pixels of non-palette colours are counted (the count `read_label` gives);
- audio: the duration is read from the wav header (`soundfile.info`), the samples are not decoded.

Every finding is a `Problem`; a video whose frames folder is missing (or is a file) is `excluded`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from models.data.prepared import VideoRecord

VGGISH_EXAMPLE_SECONDS = 0.96
VGGISH_WINDOW_EXTRA_SECONDS = 0.015  # 25 ms window minus 10 ms hop

# Problem kinds, in the order they are reported.
MISSING_VIDEO_FOLDER = "missing video folder"
MISSING_FRAMES_FOLDER = "missing frames folder"
FRAMES_FOLDER_IS_FILE = "frames folder is a file"
MISSING_FRAME = "missing frame"
UNREADABLE_FRAME = "unreadable frame"
FRAME_SIZE_MISMATCH = "frame size differs from frame 0"
MISSING_LABEL = "missing label"
UNREADABLE_LABEL = "unreadable label"
LABEL_SIZE_MISMATCH = "label size differs from frame 0"
UNKNOWN_LABEL_COLOUR = "unknown label colour"
MISSING_AUDIO = "missing audio"
UNREADABLE_AUDIO = "unreadable audio"
AUDIO_TOO_SHORT = "audio too short"
UNKNOWN_A_OBJ_TOKEN = "unknown a_obj token"
EMPTY_A_OBJ = "empty a_obj"

PROBLEM_KINDS: tuple[str, ...] = (
    MISSING_VIDEO_FOLDER, MISSING_FRAMES_FOLDER, FRAMES_FOLDER_IS_FILE, MISSING_FRAME, UNREADABLE_FRAME,
    FRAME_SIZE_MISMATCH, MISSING_LABEL, UNREADABLE_LABEL, LABEL_SIZE_MISMATCH, UNKNOWN_LABEL_COLOUR,
    MISSING_AUDIO, UNREADABLE_AUDIO, AUDIO_TOO_SHORT, UNKNOWN_A_OBJ_TOKEN, EMPTY_A_OBJ,
)  # fmt: skip
"""Every kind of problem, in report order."""

EXCLUDING_KINDS = frozenset({
    MISSING_VIDEO_FOLDER, MISSING_FRAMES_FOLDER, FRAMES_FOLDER_IS_FILE, MISSING_FRAME, UNREADABLE_FRAME,
    MISSING_LABEL, UNREADABLE_LABEL, MISSING_AUDIO, UNREADABLE_AUDIO,
})  # fmt: skip
"""Kinds that leave a video out of its split: a file that training or evaluation must read is missing or
unreadable (reading it would stop a training run at that video, possibly hours in). The other kinds (sizes that
differ, label colours outside the palette, short audio, odd a_obj tokens) are handled by the readers."""


def required_audio_seconds(num_frames: int) -> float:
    """Shortest audio giving `num_frames` full VGGish examples: 0.96 · T + 0.015 s (4.815 s for 5 frames)."""
    return VGGISH_EXAMPLE_SECONDS * num_frames + VGGISH_WINDOW_EXTRA_SECONDS


@dataclass(frozen=True)
class Problem:
    """One finding about one video: `kind` (one of `PROBLEM_KINDS`) and an example text naming the file."""

    kind: str
    example: str


@dataclass(frozen=True)
class VideoScan:
    """What `scan_video` found: frame size of frame 0 (0 when unknown), problems, and whether to exclude it."""

    height: int
    width: int
    problems: tuple[Problem, ...]

    @property
    def excluded(self) -> bool:
        return any(p.kind in EXCLUDING_KINDS for p in self.problems)


def scan_video(root: Path, record: VideoRecord) -> VideoScan:
    """Check the folder of `record` under `root` (read only) and return its frame size and problems."""
    video_dir = record.video_dir(root)
    name = f"{record.subset}/{record.uid}"
    problems: list[Problem] = []
    if not video_dir.is_dir():
        return VideoScan(0, 0, (Problem(MISSING_VIDEO_FOLDER, f"{name}"),))
    frames_dir = video_dir / "frames"
    if not frames_dir.exists():
        return VideoScan(0, 0, (Problem(MISSING_FRAMES_FOLDER, f"{name}/frames"),))
    if not frames_dir.is_dir():
        return VideoScan(0, 0, (Problem(FRAMES_FOLDER_IS_FILE, f"{name}/frames"),))

    height = width = 0
    for k in range(record.num_frames):
        path = record.frame_path(root, k)
        where = f"{name}/frames/{k}.jpg"
        if not path.is_file():
            problems.append(Problem(MISSING_FRAME, where))
            continue
        size, error = _check_image_file(path)
        if error is not None:
            problems.append(Problem(UNREADABLE_FRAME, f"{where} ({error})"))
            continue
        if k == 0:
            width, height = size
        elif height and (width, height) != size:
            problems.append(Problem(FRAME_SIZE_MISMATCH, f"{where} ({size[0]}x{size[1]} vs {width}x{height})"))

    for k in record.labelled_frames:
        path = record.label_path(root, k)
        where = f"{name}/labels_rgb/{k}.png"
        if not path.is_file():
            problems.append(Problem(MISSING_LABEL, where))
            continue
        problems.extend(_check_label(path, where, width, height))

    problems.extend(_check_audio(record.audio_path(root), f"{name}/audio.wav", record.num_frames))
    return VideoScan(height, width, tuple(problems))


def _check_image_file(path: Path) -> tuple[tuple[int, int], str | None]:
    """((width, height), None) for a readable image, or ((0, 0), reason)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            size = image.size
            image_format = image.format
            image.verify()
        if image_format == "JPEG" and not _has_jpeg_end_marker(path):
            return (0, 0), "truncated: no end-of-image marker"
        return size, None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        return (0, 0), _short(error, path)


def _has_jpeg_end_marker(path: Path, tail_bytes: int = 1024) -> bool:
    """True if the EOI marker FF D9 occurs in the file's last bytes (entropy-coded data never contains it)."""
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        handle.seek(max(0, size - tail_bytes))
        return b"\xff\xd9" in handle.read()


def _check_label(path: Path, where: str, frame_width: int, frame_height: int) -> list[Problem]:
    try:
        (label_width, label_height), unknown_pixels = count_unknown_colour_pixels(path)
    except (OSError, SyntaxError, ValueError) as error:
        return [Problem(UNREADABLE_LABEL, f"{where} ({_short(error, path)})")]
    problems = []
    if frame_height and (label_width, label_height) != (frame_width, frame_height):
        problems.append(
            Problem(LABEL_SIZE_MISMATCH, f"{where} ({label_width}x{label_height} vs {frame_width}x{frame_height})")
        )
    if unknown_pixels:
        plural = "s" if unknown_pixels != 1 else ""
        problems.append(Problem(UNKNOWN_LABEL_COLOUR, f"{where} ({unknown_pixels} pixel{plural})"))
    return problems


def count_unknown_colour_pixels(path: Path) -> tuple[tuple[int, int], int]:
    """((width, height), pixels whose colour is not a palette colour) of a `labels_rgb` PNG.

    Same count as `models.data.labels.read_label(path).unknown_pixels`, about 3x faster: PIL counts the
    distinct colours in C (`getcolors`), falling back to the per-pixel palette lookup when a file has
    more than 4,096 colours. Raises OSError (or SyntaxError/ValueError from PIL) for an unreadable file.
    """
    import numpy as np
    from PIL import Image

    from models.data.classes import PALETTE
    from models.data.labels import rgb_to_index

    with Image.open(path) as image:
        rgb = image.convert("RGB")
    colours = rgb.getcolors(4096)
    if colours is None:
        return rgb.size, rgb_to_index(np.asarray(rgb, dtype=np.uint8)).unknown_pixels
    palette = {tuple(int(c) for c in colour) for colour in PALETTE}
    return rgb.size, sum(count for count, colour in colours if tuple(colour) not in palette)


def _check_audio(path: Path, where: str, num_frames: int) -> list[Problem]:
    import soundfile

    if not path.is_file():
        return [Problem(MISSING_AUDIO, where)]
    try:
        info = soundfile.info(str(path))
        seconds = info.frames / info.samplerate
    except (RuntimeError, OSError, ValueError, ZeroDivisionError) as error:
        return [Problem(UNREADABLE_AUDIO, f"{where} ({_short(error, path)})")]
    needed = required_audio_seconds(num_frames)
    if seconds < needed - 1e-9:
        return [Problem(AUDIO_TOO_SHORT, f"{where} ({seconds:.3f} s < {needed:.3f} s for {num_frames} frames)")]
    return []


def _short(error: BaseException, path: Path, limit: int = 120) -> str:
    """The error's text on one line, without the (already shown) file path, at most `limit` characters."""
    text = " ".join(str(error).replace(f" '{path}'", "").replace(str(path), "the file").split())
    text = text or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
