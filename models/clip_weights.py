"""open_clip weight files: the registry entry of an (architecture, tag) pair, its copy in the Hugging Face cache,
whether its download server can be reached, and open_clip's own download of it.

Used by `models.weights_cache` (lookup and `avseg weights fetch` of SOURCE_OPEN_CLIP entries) and by
`models.clip_loading` (the classifier's CLIP).
"""

from __future__ import annotations

import os
from pathlib import Path

from models.errors import AVSegError
from models.network_errors import is_network_error
from models.weights_cache import cache_dir
from models.weights_registry import REGISTRY, SOURCE_OPEN_CLIP, WeightFile

CLIP_FILENAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
"""What open_clip downloads from a Hugging Face repo (the safetensors file is tried first)."""


def clip_weight(model_name: str, tag: str) -> WeightFile:
    """The registry entry of an open_clip (architecture, tag), or an ad-hoc one for other pairs."""
    for weight in REGISTRY.values():
        if weight.source == SOURCE_OPEN_CLIP and weight.clip_model == model_name and weight.clip_tag == tag:
            return weight
    url = ""
    try:
        import open_clip

        config = open_clip.get_pretrained_cfg(model_name, tag) or {}
        if config.get("hf_hub"):
            url = f"https://huggingface.co/{config['hf_hub'].strip('/')}/resolve/main/{CLIP_FILENAMES[0]}"
        elif config.get("url"):
            url = config["url"]
    except ImportError:  # pragma: no cover - open_clip is a dependency
        pass
    return WeightFile(
        name=f"clip-{model_name}-{tag}".lower(), filename=f"clip-{model_name}-{tag}.safetensors", url=url,
        description=f"open_clip {model_name} ({tag})", purpose="open-vocabulary classifier",
        source=SOURCE_OPEN_CLIP, clip_model=model_name, clip_tag=tag,
    )


def open_clip_cached_file(model_name: str, tag: str) -> Path | None:
    """The file open_clip would load for (model, tag) if it is already in the Hugging Face cache (no network)."""
    try:
        import open_clip
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    config = open_clip.get_pretrained_cfg(model_name, tag) if model_name else {}
    hub = (config or {}).get("hf_hub", "")
    if not hub:
        return None
    repo_id, filename = os.path.split(hub.rstrip("/")) if not hub.endswith("/") else (hub.rstrip("/"), "")
    names = (filename,) if filename else CLIP_FILENAMES
    for name in names:
        try:
            found = try_to_load_from_cache(repo_id=repo_id, filename=name)
        except Exception:  # a malformed cache must not break a lookup
            found = None
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


def clip_download_unreachable(model_name: str, tag: str) -> str | None:
    """Why open_clip could not download (model, tag) now (its server cannot be reached), or None.

    open_clip fetches from the Hugging Face hub when the tag names a hub repository (huggingface_hub then
    retries for half a minute without network), else from the tag's URL.
    """
    import open_clip

    from models.network_check import unreachable_reason

    config = open_clip.get_pretrained_cfg(model_name, tag) or {}
    if config.get("hf_hub"):
        return unreachable_reason()
    return unreachable_reason(config["url"]) if config.get("url") else None


def open_clip_download(weight: WeightFile) -> Path:
    """open_clip's own download of a SOURCE_OPEN_CLIP entry into the Hugging Face cache (`fetch_weight`), after a
    quick check that its server can be reached; the downloaded file. One-line `AVSegError` without network."""
    import open_clip
    from open_clip.pretrained import download_pretrained

    config = open_clip.get_pretrained_cfg(weight.clip_model, weight.clip_tag)
    advice = f"download {weight.url} and put it at {cache_dir() / weight.filename}"
    unreachable = clip_download_unreachable(weight.clip_model, weight.clip_tag)
    if unreachable is not None:
        raise AVSegError(f"cannot download {weight.name}: {unreachable}: {advice}")
    try:
        path = download_pretrained(config)
    except Exception as error:
        if is_network_error(error):
            raise AVSegError(f"cannot download {weight.name} (no network?): {advice}") from error
        raise
    return Path(path)
