"""avseg against the official OV-AVSS code itself, run side by side on the same weights and inputs.

These tests need a checkout of github.com/ruohaoguo/ovavss (AVSEG_OFFICIAL_REPO), detectron2's source on
PYTHONPATH and the official code's own imports (`pip install -e '.[parity]'`); without them they skip.
`make parity OFFICIAL=... DETECTRON2=...` runs them (README "Parity with the official code"). They are
the strongest check of checkpoint compatibility: the official model is built from its own config files,
its state_dict is saved as an official checkpoint file and loaded by avseg's loader, and both codes run.
How the official CUDA-only steps are run on the CPU: `tests/official_code.py`.
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from official_code import (
    FRAMES,
    bare_clip_adapter,
    build_official_model,
    compare,
    load_avseg_network,
    no_dropout,
    official_cpu_bridges,
    official_demo_modules,
    save_official_checkpoint,
)

VOCABULARY = ("violin", "dog", "man")  # few names, so CLIP's probabilities pass the 0.3 threshold
HEIGHT, WIDTH = 200, 300  # unpadded; the network pads to 224 x 320


# ---------------------------------------------------------------------------------------------- network
@pytest.mark.parametrize("config", ["r50", "swinb"])
def test_network_matches_official(official, parity_clip, config: str, tmp_path: Path):
    """Official checkpoint file -> avseg's loader -> the same outputs as the official model, in eval mode and
    in training mode (dropout and stochastic depth off), every decoder layer."""
    model = build_official_model(official, config, parity_clip[2])
    ours = load_avseg_network(save_official_checkpoint(model, tmp_path / f"model_ov_avss_{config}.pth"), delete=True)
    assert set(ours.trained_state_dict()) == {
        k for k in model.state_dict() if k.startswith(("backbone.", "sem_seg_head."))
    }

    generator = torch.Generator().manual_seed(2)
    images = torch.randn(FRAMES, 3, 224, 320, generator=generator)
    audio = torch.relu(torch.randn(FRAMES, 128, generator=generator))  # VGGish embeddings are post-ReLU
    for mode in ("eval", "train"):
        model.train(mode == "train")
        ours.train(mode == "train")
        no_dropout(model, ours)
        with torch.no_grad():
            theirs = model.sem_seg_head(audio, model.backbone(images))
            mine = ours(images[None], audio_embeddings=audio[None])
        # float32 rounding differs (e.g. the deformable attention's sampling: the official grid_sample against
        # avseg's gather); a mask logit within rounding of the masked attention's 0.5 threshold propagates it
        compare(mine["pred_logits"], theirs["pred_logits"], f"{config} {mode} pred_logits", atol=1e-3, rtol=1e-3)
        compare(mine["pred_masks"], theirs["pred_masks"], f"{config} {mode} pred_masks", atol=1e-3, rtol=1e-3)
        assert len(mine["aux_outputs"]) == len(theirs["aux_outputs"]) == 9
        for layer, (a, b) in enumerate(zip(mine["aux_outputs"], theirs["aux_outputs"])):
            compare(a["pred_logits"], b["pred_logits"], f"{config} {mode} layer {layer} pred_logits", atol=1e-3,
                    rtol=1e-3)
            if mode == "train":
                compare(a["pred_masks"], b["pred_masks"], f"{config} {mode} layer {layer} pred_masks", atol=1e-3,
                        rtol=1e-3)
        assert theirs["pred_masks"].abs().max() > 1.0  # not a degenerate all-zero comparison


@pytest.fixture(scope="module")
def official_vggish(official, tmp_path_factory):
    """(the official VGGish with random weights, avseg's VGGish loading them from a vggish-10086976.pth file)."""
    from models.ovavss.vggish import VGGish, load_vggish_weights

    audio_cfg = official.meta.vgg_cfg
    saved = audio_cfg.TRAIN.FREEZE_AUDIO_EXTRACTOR
    audio_cfg.TRAIN.FREEZE_AUDIO_EXTRACTOR = False
    try:
        torch.manual_seed(5)
        theirs = official.vggish.VGGish(audio_cfg, torch.device("cpu")).eval()
    finally:
        audio_cfg.TRAIN.FREEZE_AUDIO_EXTRACTOR = saved
    weights = tmp_path_factory.mktemp("vggish") / "vggish-10086976.pth"
    torch.save(theirs.state_dict(), weights)
    ours = VGGish().eval()
    load_vggish_weights(ours, weights)
    weights.unlink()  # 288 MB
    return theirs, ours


@pytest.mark.parametrize(
    "seconds, rate, channels",
    [(10.0, 16000, 1), (10.0, 44100, 2), (5.0, 48000, 1), (4.3, 16000, 2), (10.5, 22050, 1)],
)
def test_audio_front_end_and_vggish_match_official(official, official_vggish, tmp_path: Path, seconds, rate,
                                                   channels):
    """wav file -> 10 log-mel examples (zero-padded or cut) -> VGGish embeddings, both codes, same weights."""
    from models.ovavss.audio_frontend import read_wav_examples

    rng = np.random.default_rng(int(seconds * 10) + rate + channels)
    times = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 440 * times) * (1 + np.sin(2 * np.pi * 0.5 * times))
    samples = tone[:, None] + 0.05 * rng.standard_normal((times.size, channels))
    path = tmp_path / "audio.wav"
    soundfile.write(path, samples[:, 0] if channels == 1 else samples, rate, subtype="PCM_16")

    theirs_net, ours_net = official_vggish
    theirs_examples = theirs_net._preprocess([str(path)])  # (10, 1, 96, 64)
    ours_examples = read_wav_examples(path)
    compare(ours_examples, theirs_examples, "log-mel examples", atol=1e-4, rtol=1e-5)
    with torch.no_grad():
        theirs = official.vggish.VGG.forward(theirs_net, theirs_examples)
        mine = ours_net(ours_examples)
    compare(mine, theirs, "VGGish embeddings", atol=1e-4, rtol=1e-4)
    assert theirs.abs().max() > 0


