"""What the sound-head options (`--sound-gate`, `--max-crops`) do to an open-vocabulary result, on synthetic data.

Usage:
    .venv/bin/python benchmarks/bench_sound_options.py                 # ~6 minutes on 2 CPU cores
    .venv/bin/python benchmarks/bench_sound_options.py --modes official gate0.5 crops1 --json result.json

The official inference sends every (query, frame) mask with a pixel above 0.5 to CLIP and ignores the sound
head; the two options use the sound head to send fewer. Their CPU savings are in RESULTS.md; this measures what
they change in the result. No pretrained weights exist on this machine, so everything is trained here, on the
CPU, from synthetic data in the AVSBench layout (like tests/test_learning.py):

1. clips with two moving objects of 4 classes (guitar, dog, piano, car), one sounding (a class-specific tone)
   and one silent; only the sounding one is labelled. 64 training and 12 test videos of 10 frames, 64x96;
2. the `tiny` network (10 queries) trained on them: 400 iterations at batch 2, random VGGish (as the test);
3. a tiny CLIP (open_clip ViT, 32-pixel input, one layer) trained to name square crops of the training
   objects (the official crop protocol, sounding and silent objects alike) against all 70 AVSBench class
   names in the 14 ViLD templates, with the classifier's own 100 x cosine logits;
4. `avseg eval`'s path (`evaluate_open_vocabulary`: the 70-name vocabulary, every frame, PNGs at the original
   size) on the test split, once per mode.

Reported per mode: CLIP crops per frame, seconds per frame, mIoU over the 4 classes, class-agnostic foreground
IoU, and the share of painted pixels that lie on the silent object. Weights are random at the start of every
step (seeded), so a run is reproducible on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

POOL = ("guitar", "dog", "piano", "car")
TINY_CLIP = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}


def parse_mode(mode: str) -> dict:
    options: dict = {}
    for part in mode.split("+"):
        if part == "official":
            continue
        if part.startswith("gate"):
            options["sound_gate"] = float(part[4:])
        elif part.startswith("crops"):
            options["max_crops_per_frame"] = int(part[5:])
        else:
            raise SystemExit(f"unknown mode {mode!r}: official, gate<p>, crops<n>, joined by + (e.g. gate0.5+crops1)")
    return options


def make_data(root: Path, num_train: int, num_test: int, seed: int):
    from models.data.synthetic import SyntheticVideoSpec, make_synthetic_avsbench
    from models.pipeline.prepare import prepare_dataset

    rng = np.random.default_rng(seed)

    def specs(split: str, count: int) -> list:
        out = []
        for _ in range(count):
            a, b = rng.choice(len(POOL), size=2, replace=False)
            out.append(SyntheticVideoSpec(split=split, subset="v2", sounding=(POOL[a],), silent=(POOL[b],)))
        return out

    dataset = make_synthetic_avsbench(root / "root", specs("train", num_train) + specs("test", num_test), seed=seed + 1)
    prepare_dataset(root / "root", root / "data")
    return dataset, root / "data"


def train_network(data_dir: Path, out: Path, iters: int) -> Path:
    from models.pipeline.train import TrainOptions, train

    train(TrainOptions(data_dir=data_dir, config_name="tiny", out_dir=out, device="cpu", max_iters=iters,
                       checkpoint_period=iters, batch_size=2, vggish_weights="random",
                       overrides={"flip_prob": 0.5}), warn=lambda *_: None)
    return out / "last.pt"


def object_crops(dataset, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Square crops (official protocol) of every object in every training frame, and their POOL labels."""
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
            labels.append(torch.full((len(frame_index),), POOL.index(obj.class_name)))
    return torch.cat(regions), torch.cat(labels)


