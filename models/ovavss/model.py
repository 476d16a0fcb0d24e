"""The OV-AVSS sound-source localization network: backbone -> fusion + pixel decoder -> mask decoder.

Module tree and parameter names follow the official code so official checkpoints load with the
identity mapping (ovavss-spec.md §10):

    OVAVSS
      backbone                  ResNet-50 / Swin-B / tiny          -> res2..res5
      sem_seg_head
        pixel_decoder           audio-visual fusion + MSDeformAttn encoder + FPN
        predictor               audio-conditioned video mask decoder (sound head + mask head)
      audio_encoder
        audio_backbone          frozen VGGish (not part of training checkpoints)

The open-vocabulary CLIP classifier is separate (`models.ovavss.classifier`): the network itself is
class-agnostic and localizes sounding objects of any category.
"""

from __future__ import annotations


import torch
from torch import nn

from models.ovavss.config import ModelConfig, get_config

TRAINED_PREFIXES = ("backbone.", "sem_seg_head.")
"""State-dict prefixes of the trained part (what training checkpoints hold)."""


class MaskFormerHead(nn.Module):
    """`sem_seg_head`: pixel decoder (with early audio-visual fusion) followed by the mask decoder."""

    def __init__(self, pixel_decoder: nn.Module, predictor: nn.Module) -> None:
        super().__init__()
        self.pixel_decoder = pixel_decoder
        self.predictor = predictor

    def forward(self, features: dict[str, torch.Tensor], audio: torch.Tensor, num_frames: int) -> dict:
        """
        Args:
            features: res2..res5 maps, each (B*T, C_l, H/s_l, W/s_l).
            audio: (B*T, 128) VGGish embedding of each frame's second.
            num_frames: T.
        Returns:
            dict with `pred_logits` (B, Q, 2), `pred_masks` (B, Q, T, H/4, W/4), `aux_outputs`.
        """
        decoded = self.pixel_decoder(features, audio)
        return self.predictor(decoded.multi_scale_features, decoded.mask_features, decoded.audio, num_frames)


class OVAVSS(nn.Module):
    """Class-agnostic audio-visual segmentation network of OV-AVSS.

    Input frames must already be normalised and padded (see `models.data.transforms.normalize_and_pad`).
    """

    def __init__(self, config: ModelConfig, backbone: nn.Module, sem_seg_head: MaskFormerHead,
                 audio_encoder: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.audio_encoder = audio_encoder

    def embed_audio(self, audio_examples: torch.Tensor) -> torch.Tensor:
        """(B, T, 1, 96, 64) log-mel examples, one per frame -> (B, T, 128) frozen VGGish embeddings."""
        b, t = audio_examples.shape[:2]
        return self.audio_encoder(audio_examples.flatten(0, 1)).view(b, t, -1)

    def forward(self, images: torch.Tensor, audio_examples: torch.Tensor | None = None,
                audio_embeddings: torch.Tensor | None = None) -> dict:
        """
        Args:
            images: (B, T, 3, H, W) normalised frames, H and W multiples of 32.
            audio_examples: (B, T, 1, 96, 64) VGGish log-mel example of each frame, or
            audio_embeddings: (B, T, 128) precomputed VGGish embeddings (exactly one of the two).
        Returns:
            `pred_logits` (B, Q, 2): sound head, index 0 = sounding object, 1 = no object;
            `pred_masks` (B, Q, T, H/4, W/4): mask logits, one tube per query;
            `aux_outputs`: the same for each earlier decoder layer (deep supervision); outside training mode
            only their `pred_logits` (see `AudioVideoMaskDecoder.forward`).

        On the CPU the frames enter the backbone in channels-last layout, which every convolution after it
        keeps: oneDNN's convolutions and GroupNorm are ~1.3-1.5x faster that way (benchmarks/RESULTS.md).
        The values are the same up to float rounding.
        """
        if (audio_examples is None) == (audio_embeddings is None):
            raise ValueError("pass exactly one of audio_examples and audio_embeddings")
        b, t = images.shape[:2]
        if audio_embeddings is None:
            audio_embeddings = self.embed_audio(audio_examples)
        frames = images.flatten(0, 1)
        if frames.device.type == "cpu":
            frames = frames.contiguous(memory_format=torch.channels_last)
        features = self.backbone(frames)
        return self.sem_seg_head(features, audio_embeddings.flatten(0, 1).float(), t)

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict without the frozen audio encoder (what training checkpoints store)."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(TRAINED_PREFIXES)}


def build_backbone(config: ModelConfig) -> nn.Module:
    from models.ovavss import backbone as backbones

    if config.backbone == "resnet50":
        return backbones.build_resnet50()
    if config.backbone == "swin_base":
        return backbones.build_swin_base()
    if config.backbone == "tiny":
        return backbones.build_tiny_backbone()
    raise ValueError(f"unknown backbone {config.backbone!r}")


def build_ovavss(config: ModelConfig | str) -> OVAVSS:
    """Build the network for a config (or config name) with freshly initialised weights."""
    from models.ovavss.audio import AudioEncoder
    from models.ovavss.mask_decoder import AudioVideoMaskDecoder
    from models.ovavss.pixel_decoder import MSDeformAttnPixelDecoder

    if isinstance(config, str):
        config = get_config(config)
    backbone = build_backbone(config)
    pixel_decoder = MSDeformAttnPixelDecoder(
        in_channels=dict(backbone.out_channels),
        conv_dim=config.conv_dim,
        mask_dim=config.mask_dim,
        num_encoder_layers=config.encoder_layers,
        encoder_ffn_dim=config.encoder_ffn_dim,
        num_heads=config.msda_heads,
        num_points=config.msda_points,
        audio_dim=config.audio_dim,
        fusion_embed_dim=config.fusion_embed_dim,
        fusion_heads=config.fusion_heads,
        fusion_dropout=config.fusion_dropout,
    )
    predictor = AudioVideoMaskDecoder(
        hidden_dim=config.hidden_dim,
        num_queries=config.num_queries,
        nheads=config.decoder_heads,
        dim_feedforward=config.decoder_ffn_dim,
        dec_layers=config.dec_layers,
        mask_dim=config.mask_dim,
        audio_dim=config.audio_dim,
        num_audio_slots=config.num_audio_slots,
        in_channels=config.conv_dim,
    )
    return OVAVSS(config, backbone, MaskFormerHead(pixel_decoder, predictor), AudioEncoder())


def build_r50() -> OVAVSS:
    """OV-AVSS with ResNet-50 (official `OV_AVSS_R50`)."""
    return build_ovavss("r50")


def build_swinb() -> OVAVSS:
    """OV-AVSS with Swin-B (official `OV_AVSS_SwinB`)."""
    return build_ovavss("swinb")


def build_tiny() -> OVAVSS:
    """A small OV-AVSS for tests and CPU experiments."""
    return build_ovavss("tiny")
