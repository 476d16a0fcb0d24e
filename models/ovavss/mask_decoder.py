"""The audio-conditioned video mask decoder (official `AudioVideoMultiScaleMaskedTransformerDecoder`).

A Mask2Former video decoder whose Q learned queries are shared by the T frames of a clip (one query = one
mask tube), with audio entering through cross-attention to the T per-frame audio tokens
(ovavss-spec.md §5):

    queries --v2a--> prediction 0 ; audio --a2a (once)-->
    for layer i: masked cross-attn (level i mod 3) -> self-attn -> audio cross-attn -> FFN -> prediction i+1

Each prediction gives a 2-way "sound" logit per query (`class_embed`; index 0 = sounding object,
1 = no object) and mask logits per query and frame; the masks of one prediction, thresholded, restrict the
visual cross-attention of the next layer.

Difference from the official code: the audio tokens are laid out per video, (B·T, C) -> (T, B, C), so a
batch of several clips gives each clip the same result as running it alone (the official reshape mixes
videos when B > 1; with its batch size of 1 both agree). Any T <= `num_audio_slots` is accepted.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.ovavss.position_encoding import PositionEmbeddingSine3D
from models.ovavss.transformer_layers import MLP, CrossAttentionLayer, FFNLayer, SelfAttentionLayer


def attention_mask_from_mask_logits(
    mask_logits: torch.Tensor, target_size: tuple[int, int], num_heads: int
) -> torch.Tensor:
    """Turn predicted mask logits into the blocking mask of the next masked cross-attention.

    Args:
        mask_logits: (B, Q, T, H, W) mask logits at mask-feature resolution.
        target_size: (h, w) of the feature level the next layer attends to.
        num_heads: attention heads; the mask is repeated per head.

    Returns:
        bool (B * num_heads, Q, T * h * w), detached; True = blocked (bilinearly resized probability < 0.5).
        Row order (batch-major, then head) is the one `nn.MultiheadAttention` expects.
    """
    batch, num_queries, num_frames = mask_logits.shape[:3]
    resized = F.interpolate(
        mask_logits.flatten(0, 1), size=tuple(target_size), mode="bilinear", align_corners=False
    )  # (B*Q, T, h, w)
    blocked = resized.sigmoid().reshape(batch, num_queries, -1) < 0.5  # (B, Q, T*h*w)
    blocked = blocked[:, None].expand(-1, num_heads, -1, -1).flatten(0, 1)
    return blocked.detach()


def unblock_fully_masked_rows(attn_mask: torch.Tensor) -> torch.Tensor:
    """(N, Q, S) bool -> same shape: rows blocked at every position become all False (attend everywhere).

    Without this a query whose predicted mask is empty would have no key to attend to (NaN softmax).
    """
    fully_blocked = attn_mask.all(dim=-1, keepdim=True)
    return attn_mask & ~fully_blocked


def _clip_to_sequence(maps: torch.Tensor, batch: int, num_frames: int) -> torch.Tensor:
    """(B·T, C, h, w) frame maps -> (T·h·w, B, C), frame index outermost, then row-major pixels."""
    channels = maps.shape[1]
    return maps.reshape(batch, num_frames, channels, -1).permute(1, 3, 0, 2).flatten(0, 1)


class AudioVideoMaskDecoder(nn.Module):
    """Audio-conditioned Mask2Former video decoder with its sound head and mask head.

    Args:
        hidden_dim: channels C of queries, memory and audio tokens.
        num_queries: Q learned queries (mask tubes) per clip.
        nheads: attention heads in every attention layer.
        dim_feedforward: hidden width of the FFN blocks.
        dec_layers: number of decoder layers (the official config's DEC_LAYERS minus one).
        mask_dim: channels of the mask features and of the mask embeddings.
        audio_dim: channels of the incoming per-frame audio vectors (VGGish: 128).
        num_audio_slots: rows of `audio_query_embed` = the largest number of frames per clip.
        num_feature_levels: number of multi-scale feature maps attended to in turn.
        num_classes: foreground classes of the sound head; `class_embed` has num_classes + 1 outputs.
        in_channels: channels of the multi-scale features; None = hidden_dim (then no input projection has
            parameters, as in the official configs); otherwise `input_proj.{i}` = Conv2d 1x1 in -> C.
    """

    def __init__(
        self,
        hidden_dim: int = 256,
        num_queries: int = 100,
        nheads: int = 8,
        dim_feedforward: int = 2048,
        dec_layers: int = 9,
        mask_dim: int = 256,
        audio_dim: int = 128,
        num_audio_slots: int = 5,
        num_feature_levels: int = 3,
        num_classes: int = 1,
        in_channels: int | None = None,
    ) -> None:
        super().__init__()
        if hidden_dim % 2 != 0:
            raise ValueError(f"hidden_dim must be even for the sine positional encoding, got {hidden_dim}")
        if hidden_dim % nheads != 0:
            raise ValueError(f"hidden_dim {hidden_dim} is not divisible by nheads {nheads}")
        self.hidden_dim = hidden_dim
        self.num_queries = num_queries
        self.num_heads = nheads
        self.num_layers = dec_layers
        self.mask_dim = mask_dim
        self.audio_dim = audio_dim
        self.num_audio_slots = num_audio_slots
        self.num_feature_levels = num_feature_levels
        self.in_channels = hidden_dim if in_channels is None else in_channels

        self.pe_layer = PositionEmbeddingSine3D(hidden_dim // 2)

        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, nheads) for _ in range(dec_layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, nheads) for _ in range(dec_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(hidden_dim, dim_feedforward) for _ in range(dec_layers)
        )
        self.transformer_audio_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, nheads) for _ in range(dec_layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)

        self.query_feat = nn.Embedding(num_queries, hidden_dim)  # content of the queries
        self.query_embed = nn.Embedding(num_queries, hidden_dim)  # positional part of the queries
        self.audio_query_embed = nn.Embedding(num_audio_slots, hidden_dim)  # position of each frame's audio
        self.level_embed = nn.Embedding(num_feature_levels, hidden_dim)

        self.input_proj = nn.ModuleList()
        for _ in range(num_feature_levels):
            if self.in_channels != hidden_dim:
                projection = nn.Conv2d(self.in_channels, hidden_dim, kernel_size=1)
                nn.init.kaiming_uniform_(projection.weight, a=1)  # detectron2 c2_xavier_fill
                nn.init.constant_(projection.bias, 0.0)
                self.input_proj.append(projection)
            else:
                self.input_proj.append(nn.Identity())

        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)
        self.audio_proj = MLP(audio_dim, hidden_dim, hidden_dim, 2)
        self.v2a = CrossAttentionLayer(hidden_dim, nheads)
        self.a2a = SelfAttentionLayer(hidden_dim, nheads)

    def _check_inputs(
        self,
        multi_scale_features: list[torch.Tensor],
        mask_features: torch.Tensor,
        audio: torch.Tensor,
        num_frames: int,
    ) -> None:
        if len(multi_scale_features) != self.num_feature_levels:
            raise ValueError(
                f"expected {self.num_feature_levels} multi-scale feature maps, got {len(multi_scale_features)}"
            )
        if num_frames < 1 or num_frames > self.num_audio_slots:
            raise ValueError(
                f"num_frames={num_frames} is not supported: the decoder has {self.num_audio_slots} audio slots "
                f"(clips of 1..{self.num_audio_slots} frames)"
            )
        if mask_features.dim() != 4 or mask_features.shape[1] != self.mask_dim:
            raise ValueError(f"mask_features must be (B*T, {self.mask_dim}, H, W), got {tuple(mask_features.shape)}")
        frames = mask_features.shape[0]
        if frames % num_frames != 0:
            raise ValueError(f"{frames} frames in the batch are not a whole number of clips of {num_frames} frames")
        for level, feature in enumerate(multi_scale_features):
            if feature.dim() != 4 or feature.shape[0] != frames or feature.shape[1] != self.in_channels:
                raise ValueError(
                    f"multi-scale feature {level} must be ({frames}, {self.in_channels}, h, w), "
                    f"got {tuple(feature.shape)}"
                )
        if tuple(audio.shape) != (frames, self.audio_dim):
            raise ValueError(f"audio must be ({frames}, {self.audio_dim}), got {tuple(audio.shape)}")

    def forward_prediction_heads(
        self, output: torch.Tensor, mask_features: torch.Tensor, attn_mask_target_size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sound logits, mask logits and the next layer's attention mask from the current queries.

        Args:
            output: queries (Q, B, C).
            mask_features: (B, T, mask_dim, H, W), normally the stride-4 mask features; features already
                resized to `attn_mask_target_size` give the same attention mask (resizing and the per-pixel
                dot product are both linear, so they commute) at a fraction of the cost.
            attn_mask_target_size: (h, w) of the level the next cross-attention attends to.

        Returns:
            sound_logits (B, Q, num_classes + 1), mask_logits (B, Q, T, H, W),
            attn_mask bool (B * nheads, Q, T * h * w) (True = blocked, detached).
        """
        decoded = self.decoder_norm(output).transpose(0, 1)  # (B, Q, C)
        sound_logits = self.class_embed(decoded)
        mask_embeddings = self.mask_embed(decoded)
        mask_logits = torch.einsum("bqc,btchw->bqthw", mask_embeddings, mask_features)
        attn_mask = attention_mask_from_mask_logits(mask_logits, attn_mask_target_size, self.num_heads)
        return sound_logits, mask_logits, attn_mask

    def forward(
        self,
        multi_scale_features: list[torch.Tensor],
        mask_features: torch.Tensor,
        audio: torch.Tensor,
        num_frames: int,
        aux_masks: bool | None = None,
    ) -> dict:
        """Decode B clips of T frames each (frames of one clip are consecutive in the batch).

        Args:
            multi_scale_features: `num_feature_levels` maps (B·T, in_channels, h_l, w_l), coarse to fine
                (official: s32, s16, s8).
            mask_features: (B·T, mask_dim, H4, W4) per-pixel embeddings (stride 4).
            audio: (B·T, audio_dim) one audio vector per frame.
            num_frames: T, frames per clip (1 <= T <= num_audio_slots).
            aux_masks: whether the earlier predictions get stride-4 mask logits (needed for deep
                supervision). Default: in training mode only. Without them each intermediate mask is computed
                directly at the size of the level it restricts (the same attention masks up to float
                rounding, ~10x fewer multiply-adds) and `aux_outputs` hold only `pred_logits`.

        Returns:
            dict with `pred_logits` (B, Q, num_classes + 1) and `pred_masks` (B, Q, T, H4, W4) of the last
            prediction, and `aux_outputs`: list of `dec_layers` dicts with the same two keys (or only
            `pred_logits`, see `aux_masks`) for the earlier predictions (after v2a, then after layers
            0 .. dec_layers - 2).
        """
        self._check_inputs(multi_scale_features, mask_features, audio, num_frames)
        frames_in_batch = mask_features.shape[0]
        num_clips = frames_in_batch // num_frames
        clip_mask_features = mask_features.reshape(num_clips, num_frames, *mask_features.shape[1:])
        if aux_masks is None:
            aux_masks = self.training

        memories: list[torch.Tensor] = []
        memory_positions: list[torch.Tensor] = []
        level_sizes: list[tuple[int, int]] = []
        for level, feature in enumerate(multi_scale_features):
            height, width = feature.shape[-2:]
            level_sizes.append((height, width))
            projected = self.input_proj[level](feature)  # (B·T, C, h, w)
            position = self.pe_layer(projected.reshape(num_clips, num_frames, -1, height, width))
            memory_positions.append(_clip_to_sequence(position.flatten(0, 1), num_clips, num_frames))
            source = projected + self.level_embed.weight[level][None, :, None, None]
            memories.append(_clip_to_sequence(source, num_clips, num_frames))

        query_pos = self.query_embed.weight[:, None, :].expand(-1, num_clips, -1)  # (Q, B, C)
        output = self.query_feat.weight[:, None, :].expand(-1, num_clips, -1)  # (Q, B, C)

        audio_tokens = self.audio_proj(audio).reshape(num_clips, num_frames, -1).transpose(0, 1)  # (T, B, C)
        audio_pos = self.audio_query_embed.weight[:num_frames, None, :].expand(-1, num_clips, -1)  # (T, B, C)

        # Without aux masks, the intermediate predictions read mask features resized once per level.
        level_mask_features = None if aux_masks else [
            F.interpolate(mask_features, size=size, mode="bilinear", align_corners=False).reshape(
                num_clips, num_frames, -1, *size)
            for size in level_sizes
        ]

        def predict(queries: torch.Tensor, next_level: int, last: bool) -> tuple:
            if aux_masks or last:
                return self.forward_prediction_heads(queries, clip_mask_features, level_sizes[next_level])
            sound, _, blocked = self.forward_prediction_heads(
                queries, level_mask_features[next_level], level_sizes[next_level])
            return sound, None, blocked

        output = self.v2a(output, audio_tokens, memory_pos=audio_pos, query_pos=query_pos)

        sound_logits, mask_logits, attn_mask = predict(output, 0, self.num_layers == 0)
        predictions = [(sound_logits, mask_logits)]

        audio_tokens = self.a2a(audio_tokens, pos=audio_pos)

        for layer in range(self.num_layers):
            level = layer % self.num_feature_levels
            attn_mask = unblock_fully_masked_rows(attn_mask)
            output = self.transformer_cross_attention_layers[layer](
                output, memories[level], memory_pos=memory_positions[level], query_pos=query_pos, attn_mask=attn_mask
            )
            output = self.transformer_self_attention_layers[layer](output, pos=query_pos)
            output = self.transformer_audio_cross_attention_layers[layer](
                output, audio_tokens, memory_pos=audio_pos, query_pos=query_pos
            )
            output = self.transformer_ffn_layers[layer](output)
            sound_logits, mask_logits, attn_mask = predict(
                output, (layer + 1) % self.num_feature_levels, layer == self.num_layers - 1)
            predictions.append((sound_logits, mask_logits))

        return {
            "pred_logits": predictions[-1][0],
            "pred_masks": predictions[-1][1],
            "aux_outputs": [{"pred_logits": logits, "pred_masks": masks} if masks is not None
                            else {"pred_logits": logits} for logits, masks in predictions[:-1]],
        }
