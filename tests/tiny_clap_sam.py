"""Tiny random CLAP and SAM models saved as Hugging Face folders, for tests (no download, < 1 s each).

`save_tiny_clap(folder)` and `save_tiny_sam(folder)` write `config.json`, `model.safetensors` and the processor files
with `save_pretrained`, so `ClapModel/ClapProcessor.from_pretrained(folder)` and `SamModel/SamProcessor
.from_pretrained(folder)` (and the avseg wrappers' `from_folder`) reload both. Weights are random (seeded), so the
outputs mean nothing; tests compare the wrappers with the raw models.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

CLAP_SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")
"""RoBERTa's special tokens, at ids 0..3 as in laion/clap-htsat-unfused (pad id 1 is the text tower's padding_idx)."""

TINY_CLAP_MAX_TEXT_TOKENS = 126
"""Tokens (with <s> and </s>) a text may have in the tiny CLAP: max_position_embeddings 128 - padding offset 2."""


def write_byte_level_bpe_files(folder: Path) -> tuple[Path, Path]:
    """A minimal byte-level BPE vocabulary: `vocab.json` (4 specials, the 256 byte characters, "<mask>") and a
    `merges.txt` with no merges (every byte is its own token). Returns (vocab.json, merges.txt)."""
    from tokenizers.pre_tokenizers import ByteLevel

    tokens = [*CLAP_SPECIAL_TOKENS, *sorted(ByteLevel.alphabet()), "<mask>"]
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    vocab_file.write_text(json.dumps({token: index for index, token in enumerate(tokens)}), encoding="utf-8")
    merges_file.write_text("#version: 0.2\n", encoding="utf-8")
    return vocab_file, merges_file


def save_tiny_clap(folder: Path, seed: int = 0, *, fusion: bool = False) -> Path:
    """Save a tiny random `ClapModel` + `ClapProcessor` in `folder` (created if needed); returns `folder`.

    `fusion=True` gives a laion/clap-htsat-fused style model instead: `enable_fusion` in the audio config and
    `truncation="fusion"` in the feature extractor (4 mel channels per window).

    Config:
        text: ClapTextConfig, vocab 261 (the byte-level tokenizer below), hidden 32, 1 layer, 2 heads, intermediate
            64, max_position_embeddings 128 (texts up to `TINY_CLAP_MAX_TEXT_TOKENS` tokens).
        audio: ClapAudioConfig, HTSAT with spec_size 256 and num_mel_bins 64 (what the real feature extractor's
            64 x 1001 log-mels need), patch 16 / stride 16 (a 16 x 16 patch grid), window 8, depths (1, 1),
            heads (2, 2), patch_embeds_hidden_size 16 -> hidden 32, no fusion (unless `fusion`).
        projection_dim 16; logit_scale_a = log(1 / 0.07) (the real initial value; exp = 14.29).
    Processor: ClapFeatureExtractor with laion/clap-htsat-unfused's settings (64 mels, 48 kHz, hop 480, fft 1024,
    10 s, 50-14000 Hz, truncation "rand_trunc", padding "repeatpad") + RobertaTokenizer (fast) from the minimal
    byte-level vocab of `write_byte_level_bpe_files`, model_max_length 126.
    """
    from transformers import (
        ClapAudioConfig,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapProcessor,
        ClapTextConfig,
        RobertaTokenizer,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab_file, merges_file = write_byte_level_bpe_files(folder)
    tokenizer = RobertaTokenizer(
        vocab=str(vocab_file), merges=str(merges_file), model_max_length=TINY_CLAP_MAX_TEXT_TOKENS
    )
    feature_extractor = ClapFeatureExtractor(
        feature_size=64,
        sampling_rate=48_000,
        hop_length=480,
        max_length_s=10,
        fft_window_size=1024,
        frequency_min=50,
        frequency_max=14_000,
        truncation="fusion" if fusion else "rand_trunc",
        padding="repeatpad",
    )
    text_config = ClapTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=TINY_CLAP_MAX_TEXT_TOKENS + 2,
    )
    audio_config = ClapAudioConfig(
        spec_size=256,
        num_mel_bins=64,
        patch_size=16,
        patch_stride=[16, 16],
        window_size=8,
        depths=[1, 1],
        num_attention_heads=[2, 2],
        patch_embeds_hidden_size=16,
        hidden_size=32,
        enable_fusion=fusion,
    )
    config = ClapConfig(text_config=text_config.to_dict(), audio_config=audio_config.to_dict(), projection_dim=16)
    torch.manual_seed(seed)
    model = ClapModel(config).eval()
    model.save_pretrained(folder)
    ClapProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


TINY_SAM_IMAGE_SIZE = 64
"""Side of the square the tiny SAM's image processor resizes (longest edge) and pads frames to."""


def save_tiny_sam(folder: Path, seed: int = 0) -> Path:
    """Save a tiny random `SamModel` + `SamProcessor` in `folder` (created if needed); returns `folder`.

    Config:
        vision: SamVisionConfig, image_size 64, patch 16 (a 4 x 4 embedding grid), hidden 32, 2 layers (window 2,
            layer 1 global), 2 heads, mlp 64, output_channels 32, num_pos_feats 16, initializer_range 0.02 (the
            default 1e-10 would make every image embedding almost the same).
        prompt encoder: hidden 32, image_size 64, patch 16, mask_input_channels 4.
        mask decoder: hidden 32, 2 layers, 2 heads, mlp 64, IoU head depth 2 / hidden 32 (16 x 16 low-res masks).
    Processor: SamImageProcessor with size {"longest_edge": 64}, pad_size 64 x 64, mask_size {"longest_edge": 16},
    mask_pad_size 16 x 16 (the real defaults divided by 16).
    """
    from transformers import (
        SamConfig,
        SamImageProcessor,
        SamMaskDecoderConfig,
        SamModel,
        SamProcessor,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    size = TINY_SAM_IMAGE_SIZE
    vision = SamVisionConfig(
        hidden_size=32,
        output_channels=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=size,
        patch_size=16,
        window_size=2,
        global_attn_indexes=[1],
        num_pos_feats=16,
        mlp_dim=64,
        initializer_range=0.02,
    )
    prompt_encoder = SamPromptEncoderConfig(hidden_size=32, image_size=size, patch_size=16, mask_input_channels=4)
    mask_decoder = SamMaskDecoderConfig(
        hidden_size=32, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2, iou_head_depth=2, iou_head_hidden_dim=32
    )
    config = SamConfig(
        vision_config=vision.to_dict(),
        prompt_encoder_config=prompt_encoder.to_dict(),
        mask_decoder_config=mask_decoder.to_dict(),
    )
    torch.manual_seed(seed)
    model = SamModel(config).eval()
    model.save_pretrained(folder)
    image_processor = SamImageProcessor(
        size={"longest_edge": size},
        pad_size={"height": size, "width": size},
        mask_size={"longest_edge": size // 4},
        mask_pad_size={"height": size // 4, "width": size // 4},
    )
    SamProcessor(image_processor=image_processor).save_pretrained(folder)
    return folder
