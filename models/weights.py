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
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from models.errors import AVSegError

RANDOM = "random"
"""Value of `vggish_weights` / `clip_weights` for freshly initialised weights (tests, benchmarks, experiments)."""

SOURCE_URL = "url"
"""Downloaded from `url` with urllib (`models.download`)."""
SOURCE_OPEN_CLIP = "open_clip"
"""Downloaded by open_clip (`create_model(..., pretrained=tag)`) into the Hugging Face cache."""
SOURCE_MANUAL = "manual"
"""No automatic download: the user fetches the file by hand (`manual_note` says where)."""
SOURCE_HF = "huggingface"
"""A Hugging Face hub repository pinned by commit (`repo_id`, `revision`), fetched as a folder (`models.hub_models`)."""


@dataclass(frozen=True)
class WeightFile:
    """A named weight file: where it comes from, what it is called in the cache and what it is for.

    Attributes:
        name: registry name (`avseg weights fetch NAME`).
        filename: file name in the cache folder (for SOURCE_HF: the FOLDER name in the cache).
        url: where to download it (a web page for manual and Hugging Face weights).
        sha256_prefix: leading hex digits of its SHA-256 when the file name carries them (torch.hub rule).
        description: what the file holds.
        sha256: the full SHA-256 when known.
        approx_size_mb: approximate size in MB (from the parameter count when not measured).
        purpose: what avseg uses it for.
        source: SOURCE_URL, SOURCE_OPEN_CLIP, SOURCE_MANUAL or SOURCE_HF.
        clip_model, clip_tag: open_clip architecture and pretrained tag (SOURCE_OPEN_CLIP only).
        manual_note: for SOURCE_MANUAL, how to get the file.
        repo_id, revision: Hugging Face repository and pinned commit (SOURCE_HF only).
        local_option: the command-line option that takes a local copy instead (e.g. "--vggish-weights"), if any.
    """

    name: str
    filename: str
    url: str
    sha256_prefix: str | None = None
    description: str = ""
    sha256: str | None = None
    approx_size_mb: int | None = None
    purpose: str = ""
    source: str = SOURCE_URL
    clip_model: str | None = None
    clip_tag: str | None = None
    manual_note: str = ""
    repo_id: str | None = None
    revision: str | None = None
    local_option: str | None = None

    def pass_it_hint(self, kind: str = "path") -> str:
        """"(or pass its path with --vggish-weights)" style advice, for one-line messages."""
        return f"(or pass its {kind} with {self.local_option})" if self.local_option else f"(or pass its {kind})"


VGGISH = WeightFile(
    name="vggish",
    filename="vggish-10086976.pth",
    url="https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth",
    sha256_prefix="10086976",
    description="VGGish audio network (torchvggish port of the TensorFlow release), 128-d embeddings",
    approx_size_mb=289,
    purpose="audio encoder of every OV-AVSS model (train, eval, annotate)",
    local_option="--vggish-weights",
)

MASK2FORMER_R50 = WeightFile(
    name="mask2former-r50-coco",
    filename="model_final_3c8ec9.pkl",
    url="https://dl.fbaipublicfiles.com/maskformer/mask2former/coco/instance/maskformer2_R50_bs16_50ep/"
    "model_final_3c8ec9.pkl",
    description="Mask2Former R50 COCO instance segmentation, 50 epochs (model id 47430277_2)",
    approx_size_mb=176,
    purpose="initialisation for training the r50 config (avseg train --init)",
    local_option="--init",
)

MASK2FORMER_SWINB = WeightFile(
    name="mask2former-swinb-coco",
    filename="model_final_83d103.pkl",
    url="https://dl.fbaipublicfiles.com/maskformer/mask2former/coco/instance/maskformer2_swin_base_IN21k_384_bs16_50ep/"
    "model_final_83d103.pkl",
    description="Mask2Former Swin-B (IN21k, 384) COCO instance segmentation, 50 epochs (model id 48558700_6)",
    approx_size_mb=430,
    purpose="initialisation for training the swinb config (avseg train --init)",
    local_option="--init",
)