def train_clip(dataset, folder: Path, steps: int, seed: int) -> Path:
    """A tiny open_clip CLIP that names the 4 classes' crops among the 70 AVSBench names; saved as a folder."""
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
    targets_of_pool = torch.tensor([names.index(name) for name in POOL])
    regions, labels = object_crops(dataset, TINY_CLIP["vision_cfg"]["image_size"])
    mean = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    images = (regions / 255.0 - mean) / std
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        batch = torch.randint(len(images), (128,), generator=generator)
        text = encode_class_names(model, tokenizer, names, VILD_TEMPLATES)  # (70, D), with gradients
        image = F.normalize(model.encode_image(images[batch]), dim=-1)
        loss = F.cross_entropy(100.0 * image @ text.T, targets_of_pool[labels[batch]])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        text = encode_class_names(model, tokenizer, names, VILD_TEMPLATES)
        image = F.normalize(model.encode_image(images), dim=-1)
        accuracy = float(((image @ text.T).argmax(dim=1) == targets_of_pool[labels]).float().mean())
    print(f"tiny CLIP: {len(images)} training crops, final loss {loss.item():.3f}, crop accuracy among 70 names "
          f"{accuracy:.3f}")
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": TINY_CLIP, "preprocess_cfg": {"mean": list(OPENAI_CLIP_MEAN), "std": list(OPENAI_CLIP_STD)}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder


def score(dataset, data_dir: Path, pred_dir: Path) -> dict:
    """mIoU over POOL, class-agnostic foreground IoU and silent share of the painted pixels, at original size."""
    from PIL import Image

    from models.data.classes import CLASS_NAMES
    from models.data.prepared import PreparedData

    ids = [CLASS_NAMES.index(name) for name in POOL]
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
        "miou_4_classes": float(np.mean(ious)) if ious else 0.0,
        "fg_iou": fg_inter / fg_union if fg_union else 0.0,
        "silent_share_of_painted": on_silent / painted if painted else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modes", nargs="+", default=["official", "gate0.5", "crops1", "crops2", "gate0.5+crops1"])
    parser.add_argument("--train-iters", type=int, default=400)
    parser.add_argument("--clip-steps", type=int, default=300)
    parser.add_argument("--train-videos", type=int, default=64)
    parser.add_argument("--test-videos", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    for mode in args.modes:
        parse_mode(mode)
    if args.threads:
        torch.set_num_threads(args.threads)

    from models.pipeline.evaluate_ov import evaluate_open_vocabulary
    from models.data.prepared import PreparedData
    from models.predictor import AVSegPredictor

    with tempfile.TemporaryDirectory(prefix="avseg-sound-options-") as tmp:
        root = Path(tmp)
        os.environ["AVSEG_CACHE"] = str(root / "cache")  # the tiny CLIP's text embeddings stay out of the user's
        started = time.perf_counter()
        dataset, data_dir = make_data(root, args.train_videos, args.test_videos, args.seed)
        checkpoint = train_network(data_dir, root / "run", args.train_iters)
        print(f"tiny network trained: {args.train_iters} iterations in {time.perf_counter() - started:.0f} s")
        clip_dir = train_clip(dataset, root / "clip", args.clip_steps, args.seed)
        data = PreparedData.open(data_dir)
        rows = []
        for mode in args.modes:
            predictor = AVSegPredictor.from_checkpoint(checkpoint, device="cpu", clip_weights=clip_dir,
                                                       **parse_mode(mode))
            crops = [0]
            encode = predictor.classifier.encode_regions

            def counting(regions, _encode=encode, _crops=crops):
                _crops[0] += len(regions)
                return _encode(regions)

            predictor.classifier.encode_regions = counting
            result = evaluate_open_vocabulary(predictor, data, "test", root / "pred" / mode)
            frames = result.run.num_frames
            row = {"mode": mode, "crops_per_frame": crops[0] / frames, "s_per_frame": result.run.seconds / frames,
                   **score(dataset, data_dir, root / "pred" / mode)}
            rows.append(row)
            print(f"{mode:16} crops/frame {row['crops_per_frame']:5.2f}  s/frame {row['s_per_frame']:.3f}  "
                  f"mIoU(4) {row['miou_4_classes']:.3f}  fg IoU {row['fg_iou']:.3f}  "
                  f"silent share {row['silent_share_of_painted']:.3f}", flush=True)
    print("\n| mode | CLIP crops / frame | s / frame | mIoU (4 classes) | foreground IoU | painted on the silent object |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['mode']} | {row['crops_per_frame']:.2f} | {row['s_per_frame']:.3f} | {row['miou_4_classes']:.3f} | "
              f"{row['fg_iou']:.3f} | {row['silent_share_of_painted']:.3f} |")
    if args.json is not None:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
