"""Model and training configurations as frozen dataclasses; defaults are the official OV-AVSS values.

`CONFIGS` maps the names users type (`--config r50|swinb|tiny`) to a `ModelConfig`. `tiny` is a small
configuration for tests and CPU experiments: same architecture, fewer layers, queries and channels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from models.errors import UsageError


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the network. Defaults = official R50 config (ovavss-spec.md §2-§5)."""

    name: str = "r50"
    backbone: str = "resnet50"  # "resnet50" | "swin_base" | "tiny"
    # pixel decoder (§4) and fusion (§3)
    conv_dim: int = 256
    mask_dim: int = 256
    encoder_layers: int = 6
    encoder_ffn_dim: int = 1024
    msda_heads: int = 8
    msda_points: int = 4
    audio_dim: int = 128
    fusion_embed_dim: int = 1024
    fusion_heads: int = 8
    fusion_dropout: float = 0.1
    # transformer decoder (§5)
    hidden_dim: int = 256
    num_queries: int = 100
    decoder_heads: int = 8
    decoder_ffn_dim: int = 2048
    dec_layers: int = 9
    num_audio_slots: int = 5
    # inputs (§1)
    clip_len: int = 5
    size_divisibility: int = 32
    train_short_sides: tuple[int, ...] = (240, 360, 480)
    test_short_side: int = 360
    max_size: int = 1333
    # open-vocabulary classifier (§7)
    clip_model: str = "ViT-B-16"
    clip_pretrained: str = "openai"
    clip_input_size: int = 224

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in known}
        return cls(**values)


@dataclass(frozen=True)
class TrainConfig:
    """The official training recipe (ovavss-spec.md §6, §9)."""

    base_lr: float = 1e-4
    weight_decay: float = 0.05
    weight_decay_norm: float = 0.0
    weight_decay_embed: float = 0.0
    backbone_multiplier: float = 0.1
    clip_grad_norm: float = 0.01
    max_iter: int = 96228
    lr_steps: tuple[int, ...] = (72171, 88209)
    lr_gamma: float = 0.1
    warmup_iters: int = 10
    warmup_factor: float = 1.0
    batch_size: int = 1
    checkpoint_period: int = 2000
    log_period: int = 20
    seed: int = 42
    flip_prob: float = 0.5
    # criterion
    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    no_object_weight: float = 0.1
    train_num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in known}
        return cls(**values)


R50 = ModelConfig()

SWINB = ModelConfig(
    name="swinb",
    backbone="swin_base",
    train_short_sides=(240, 360),
    clip_model="ViT-L-14-336",
    clip_pretrained="openai",
    clip_input_size=336,
)

TINY = ModelConfig(
    name="tiny",
    backbone="tiny",
    conv_dim=64,
    mask_dim=64,
    encoder_layers=2,
    encoder_ffn_dim=128,
    msda_heads=4,
    msda_points=2,
    fusion_embed_dim=128,
    fusion_heads=4,
    fusion_dropout=0.0,
    hidden_dim=64,
    num_queries=10,
    decoder_heads=4,
    decoder_ffn_dim=128,
    dec_layers=3,
    train_short_sides=(64,),
    test_short_side=64,
    max_size=1333,
)

CONFIGS: dict[str, ModelConfig] = {"r50": R50, "swinb": SWINB, "tiny": TINY}

TRAIN_CONFIGS: dict[str, TrainConfig] = {
    "r50": TrainConfig(),
    "swinb": TrainConfig(),
    "tiny": TrainConfig(
        base_lr=1e-3, clip_grad_norm=1.0, max_iter=600, lr_steps=(450, 550), checkpoint_period=200,
        log_period=10, train_num_points=1024, backbone_multiplier=1.0,
    ),
}


def get_config(name: str) -> ModelConfig:
    """The model config called `name`; a usage error listing the choices otherwise."""
    try:
        return CONFIGS[name]
    except KeyError:
        raise UsageError(f"unknown config {name!r}: choose one of {', '.join(CONFIGS)}") from None
