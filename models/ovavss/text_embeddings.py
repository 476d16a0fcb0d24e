"""Class-name embeddings for the open-vocabulary classifier, with a disk cache.

Per class name (ovavss-spec.md §7.2): for each template, tokenize the filled prompt, `encode_text`,
L2-normalise; average over the templates; L2-normalise again. All names x templates are encoded in a few
large batches. Because a vocabulary is typically reused across runs, the vectors are cached on disk:
one small `.pt` file per (CLIP model, weights, template set) holding a dict name -> (D,) vector, written
atomically, under `$AVSEG_CACHE/text-embeddings/`.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.atomic import atomic_path
from models.errors import AVSegError
from models.ovavss.clip_model import LoadedClip
from models.ovavss.prompts import (
    VILD_TEMPLATES, fill_template, first_clip_duplicate, template_set_id, validate_templates,
)
from models.weights import cache_dir

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1


def validate_class_names(names: Iterable[str]) -> tuple[str, ...]:
    """The vocabulary as a tuple, checked; names are used verbatim (labels are vocabulary indices).

    Raises:
        TypeError: `names` is one string (not a list of names), an unordered set, or holds a non-string.
        AVSegError: the vocabulary is empty, a name is empty, or two names are the same to CLIP (equal after
            lower-casing and collapsing whitespace: they would get the same embedding and share one object's
            probability between them).
    """
    if isinstance(names, (str, bytes)):
        raise TypeError(f"the vocabulary must be a list of class names, not one string: {names!r}"
                        + (" (split it at the commas)" if isinstance(names, str) and "," in names else ""))
    if isinstance(names, (set, frozenset)):
        raise TypeError("the vocabulary must be ordered (a list or tuple), not a set: label values follow its order")
    if names is None or not isinstance(names, Iterable):
        raise TypeError(f"the vocabulary must be a list of class names, got {type(names).__name__}")
    names = tuple(names)
    if not names:
        raise AVSegError("the vocabulary is empty: give at least one class name")
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"class names must be strings, got {type(name).__name__} {name!r}")
        if not name.strip():
            raise AVSegError(f"empty class name in the vocabulary: {name!r}")
    same = first_clip_duplicate(names)
    if same is not None:
        if same[0] == same[1]:
            raise AVSegError(f"class name {same[0]!r} appears twice in the vocabulary")
        raise AVSegError(f"class names {same[0]!r} and {same[1]!r} are the same to CLIP (it reads text in "
                         "lower case with single spaces): give each class once")
    return names


@torch.no_grad()
def encode_class_names(
    model: nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    names: Sequence[str],
    templates: Sequence[str] = VILD_TEMPLATES,
    batch_size: int = 1024,
) -> torch.Tensor:
    """Prompt-ensembled text embeddings, computed without any cache.

    Args:
        model: a CLIP with `encode_text((N, context_length) long) -> (N, D)`.
        tokenizer: list of N strings -> (N, context_length) long.
        names: K class names, inserted verbatim into every template.
        templates: S templates with one `{}` each.
        batch_size: prompts per `encode_text` call.

    Returns:
        (K, D) float32 unit vectors on the model's device.
    """
    names = tuple(names)
    templates = tuple(templates)
    device = next(model.parameters()).device
    prompts = [fill_template(template, name) for name in names for template in templates]
    features = []
    for start in range(0, len(prompts), batch_size):
        tokens = tokenizer(prompts[start : start + batch_size]).to(device)
        features.append(F.normalize(model.encode_text(tokens).float(), dim=-1))
    per_prompt = torch.cat(features).view(len(names), len(templates), -1)  # (K, S, D)
    return F.normalize(per_prompt.mean(dim=1), dim=-1)


class TextEmbeddingCache:
    """Embeddings on disk: `<folder>/<model>__<weights>__<templates>.pt` = {name: (D,) float32 tensor}.

    Args:
        folder: where the files live (default `$AVSEG_CACHE/text-embeddings`).
    """

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else cache_dir() / "text-embeddings"

    def path_for(self, model_name: str, weights_id: str, templates: Sequence[str]) -> Path:
        """The cache file of one (model, weights, template set)."""
        stem = f"{_slug(model_name)}__{_slug(weights_id)}__{template_set_id(templates)}"
        return self.folder / f"{stem}.pt"

    def _key(self, model_name: str, weights_id: str, templates: Sequence[str]) -> dict:
        return {"format": CACHE_FORMAT, "model_name": model_name, "weights_id": weights_id, "templates": list(templates)}

    def load(self, model_name: str, weights_id: str, templates: Sequence[str]) -> dict[str, torch.Tensor]:
        """All cached vectors of this (model, weights, templates); {} when there is no usable file."""
        path = self.path_for(model_name, weights_id, templates)
        if not path.is_file():
            return {}
        try:
            content = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # a corrupt or foreign file: recompute and overwrite it
            logger.warning("ignoring unreadable text-embedding cache %s: %s", path, error)
            return {}
        key = self._key(model_name, weights_id, templates)
        if not isinstance(content, dict) or content.get("key") != key or not isinstance(content.get("embeddings"), dict):
            return {}
        return dict(content["embeddings"])

    def save(
        self, model_name: str, weights_id: str, templates: Sequence[str], embeddings: dict[str, torch.Tensor]
    ) -> Path:
        """Write (replace) the file of this (model, weights, templates) atomically."""
        path = self.path_for(model_name, weights_id, templates)
        content = {
            "key": self._key(model_name, weights_id, templates),
            "embeddings": {name: vector.detach().to("cpu", torch.float32).clone() for name, vector in embeddings.items()},
        }
        with atomic_path(path) as tmp:
            torch.save(content, tmp)
        return path


def class_name_embeddings(
    clip: LoadedClip,
    names: Sequence[str],
    templates: Sequence[str] = VILD_TEMPLATES,
    cache: TextEmbeddingCache | None = None,
    use_cache: bool = True,
    batch_size: int = 1024,
) -> torch.Tensor:
    """(K, D) float32 unit text embeddings of `names`, in order, on the CLIP model's device.

    Names already in the cache are not encoded again; new ones are encoded in one batched pass and added
    to the cache file. Random-weight models (`clip.weights_id is None`) are never cached.

    Args:
        clip: the loaded CLIP (model, tokenizer, identity of its weights).
        names: K class names, verbatim.
        templates: the prompt template set.
        cache: where to cache (default folder when None).
        use_cache: False to neither read nor write the cache.
        batch_size: prompts per `encode_text` call.
    """
    names = validate_class_names(names)
    templates = validate_templates(templates)
    device = next(clip.model.parameters()).device
    if not use_cache or clip.weights_id is None:
        return encode_class_names(clip.model, clip.tokenizer, names, templates, batch_size)

    cache = cache if cache is not None else TextEmbeddingCache()
    stored = cache.load(clip.model_name, clip.weights_id, templates)
    missing = [name for name in names if name not in stored]
    if missing:
        encoded = encode_class_names(clip.model, clip.tokenizer, missing, templates, batch_size).cpu()
        stored.update({name: vector for name, vector in zip(missing, encoded)})
        try:
            cache.save(clip.model_name, clip.weights_id, templates, stored)
        except AVSegError as error:  # a read-only cache must not stop a run
            logger.warning("text-embedding cache not written: %s", error)
    return torch.stack([stored[name] for name in names]).to(device, torch.float32)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "_"
