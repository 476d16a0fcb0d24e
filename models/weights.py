"""Where weights live: a registry of named weight files, one cache folder, downloads and clear messages.

Cache folder: `$AVSEG_CACHE`, default `~/.cache/avseg`. Every weight has a name (`avseg weights list`):

- `vggish`: downloaded with urllib into the cache, checked against the SHA-256 prefix in its file name;
- `mask2former-r50-coco`, `mask2former-swinb-coco`: training initialisation (`avseg train --init`),
  downloaded into the cache (no checksum is published; the transfer length is checked);
- `clip-vit-b-16`, `clip-vit-l-14-336`: OpenAI CLIP through open_clip's own download (`pretrained="openai"`,
  Hugging Face cache); a copy placed in the avseg cache under the listed file name is used first;
- `ovavss-r50`, `ovavss-swinb`: the official trained OV-AVSS checkpoints, shared only on Baidu Netdisk, so
  never downloaded: put the file in the cache (then `--checkpoint ovavss-r50` finds it) or pass its path;
  `avseg weights convert` (`models.official_conversion`) makes it load faster;
- `clap-htsat-unfused`, `grounding-dino-tiny`, `owlv2-base`, `sam-vit-base`: Hugging Face `transformers` models of
  the zero-shot method, pinned by commit; each is a FOLDER (`models.hub_models`): a copy in the avseg cache under
  the entry's name is used first, else the Hugging Face cache, else `snapshot_download` of that commit.

Offline (`offline=True`, `AVSEG_OFFLINE=1` or `HF_HUB_OFFLINE=1`) a missing file fails at once with one line
naming the file, the URL to get it from and the path to put it at. Local paths always work offline.

This module only gathers the public names of `models.weights_registry` (the registry), `models.weights_cache`
(the cache folder, lookups, checks and downloads) and `models.clip_weights` (open_clip weight files). A name
patched here reaches only code that looks it up here; code inside those modules sees a patch there (e.g.
`models.clip_weights.open_clip_cached_file`, used by `models.weights_cache.cached_path`).
"""

from __future__ import annotations

from models.clip_weights import (
    CLIP_FILENAMES,
    clip_download_unreachable,
    clip_weight,
    open_clip_cached_file,
)
from models.weights_cache import (
    TOO_SMALL_FRACTION,
    cache_dir,
    cached_file_problem,
    cached_path,
    checkpoint_path,
    ensure_weight,
    fetch_weight,
    find_weight,
    refetch_hint_on_error,
)
from models.weights_registry import (
    CLAP_HTSAT_UNFUSED,
    CLIP_VIT_B_16,
    CLIP_VIT_L_14_336,
    GROUNDING_DINO_TINY,
    MASK2FORMER_R50,
    MASK2FORMER_SWINB,
    OVAVSS_R50,
    OVAVSS_SWINB,
    OWLV2_BASE,
    RANDOM,
    REGISTRY,
    SAM_VIT_BASE,
    SOURCE_HF,
    SOURCE_MANUAL,
    SOURCE_OPEN_CLIP,
    SOURCE_URL,
    VGGISH,
    ZEROSHOT_WEIGHTS,
    WeightFile,
    get_weight,
)

__all__ = [
    # registry (models.weights_registry)
    "RANDOM", "SOURCE_URL", "SOURCE_OPEN_CLIP", "SOURCE_MANUAL", "SOURCE_HF", "WeightFile",
    "VGGISH", "MASK2FORMER_R50", "MASK2FORMER_SWINB", "CLIP_VIT_B_16", "CLIP_VIT_L_14_336", "OVAVSS_R50",
    "OVAVSS_SWINB", "CLAP_HTSAT_UNFUSED", "GROUNDING_DINO_TINY", "OWLV2_BASE", "SAM_VIT_BASE",
    "REGISTRY", "ZEROSHOT_WEIGHTS", "get_weight",
    # cache folder, lookups and downloads (models.weights_cache)
    "cache_dir", "find_weight", "cached_path", "checkpoint_path", "TOO_SMALL_FRACTION", "cached_file_problem",
    "refetch_hint_on_error", "ensure_weight", "fetch_weight",
    # open_clip weight files (models.clip_weights)
    "CLIP_FILENAMES", "clip_weight", "open_clip_cached_file", "clip_download_unreachable",
]
