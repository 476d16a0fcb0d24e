"""The AVSBench-OV evaluation protocol end to end, against an independent re-statement of it.

A small AVSBench-semantic tree (metadata.csv, frames, labels_rgb, audio) mixes every video kind - v1s and v2 test
videos, a v1m test video (left out of AVSBench-OV), a v1s train video with its single label, val videos - and the
edge cases the metric must get right: all-background frames, a class only in the GT (never predicted), classes
only in the predictions (one base, one novel), stray GT classes outside `a_obj`, non-palette GT colours,
`off-the-screen`, empty predictions, predictions at the frame size and at other sizes, index and colour PNGs.
It goes through `prepare_dataset` and `avseg eval --predictions`.

The expected numbers are computed here from the protocol text alone (avsbench-data.md §6, ovavss-spec.md §11):
test videos = metadata rows with split == test and subset != v1m; every label PNG of the video; GT = PIL NEAREST
resize of the RGB label to 224 x 224, exact palette colour -> id (anything else background), ids outside `a_obj`
-> background; prediction = torch `nn.Upsample(mode="nearest")` to 224 x 224; per-class pixel counts summed over
all frames of the split; IoU NaN where a class has no GT and no predicted pixel; mIoU = nan-mean over all 71 ids,
base / novel = nan-mean over the official seen / unseen id lists, harmonic = 2 / (1/B + 1/N) (0 when undefined);
secondary per-frame IoU / F-score (beta^2 = 0.3) with predictions on GT background dropped, averaged over 71 slots.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(1)

# ------------------------------------------------------------------------------- the protocol, re-stated

NAMES = sorted(
    "accordion airplane axe baby bassoon bell bird boat boy bus car cat cello clarinet clipper clock dog donkey "
    "drum duck elephant emergency-car erhu flute frying-food girl goose guitar gun guzheng hair-dryer handpan "
    "harmonica harp helicopter hen horse keyboard leopard lion man marimba missile-rocket motorcycle mower parrot "
    "piano pig pipa saw saxophone sheep sitar sorna squirrel tabla tank tiger tractor train trombone truck trumpet "
    "tuba ukulele utv vacuum-cleaner violin wolf woman".split()
)
ID = {name: i + 1 for i, name in enumerate(NAMES)}  # background 0, then alphabetical
SEEN = [2, 4, 6, 7, 8, 9, 10, 11, 12, 16, 17, 18, 19, 20, 21, 26, 27, 28, 29, 31, 35, 36, 37, 38, 40, 41, 43, 44, 46,
        47, 48, 52, 55, 58, 59, 60, 62, 63, 67, 70]  # the official evaluator's seen (base) id list
UNSEEN = [1, 3, 5, 13, 14, 15, 22, 23, 24, 25, 30, 32, 33, 34, 39, 42, 45, 49, 50, 51, 53, 54, 56, 57, 61, 64, 65, 66,
          68, 69]  # and its unseen (novel) id list
K = 71


def voc_colour(j: int) -> tuple[int, int, int]:
    rgb = [0, 0, 0]
    for bit in range(7, -1, -1):
        for channel in range(3):
            rgb[channel] |= ((j >> channel) & 1) << bit
        j >>= 3
    return tuple(rgb)


COLOURS = np.array([voc_colour(j) for j in range(K)], np.uint8)


def colours_to_ids(rgb: np.ndarray) -> np.ndarray:
    packed = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    table = {(int(r) << 16) | (int(g) << 8) | int(b): j for j, (r, g, b) in enumerate(COLOURS)}
    values, inverse = np.unique(packed, return_inverse=True)
    return np.array([table.get(int(v), 0) for v in values], np.int64)[inverse].reshape(packed.shape)


def protocol_gt(path: Path, allowed: set[int]) -> np.ndarray:
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB").resize((224, 224), Image.NEAREST))
    ids = colours_to_ids(rgb)
    ids[~np.isin(ids, sorted(allowed))] = 0
    return ids


def protocol_prediction(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        ids = colours_to_ids(np.asarray(image.convert("RGB"))) if image.mode == "RGB" else np.asarray(image)
    up = torch.nn.Upsample(size=(224, 224), mode="nearest")
    return up(torch.from_numpy(ids.astype(np.float32))[None, None])[0, 0].long().numpy()


def protocol_pairs(root: Path, pred_dir: Path, split: str) -> list[tuple[np.ndarray, np.ndarray]]:
    pairs = []
    with open(root / "metadata.csv", newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    for _vid, uid, _m, _s, a_obj, row_split, subset in rows:
        if row_split != split or subset == "v1m":
            continue
        allowed = {0} | {ID[token] for token in a_obj.split("_") if token in ID}
        for label in sorted((root / subset / uid / "labels_rgb").glob("*.png")):
            pairs.append((protocol_gt(label, allowed), protocol_prediction(pred_dir / uid / label.name)))
    return pairs


def protocol_scores(pairs) -> dict:
    tp, gt_area, pred_area = np.zeros(K), np.zeros(K), np.zeros(K)
    iou_sum, f_sum, counted = np.zeros(K), np.zeros(K), np.zeros(K)
    for gt, pred in pairs:
        masked = np.where(gt > 0, pred, 0)
        for c in range(K):
            g, p = gt == c, pred == c
            tp[c] += np.sum(g & p)
            gt_area[c] += g.sum()
            pred_area[c] += p.sum()
            if c == 0:
                continue
            pm = masked == c
            inter, union = np.sum(g & pm), np.sum(g | pm)
            if union:
                counted[c - 1] += 1
                iou_sum[c - 1] += inter / union
                if inter:
                    precision, recall = inter / pm.sum(), inter / g.sum()
                    f_sum[c - 1] += 1.3 * precision * recall / (0.3 * precision + recall)
    union = gt_area + pred_area - tp
    iou = np.array([tp[c] / union[c] if union[c] else math.nan for c in range(K)])

    def nanmean(values):
        values = [v for v in values if not math.isnan(v)]
        return sum(values) / len(values) if values else math.nan

    base, novel = nanmean(iou[SEEN]), nanmean(iou[UNSEEN])
    harmonic = 0.0 if math.isnan(base) or math.isnan(novel) or 0.0 in (base, novel) else 2 / (1 / base + 1 / novel)
    per_iou = np.where(counted > 0, iou_sum / np.maximum(counted, 1), 0.0)
    per_f = np.where(counted > 0, f_sum / np.maximum(counted, 1), 0.0)
    return {"iou": iou, "miou": nanmean(iou), "base": base, "novel": novel, "harmonic": harmonic,
            "fscore": per_f.mean(), "fscore_no_bg": per_f[:-1].mean(), "frame_miou": per_iou.mean(),
            "frame_miou_no_bg": per_iou[:-1].mean()}


# ------------------------------------------------------------------------------- the synthetic download

# uid, subset, split, a_obj, (h, w), classes drawn into the labels (strays included), all-background frames
VIDEOS = [
    ("-tA_0_10000", "v2", "test", "guitar_man", (97, 131), [28, 41, 4], {3}),
    ("tB_0_5000", "v1s", "test", "violin", (224, 224), [68], set()),
    ("tC_0_10000", "v2", "test", "off-the-screen", (150, 200), [47], {0, 9}),
    ("tD", "v1m", "test", "cat", (60, 80), [12], set()),
    ("tE_0_5000", "v1s", "test", "tabla_dog", (50, 70), [56, 17], set()),
    ("tF_0_10000", "v2", "test", "piano_woman_ukulele", (121, 163), [47, 70, 65, 1], {5}),
    ("vA_0_5000", "v1s", "val", "horse", (100, 100), [37], set()),
    ("vB_0_10000", "v2", "val", "marimba_man", (90, 160), [42, 41], set()),
    ("rA_0_5000", "v1s", "train", "dog", (64, 64), [17], set()),
    ("rB_0_10000", "v2", "train", "car", (64, 96), [11], set()),
]
NEVER_PREDICTED = 56  # tabla: in the GT of tE, never in a prediction
PREDICTED_ONLY = (55, 66)  # squirrel (base), utv (novel): in predictions only


def write_wav(path: Path, seconds: float) -> None:
    samples = (np.random.default_rng(0).standard_normal(int(16000 * seconds)) * 1000).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(16000)
        handle.writeframes(samples.tobytes())


def random_label(rng, h: int, w: int, classes: list[int]) -> np.ndarray:
    label = np.zeros((h, w), np.int64)
    for c in classes:
        y, x = rng.integers(0, h), rng.integers(0, w)
        label[y: y + rng.integers(1, h // 2), x: x + rng.integers(1, w // 2)] = c
    salt = rng.random((h, w)) < 0.03
    label[salt] = rng.choice([0, *classes], size=int(salt.sum()))
    return label


def build(tmp: Path, seed: int) -> tuple[Path, Path]:
    """The AVSBench-semantic tree under tmp/root and predictions under tmp/pred/<split>/<uid>/<k>.png."""
    rng = np.random.default_rng(seed)
    root, pred_root = tmp / "root", tmp / "pred"
    root.mkdir(parents=True)
    with open(root / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["vid", "uid", "s_min", "s_sec", "a_obj", "split", "label"])
        for uid, subset, split, a_obj, *_ in VIDEOS:
            writer.writerow([uid if subset == "v1m" else uid.rsplit("_", 2)[0], uid, 0, 0, a_obj, split, subset])
    for uid, subset, split, _a_obj, (h, w), classes, empty in VIDEOS:
        num_frames = 10 if subset == "v2" else 5
        folder = root / subset / uid
        (folder / "frames").mkdir(parents=True)
        (folder / "labels_rgb").mkdir()
        write_wav(folder / "audio.wav", float(num_frames))
        for k in range(num_frames):
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / "frames" / f"{k}.jpg")
        for k in [0] if (subset, split) == ("v1s", "train") else range(num_frames):
            label = np.zeros((h, w), np.int64) if k in empty else random_label(rng, h, w, classes)
            rgb = COLOURS[label]
            if uid == "-tA_0_10000" and k == 1:
                rgb[:3, :3] = (1, 2, 3)  # not a palette colour
            Image.fromarray(rgb).save(folder / "labels_rgb" / f"{k}.png")
            if split == "train":
                continue
            ph, pw = (h, w) if k % 3 else (int(rng.integers(20, 300)), int(rng.integers(20, 300)))
            if k == 2:
                pred = np.zeros((ph, pw), np.int64)
            else:
                resized = np.asarray(Image.fromarray(label.astype(np.uint8)).resize((pw, ph), Image.NEAREST))
                noise = rng.random((ph, pw)) < 0.25
                choices = [0, *PREDICTED_ONLY, *(c for c in classes if c != NEVER_PREDICTED)]
                pred = np.where(noise, rng.choice(choices, size=(ph, pw)), resized)
                pred[pred == NEVER_PREDICTED] = 0
            out = pred_root / split / uid / f"{k}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            (Image.fromarray(COLOURS[pred]) if k % 2 else Image.fromarray(pred.astype(np.uint8))).save(out)
    return root, pred_root


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    from avseg_cli.main import run

    monkeypatch.setattr(sys, "argv", ["avseg", *args])
    with pytest.raises(SystemExit) as info:
        run()
    captured = capsys.readouterr()
    return (0 if info.value.code is None else int(info.value.code)), captured.out, captured.err


# ------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("seed", [0, 1])
def test_eval_predictions_follows_the_protocol_on_mixed_videos(tmp_path, monkeypatch, capsys, seed):
    import shutil

    from models.pipeline.prepare import prepare_dataset

    root, pred_root = build(tmp_path, seed)
    prepare_dataset(root, tmp_path / "data")
    shutil.rmtree(pred_root / "test" / "tD")  # v1m is not in AVSBench-OV: no prediction is asked for it
    for split, videos, frames in (("test", 5, 40), ("val", 2, 15)):
        json_path = tmp_path / f"{split}.json"
        code, _out, err = run_cli(monkeypatch, capsys, "eval", "--predictions", str(pred_root / split),
                                  "--data", str(tmp_path / "data"), "--split", split, "--json", str(json_path))
        assert code == 0, err
        got = json.loads(json_path.read_text())
        pairs = protocol_pairs(root, pred_root / split, split)
        want = protocol_scores(pairs)
        assert (got["num_videos"], got["num_frames"]) == (videos, frames) and len(pairs) == frames
        warned = [line for line in err.splitlines() if "non-palette colours" in line]
        assert warned == ([f"warning: {got['unknown_gt_pixels']} GT pixels (at the 224x224 evaluation size) had "
                           "non-palette colours and were scored as background"] if got["unknown_gt_pixels"] else [])
        per_class = [math.nan if v is None else v for v in got["per_class_iou"].values()]
        np.testing.assert_allclose(per_class, want["iou"], rtol=0, atol=1e-12, equal_nan=True)
        for key, name in (("miou", "miou"), ("base_miou", "base"), ("novel_miou", "novel"),
                          ("harmonic_miou", "harmonic"), ("fscore", "fscore")):
            assert got[key] == pytest.approx(want[name], abs=1e-12), key
        for key in ("fscore_no_bg", "frame_miou", "frame_miou_no_bg"):
            assert got["secondary"][key] == pytest.approx(want[key], abs=1e-12), key
        if split == "test":  # the edge cases are really there
            assert want["iou"][NEVER_PREDICTED] == 0.0 and got["per_class_iou"]["tabla"] == 0.0
            assert all(want["iou"][c] == 0.0 for c in PREDICTED_ONLY)
            assert math.isnan(want["iou"][12]) and got["per_class_iou"]["cat"] is None  # v1m's class: nowhere
            assert math.isnan(want["iou"][3])  # axe: absent from GT and predictions, skipped by every mean


def test_class_agnostic_eval_follows_avsbench_per_frame_definitions(tmp_path, monkeypatch):
    """`evaluate_class_agnostic` with a stand-in for the network: per frame AVSBench `mask_iou` (empty GT scores the
    background) and F (beta^2 = 0.3, frames with empty GT skipped), averaged over all labelled test frames."""
    from types import SimpleNamespace

    import models.pipeline.evaluate_model as evaluate_model
    from models.data.prepared import PreparedData
    from models.pipeline.prepare import prepare_dataset

    root, _ = build(tmp_path, 2)
    prepare_dataset(root, tmp_path / "data")
    rng = np.random.default_rng(3)
    made: list[torch.Tensor] = []

    def fake_foreground(model, frames, audio_examples, original_size, sound_threshold=0.5):
        fg = torch.from_numpy(rng.random((frames.shape[0], *original_size)) < rng.choice([0.0, 0.2, 0.6]))
        made.append(fg)
        return fg

    monkeypatch.setattr(evaluate_model, "predict_foreground", fake_foreground)
    model = SimpleNamespace(config=SimpleNamespace(clip_len=5, max_size=1333), eval=lambda: None)
    result = evaluate_model.evaluate_class_agnostic(model, PreparedData.open(tmp_path / "data"), "test",
                                                    short_side=64)
    foreground = [frame.numpy() for clip in made for frame in clip]  # clips in video order, frames in order
    ious, fscores, i = [], [], 0
    up = torch.nn.Upsample(size=(224, 224), mode="nearest")
    for uid, subset, split, a_obj, *_ in VIDEOS:
        if split != "test" or subset == "v1m":
            continue
        allowed = {0} | {ID[t] for t in a_obj.split("_") if t in ID}
        for k in range(10 if subset == "v2" else 5):
            gt = protocol_gt(root / subset / uid / "labels_rgb" / f"{k}.png", allowed) > 0
            pred = up(torch.from_numpy(foreground[i].astype(np.float32))[None, None])[0, 0].numpy() > 0
            i += 1
            if not gt.any():
                ious.append(np.sum(~pred) / pred.size)
                continue
            inter = np.sum(gt & pred)
            ious.append(inter / np.sum(gt | pred))
            precision, recall = inter / (pred.sum() + 1e-20), inter / gt.sum()
            fscores.append(1.3 * precision * recall / (0.3 * precision + recall) if inter else 0.0)
    assert i == len(foreground) == result.num_frames == 40
    assert result.fg_miou == pytest.approx(np.mean(ious), abs=1e-12)
    assert result.fscore == pytest.approx(np.mean(fscores), abs=1e-12)
    assert len(fscores) < len(ious)  # some all-background frames were skipped by the F-score
