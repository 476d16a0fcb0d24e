"""A tiny synthetic AVSBench-semantic dataset in the real on-disk layout, for tests and learning checks.

    root/metadata.csv, root/label2idx.json
    root/<subset>/<uid>/frames/<k>.jpg          coloured shapes moving over a textured grey background
    root/<subset>/<uid>/labels_rgb/<k>.png      RGB, palette colours of the SOUNDING objects only
    root/<subset>/<uid>/labels_semantic/<k>.png mode 'L', the same as class indices
    root/<subset>/<uid>/audio.wav               16-bit PCM, 5 s (v1s, v1m) or 10 s (v2)

Every clip shows two or more objects of different classes (AVSBench names, so the AVSBench-OV split
rule applies: train clips use base names, some val/test clips novel ones). Each class has its own shape,
colour and sound (a tone at a class-specific frequency, amplitude-modulated at a class-specific rate).
Only some objects are sounding: the audio is the sum of their sounds plus noise, `a_obj` lists them,
and the labels mark only them; silent objects are visible in the frames but background in the labels.
Objects move over the frames, each in its own horizontal band, so they never overlap and the returned
per-frame masks are exact. v1s train clips get only `labels_*/0.png`, as in the real data.

Knobs on `SyntheticVideoSpec` produce the real data's defects: stray pixels of a class not in `a_obj`
(`noise_class`), pixels of a non-palette colour (`unknown_colour_pixels`), an `off-the-screen` clip,
a free-form `a_obj` text (`a_obj_text`, e.g. the typo 'h orse'), other sample rates / channel counts, a
too-short audio file. Same seed, same specs -> the same bytes.
"""

from __future__ import annotations

import colorsys
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.data.classes import CLASS_INDEX, CLASS_NAMES, NUM_CLASSES, PALETTE
from models.data.metadata import FRAMES_PER_SUBSET, METADATA_COLUMNS
from models.data.split import labelled_frames
from models.errors import AVSegError

SHAPES: tuple[str, ...] = ("rectangle", "ellipse", "triangle", "diamond")

DEFAULT_BASE_POOL: tuple[str, ...] = ("guitar", "cat", "dog", "horse", "airplane", "keyboard", "piano", "car")
"""Base classes the default dataset draws from (train clips use only these): two of each shape."""

DEFAULT_NOVEL_POOL: tuple[str, ...] = ("violin", "accordion", "marimba", "saxophone")
"""Novel classes that some default val/test clips show and sound: one of each shape."""

_CLASS_COLOURS: dict[str, tuple[int, int, int]] = {
    "guitar": (230, 40, 40), "cat": (40, 200, 60), "dog": (40, 80, 230), "horse": (240, 220, 30),
    "airplane": (230, 40, 230), "keyboard": (30, 220, 230), "piano": (250, 140, 20), "car": (140, 40, 200),
    "violin": (150, 90, 40), "accordion": (255, 150, 200), "marimba": (20, 120, 110), "saxophone": (190, 240, 130),
}  # fmt: skip
"""Hand-picked, well separated colours of the default pools' classes; other classes get a hue from their id."""

OFF_SCREEN_FREQUENCY_HZ = 5200.0
"""Tone of the invisible sound source of an `off-the-screen` clip."""

UNKNOWN_COLOUR: tuple[int, int, int] = (1, 2, 3)
"""A colour that is not in the palette, painted by `unknown_colour_pixels`."""

BACKGROUND_GREY = 110
NOISE_BLOCK = 3  # stray label noise is a NOISE_BLOCK x NOISE_BLOCK square


def class_appearance(class_id: int) -> tuple[str, tuple[int, int, int]]:
    """(shape, RGB frame colour) of a class: fixed per class; shape = `SHAPES[class_id % 4]`."""
    name = CLASS_NAMES[class_id]
    if name in _CLASS_COLOURS:
        return SHAPES[class_id % len(SHAPES)], _CLASS_COLOURS[name]
    hue = (class_id * 0.61803398875) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, (0.95, 0.75, 0.55)[class_id % 3])
    return SHAPES[class_id % len(SHAPES)], (int(r * 255), int(g * 255), int(b * 255))


_SOUND_ORDER: tuple[str, ...] = (
    "guitar", "violin", "cat", "accordion", "dog", "marimba", "horse", "saxophone", "airplane", "keyboard",
    "piano", "car",
)  # fmt: skip
"""The default pools' classes, in the order of their (well separated) tone slots."""

