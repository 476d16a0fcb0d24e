"""Naming masks with the OV-AVSS CLIP classifier: masked square crops -> CLIP -> softmax over the vocabulary."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from models.ovavss.classifier import OpenVocabularyClassifier
from models.ovavss.clip_model import LoadedClip
from models.ovavss.prompts import VILD_TEMPLATES
from models.ovavss.square_crop import crop_regions, square_boxes, tight_boxes

MASK_LOGIT = 20.0
"""Hard masks enter the crop code as logits +-20 (sigmoid 1 - 2e-9 inside, 2e-9 outside)."""


class CropRescorer:
    """CLIP probabilities of the vocabulary for masked regions of a frame, exactly as OV-AVSS crops them.

    Each mask's tight box becomes a square of side max(w, h) anchored at its top-left (the official protocol),
    the frame and the mask are cropped to it at CLIP's input size, the frame is multiplied by the mask (black
    background), CLIP encodes the crops and logit_scale x cosine similarity to the prompt-ensembled class embeddings
    is softmaxed over the vocabulary (the classifier's fixed `logit_scale`, 100).

    Args:
        clip: the loaded open_clip model.
        templates: prompt template set of the text side (ViLD by default).
        device: where CLIP runs.
        crop_batch_size: crops per CLIP forward.
    """

    def __init__(self, clip: LoadedClip, templates: Sequence[str] = VILD_TEMPLATES, device: str | torch.device = "cpu",
                 crop_batch_size: int = 32) -> None:
        self.clip = clip
        self.templates = tuple(templates)
        self.device = torch.device(device)
        self.classifier = OpenVocabularyClassifier.from_loaded(clip).to(self.device)
        self.crop_batch_size = int(crop_batch_size)
        self.vocabulary: tuple[str, ...] = ()
        self._text: torch.Tensor | None = None

    def set_vocabulary(self, names: Sequence[str]) -> None:
        """Encode the class names (cached on disk for pretrained weights, like the OV-AVSS predictor)."""
        from models.ovavss.text_embeddings import class_name_embeddings

        names = tuple(names)
        if names != self.vocabulary or self._text is None:
            self._text = class_name_embeddings(self.clip, names, self.templates).to(self.device)
            self.vocabulary = names

    @torch.inference_mode()
    def probabilities(self, frame: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """Class probabilities of masked regions.

        Args:
            frame: uint8 (H, W, 3) RGB.
            masks: (N, H, W) bool.

        Returns:
            (N, V) float32, rows sum to 1 (V = vocabulary size); (0, V) for N = 0.
        """
        if self._text is None:
            raise RuntimeError("call set_vocabulary(names) before probabilities")
        count = int(masks.shape[0])
        if count == 0:
            return np.zeros((0, len(self.vocabulary)), dtype=np.float32)
        image = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].to(self.device)
        hard = torch.from_numpy(np.ascontiguousarray(masks)).to(self.device)
        logits = torch.where(hard, MASK_LOGIT, -MASK_LOGIT).unsqueeze(1)  # (N, 1, H, W)
        _, boxes = tight_boxes(hard)
        squares = square_boxes(boxes.float(), "official")
        outputs = []
        for start in range(0, count, self.crop_batch_size):
            index = torch.arange(start, min(count, start + self.crop_batch_size), device=self.device)
            regions = crop_regions(image, logits, index, torch.zeros_like(index), squares[index],
                                   self.classifier.image_size)
            embeddings = self.classifier.encode_regions(regions)
            outputs.append((self.classifier.config.logit_scale * embeddings @ self._text.T).softmax(dim=-1))
        return torch.cat(outputs).float().cpu().numpy()