# ------------------------------------------------------------------------------------------------ CLIP
def test_prompt_templates_and_text_embeddings_match_official(official, parity_clip):
    """The 14 ViLD templates verbatim, and the prompt-ensembled class embeddings of all 70 names."""
    from models.data.classes import CLASS_NAMES
    from models.ovavss.clip_model import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, LoadedClip
    from models.ovavss.prompts import VILD_TEMPLATES
    from models.ovavss.text_embeddings import class_name_embeddings
    from open_clip.tokenizer import SimpleTokenizer

    official_templates = official.text_prompt.get_predefined_templates("vild")
    assert tuple(official_templates) == VILD_TEMPLATES

    model, _, openai_model = parity_clip
    adapter = bare_clip_adapter(official, clip_model=openai_model, templates=official_templates, text_cache={})
    names = list(CLASS_NAMES[1:])
    with torch.no_grad():
        theirs = adapter.encode_text(names)
    clip = LoadedClip(model=model, tokenizer=SimpleTokenizer(context_length=77), model_name="parity",
                      weights_id=None, image_size=32, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD, quick_gelu=True)
    mine = class_name_embeddings(clip, names, VILD_TEMPLATES, use_cache=False)
    compare(mine, theirs, "text embeddings", atol=1e-5, rtol=1e-4)


def random_mask_logits(num_queries: int, generator: torch.Generator, height: int = 224, width: int = 320):
    """(Q, T, height, width) logits of blobs of many sizes, some touching the padding, some empty, none
    within 0.02 of the 0.5 threshold (so float32 and float16 probabilities binarise alike)."""
    low = torch.randn(num_queries, FRAMES, 7, 10, generator=generator) * 3 - 1.5
    low[::7] = -8.0  # empty in every frame
    logits = torch.nn.functional.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)
    return torch.where(logits.abs() < 0.08, torch.sign(logits + 1e-6) * 0.08, logits)