_LOWEST_TONE_HZ = 200.0
_TONE_OCTAVES = 4.5  # 70 slots over 200 Hz .. 4.5 kHz, adjacent slots 4.6 % apart


def _tone_slots() -> dict[int, int]:
    """Class id -> tone slot 0..69: the default pools' classes every ~6 slots, the others fill the gaps."""
    count = NUM_CLASSES - 1
    slots = {CLASS_INDEX[name]: round(i * count / len(_SOUND_ORDER)) for i, name in enumerate(_SOUND_ORDER)}
    free = iter(sorted(set(range(count)) - set(slots.values())))
    for class_id in range(1, NUM_CLASSES):
        if class_id not in slots:
            slots[class_id] = next(free)
    return slots


_TONE_SLOTS = _tone_slots()


def class_sound(class_id: int) -> tuple[float, float]:
    """(tone frequency in Hz, amplitude-modulation rate in Hz) of a class; distinct for every class.

    Frequencies: 70 slots from 200 Hz to 4.5 kHz, at least 4.6 % apart; the default pools' classes are
    ~6 slots (a third of an octave, several VGGish mel bands) apart.
    """
    slot = _TONE_SLOTS[class_id]
    frequency = _LOWEST_TONE_HZ * 2.0 ** (slot / (NUM_CLASSES - 1) * _TONE_OCTAVES)
    modulation = 1.0 + (class_id % 7) * 0.75  # 1 .. 5.5 Hz
    return frequency, modulation


@dataclass(frozen=True)
class SyntheticVideoSpec:
    """What one synthetic clip contains.

    Attributes:
        split: 'train', 'val' or 'test'.
        subset: 'v1s' (5 frames), 'v1m' (5) or 'v2' (10).
        sounding: class names of the sounding objects (listed in `a_obj`, marked in the labels).
        silent: class names of visible objects that make no sound.
        uid: folder name; default `syn<NNNN>_0_5000` / `syn<NNNN>_0_10000` (v1m: `syn<NNNN>`).
        off_screen: `a_obj` is 'off-the-screen' and the audio holds an invisible source; `sounding` must be empty.
        a_obj_text: write this `a_obj` instead of the sounding names (e.g. 'h orse'); labels are unchanged.
        noise_class: paint a 3x3 block of this class (not in `a_obj`) into every written label.
        unknown_colour_pixels: paint this many pixels of `UNKNOWN_COLOUR` into every `labels_rgb` file.
        sample_rate, channels: of audio.wav.
        audio_seconds: length of audio.wav (default: the clip length, 5 or 10 s).
        size: (height, width) of frames and labels (default: the dataset's).
    """

    split: str
    subset: str
    sounding: tuple[str, ...]
    silent: tuple[str, ...] = ()
    uid: str | None = None
    off_screen: bool = False
    a_obj_text: str | None = None
    noise_class: str | None = None
    unknown_colour_pixels: int = 0
    sample_rate: int = 16000
    channels: int = 1
    audio_seconds: float | None = None
    size: tuple[int, int] | None = None


@dataclass(frozen=True, eq=False)
class SyntheticObject:
    """One object of a clip.

    Attributes:
        class_name, class_id: its class (palette id).
        sounding: whether it makes sound (then it is in `a_obj` and in the labels).
        shape, color: how it is drawn in the frames.
        masks: (T, H, W) bool, where it is in each frame.
        boxes: per frame (x0, y0, x1, y1), pixel bounds with x1/y1 exclusive.
    """

    class_name: str
    class_id: int
    sounding: bool
    shape: str
    color: tuple[int, int, int]
    masks: np.ndarray = field(repr=False)
    boxes: tuple[tuple[int, int, int, int], ...]