CLIP_VIT_B_16 = WeightFile(
    name="clip-vit-b-16",
    filename="clip-ViT-B-16-openai.safetensors",
    url="https://huggingface.co/timm/vit_base_patch16_clip_224.openai/resolve/main/open_clip_model.safetensors",
    description="OpenAI CLIP ViT-B/16 (open_clip ViT-B-16, tag openai)",
    approx_size_mb=599,
    purpose="open-vocabulary classifier of the r50 model",
    source=SOURCE_OPEN_CLIP,
    clip_model="ViT-B-16",
    clip_tag="openai",
)

CLIP_VIT_L_14_336 = WeightFile(
    name="clip-vit-l-14-336",
    filename="clip-ViT-L-14-336-openai.safetensors",
    url="https://huggingface.co/timm/vit_large_patch14_clip_336.openai/resolve/main/open_clip_model.safetensors",
    description="OpenAI CLIP ViT-L/14@336px (open_clip ViT-L-14-336, tag openai)",
    approx_size_mb=1712,
    purpose="open-vocabulary classifier of the swinb model",
    source=SOURCE_OPEN_CLIP,
    clip_model="ViT-L-14-336",
    clip_tag="openai",
)

OVAVSS_R50 = WeightFile(
    name="ovavss-r50",
    filename="model_ov_avss_r50.pth",
    url="https://pan.baidu.com/s/1ZLmvfvLKyVMw8jM8IceAeQ",
    description="official trained OV-AVSS, ResNet-50 + CLIP ViT-B/16 (detectron2 checkpoint)",
    approx_size_mb=1080,
    purpose="ready-to-use model for annotate / eval (avseg eval --checkpoint)",
    local_option="--checkpoint",
    source=SOURCE_MANUAL,
    manual_note="shared by the authors on Baidu Netdisk only (extraction code 1234); see github.com/ruohaoguo/ovavss",
)

OVAVSS_SWINB = WeightFile(
    name="ovavss-swinb",
    filename="model_ov_avss_swinb.pth",
    url="https://pan.baidu.com/s/1u8rjJTCq-LrwdZYIzTscvw",
    description="official trained OV-AVSS, Swin-B + CLIP ViT-L/14@336px (detectron2 checkpoint)",
    approx_size_mb=2445,
    purpose="ready-to-use model for annotate / eval (avseg eval --checkpoint)",
    local_option="--checkpoint",
    source=SOURCE_MANUAL,
    manual_note="shared by the authors on Baidu Netdisk only (extraction code 1234); see github.com/ruohaoguo/ovavss",
)

# Hugging Face models of the zero-shot method. The revisions were taken from public code that pins them; they
# could not be checked against the hub when they were written down (no network), so a wrong one shows up as
# "revision ... does not exist" at the first `avseg weights fetch`.


def _hub_weight(name: str, repo_id: str, revision: str, approx_size_mb: int, description: str,
                purpose: str, local_option: str) -> WeightFile:
    return WeightFile(
        name=name, filename=name, url=f"https://huggingface.co/{repo_id}/tree/{revision}", description=description,
        approx_size_mb=approx_size_mb, purpose=purpose, source=SOURCE_HF, repo_id=repo_id, revision=revision,
        local_option=local_option,
    )


CLAP_HTSAT_UNFUSED = _hub_weight(
    "clap-htsat-unfused", "laion/clap-htsat-unfused", "8fa0f1c6d0433df6e97c127f64b2a1d6c0dcda8a", 615,
    "CLAP (HTS-AT audio + RoBERTa text), audio-text similarity",
    "zero-shot: which class names are sounding", "--clap-weights",
)

GROUNDING_DINO_TINY = _hub_weight(
    "grounding-dino-tiny", "IDEA-Research/grounding-dino-tiny", "a2bb814dd30d776dcf7e30523b00659f4f141c71", 690,
    "Grounding DINO (Swin-T), open-vocabulary object detection from text",
    "zero-shot: boxes for class names (default detector)", "--detector-weights",
)

OWLV2_BASE = _hub_weight(
    "owlv2-base", "google/owlv2-base-patch16-ensemble", "cfd3195ba4ea9592eec887ded089f4c08eff231d", 620,
    "OWLv2 (CLIP ViT-B/16, ensemble), open-vocabulary object detection from text",
    "zero-shot: boxes for class names (--detector owlv2)", "--detector-weights",
)