def test_region_crops_match_official(official):
    """valid (frame, query) masks, square boxes anchored at the top-left and the masked roi_align crops,
    in the official fp16 regime (`half_precision_crops`), bit for bit."""
    from models.ovavss.square_crop import crop_regions, mask_boxes, square_boxes

    generator = torch.Generator().manual_seed(4)
    frames = torch.randint(0, 256, (FRAMES, 3, HEIGHT, WIDTH), generator=generator).float()
    logits = random_mask_logits(20, generator)
    adapter = bare_clip_adapter(official, input_resolution=32)
    with official_cpu_bridges(official):
        regions, valid = adapter._preprocess_image(frames, logits.sigmoid().transpose(0, 1))  # (T, Q) order

    found = mask_boxes(logits, half_precision=True)
    assert torch.equal(found.valid, valid.T)
    assert 0 < int(valid.sum()) < valid.numel()
    frame_index, query_index = valid.nonzero(as_tuple=True)  # the official (frame-major) order
    squares = square_boxes(found.boxes[query_index, frame_index])
    mine = crop_regions(frames, logits, query_index, frame_index, squares, 32, half_precision=True)
    compare(mine, regions.float(), "masked square crops", atol=0.0, rtol=0.0)


@pytest.mark.parametrize("config", ["r50", "swinb"])
def test_open_vocabulary_prediction_matches_official(official, parity_clip, config: str, tmp_path: Path, monkeypatch):
    """One clip through the official model (network, VGGish, CLIP crops, top-10) and its evaluation script
    (threshold 0.3, sorting, painting, PNGs, 224 x 224 resize, per-frame metrics), and through avseg loading
    the official checkpoint file.

    Step by step on the official intermediate values (exact up to float rounding): avseg's CLIP
    classification of the official network's outputs gives the official per-query class probabilities, and
    avseg's selection and painting of the official probabilities give the official label maps, PNG colours
    and metrics. End to end (avseg's own network, VGGish and CLIP): the same top-10 scores within 1e-4.
    """
    from dataclasses import replace

    from models.data.classes import CLASS_NAMES, PALETTE
    from models.io.masks import resize_nearest
    from models.metrics import AVSBenchFrameMetrics
    from models.ovavss.audio_frontend import read_wav_examples
    from models.ovavss.mask_canvas import MaskCanvas
    from models.predictor import AVSegPredictor

    scripts = official_demo_modules(official)
    _, clip_folder, openai_model = parity_clip
    model = build_official_model(official, config, openai_model)
    model.class_names = list(VOCABULARY)
    path = save_official_checkpoint(model, tmp_path / f"model_ov_avss_{config}.pth")

    generator = torch.Generator().manual_seed(6)
    frames = torch.randint(0, 256, (FRAMES, 3, HEIGHT, WIDTH), generator=generator, dtype=torch.uint8)
    rate = 16000
    times = np.arange(10 * rate) / rate
    wav = tmp_path / "audio.wav"
    soundfile.write(wav, 0.4 * np.sin(2 * np.pi * 330 * times) * (times % 1 < 0.6), rate, subtype="PCM_16")
    batched_inputs = [{
        "image": [frame.float() for frame in frames],
        "file_names": [f"video/{k}.png" for k in range(FRAMES)],
        "wav_data": str(wav),
        "height": HEIGHT,
        "width": WIDTH,
    }]
    network_out, classified_out = {}, {}
    model.sem_seg_head.register_forward_hook(lambda module, args, output: network_out.update(output))
    classify_official = model.open_vocabulary_inference
    model.open_vocabulary_inference = lambda *args: classified_out.setdefault("probs", classify_official(*args))
    with torch.no_grad(), official_cpu_bridges(official):
        video_output = model(batched_inputs)
    official_probs = classified_out["probs"][0]  # (N, K), the N queries with a valid mask, ascending
    demo = types.SimpleNamespace(predictor=lambda inputs: video_output)
    labels, masks = scripts.demo.run_on_video_avsbench(demo, None, None, None, 0.3)
    assert len(video_output["pred_scores"]) == 10 and len(labels) >= 2, "too few pairs for a meaningful test"

    monkeypatch.chdir(tmp_path)  # the official script reads its palette file from a relative path
    label_file = tmp_path / "datasets" / "AVSBench-semantic" / "label2idx.json"
    label_file.parent.mkdir(parents=True)
    label_file.write_text(json.dumps({name: i for i, name in enumerate(CLASS_NAMES)}))
    gt_rng = np.random.default_rng(7)
    gt = [torch.from_numpy(gt_rng.integers(0, 5, (1, 224, 224))) for _ in range(FRAMES)]
    names = [(f"{k}.png",) for k in range(FRAMES)]
    iou_sum, fscore_sum, counts, official_maps = scripts.utils.save_and_compute(
        labels, masks, str(tmp_path / "official_png"), names, gt)
    official_maps = official_maps.numpy().astype(np.int64)

    predictor = AVSegPredictor.from_checkpoint(path, device="cpu", clip_weights=clip_folder)
    path.unlink()  # 0.5-0.7 GB
    predictor.set_vocabulary(VOCABULARY)
    canvas = MaskCanvas(network_out["pred_masks"][0], (224, 320))
    with torch.no_grad():
        classified = predictor.classifier.classify(
            frames, canvas, network_out["pred_logits"][0], predictor._text_embeddings)
    assert len(classified.query_index) == len(official_probs) > 10
    compare(classified.probs, official_probs, "class probabilities of the official network's queries", atol=5e-5)

    painted = predictor.classifier.paint(replace(classified, probs=official_probs), canvas, (HEIGHT, WIDTH),
                                         (HEIGHT, WIDTH))
    assert painted.scores.tolist() == sorted((s for s in video_output["pred_scores"] if s > 0.3), reverse=True)
    mine_maps = np.stack([resize_nearest(m, 224, 224) for m in painted.semantic_maps.numpy()]).astype(np.int64)
    assert len(np.unique(mine_maps)) >= 2
    assert np.array_equal(mine_maps, official_maps), f"{(mine_maps != official_maps).mean():.3%} of pixels differ"
    for k in range(FRAMES):  # the official PNG colours are the AVSBench palette's
        official_rgb = np.asarray(Image.open(tmp_path / "official_png" / f"{k}.png").convert("RGB"))
        assert np.array_equal(official_rgb, PALETTE[painted.semantic_maps[k].numpy()])
    metrics = AVSBenchFrameMetrics()
    for k in range(FRAMES):
        metrics.update(gt[k][0].numpy(), mine_maps[k])
    np.testing.assert_allclose(metrics.iou_sum, iou_sum.numpy(), atol=1e-6)
    np.testing.assert_allclose(metrics.fscore_sum, fscore_sum.numpy(), atol=1e-6)
    assert np.array_equal(metrics.frame_counts, counts.numpy())

    # end to end; random weights give near-equal scores, so which of two near-tied queries makes the top 10
    # may differ: compare the sorted scores, not the queries
    frames_out = predictor.predict_resized(frames, read_wav_examples(wav)[:FRAMES], (HEIGHT, WIDTH))
    kept = {(i.query, i.class_index): i.score for frame in frames_out for i in frame.instances}
    np.testing.assert_allclose(sorted(kept.values()), sorted(s for s in video_output["pred_scores"] if s > 0.3),
                               atol=1e-4)


