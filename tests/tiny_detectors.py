"""Tiny random Grounding DINO and OWLv2 folders for tests (configs, vocabularies and weights made here, no download).

Each builder writes a folder that `from_pretrained(folder, local_files_only=True)` reloads as model AND processor,
exactly like a real Hugging Face snapshot, and returns that folder. Weights are random (seeded), so scores are
meaningless but deterministic; what the tests check is the plumbing (token spans, box scaling, batching).

* `save_tiny_grounding_dino`: GroundingDinoForObjectDetection with a 4-stage Swin (embed_dim 16, depths [1, 1, 1, 1],
  window 4, out_indices [2, 3, 4] + one extra level = 4 feature levels), a 1-layer BERT (hidden 32) over a 1030-word
  vocab.txt laid out so that [CLS] = 101, [SEP] = 102, "." = 1012 and "?" = 1029 (the ids Grounding DINO hard-codes as
  phrase delimiters), d_model 32, 1 encoder + 2 decoder layers (the shared box head needs a second layer to tie to),
  20 queries, max_text_len 256; the decoder's output LayerNorm is scaled by 0.2 (random logits would all saturate to
  1). Processor = GroundingDinoProcessor(GroundingDinoImageProcessor(shortest_edge 64, longest_edge 96), BertTokenizer
  (fast)). Words in the vocabulary: GROUNDING_DINO_WORDS; anything else splits into characters.
* `save_tiny_owlv2`: Owlv2ForObjectDetection with 1-layer text and vision towers (hidden 32, projection 32, vision
  image_size 64, patch 16 -> 16 boxes per image, text length 16); the box head's last layer is scaled by 0.01 and the
  class head's logit scale/shift by 0.1, so boxes stay near their patch and scores spread over (0.2, 0.6).
  Processor = Owlv2Processor(Owlv2ImageProcessor 64x64, CLIPTokenizer (fast) from a byte-level vocab.json (256 bytes,
  256 bytes + "</w>", the OWL_MERGES tokens, <|startoftext|>, and <|endoftext|> last so that the text tower, which
  pools at the highest id, pools at EOS) and its merges.txt; pad token "!" = id 0 as in the real OWLv2 tokenizer).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

GROUNDING_DINO_WORDS = ("dog", "guitar", "car", "man", "baby", "piano", "bird", "cat")
"""Whole words in the tiny BERT vocabulary (everything else splits into single characters)."""

OWL_MERGES = (("d", "o"), ("do", "g</w>"), ("c", "a"), ("ca", "t</w>"))
"""The tiny CLIP tokenizer's BPE merges: "dog" and "cat" become single tokens."""


def save_tiny_grounding_dino(folder: Path, seed: int = 0, num_queries: int = 20) -> Path:
    """Write a tiny random Grounding DINO (model + processor) into `folder` (config in the module docstring)."""
    import torch
    from transformers import (
        BertConfig,
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = _bert_vocab()
    with tempfile.TemporaryDirectory() as scratch:
        vocab_file = Path(scratch) / "vocab.txt"
        vocab_file.write_text("".join(token + "\n" for token in vocab), encoding="utf-8")
        tokenizer = BertTokenizer.from_pretrained(scratch)
    backbone = SwinConfig(
        image_size=64,
        patch_size=4,
        embed_dim=16,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 2, 2],
        window_size=4,
        out_indices=[2, 3, 4],
    )
    text = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
    )
    config = GroundingDinoConfig(
        backbone_config=backbone,
        text_config=text,
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_n_points=2,
        decoder_n_points=2,
        num_queries=num_queries,
        num_feature_levels=4,
    )
    torch.manual_seed(seed)
    model = GroundingDinoForObjectDetection(config).eval()
    with torch.no_grad():  # random logits are +-30: shrink the decoder output so sigmoid scores spread over (0.5, 1)
        model.model.decoder.layer_norm.weight.mul_(0.2)
        model.model.decoder.layer_norm.bias.mul_(0.2)
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 96})
    processor = GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def save_tiny_owlv2(folder: Path, seed: int = 0) -> Path:
    """Write a tiny random OWLv2 (model + processor) into `folder` (config in the module docstring)."""
    import torch
    from transformers import CLIPTokenizer, Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = _clip_vocab_and_merges()
    with tempfile.TemporaryDirectory() as scratch:
        Path(scratch, "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        merge_lines = ["#version: 0.2", *(f"{left} {right}" for left, right in merges)]
        Path(scratch, "merges.txt").write_text("\n".join(merge_lines) + "\n", encoding="utf-8")
        tokenizer = CLIPTokenizer.from_pretrained(scratch, pad_token="!", model_max_length=16)
    bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    config = Owlv2Config(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
            "pad_token_id": 0,
            "bos_token_id": bos,
            "eos_token_id": eos,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 64,
            "patch_size": 16,
        },
        projection_dim=32,
    )
    torch.manual_seed(seed)
    model = Owlv2ForObjectDetection(config).eval()
    with torch.no_grad():  # random heads saturate: shrink them so boxes stay near their patch and scores spread
        model.box_head.dense2.weight.mul_(0.01)
        model.box_head.dense2.bias.zero_()
        model.class_head.logit_scale.weight.mul_(0.1)
        model.class_head.logit_shift.weight.mul_(0.1)
    image_processor = Owlv2ImageProcessor(size={"height": 64, "width": 64})
    processor = Owlv2Processor(image_processor=image_processor, tokenizer=tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _bert_vocab() -> list[str]:
    """1030 WordPiece tokens: specials and delimiters at the real bert-base-uncased ids, characters, a few words."""
    size = 1030
    fixed = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]", 1012: ".", 1029: "?"}
    characters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    punctuation = list("-,'!/()&")
    wanted = characters + punctuation + ["##" + c for c in characters] + list(GROUNDING_DINO_WORDS)
    free = (i for i in range(size) if i not in fixed and i >= 104)
    vocab = {**fixed, **dict(zip(free, wanted))}
    return [vocab.get(i, f"[unused{i}]") for i in range(size)]


def _clip_vocab_and_merges() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """CLIP-style byte-level vocabulary: bytes, bytes + "</w>", merged tokens, then <|startoftext|>, <|endoftext|>."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())  # the printable stand-ins of bytes 0..255, in CLIP's order
    tokens = symbols + [s + "</w>" for s in symbols] + [left + right for left, right in OWL_MERGES]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}, OWL_MERGES