@dataclass(frozen=True, eq=False)
class SyntheticVideo:
    """A written clip: its metadata row, its objects with per-frame masks, and what was written.

    `label_index(k)` is the clean ground truth (sounding objects only, no noise); the label files also
    carry the `noise_class` block (`noise_masks`) and unknown-colour pixels (`unknown_colour_masks`).
    """

    uid: str
    vid: str
    subset: str
    split: str
    a_obj: tuple[str, ...]
    objects: tuple[SyntheticObject, ...]
    num_frames: int
    labelled_frames: tuple[int, ...]
    height: int
    width: int
    sample_rate: int
    channels: int
    audio_seconds: float
    noise_class: str | None
    noise_masks: np.ndarray = field(repr=False)  # (T, H, W) bool
    unknown_colour_masks: np.ndarray = field(repr=False)  # (T, H, W) bool

    @property
    def sounding_objects(self) -> tuple[SyntheticObject, ...]:
        return tuple(o for o in self.objects if o.sounding)

    @property
    def silent_objects(self) -> tuple[SyntheticObject, ...]:
        return tuple(o for o in self.objects if not o.sounding)

    def video_dir(self, root: Path) -> Path:
        return Path(root) / self.subset / self.uid

    def label_index(self, k: int) -> np.ndarray:
        """(H, W) uint8 clean ground truth of frame k: sounding objects' class ids, 0 elsewhere."""
        index = np.zeros((self.height, self.width), dtype=np.uint8)
        for obj in self.sounding_objects:
            index[obj.masks[k]] = obj.class_id
        return index

    def sounding_mask(self, k: int) -> np.ndarray:
        """(H, W) bool: pixels of sounding objects in frame k."""
        return self.label_index(k) > 0

    def all_objects_mask(self, k: int) -> np.ndarray:
        """(H, W) bool: pixels of every object, sounding or silent, in frame k (a 'segment everything' baseline)."""
        mask = np.zeros((self.height, self.width), dtype=bool)
        for obj in self.objects:
            mask |= obj.masks[k]
        return mask


@dataclass(frozen=True, eq=False)
class SyntheticDataset:
    """The written dataset: its root folder and its videos in metadata order."""

    root: Path
    videos: tuple[SyntheticVideo, ...]

    def video(self, uid: str) -> SyntheticVideo:
        for video in self.videos:
            if video.uid == uid:
                return video
        raise KeyError(uid)

    def split(self, name: str) -> tuple[SyntheticVideo, ...]:
        """Videos whose metadata split is `name` (before the AVSBench-OV rule)."""
        return tuple(v for v in self.videos if v.split == name)


def default_specs(
    num_train: int = 6, num_val: int = 3, num_test: int = 3, seed: int = 0, *,
    base_pool: tuple[str, ...] = DEFAULT_BASE_POOL, novel_pool: tuple[str, ...] = DEFAULT_NOVEL_POOL,
) -> list[SyntheticVideoSpec]:
    """A clean mixed dataset: train clips alternate v1s/v2 and use base classes only; every other val/test
    clip sounds a novel class. Each clip has 2 or 3 objects, at least one sounding and one silent. The
    second clip's audio is stereo 44.1 kHz; the third clip's uid starts with '-'."""
    rng = np.random.default_rng([seed, 7919])
    specs: list[SyntheticVideoSpec] = []
    plan = [("train", i) for i in range(num_train)] + [("val", i) for i in range(num_val)]
    plan += [("test", i) for i in range(num_test)]
    for n, (split, i) in enumerate(plan):
        subset = "v1s" if i % 2 == 0 else "v2"
        num_objects = int(rng.integers(2, 4))
        num_sounding = int(rng.integers(1, num_objects))
        with_novel = split != "train" and i % 2 == 0
        names = _pick_classes(num_objects, base_pool, novel_pool if with_novel else (), rng)
        stereo = n == min(1, len(plan) - 1)
        dash = n == min(2, len(plan) - 1)
        specs.append(
            SyntheticVideoSpec(
                split=split, subset=subset, sounding=tuple(names[:num_sounding]), silent=tuple(names[num_sounding:]),
                uid=_default_uid(n, subset, dash=dash),
                sample_rate=44100 if stereo else 16000, channels=2 if stereo else 1,
            )
        )
    return specs


def _pick_classes(
    count: int, base_pool: tuple[str, ...], novel_pool: tuple[str, ...], rng: np.random.Generator
) -> list[str]:
    """`count` distinct classes, of distinct shapes where the pools allow; the first one from
    `novel_pool` when it is not empty, the others from `base_pool`."""
    def shape(name: str) -> str:
        return class_appearance(CLASS_INDEX[name])[0]

    chosen: list[str] = []
    pools = ([novel_pool] if novel_pool else []) + [base_pool] * count
    for pool in pools[:count]:
        unused = [c for c in pool if c not in chosen]
        fresh_shape = [c for c in unused if shape(c) not in {shape(x) for x in chosen}]
        candidates = fresh_shape or unused
        if not candidates:
            raise AVSegError(f"class pool {pool} is too small for {count} objects")
        chosen.append(str(candidates[int(rng.integers(len(candidates)))]))
    return chosen