def test_evaluation_inputs_match_official(official, tmp_path: Path, monkeypatch):
    """What the official test script feeds the model and scores against, on a synthetic AVSBench-semantic tree
    (v1s and v2 videos, frames of 150x266, 480x360 and 720x1280, labels with a class outside a_obj):
    its frames (detectron2 `read_image`, BGR -> RGB, `ResizeShortestEdge(360, 1333)` in its `VideoPredictor`)
    equal avseg's evaluation clips pixel for pixel, and its GT (`AVSBenchTest`: labels_rgb, NEAREST 224 x 224,
    palette decoding, classes outside the video's a_obj dropped) equals avseg's `gt_index_maps`."""
    from detectron2.data import transforms
    from detectron2.data.detection_utils import read_image

    from models.data.classes import CLASS_NAMES
    from models.data.eval_clips import EVAL_GT_SIZE, gt_index_maps, load_eval_video
    from models.data.prepared import PreparedData
    from models.data.synthetic import SyntheticVideoSpec, make_synthetic_avsbench
    from models.pipeline.prepare import prepare_dataset

    specs = [
        SyntheticVideoSpec("test", "v1s", ("dog",), ("piano",), noise_class="horse", size=(150, 266)),
        SyntheticVideoSpec("test", "v2", ("violin", "man"), ("car",), noise_class="baby", size=(480, 360)),
        SyntheticVideoSpec("test", "v2", ("guitar",), size=(720, 1280)),
        SyntheticVideoSpec("train", "v2", ("cat",)),
    ]
    root = tmp_path / "AVSBench-semantic"
    make_synthetic_avsbench(root, specs, seed=3)
    prepare_dataset(root, tmp_path / "data")
    data = PreparedData.open(tmp_path / "data")
    records = {record.uid: record for record in data.load_split("test")}
    assert len(records) == 3

    scripts = official_demo_modules(official)
    images = tmp_path / "JPEGImages"  # the official test folder: one folder of frames per test video
    for uid, record in records.items():
        (images / uid).mkdir(parents=True)
        for k in range(record.num_frames):
            (images / uid / f"{k}.jpg").symlink_to(record.frame_path(root, k))
    palette_file = tmp_path / "label2idx.json"
    palette_file.write_text(json.dumps({name: i for i, name in enumerate(CLASS_NAMES)}))
    test_set = scripts.dataloader.AVSBenchTest(str(images), str(root), str(palette_file), str(root / "metadata.csv"))

    cfg = official.cfg("r50")
    video_predictor = scripts.video_predictor.__new__(scripts.video_predictor)  # its preprocessing, no model
    video_predictor.aug = transforms.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
    video_predictor.input_format = cfg.INPUT.FORMAT  # what DefaultPredictor.__init__ sets
    model_inputs = []
    video_predictor.model = lambda batch: model_inputs.append(batch[0])

    for index in range(len(test_set)):
        frame_paths, annos, uid, frame_names, audio = test_set[index]
        record = records[uid]
        model_inputs.clear()
        video_predictor([[read_image(path, format="BGR") for path in frame_paths], frame_names, audio])
        theirs_frames = torch.stack(model_inputs[0]["image"])  # float32 (T, 3, h, w), RGB 0..255
        ours = load_eval_video(record, root)
        ours_frames = torch.cat([clip.frames for clip in ours.clips])
        assert ours_frames.shape == theirs_frames.shape
        assert torch.equal(ours_frames.float(), theirs_frames), uid
        assert (model_inputs[0]["height"], model_inputs[0]["width"]) == ours.clips[0].original_size
        assert audio == str(record.audio_path(root))

        ours_gt = gt_index_maps(record, root, EVAL_GT_SIZE)
        assert len(annos) == len(ours_gt) == len(record.labelled_frames)  # v1s: the first frame only
        for k, anno in zip(sorted(ours_gt), annos):
            assert np.array_equal(ours_gt[k], anno[0]), (uid, k)
        assert len(np.unique(np.concatenate([a.ravel() for a in annos]))) >= 2


