"""The frozen CLIP of the open-vocabulary classifier, from wherever its weights are.

Sources, first match wins: a weights file or an open_clip folder the user names (or "random"), the CLIP
inside an OV-AVSS checkpoint, the avseg / Hugging Face cache, and open_clip's own download (not offline, and
only after a quick check that its server can be reached). Every miss is one `AVSegError` line naming the file,
its URL and where to put it. Also used by the zero-shot method's re-scoring.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

import torch

from models.errors import AVSegError
from models.ovavss.clip_model import WEIGHTS_HINT, LoadedClip
from models.ovavss.config import ModelConfig
from models.weights_registry import RANDOM


def _digest_tensors(state: dict[str, torch.Tensor], keep=lambda key: True) -> str:
    digest = hashlib.sha256()
    for key in sorted(state):
        if keep(key):
            tensor = state[key].detach().to("cpu").reshape(-1).contiguous()
            digest.update(key.encode())
            digest.update(str(tensor.dtype).encode())
            digest.update(tensor.view(torch.uint8).numpy() if tensor.numel() else b"")
    return digest.hexdigest()[:16]


def _digest_folder(folder: Path) -> str:
    from models.ovavss.clip_model import file_sha256

    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        digest.update(path.name.encode())
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()[:16]


def load_classifier_clip(
    config: ModelConfig,
    device: torch.device,
    clip_weights: str | os.PathLike | None = None,
    clip_state: dict[str, torch.Tensor] | None = None,
    clip_model: str | None = None,
    offline: bool = False,
    state_source: str = "checkpoint",
) -> tuple[LoadedClip, str]:
    """The frozen CLIP of the classifier and where its weights came from.

    Order: `clip_weights` (a weights file for `clip_model or config.clip_model`; an open_clip folder
    with `open_clip_config.json` + weights, which names its own architecture; or "random") > `clip_state`
    (CLIP inside the checkpoint) > the avseg / Hugging Face cache > open_clip's download (not offline).

    Raises:
        AVSegError: missing / mismatching files; offline with nothing cached (one line: file, URL, cache path).
    """
    from models.ovavss.clip_model import load_clip, load_clip_weights

    name = clip_model or config.clip_model
    tag = config.clip_pretrained or None
    if clip_weights is None and clip_state is not None:
        clip = load_clip(name, pretrained=None, device="cpu", quick_gelu=True)  # OpenAI weights use QuickGELU
        load_clip_weights(clip.model, clip_state, source=state_source, model_name=name)
        clip.model.to(device)
        text_id = _digest_tensors(clip_state, keep=lambda key: not key.startswith("visual."))
        return replace(clip, weights_id=f"text-sha256-{text_id}", quick_gelu=True), "checkpoint"
    return load_pretrained_clip(name, tag, device, clip_weights=clip_weights, offline=offline)


def load_pretrained_clip(
    name: str,
    tag: str | None,
    device: torch.device,
    clip_weights: str | os.PathLike | None = None,
    offline: bool = False,
) -> tuple[LoadedClip, str]:
    """A frozen open_clip model `name` with pretrained tag `tag`, and where its weights came from.

    Order: `clip_weights` (a weights file; an open_clip folder with `open_clip_config.json` + weights, which
    names its own architecture; or "random") > the avseg / Hugging Face cache > open_clip's download (not
    offline). Used by the OV-AVSS classifier and by the zero-shot method's re-scoring.

    Raises:
        AVSegError: missing / mismatching files; offline with nothing cached (one line: file, URL, cache path).
    """
    from models.download import offline_reason
    from models.ovavss.clip_model import load_clip
    from models.clip_weights import clip_download_unreachable, clip_weight
    from models.weights_cache import cache_dir, cached_path

    if clip_weights is not None and str(clip_weights) == RANDOM:
        return load_clip(name, pretrained=None, device=device, quick_gelu=tag == "openai"), RANDOM
    if clip_weights is not None:
        path = Path(clip_weights).expanduser()
        if path.is_dir():
            if not (path / "open_clip_config.json").is_file():
                raise AVSegError(f"CLIP weights folder {path} has no open_clip_config.json (give a weights file instead)")
            clip = load_clip(f"local-dir:{path.resolve()}", device=device)
            return replace(clip, weights_id=f"local-dir-sha256-{_digest_folder(path)}"), str(path)
        if not path.is_file():
            raise AVSegError(f"CLIP weights not found: {path}")
        return load_clip(name, pretrained=tag, weights_path=path, device=device), str(path)
    if tag is None:
        raise AVSegError(f"no CLIP weights for {name}: pass a CLIP weights file")
    weight = clip_weight(name, tag)
    local = cached_path(weight)
    if local is not None:
        return load_clip(name, pretrained=tag, weights_path=local, device=device), str(local)
    reason = offline_reason(offline)
    # probed only when downloads are allowed: without network huggingface_hub would retry for half a minute
    why = f"downloads are off ({reason})" if reason is not None else clip_download_unreachable(name, tag)
    if why is not None:
        raise AVSegError(
            f"CLIP {name} '{tag}' weights not found and {why}: download {weight.url} and put it at "
            f"{cache_dir() / weight.filename} (or pass {WEIGHTS_HINT})"
        )
    return load_clip(name, pretrained=tag, device=device), f"open_clip:{tag}"
