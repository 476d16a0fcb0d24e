"""Proof that the network learns to localize *sounding* objects from audio (slow: minutes on 2 CPU cores).

Synthetic clips show two moving objects of distinct shape and colour; only one makes a sound (a class-
specific tone), and only that one is labelled. The tiny model is trained on CPU; on held-out clips its
class-agnostic foreground mIoU must clearly beat (a) the same model trained with the audio shuffled across
clips and (b) "segment every object" masks, which are right about the objects but not about the sound.

Run with `pytest -m slow tests/test_learning.py` (or `make test-all`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.data.synthetic import SyntheticVideoSpec, make_synthetic_avsbench
from models.pipeline.prepare import prepare_dataset

POOL = ("guitar", "dog", "piano", "car")
TRAIN_ITERS = 400
NUM_TRAIN_VIDEOS = 64
NUM_TEST_VIDEOS = 12


def _specs(rng: np.random.Generator, split: str, count: int) -> list[SyntheticVideoSpec]:
    specs = []
    for _ in range(count):
        a, b = rng.choice(len(POOL), size=2, replace=False)
        specs.append(SyntheticVideoSpec(split=split, subset="v2", sounding=(POOL[a],), silent=(POOL[b],)))
    return specs


def _all_objects_baseline(dataset, data) -> float:
    from models.data.eval_clips import EVAL_GT_SIZE, gt_index_maps
    from models.io.masks import resize_nearest
    from models.metrics import BinaryMetrics

    metrics = BinaryMetrics()
    for record in data.load_split("test"):
        video = dataset.video(record.uid)
        gt = gt_index_maps(record, data.root, size=EVAL_GT_SIZE)
        for k, gt_map in gt.items():
            metrics.update(gt_map, resize_nearest(video.all_objects_mask(k).astype(np.uint8), *EVAL_GT_SIZE))
    return metrics.scores().miou


def _train_and_score(data_dir: Path, out: Path, shuffle_audio: bool) -> float:
    from models.data.prepared import PreparedData
    from models.pipeline.evaluate_model import evaluate_class_agnostic
    from models.pipeline.network import load_network
    from models.pipeline.train import TrainOptions, train

    train(TrainOptions(data_dir=data_dir, config_name="tiny", out_dir=out, device="cpu", max_iters=TRAIN_ITERS,
                       checkpoint_period=TRAIN_ITERS, batch_size=2, vggish_weights="random",
                       audio_shuffle=shuffle_audio, overrides={"flip_prob": 0.5}),
          warn=lambda *_: None)
    network = load_network(out / "last.pt", torch.device("cpu"))
    data = PreparedData.open(data_dir)
    return evaluate_class_agnostic(network.model, data, "test", short_side=64).fg_miou


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_tiny_model_learns_which_object_sounds(tmp_path: Path):
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    specs = _specs(rng, "train", NUM_TRAIN_VIDEOS) + _specs(rng, "test", NUM_TEST_VIDEOS)
    dataset = make_synthetic_avsbench(tmp_path / "root", specs, seed=1)
    prepare_dataset(tmp_path / "root", tmp_path / "data")
    from models.data.prepared import PreparedData

    all_objects = _all_objects_baseline(dataset, PreparedData.open(tmp_path / "data"))
    with_audio = _train_and_score(tmp_path / "data", tmp_path / "run", shuffle_audio=False)
    shuffled = _train_and_score(tmp_path / "data", tmp_path / "shuffled", shuffle_audio=True)
    print(f"fg mIoU: audio {with_audio:.3f}, shuffled audio {shuffled:.3f}, all objects {all_objects:.3f}")
    assert with_audio > shuffled + 0.10
    assert with_audio > all_objects + 0.10