SAM_VIT_BASE = _hub_weight(
    "sam-vit-base", "facebook/sam-vit-base", "70c1a07f894ebb5b307fd9eaaee97b9dfc16068f", 375,
    "Segment Anything (ViT-B), masks from box prompts",
    "zero-shot: masks from boxes", "--sam-weights",
)

REGISTRY: dict[str, WeightFile] = {
    weight.name: weight
    for weight in (VGGISH, CLIP_VIT_B_16, CLIP_VIT_L_14_336, MASK2FORMER_R50, MASK2FORMER_SWINB, OVAVSS_R50,
                   OVAVSS_SWINB, CLAP_HTSAT_UNFUSED, GROUNDING_DINO_TINY, OWLV2_BASE, SAM_VIT_BASE)
}
"""Every named weight, in `avseg weights list` order."""


ZEROSHOT_WEIGHTS = ("clap-htsat-unfused", "grounding-dino-tiny", "sam-vit-base", "clip-vit-b-16")
"""What the zero-shot method loads with its defaults (`avseg weights fetch zeroshot`; OWLv2 only with --detector owlv2)."""


def cache_dir() -> Path:
    """`$AVSEG_CACHE` or `~/.cache/avseg`, as an absolute path.

    Raises:
        AVSegError: the path is a file (or lies under one), so nothing could ever be cached there.
    """
    path = Path(os.environ.get("AVSEG_CACHE") or Path.home() / ".cache" / "avseg").expanduser().absolute()
    for candidate in (path, *path.parents):
        if candidate.exists():
            if not candidate.is_dir():
                where = "is a file" if candidate == path else f"lies under {candidate}, which is a file"
                raise AVSegError(f"the avseg cache folder {path} {where} (set AVSEG_CACHE to a folder)")
            break
    return path


def get_weight(name: str) -> WeightFile:
    """The registry entry called `name`; a usage error listing the names otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        from models.errors import UsageError

        raise UsageError(f"unknown weights {name!r}: choose one of {', '.join(REGISTRY)} (or zeroshot: every "
                         "model of the zero-shot method)") from None


def _torch_hub_checkpoints() -> Path:
    torch_home = Path(os.environ.get("TORCH_HOME") or Path.home() / ".cache" / "torch").expanduser()
    return torch_home / "hub" / "checkpoints"


def _where_to_get(weight: WeightFile) -> str:
    if weight.source == SOURCE_MANUAL:
        return f"get it from {weight.url} ({weight.manual_note})"
    return f"download {weight.url}"


def find_weight(weight: WeightFile, explicit: str | os.PathLike | None = None) -> Path:
    """The path of a weight file: `explicit` if given, else the avseg cache, else torch.hub's cache.

    Never downloads. Raises one `AVSegError` saying where to get the file and where to put it.
    For SOURCE_HF entries the path is a model FOLDER (`explicit` too: a `save_pretrained` folder).
    """
    if weight.source == SOURCE_HF:
        from models.hub_models import check_model_folder, hub_missing_message

        if explicit is not None:
            return check_model_folder(weight, explicit)
        path = cached_path(weight)
        if path is None:
            raise AVSegError(hub_missing_message(weight, None))
        return path
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise AVSegError(f"{weight.name} weights not found: {path}")
        return path
    path = cached_path(weight)
    if path is not None:
        return path
    raise AVSegError(
        f"{weight.name} weights not found: {_where_to_get(weight)} into {cache_dir() / weight.filename} "
        f"(or pass the file's path explicitly)"
    )


def cached_path(weight: WeightFile) -> Path | None:
    """Where the weight already is on this machine (avseg cache, torch.hub cache, Hugging Face cache), or None.

    Never touches the network. SOURCE_HF entries: the model folder (`models.hub_models.cached_hub_model`).
    """
    if weight.source == SOURCE_HF:
        from models.hub_models import cached_hub_model

        return cached_hub_model(weight)
    candidates = [cache_dir() / weight.filename]
    if weight.source == SOURCE_URL:
        candidates.append(_torch_hub_checkpoints() / weight.filename)
    for path in candidates:
        if path.is_file():
            return path
    if weight.source == SOURCE_OPEN_CLIP:
        return open_clip_cached_file(weight.clip_model or "", weight.clip_tag or "")
    return None


def checkpoint_path(value: str | os.PathLike) -> Path:
    """A `--checkpoint` argument as a file: the path itself, or, for the name of an official checkpoint that is
    not a path here (`ovavss-r50`, `ovavss-swinb`), its copy in the avseg cache.

    Raises:
        AVSegError: such a name without the file in the cache: where to get it and where to put it.
    """
    path = Path(value).expanduser()
    weight = REGISTRY.get(str(value))
    if path.exists() or weight is None or weight.source != SOURCE_MANUAL:
        return path
    cached = cached_path(weight)
    if cached is None:
        raise AVSegError(f"{weight.name}: {weight.filename} is not in the avseg cache; {_where_to_get(weight)} and "
                         f"put it at {cache_dir() / weight.filename}")
    problem = cached_file_problem(weight, cached)
    if problem is not None:
        raise AVSegError(f"{weight.name}: the cached {cached} is damaged ({problem}); {_where_to_get(weight)}")
    return cached


TOO_SMALL_FRACTION = 0.5
"""A cached file under this fraction of the weight's approximate size is taken for a damaged one."""