def make_synthetic_avsbench(
    root: str | Path,
    videos: list[SyntheticVideoSpec] | None = None,
    *,
    seed: int = 0,
    num_train: int = 6,
    num_val: int = 3,
    num_test: int = 3,
    size: tuple[int, int] = (64, 96),
    jpeg_quality: int = 92,
    noise_level: float = 0.02,
) -> SyntheticDataset:
    """Write a synthetic AVSBench-semantic dataset under `root` and describe what was written.

    Args:
        root: folder to create (must not exist or be empty).
        videos: clip specs; default `default_specs(num_train, num_val, num_test, seed)`.
        seed: makes positions, motion, textures and noise reproducible.
        size: (height, width) of frames and labels unless a spec sets its own.
        jpeg_quality: of the frames.
        noise_level: standard deviation of the white noise added to the audio (tones peak at ~0.3).

    Returns:
        The dataset: per video its metadata, objects (sounding/silent) and per-frame masks and boxes.
    """
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise AVSegError(f"synthetic dataset folder must be new or empty: {root}")
    specs = default_specs(num_train, num_val, num_test, seed) if videos is None else list(videos)
    if not specs:
        raise AVSegError("a synthetic dataset needs at least one video")
    root.mkdir(parents=True, exist_ok=True)
    written = []
    for n, spec in enumerate(specs):
        rng = np.random.default_rng([seed, n])
        written.append(_write_video(root, spec, n, rng, spec.size or size, jpeg_quality, noise_level))
    uids = [v.uid for v in written]
    if len(set(uids)) != len(uids):
        raise AVSegError(f"synthetic video uids are not unique: {uids}")
    _write_metadata(root, written, specs)
    (root / "label2idx.json").write_text(
        json.dumps({name: i + 1 for i, name in enumerate(CLASS_NAMES)}, indent=1) + "\n", encoding="utf-8"
    )
    return SyntheticDataset(root=root, videos=tuple(written))


# ----------------------------------------------------------------------------------------------------------------
# one video


def _default_uid(n: int, subset: str, dash: bool = False) -> str:
    vid = f"{'-' if dash else ''}syn{n + 1:04d}"
    if subset == "v1m":
        return vid
    return f"{vid}_0_{FRAMES_PER_SUBSET[subset] * 1000}"


def _validate(spec: SyntheticVideoSpec, height: int, width: int) -> None:
    if spec.subset not in FRAMES_PER_SUBSET:
        raise AVSegError(f"unknown subset {spec.subset!r} in a synthetic spec")
    if spec.split not in ("train", "val", "test"):
        raise AVSegError(f"unknown split {spec.split!r} in a synthetic spec")
    names = list(spec.sounding) + list(spec.silent)
    for name in names + ([spec.noise_class] if spec.noise_class else []):
        if name not in CLASS_INDEX or name == "background":
            raise AVSegError(f"unknown class name {name!r} in a synthetic spec")
    if len(set(names)) != len(names):
        raise AVSegError(f"synthetic objects must have distinct classes: {names}")
    if not names:
        raise AVSegError("a synthetic video needs at least one object")
    if spec.off_screen and spec.sounding:
        raise AVSegError("an off-the-screen synthetic video cannot have sounding objects")
    if spec.noise_class and spec.noise_class in spec.sounding:
        raise AVSegError(f"noise_class {spec.noise_class!r} must not be a sounding class")
    if height // len(names) < 8 or width < 16:
        raise AVSegError(f"frame size {height}x{width} is too small for {len(names)} objects")


