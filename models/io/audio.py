"""Decode the audio of any container to 16 kHz mono float32, the input of the VGGish front end.

ffmpeg (the bundled binary) decodes the first audio stream and resamples it to 16 kHz, keeping all its
channels (`-ar 16000 -f f32le`); the channels are then averaged here, in numpy, chunk by chunk.

Mono convention: the **mean over channels**, as the official OV-AVSS reader does with its stereo
`audio.wav` (`mean over channels if stereo`). ffmpeg's own `-ac 1` downmix is different: it adds the
channels at -3 dB each, so a stereo file with L = R comes out sqrt(2) = 1.41 times louder than
mean(L, R). Training and inference must use the same convention; every reader in avseg uses this one.

Time 0 of the result is the start of the file, as for the video frames of `models.io.video.iter_frames`: an
audio stream that starts later (a non-zero start time, e.g. a recorder that started the sound 0.8 s after the
picture) is preceded by that much silence (ffmpeg's `aresample=first_pts=0`), so the sound at t seconds is the
sound played with the frame shown at t. Without it the samples would be packed from 0 and every frame would
hear the sound of a later time.

Resampling is ffmpeg's (swresample), not resampy's as in the official code; both are band-limited and
agree up to small filter differences. A 16 kHz source is passed through unchanged.

Memory: only the mono result (64 kB per second) is kept; the multichannel stream is read in chunks.
"""

from __future__ import annotations

import os

import numpy as np

from models.errors import AVSegError
from models.io.ffmpeg import StderrLog, check_media_file, ffmpeg_exe, media_path, open_container, start_reader

SAMPLE_RATE = 16000
"""Sample rate of `decode_audio_16k`'s output (VGGish's rate), Hz."""

_CHUNK_SECONDS = 10


def audio_channels(path: str | os.PathLike) -> int | None:
    """Channel count of the first audio stream of `path`, or None when the file has no audio stream.

    Raises:
        AVSegError: the file is missing, empty, a folder, or not a media file.
    """
    with open_container(path) as container:
        if not container.streams.audio:
            return None
        context = container.streams.audio[0].codec_context
        return context.channels or 1


def decode_audio_16k(path: str | os.PathLike, channels: int | None = None) -> np.ndarray | None:
    """Decode the first audio stream of a video or audio file to 16 kHz mono float32.

    Args:
        path: any container ffmpeg reads (mp4, mkv, webm, wav, m4a, mp3, ...).
        channels: the stream's channel count if already known (`VideoInfo.audio_channels`); probed
            otherwise. The audio is checked for existence either way.

    Returns:
        (N,) float32 samples in [-1, 1] at 16 kHz, the mean over the source channels, from the start of the
        file (silence before a late audio stream); None (no error) when the file has no audio stream.

    Raises:
        AVSegError: one line naming the file when it is missing, not a media file, or ffmpeg cannot
            decode its audio (with ffmpeg's last error line).
    """
    path = check_media_file(path)
    probed = audio_channels(path)
    if probed is None:
        return None
    channels = channels or probed
    command = [
        ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error",
        "-i", media_path(path),
        "-map", "0:a:0", "-vn", "-sn", "-dn",
        "-af", "aresample=first_pts=0", "-ac", str(channels), "-ar", str(SAMPLE_RATE), "-f", "f32le", "pipe:1",
    ]  # fmt: skip
    frame_bytes = 4 * channels
    chunk_bytes = frame_bytes * SAMPLE_RATE * _CHUNK_SECONDS
    chunks: list[np.ndarray] = []
    with StderrLog() as stderr:
        process = start_reader(command, stderr, f"the audio of {path}")
        try:
            leftover = b""
            while True:
                data = process.stdout.read(chunk_bytes)
                if not data:
                    break
                data = leftover + data
                usable = len(data) - len(data) % frame_bytes
                leftover = data[usable:]
                samples = np.frombuffer(data[:usable], dtype="<f4").reshape(-1, channels)
                chunks.append(samples.mean(axis=1, dtype=np.float32) if channels > 1 else samples[:, 0].copy())
            return_code = process.wait()
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
            process.stdout.close()
        if return_code != 0:
            raise AVSegError(f"cannot decode the audio of {path}: {stderr.summary()}")
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)
