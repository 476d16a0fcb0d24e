"""The registry of named weight files: `WeightFile`, one constant per known weight, `REGISTRY` and `get_weight`.

Each entry says where a file comes from (`source`: a URL, open_clip, by hand, or a pinned Hugging Face
repository), its file (or folder) name in the avseg cache, its size and what avseg uses it for. Nothing here
touches the disk or the network: finding and downloading are `models.weights_cache`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def get_weight(name: str) -> WeightFile:
    """The registry entry called `name`; a usage error listing the names otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        from models.errors import UsageError

        raise UsageError(f"unknown weights {name!r}: choose one of {', '.join(REGISTRY)} (or zeroshot: every "
                         "model of the zero-shot method)") from None