def _write_video(
    root: Path, spec: SyntheticVideoSpec, n: int, rng: np.random.Generator, size: tuple[int, int],
    jpeg_quality: int, noise_level: float,
) -> SyntheticVideo:
    from PIL import Image

    height, width = size
    _validate(spec, height, width)
    uid = spec.uid or _default_uid(n, spec.subset)
    vid = uid if spec.subset == "v1m" else uid.rsplit("_", 2)[0]
    num_frames = FRAMES_PER_SUBSET[spec.subset]
    labelled = tuple(labelled_frames(spec.subset, spec.split))

    names = list(spec.sounding) + list(spec.silent)
    lanes = rng.permutation(len(names))
    objects = [
        _make_object(name, name in spec.sounding, int(lane), len(names), num_frames, height, width, rng)
        for name, lane in zip(names, lanes)
    ]
    occupied = np.zeros((num_frames, height, width), dtype=bool)
    for obj in objects:
        occupied |= obj.masks

    noise_masks = np.zeros_like(occupied)
    unknown_masks = np.zeros_like(occupied)
    for k in labelled:
        free = ~occupied[k]
        if spec.noise_class:
            noise_masks[k] = _free_block(free, NOISE_BLOCK, rng)
            free &= ~noise_masks[k]
        if spec.unknown_colour_pixels:
            unknown_masks[k] = _free_pixels(free, spec.unknown_colour_pixels, rng)

    video = SyntheticVideo(
        uid=uid, vid=vid, subset=spec.subset, split=spec.split,
        a_obj=tuple(spec.a_obj_text.split("_")) if spec.a_obj_text is not None
        else ("off-the-screen",) if spec.off_screen else tuple(spec.sounding),
        objects=tuple(objects), num_frames=num_frames, labelled_frames=labelled, height=height, width=width,
        sample_rate=spec.sample_rate, channels=spec.channels,
        audio_seconds=float(spec.audio_seconds if spec.audio_seconds is not None else num_frames),
        noise_class=spec.noise_class, noise_masks=noise_masks, unknown_colour_masks=unknown_masks,
    )

    video_dir = video.video_dir(root)
    for folder in ("frames", "labels_rgb", "labels_semantic"):
        (video_dir / folder).mkdir(parents=True, exist_ok=True)
    texture = rng.normal(0.0, 6.0, size=(height, width, 1))
    for k in range(num_frames):
        frame = _render_frame(objects, k, texture, height, width)
        Image.fromarray(frame).save(video_dir / "frames" / f"{k}.jpg", quality=jpeg_quality)
    for k in labelled:
        index = video.label_index(k)
        if spec.noise_class:
            index[noise_masks[k]] = CLASS_INDEX[spec.noise_class]
        rgb = PALETTE[index]
        rgb[unknown_masks[k]] = UNKNOWN_COLOUR
        Image.fromarray(rgb).save(video_dir / "labels_rgb" / f"{k}.png")
        Image.fromarray(index).save(video_dir / "labels_semantic" / f"{k}.png")
    _write_audio(video_dir / "audio.wav", video, spec.off_screen, noise_level, rng)
    return video