def cached_file_problem(weight: WeightFile, path: Path, check_hash: bool = False) -> str | None:
    """Why the cached copy `path` of `weight` cannot be the right file, or None: far smaller than the weight
    (an interrupted copy, an empty file) or, with `check_hash` and a known SHA-256, another content (this reads
    the whole file). A cheap check for every use; the hash for `avseg weights fetch`."""
    if weight.source == SOURCE_HF or not path.is_file():
        return None
    size = path.stat().st_size
    if weight.approx_size_mb and size < TOO_SMALL_FRACTION * weight.approx_size_mb * 1_000_000:
        return f"it is {size:,} byte{'' if size == 1 else 's'}, the weights are about {weight.approx_size_mb} MB"
    expected = (weight.sha256 or weight.sha256_prefix or "").lower()
    if check_hash and expected:
        import hashlib

        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        if not digest.hexdigest().startswith(expected):
            return f"its SHA-256 starts {digest.hexdigest()[:8]}, not {expected[:8]}"
    return None


@contextlib.contextmanager
def refetch_hint_on_error(weight: WeightFile, path: Path) -> Iterator[None]:
    """Errors reading `path` inside the block say how to replace it when it is avseg's own cached copy."""
    try:
        yield
    except AVSegError as error:
        try:
            cached = Path(path).resolve().parent == cache_dir().resolve() and weight.source == SOURCE_URL
        except OSError:
            cached = False
        if not cached:
            raise
        raise AVSegError(f"{error.message} (avseg's cached copy: `avseg weights fetch --force {weight.name}` "
                         "downloads it again)", exit_code=error.exit_code) from error


