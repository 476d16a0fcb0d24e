"""CLAP audio tagging for the zero-shot method: cosine similarity of sound windows to class texts.

`ClapAudioTagger` wraps a `transformers` `ClapModel` + `ClapProcessor` (e.g. laion/clap-htsat-unfused). Sound comes
in as mono float32 windows at 16 kHz (the rate avseg decodes audio at) and is resampled to CLAP's 48 kHz. Each text
is `prompt.format(name)`; text embeddings are memoised per name, so a fixed vocabulary is encoded once.

Determinism: the CLAP feature extractor crops windows longer than its `max_length_s` (10 s) at a random offset
("rand_trunc"), and with "fusion" truncation it marks a random item of every short batch as `is_longer`. Here a
window longer than `max_length_s` is cut to its first `max_length_s` seconds before the feature extractor, and
`is_longer` is always False (no window is longer after the cut), so a window's embedding depends only on its samples,
never on chance or on the other windows in its batch. Shorter windows are repeat-padded to 10 s by the extractor
(`padding="repeatpad"`, as CLAP was trained).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from models.errors import AVSegError

CLAP_SAMPLE_RATE = 48_000
"""Sample rate CLAP's feature extractor expects (Hz)."""

INPUT_SAMPLE_RATE = 16_000
"""Sample rate of the windows the tagger receives (Hz)."""

DEFAULT_AUDIO_PROMPT = "This is a sound of {}."
"""CLAP text per class name (the prompt of the CLAP paper's zero-shot classification)."""

EMPTY_WINDOW_S = 0.1
"""A zero-length window is scored as this many seconds of silence."""


def resample_to_clap_rate(window_16k: np.ndarray) -> np.ndarray:
    """Mono audio at 16 kHz -> the same sound at 48 kHz (polyphase filter, `scipy.signal.resample_poly` up 3).

    Args:
        window_16k: (S,) float samples at 16 kHz; S = 0 is read as `EMPTY_WINDOW_S` seconds of zeros.

    Returns:
        (3 S,) float32 samples at 48 kHz.
    """
    from scipy.signal import resample_poly

    samples = np.asarray(window_16k, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"an audio window must be mono (S,), got shape {samples.shape}")
    if samples.size == 0:
        samples = np.zeros(round(EMPTY_WINDOW_S * INPUT_SAMPLE_RATE), dtype=np.float32)
    factor = CLAP_SAMPLE_RATE // INPUT_SAMPLE_RATE
    return resample_poly(samples, factor, 1).astype(np.float32)