def _make_object(
    name: str, sounding: bool, lane: int, num_lanes: int, num_frames: int, height: int, width: int,
    rng: np.random.Generator,
) -> SyntheticObject:
    """An object moving inside horizontal band `lane`, bouncing off the left/right borders."""
    class_id = CLASS_INDEX[name]
    shape, color = class_appearance(class_id)
    band_top = lane * height // num_lanes
    band_height = (lane + 1) * height // num_lanes - band_top
    obj_h = max(6, int(band_height * rng.uniform(0.7, 0.9)))
    obj_w = max(6, min(width // 3, int(obj_h * rng.uniform(1.0, 1.6))))
    x = float(rng.uniform(0, width - obj_w))
    y = float(rng.uniform(0, band_height - obj_h))
    speed = rng.uniform(0.08, 0.18) * width * rng.choice([-1.0, 1.0])
    masks = np.zeros((num_frames, height, width), dtype=bool)
    boxes = []
    for k in range(num_frames):
        x0, y0 = int(round(x)), band_top + int(round(y))
        masks[k] = _shape_mask(shape, x0, y0, obj_w, obj_h, height, width)
        boxes.append(_box(masks[k]))
        x += speed
        if x < 0 or x > width - obj_w:
            speed = -speed
            x = min(max(x, 0.0), float(width - obj_w))
        y = min(max(y + rng.uniform(-1.5, 1.5), 0.0), float(band_height - obj_h))
    return SyntheticObject(
        class_name=name, class_id=class_id, sounding=sounding, shape=shape, color=color, masks=masks,
        boxes=tuple(boxes),
    )


def _shape_mask(shape: str, x0: int, y0: int, w: int, h: int, height: int, width: int) -> np.ndarray:
    """(height, width) bool mask of `shape` filling the box (x0, y0, w, h)."""
    yy, xx = np.mgrid[0:height, 0:width]
    u = (xx - x0 + 0.5) / w  # 0..1 across the box
    v = (yy - y0 + 0.5) / h
    inside = (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1)
    if shape == "rectangle":
        return inside
    if shape == "ellipse":
        return inside & ((u - 0.5) ** 2 + (v - 0.5) ** 2 <= 0.25)
    if shape == "triangle":  # apex at the top centre
        return inside & (np.abs(u - 0.5) <= 0.5 * v)
    if shape == "diamond":
        return inside & (np.abs(u - 0.5) + np.abs(v - 0.5) <= 0.5)
    raise ValueError(f"unknown shape {shape!r}")


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return (0, 0, 0, 0)
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def _render_frame(objects: list[SyntheticObject], k: int, texture: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 frame k: textured grey background (a slow gradient + fixed noise) and the objects."""
    gradient = np.linspace(-12.0, 12.0, width)[None, :, None]
    frame = np.clip(BACKGROUND_GREY + gradient + texture, 0, 255)
    frame = np.repeat(frame, 3, axis=2)
    for obj in objects:
        frame[obj.masks[k]] = obj.color
    return frame.astype(np.uint8)


def _free_block(free: np.ndarray, side: int, rng: np.random.Generator) -> np.ndarray:
    """A side x side square of pixels that are all `free` (raises if there is none)."""
    height, width = free.shape
    candidates = [
        (y, x) for y in range(0, height - side + 1, side) for x in range(0, width - side + 1, side)
        if free[y : y + side, x : x + side].all()
    ]
    if not candidates:
        raise AVSegError("no room for a stray-pixel block in a synthetic label")
    y, x = candidates[int(rng.integers(len(candidates)))]
    block = np.zeros_like(free)
    block[y : y + side, x : x + side] = True
    return block


def _free_pixels(free: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    flat = np.flatnonzero(free)
    if len(flat) < count:
        raise AVSegError("no room for unknown-colour pixels in a synthetic label")
    chosen = np.zeros(free.size, dtype=bool)
    chosen[rng.choice(flat, size=count, replace=False)] = True
    return chosen.reshape(free.shape)


def _write_audio(path: Path, video: SyntheticVideo, off_screen: bool, noise_level: float, rng: np.random.Generator) -> None:
    """Sum of the sounding classes' modulated tones plus white noise, as 16-bit PCM."""
    import soundfile

    num_samples = int(round(video.audio_seconds * video.sample_rate))
    t = np.arange(num_samples) / video.sample_rate
    sources = [class_sound(o.class_id) for o in video.sounding_objects]
    if off_screen:
        sources.append((OFF_SCREEN_FREQUENCY_HZ, 2.0))
    signal = np.zeros(num_samples)
    for frequency, modulation in sources:
        phase = rng.uniform(0, 2 * np.pi)
        envelope = 0.55 + 0.45 * np.sin(2 * np.pi * modulation * t)
        signal += envelope * np.sin(2 * np.pi * frequency * t + phase)
    if sources:
        signal *= 0.3 / len(sources)
    channels = [signal + rng.normal(0.0, noise_level, num_samples) for _ in range(video.channels)]
    data = np.clip(np.stack(channels, axis=1), -1.0, 1.0)
    soundfile.write(str(path), data, video.sample_rate, subtype="PCM_16")


def _write_metadata(root: Path, videos: list[SyntheticVideo], specs: list[SyntheticVideoSpec]) -> None:
    lines = [",".join(METADATA_COLUMNS)]
    for video, spec in zip(videos, specs):
        a_obj = spec.a_obj_text if spec.a_obj_text is not None else "_".join(video.a_obj)
        start_ms = 0
        if video.subset != "v1m":
            try:
                start_ms = int(video.uid.rsplit("_", 2)[1])
            except (IndexError, ValueError):
                start_ms = 0
        s_min, s_sec = divmod(start_ms // 1000, 60)
        lines.append(",".join([video.vid, video.uid, str(s_min), str(s_sec), a_obj, video.split, video.subset]))
    (root / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
