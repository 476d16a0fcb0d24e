"""Learning on synthetic data, shared by tests/test_learning.py and benchmarks/bench_sound_options.py: the
sounding-and-silent dataset, the tiny network's training recipe, a tiny CLIP that learns to name the objects of
the clips, and the scores of saved predictions against the clips' objects.

The dataset: clips (v2, 10 frames, 64x96) with two moving objects of distinct shape and colour from `POOL`, one
sounding (a class-specific tone) and one silent; only the sounding one is labelled.

The tiny CLIP (open_clip ViT, 32-pixel input, one layer) is trained on square crops of every object in every
training frame (the official crop protocol, sounding and silent objects alike) to pick its class among all 70
AVSBench names in the 14 ViLD templates, with the classifier's own 100 x cosine logits, so `avseg eval`'s path
(70-name vocabulary) can name the objects.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

POOL = ("guitar", "dog", "piano", "car")
"""The classes of the sounding-and-silent dataset."""

TINY_CLIP = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}


def make_sounding_silent_dataset(root: Path, num_train: int, num_test: int, seed: int = 0):
    """The dataset under `root/root` (AVSBench layout) and prepared into `root/data`: (SyntheticDataset, data dir)."""
    from models.data.synthetic import SyntheticVideoSpec, make_synthetic_avsbench
    from models.pipeline.prepare import prepare_dataset

    rng = np.random.default_rng(seed)

    def specs(split: str, count: int) -> list[SyntheticVideoSpec]:
        out = []
        for _ in range(count):
            a, b = rng.choice(len(POOL), size=2, replace=False)
            out.append(SyntheticVideoSpec(split=split, subset="v2", sounding=(POOL[a],), silent=(POOL[b],)))
        return out

    dataset = make_synthetic_avsbench(root / "root", specs("train", num_train) + specs("test", num_test),
                                      seed=seed + 1)
    prepare_dataset(root / "root", root / "data")
    return dataset, root / "data"


def train_tiny(data_dir: Path, out: Path, iters: int = 400, shuffle_audio: bool = False) -> Path:
    """The `tiny` network trained on the CPU (batch 2, random VGGish, flips); returns its last checkpoint.
    `shuffle_audio` trains with the audio shuffled across clips (the baseline without sound)."""
    from models.pipeline.train import TrainOptions, train

    train(TrainOptions(data_dir=data_dir, config_name="tiny", out_dir=out, device="cpu", max_iters=iters,
                       checkpoint_period=iters, batch_size=2, vggish_weights="random",
                       audio_shuffle=shuffle_audio, overrides={"flip_prob": 0.5}),
          warn=lambda *_: None)
    return out / "last.pt"


def save_clip_folder(model: torch.nn.Module, folder: Path, model_cfg: dict = TINY_CLIP) -> Path:
    """An open_clip folder (open_clip_config.json naming `model_cfg`, the model's architecture, + weights) that
    `--clip-weights FOLDER` loads."""
    from models.ovavss.clip_model import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": model_cfg, "preprocess_cfg": {"mean": list(OPENAI_CLIP_MEAN), "std": list(OPENAI_CLIP_STD)}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder


def random_clip(folder: Path, seed: int = 0) -> Path:
    """The tiny CLIP untrained (the baseline a trained one must beat)."""
    from open_clip.model import CLIP

    torch.manual_seed(seed)
    return save_clip_folder(CLIP(**TINY_CLIP), folder)


def object_crops(dataset, classes: Sequence[str], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Square crops (official protocol) of every object in every training frame, and their indices in `classes`."""
    from models.data.transforms import frames_to_tensor, read_frame
    from models.ovavss.square_crop import crop_regions, square_boxes, tight_boxes

    regions, labels = [], []
    for video in dataset.split("train"):
        folder = video.video_dir(dataset.root) / "frames"
        frames = frames_to_tensor([read_frame(folder / f"{k}.jpg") for k in range(video.num_frames)])
        for obj in video.objects:
            masks = torch.from_numpy(obj.masks)  # (T, H, W) bool
            valid, boxes = tight_boxes(masks)
            frame_index = valid.nonzero(as_tuple=True)[0]
            logits = (masks.float() * 40 - 20)[None]  # (1, T, H, W): sigmoid ~ the binary mask
            squares = square_boxes(boxes[frame_index])
            regions.append(crop_regions(frames, logits, torch.zeros_like(frame_index), frame_index, squares, size))
            labels.append(torch.full((len(frame_index),), classes.index(obj.class_name)))
    return torch.cat(regions), torch.cat(labels)


def train_clip(
    dataset, classes: Sequence[str], folder: Path, steps: int = 300, seed: int = 0
) -> tuple[Path, int, float]:
    """A tiny open_clip CLIP that names the crops of `classes` among the 70 AVSBench names, saved as a folder.

    Returns:
        (the folder, the number of training crops, its accuracy on them among the 70 names).
    """
    from open_clip.model import CLIP
    from open_clip.tokenizer import SimpleTokenizer

    from models.data.classes import CLASS_NAMES
    from models.ovavss.clip_model import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
    from models.ovavss.prompts import VILD_TEMPLATES
    from models.ovavss.text_embeddings import encode_class_names

    torch.manual_seed(seed)
    model = CLIP(**TINY_CLIP)
    tokenizer = SimpleTokenizer(context_length=77)
    names = tuple(CLASS_NAMES[1:])
    targets = torch.tensor([names.index(name) for name in classes])
    regions, labels = object_crops(dataset, classes, TINY_CLIP["vision_cfg"]["image_size"])
    mean = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    images = (regions / 255.0 - mean) / std
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = torch.randint(len(images), (128,), generator=generator)
        text = encode_class_names(model, tokenizer, names, VILD_TEMPLATES)  # (70, D), with gradients
        image = F.normalize(model.encode_image(images[batch]), dim=-1)
        loss = F.cross_entropy(100.0 * image @ text.T, targets[labels[batch]])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        text = encode_class_names(model, tokenizer, names, VILD_TEMPLATES)
        image = F.normalize(model.encode_image(images), dim=-1)
        accuracy = float(((image @ text.T).argmax(dim=1) == targets[labels]).float().mean())
    return save_clip_folder(model, folder), len(images), accuracy


def score(dataset, classes: Sequence[str], data_dir: Path, pred_dir: Path) -> dict:
    """mIoU over `classes`, class-agnostic foreground IoU and silent share of the painted pixels, at original size."""
    from PIL import Image

    from models.data.classes import CLASS_NAMES
    from models.data.prepared import PreparedData

    ids = [CLASS_NAMES.index(name) for name in classes]
    inter = dict.fromkeys(ids, 0)
    union = dict.fromkeys(ids, 0)
    fg_inter = fg_union = painted = on_silent = 0
    for record in PreparedData.open(data_dir).load_split("test"):
        video = dataset.video(record.uid)
        for k in range(record.num_frames):
            pred = np.asarray(Image.open(pred_dir / record.uid / f"{k}.png"))
            gt = video.label_index(k)
            for c in ids:
                inter[c] += int(np.sum((pred == c) & (gt == c)))
                union[c] += int(np.sum((pred == c) | (gt == c)))
            fg_inter += int(np.sum((pred > 0) & (gt > 0)))
            fg_union += int(np.sum((pred > 0) | (gt > 0)))
            painted += int(np.sum(pred > 0))
            silent = np.zeros_like(gt, dtype=bool)
            for obj in video.silent_objects:
                silent |= obj.masks[k] & ~video.sounding_mask(k)
            on_silent += int(np.sum((pred > 0) & silent))
    ious = [inter[c] / union[c] for c in ids if union[c]]
    return {
        "miou": float(np.mean(ious)) if ious else 0.0,
        "fg_iou": fg_inter / fg_union if fg_union else 0.0,
        "silent_share_of_painted": on_silent / painted if painted else 0.0,
    }