class ClapAudioTagger:
    """Similarity of audio windows to class names with CLAP (transformers ClapModel + ClapProcessor).

    Args:
        model: a `ClapModel` in eval mode, on `device`.
        processor: its `ClapProcessor` (ClapFeatureExtractor + RoBERTa tokenizer).
        device: where the model runs.
        prompt: text per class name, with "{}" where the name goes ("{}" alone: names are used verbatim).
        batch_size: windows (and texts) per forward.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        device: torch.device | str = "cpu",
        prompt: str = DEFAULT_AUDIO_PROMPT,
        batch_size: int = 16,
    ) -> None:
        if "{}" not in prompt:
            raise ValueError(f"prompt must contain '{{}}' for the class name, got {prompt!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.processor = processor
        self.device = torch.device(device)
        self.prompt = prompt
        self.batch_size = int(batch_size)
        self._text_cache: dict[str, np.ndarray] = {}

    @classmethod
    def from_folder(
        cls,
        folder: str | os.PathLike,
        device: torch.device | str = "cpu",
        prompt: str = DEFAULT_AUDIO_PROMPT,
        batch_size: int = 16,
    ) -> ClapAudioTagger:
        """Load the CLAP model and processor saved in `folder`; failures -> one-line `AVSegError`."""
        from transformers import ClapModel, ClapProcessor

        from models.zeroshot.hf_folder import load_model_folder

        model, processor = load_model_folder(
            folder, "CLAP", "clap", ClapModel, ClapProcessor, ("tokenizer", "feature_extractor"), device
        )
        tokenizer = processor.tokenizer
        if len(tokenizer) <= len(tokenizer.all_special_tokens):  # transformers builds an empty one when files lack
            raise AVSegError(f"{folder} has no CLAP tokenizer vocabulary (tokenizer.json, or vocab.json + merges.txt)")
        return cls(model, processor, device=device, prompt=prompt, batch_size=batch_size)

    @property
    def logit_scale(self) -> float:
        """exp(model.logit_scale_a): the audio->text temperature CLAP was trained with (logits = scale * cosine)."""
        return float(self.model.logit_scale_a.detach().exp().item())

    @property
    def embedding_dim(self) -> int:
        """D, the size of CLAP's joint audio-text embedding."""
        return int(self.model.config.projection_dim)

    @property
    def max_window_samples(self) -> int:
        """Samples at 48 kHz the feature extractor takes (10 s); longer windows are cut to their start."""
        return int(self.processor.feature_extractor.nb_max_samples)

    def encode_classes(self, names: Sequence[str]) -> np.ndarray:
        """Unit text embeddings of `prompt.format(name)`.

        Args:
            names: K class names (verbatim; spaces and non-ASCII are fine; repeats allowed).

        Returns:
            (K, D) float32, unit rows. Each distinct name runs through the text model once per tagger.
        """
        names = [str(name) for name in names]
        missing = list(dict.fromkeys(name for name in names if name not in self._text_cache))
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start : start + self.batch_size]
            embeddings = self._encode_texts([self.prompt.format(name) for name in chunk])
            self._text_cache.update(zip(chunk, embeddings))
        if not names:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        return np.stack([self._text_cache[name] for name in names])

    def encode_audio(self, windows_16k: Sequence[np.ndarray]) -> np.ndarray:
        """Unit audio embeddings of sound windows.

        Args:
            windows_16k: W mono float32 windows at 16 kHz, each (S_i,) of any length (S_i = 0: 0.1 s of silence;
                longer than 10 s: the first 10 s).

        Returns:
            (W, D) float32, unit rows; a window's row does not depend on the other windows.
        """
        prepared = [resample_to_clap_rate(window)[: self.max_window_samples] for window in windows_16k]
        rows = [
            self._encode_prepared(prepared[start : start + self.batch_size])
            for start in range(0, len(prepared), self.batch_size)
        ]
        if not rows:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        return np.concatenate(rows)

    def similarities(self, windows_16k: Sequence[np.ndarray], names: Sequence[str]) -> np.ndarray:
        """Cosine similarity of each window to each class text.

        Args:
            windows_16k: W mono float32 windows at 16 kHz (see `encode_audio`).
            names: K class names (see `encode_classes`).

        Returns:
            (W, K) float32 in [-1, 1]; `logit_scale * similarities` are CLAP's audio->text logits.
        """
        texts = self.encode_classes(names)
        audio = self.encode_audio(windows_16k)
        return np.clip(audio @ texts.T, -1.0, 1.0).astype(np.float32)

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        """(T,) texts -> (T, D) float32 unit rows, one forward of the text tower."""
        limit = self._max_text_tokens()
        inputs = self.processor.tokenizer(texts, padding=True, truncation=True, max_length=limit, return_tensors="pt")
        with torch.inference_mode():
            output = self.model.get_text_features(
                input_ids=inputs["input_ids"].to(self.device), attention_mask=inputs["attention_mask"].to(self.device)
            )
        return _unit_rows(output)

    def _encode_prepared(self, windows_48k: list[np.ndarray]) -> np.ndarray:
        """(B,) windows at 48 kHz, at most 10 s each -> (B, D) float32 unit rows, one forward of the audio tower."""
        inputs = self.processor(audio=windows_48k, sampling_rate=CLAP_SAMPLE_RATE, return_tensors="pt")
        features = inputs["input_features"].to(device=self.device, dtype=self.model.dtype)
        is_longer = torch.zeros((len(windows_48k), 1), dtype=torch.bool, device=self.device)
        with torch.inference_mode():
            output = self.model.get_audio_features(input_features=features, is_longer=is_longer)
        return _unit_rows(output)

    def _max_text_tokens(self) -> int:
        """The most tokens a text may have: the tokenizer's limit, within the text tower's position table."""
        text_config = self.model.config.text_config
        positions = int(text_config.max_position_embeddings) - int(text_config.pad_token_id or 0) - 1
        return max(2, min(int(self.processor.tokenizer.model_max_length), positions))


def _unit_rows(output: Any) -> np.ndarray:
    """Projected embeddings from `get_*_features` (a tensor, or a ModelOutput whose pooler_output holds them; the
    latter in transformers 5) -> (B, D) float32 numpy with unit rows."""
    embeddings = output if isinstance(output, torch.Tensor) else output.pooler_output
    embeddings = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    return embeddings.cpu().numpy()