def ensure_weight(
    weight: WeightFile,
    explicit: str | os.PathLike | None = None,
    *,
    offline: bool | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """The local path of a weight, downloading it into the cache first when it is missing and allowed.

    Args:
        weight: registry entry (SOURCE_URL entries are downloaded here; open_clip ones by `fetch_weight`;
            SOURCE_HF ones by `models.hub_models.resolve_hub_model`, which returns a folder).
        explicit: a user-given path (used as is, never downloads).
        offline: forbid downloads (also AVSEG_OFFLINE / HF_HUB_OFFLINE).
        progress: byte progress callback for the download.

    Raises:
        AVSegError: offline (or manual) and missing: one line with the file, the URL and the cache path;
            download failures (see `models.download.download_file`).
    """
    from models.download import download_file, offline_reason

    if weight.source == SOURCE_HF:
        from models.hub_models import resolve_hub_model

        return resolve_hub_model(weight, explicit, offline=offline)
    if explicit is not None:
        return find_weight(weight, explicit)
    path = cached_path(weight)
    if path is not None:
        problem = cached_file_problem(weight, path)
        if problem is not None:
            raise AVSegError(f"the cached {weight.name} weights {path} are damaged ({problem}): "
                             f"`avseg weights fetch --force {weight.name}` downloads them again")
        return path
    reason = offline_reason(offline)
    target = cache_dir() / weight.filename
    if weight.source == SOURCE_MANUAL:
        raise AVSegError(
            f"{weight.filename} not found: it cannot be downloaded automatically; {_where_to_get(weight)} and put it "
            f"at {target} {weight.pass_it_hint()}"
        )
    if reason is not None:
        raise AVSegError(
            f"{weight.name} weights {weight.filename} not found and downloads are off ({reason}): download "
            f"{weight.url} and put it at {target} {weight.pass_it_hint()}"
        )
    if weight.source == SOURCE_OPEN_CLIP:
        return fetch_weight(weight, offline=offline, progress=progress)
    return download_file(weight.url, target, sha256=weight.sha256, sha256_prefix=weight.sha256_prefix,
                         progress=progress, what=f"{weight.name} weights")


def fetch_weight(
    weight: WeightFile,
    *,
    offline: bool | None = None,
    force: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """`avseg weights fetch NAME`: make the weight available locally and return its path.

    SOURCE_URL: download into the cache (again with `force`). SOURCE_OPEN_CLIP: open_clip's own download
    into the Hugging Face cache. SOURCE_MANUAL: an error saying where to get the file. SOURCE_HF:
    `snapshot_download` of the pinned commit into the Hugging Face cache (every file again with `force`); the
    returned path is the model folder.
    """
    from models.download import download_file, offline_reason

    target = cache_dir() / weight.filename
    if not force:
        path = cached_path(weight)
        problem = None if path is None else cached_file_problem(weight, path, check_hash=True)
        if path is not None and problem is None:
            return path
        if problem is not None:
            if path != target or weight.source != SOURCE_URL:  # not ours to replace (torch.hub's, a manual file)
                again = (_where_to_get(weight) if weight.source == SOURCE_MANUAL
                         else f"fetch again (`avseg weights fetch {weight.name}`)")
                raise AVSegError(f"the cached {weight.name} weights {path} are damaged ({problem}): delete the file "
                                 f"and {again}")
            force = True  # our own damaged copy: downloaded again (the download replaces it only when complete)
            reason = offline_reason(offline)
            if reason is not None:
                raise AVSegError(f"the cached {weight.name} weights {path} are damaged ({problem}) and downloads "
                                 f"are off ({reason}): download {weight.url} and put it at {target}")
    if weight.source == SOURCE_MANUAL:
        raise AVSegError(
            f"{weight.name} cannot be downloaded automatically: {_where_to_get(weight)} and put it at {target}"
        )
    reason = offline_reason(offline)
    if weight.source == SOURCE_HF:
        from models.hub_models import download_hub_model, hub_missing_message

        if reason is not None:
            raise AVSegError(hub_missing_message(weight, reason))
        return download_hub_model(weight, force=force)
    if reason is not None:
        raise AVSegError(
            f"cannot fetch {weight.name} ({reason}): download {weight.url} and put it at {target}"
        )
    if weight.source == SOURCE_OPEN_CLIP:
        return _open_clip_download(weight)
    return download_file(weight.url, target, sha256=weight.sha256, sha256_prefix=weight.sha256_prefix,
                         progress=progress, what=f"{weight.name} weights")


# ----------------------------------------------------------------------------------------------- CLIP
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


def _open_clip_download(weight: WeightFile) -> Path:
    import open_clip
    from open_clip.pretrained import download_pretrained

    from models.ovavss.clip_model import _is_network_error

    config = open_clip.get_pretrained_cfg(weight.clip_model, weight.clip_tag)
    advice = f"download {weight.url} and put it at {cache_dir() / weight.filename}"
    unreachable = clip_download_unreachable(weight.clip_model, weight.clip_tag)
    if unreachable is not None:
        raise AVSegError(f"cannot download {weight.name}: {unreachable}: {advice}")
    try:
        path = download_pretrained(config)
    except Exception as error:
        if _is_network_error(error):
            raise AVSegError(f"cannot download {weight.name} (no network?): {advice}") from error
        raise
    return Path(path)
