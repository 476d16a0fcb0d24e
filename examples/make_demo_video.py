"""Make examples/astronaut.mp4, the demo video of `make demo`, from public-domain material only.

* Picture: NASA's portrait of astronaut Eileen Collins (`skimage.data.astronaut()`, public domain, as
  bundled with scikit-image), slowly panned and zoomed over 7 s at 640x360, 25 fps. A flag and a
  shuttle model are in the picture, hence `--classes woman,rocket,flag` in `demo.sh`.
* Sound: a sentence synthesised with espeak-ng (GPL program; its output is not covered by it), padded
  with silence to the length of the video.
* Encoding: the ffmpeg bundled with imageio-ffmpeg, H.264 (yuv420p) + AAC mono 64 kb/s, bit-exact flags,
  so the file is small (< 1 MB) and the same on every run with the same ffmpeg and espeak-ng.

Needs (not project dependencies): scikit-image in the venv (`.venv/bin/pip install scikit-image`) and
espeak-ng (Debian/Ubuntu: `apt-get install espeak-ng`).

Usage: .venv/bin/python examples/make_demo_video.py [--out examples/astronaut.mp4]
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

WIDTH, HEIGHT = 640, 360
FPS = 25
SECONDS = 7.0
SPEECH = (
    "Hello from the space shuttle program. "
    "Behind me you can see the flag, and a model of the rocket that takes us into orbit."
)
VOICE = "en-us+f3"


def ease(u: float) -> float:
    """Smooth start and stop: 0 -> 0, 1 -> 1, zero slope at both ends."""
    return 0.5 - 0.5 * math.cos(math.pi * min(max(u, 0.0), 1.0))


def camera_box(u: float, size: int) -> tuple[float, float, float, float]:
    """The 16:9 window (left, top, right, bottom) of the square picture shown at progress u in [0, 1].

    Starts on the whole width (upper part: flag, face, shuttle) and slowly zooms in 30 % towards the
    face while drifting to the left.
    """
    s = ease(u)
    width = size * (1.0 - 0.3 * s)
    height = width * HEIGHT / WIDTH
    centre_x = size * (0.5 - 0.08 * s)
    centre_y = size * (0.33 - 0.05 * s)
    left = min(max(centre_x - width / 2, 0.0), size - width)
    top = min(max(centre_y - height / 2, 0.0), size - height)
    return left, top, left + width, top + height


def frames(picture: Image.Image):
    count = round(SECONDS * FPS)
    for index in range(count):
        box = camera_box(index / (count - 1), picture.width)
        yield np.asarray(picture.resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC, box=box), dtype=np.uint8)


def speak(text: str, wav: Path) -> None:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        sys.exit("espeak-ng not found: install it (Debian/Ubuntu: apt-get install espeak-ng)")
    subprocess.run([espeak, "-v", VOICE, "-s", "150", "-w", str(wav), text], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "astronaut.mp4")
    args = parser.parse_args()
    try:
        from skimage import data
    except ImportError:
        sys.exit("scikit-image not found: .venv/bin/pip install scikit-image (needed by this script only)")
    import imageio_ffmpeg

    picture = Image.fromarray(data.astronaut())
    with tempfile.TemporaryDirectory() as folder:
        wav = Path(folder) / "speech.wav"
        speak(SPEECH, wav)
        partial = Path(folder) / "astronaut.mp4"
        command = [
            imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{WIDTH}x{HEIGHT}", "-framerate", str(FPS), "-i", "pipe:0",
            "-i", str(wav),
            "-map", "0:v:0", "-map", "1:a:0",
            "-c:v", "libx264", "-preset", "slow", "-crf", "26", "-pix_fmt", "yuv420p", "-x264-params", "threads=1",
            "-af", f"apad=whole_dur={SECONDS}", "-ac", "1", "-ar", "44100", "-c:a", "aac", "-b:a", "64k",
            "-t", str(SECONDS), "-map_metadata", "-1", "-fflags", "+bitexact",
            "-flags:v", "+bitexact", "-flags:a", "+bitexact", "-movflags", "+faststart",
            str(partial),
        ]  # fmt: skip
        process = subprocess.Popen(command, stdin=subprocess.PIPE)
        for frame in frames(picture):
            process.stdin.write(frame.tobytes())
        process.stdin.close()
        if process.wait() != 0:
            sys.exit("ffmpeg failed")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(partial, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