def test_dataset_metrics_match_official(official):
    """AVSBench-OV's reported numbers (`scores_gzsl`: base / novel / harmonic / overall mIoU) on random maps."""
    from models.data.classes import BASE_IDS, NOVEL_IDS
    from models.metrics import ConfusionMatrix

    scripts = official_demo_modules(official)
    rng = np.random.default_rng(8)
    gts, preds = [], []
    for _ in range(12):
        gt = rng.integers(0, 71, (224, 224)) * (rng.random((224, 224)) < 0.5)
        pred = np.where(rng.random((224, 224)) < 0.6, gt, rng.integers(0, 71, (224, 224)))
        gts.append(gt)
        preds.append(pred)
    preds[0][:] = 0  # a frame with nothing predicted
    theirs, _ = scripts.eval.scores_gzsl(gts, preds, 71, list(BASE_IDS), list(NOVEL_IDS))
    matrix = ConfusionMatrix()
    for gt, pred in zip(gts, preds):
        matrix.update(gt, pred)
    scores = matrix.scores()
    assert scores.miou == pytest.approx(theirs["Mean IoU"], abs=1e-12)
    assert scores.base_miou == pytest.approx(theirs["Mean IoU Seen"], abs=1e-12)
    assert scores.novel_miou == pytest.approx(theirs["Mean IoU Unseen"], abs=1e-12)
    assert scores.harmonic_miou == pytest.approx(theirs["Mean IoU Harmonic"], abs=1e-12)
