"""SAM masks from boxes for the zero-shot method.

`SamBoxSegmenter` wraps a `transformers` `SamModel` + `SamProcessor` (e.g. facebook/sam-vit-base): one image
embedding per frame, all of the frame's boxes prompted together in one mask-decoder pass with a single mask per box
(`multimask_output=False`), masks upscaled to the frame's size by the processor's `post_process_masks` and
thresholded on the logits.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch


def clip_boxes_xyxy(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Boxes clipped to a frame: x into [0, width], y into [0, height].

    Args:
        boxes: (N, 4) float xyxy in pixels.
        height, width: the frame's size.

    Returns:
        (N, 4) float32; a box wholly outside the frame becomes a zero-area box on the frame's border.
    """
    clipped = np.asarray(boxes, dtype=np.float32).copy()
    clipped[:, 0::2] = np.clip(clipped[:, 0::2], 0.0, float(width))
    clipped[:, 1::2] = np.clip(clipped[:, 1::2], 0.0, float(height))
    return clipped


class SamBoxSegmenter:
    """Masks for boxes with SAM (transformers SamModel + SamProcessor): one image embedding per frame.

    Args:
        model: a `SamModel` in eval mode, on `device`.
        processor: its `SamProcessor` (SamImageProcessor: resize longest edge, pad to a square).
        device: where the model runs.
        mask_threshold: a pixel is in a mask when SAM's upscaled mask logit is above this.
    """

    def __init__(self, model: Any, processor: Any, device: torch.device | str = "cpu", mask_threshold: float = 0.0):
        self.model = model
        self.processor = processor
        self.device = torch.device(device)
        self.mask_threshold = float(mask_threshold)

    @classmethod
    def from_folder(
        cls, folder: str | os.PathLike, device: torch.device | str = "cpu", mask_threshold: float = 0.0
    ) -> SamBoxSegmenter:
        """Load the SAM model and processor saved in `folder`; failures -> one-line `AVSegError`."""
        from transformers import SamModel, SamProcessor

        from models.zeroshot.hf_folder import load_model_folder

        model, processor = load_model_folder(folder, "SAM", "sam", SamModel, SamProcessor, ("image_processor",), device)
        return cls(model, processor, device=device, mask_threshold=mask_threshold)

    def segment(self, frame: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One mask per box.

        Args:
            frame: uint8 (H, W, 3) RGB.
            boxes: (N, 4) float xyxy in frame pixels (clipped to the frame first).

        Returns:
            masks (N, H, W) bool and iou_scores (N,) float32 (SAM's predicted IoU of each mask). N = 0 runs nothing.
        """
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8 or 0 in frame.shape:
            raise ValueError(f"frame must be uint8 (H, W, 3) RGB, got {frame.dtype} {frame.shape}")
        boxes = np.asarray(boxes, dtype=np.float32)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"boxes must be (N, 4) xyxy, got shape {boxes.shape}")
        height, width = frame.shape[:2]
        if len(boxes) == 0:
            return np.zeros((0, height, width), dtype=bool), np.zeros((0,), dtype=np.float32)

        boxes = clip_boxes_xyxy(boxes, height, width)
        inputs = self.processor(
            images=frame, input_boxes=[boxes.tolist()], input_data_format="channels_last", return_tensors="pt"
        )
        pixel_values = inputs["pixel_values"].to(device=self.device, dtype=self.model.dtype)
        input_boxes = inputs["input_boxes"].to(device=self.device, dtype=torch.float32)  # (1, N, 4) model pixels
        with torch.inference_mode():
            image_embeddings = self.model.get_image_embeddings(pixel_values)  # (1, C, h, w)
            output = self.model(image_embeddings=image_embeddings, input_boxes=input_boxes, multimask_output=False)
            masks = self.processor.post_process_masks(
                output.pred_masks,  # (1, N, 1, h', w') logits
                inputs["original_sizes"].tolist(),
                inputs["reshaped_input_sizes"].tolist(),
                mask_threshold=self.mask_threshold,
                binarize=True,
            )[0]  # (N, 1, H, W) bool
        iou_scores = output.iou_scores[0, :, 0].float().cpu().numpy()
        return masks[:, 0].cpu().numpy(), iou_scores
