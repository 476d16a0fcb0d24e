"""`evaluate_predictions` and `avseg eval --predictions` on a tiny hand-built AVSBench tree.

The fixture writes labels_rgb PNGs and a DATA_DIR (dataset.json + splits/test.jsonl) directly from
`VideoRecord`s. Expected numbers come from hand computation or from an independent path: PIL for the GT
resize, torch `F.interpolate` for the prediction resize, explicit loops for the IoU.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from models.atomic import write_jsonl
from models.data.classes import BASE_IDS, CLASS_NAMES, NOVEL_IDS, PALETTE
from models.data.prepared import PreparedData, VideoRecord, write_dataset_json
from models.errors import AVSegError
from models.io.masks import write_colour_mask, write_index_mask
from models.pipeline.evaluate_predictions import evaluate_predictions

torch.set_num_threads(1)

# ------------------------------------------------------------------------------------------- fixture
# Three test videos; GT labels are 112 x 112 so PIL's NEAREST resize to 224 is an exact 2x repeat.
#   vidA (v2, 10 frames, a_obj guitar_man): left quarter guitar (28, base), top rows man (41, base),
#        plus a stray block of baby (4) that the a_obj filter must remove
#   -vidB (v1s, 5 frames, a_obj violin): a violin (68, novel) square, frames 0..4
#   vidC (v2, 10 frames, a_obj off-the-screen): all background except a stray piano (47) block


def _label_vid_a(k: int) -> np.ndarray:
    label = np.zeros((112, 112), np.uint8)
    label[:, :28] = 28
    label[: 8 + k, 28:] = 41
    label[100:, 100:] = 4  # stray, not in a_obj
    return label


def _label_vid_b(k: int) -> np.ndarray:
    label = np.zeros((112, 112), np.uint8)
    label[20 + k : 76 + k, 30:86] = 68
    return label


def _label_vid_c(k: int) -> np.ndarray:
    label = np.zeros((112, 112), np.uint8)
    label[:10, :10] = 47  # stray, a_obj is off-the-screen
    return label


def _record(uid: str, subset: str, a_obj: list[str], class_ids: list[int], frames: int) -> VideoRecord:
    return VideoRecord(uid, subset, "test", a_obj, class_ids, frames, list(range(frames)), 112, 112)


VIDEOS = {
    "vidA": (_record("vidA", "v2", ["guitar", "man"], [28, 41], 10), _label_vid_a),
    "-vidB": (_record("-vidB", "v1s", ["violin"], [68], 5), _label_vid_b),
    "vidC": (_record("vidC", "v2", ["off-the-screen"], [], 10), _label_vid_c),
}


def filtered_gt_224(uid: str, k: int) -> np.ndarray:
    """The GT the evaluator must use, by hand: a_obj filter, then exact 2x repeat."""
    record, make = VIDEOS[uid]
    label = make(k)
    label = np.where(np.isin(label, [0, *record.class_ids]), label, 0)
    return label.repeat(2, axis=0).repeat(2, axis=1)


@pytest.fixture
def dataset(tmp_path) -> PreparedData:
    root = tmp_path / "AVSBench-semantic"
    for record, make in VIDEOS.values():
        for k in record.labelled_frames:
            path = record.label_path(root, k)
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(PALETTE[make(k)]).save(path)
    data_dir = tmp_path / "data"
    write_dataset_json(data_dir, root, include_v1m=False)
    write_jsonl(data_dir / "splits" / "test.jsonl", [record.to_json() for record, _ in VIDEOS.values()])
    return PreparedData.open(data_dir)


def write_predictions(pred_dir: Path, make_pred, colour: bool = False) -> None:
    for uid, (record, _) in VIDEOS.items():
        for k in record.labelled_frames:
            (write_colour_mask if colour else write_index_mask)(pred_dir / uid / f"{k}.png", make_pred(uid, k))


def total_frames() -> int:
    return sum(len(record.labelled_frames) for record, _ in VIDEOS.values())


# ------------------------------------------------------------------------------------------- scores


@pytest.mark.parametrize("form", ["index_448", "colour_224"])
def test_perfect_predictions_score_one(dataset, tmp_path, form):
    pred_dir = tmp_path / "pred"
    if form == "index_448":  # 2x larger than the eval size: torch nearest takes every other pixel back
        write_predictions(pred_dir, lambda uid, k: filtered_gt_224(uid, k).repeat(2, 0).repeat(2, 1))
    else:
        write_predictions(pred_dir, filtered_gt_224, colour=True)
    result = evaluate_predictions(pred_dir, dataset, "test")
    assert (result.miou, result.base_miou, result.novel_miou, result.harmonic_miou) == (1.0, 1.0, 1.0, 1.0)
    assert result.num_videos == 3 and result.num_frames == total_frames() == 25
    by_name = result.per_class_iou_by_name()
    assert {name for name, v in by_name.items() if v is not None} == {"background", "guitar", "man", "violin"}
    assert by_name["baby"] is None and by_name["piano"] is None  # filtered out of the GT, never predicted
    # secondary F-score: 3 classes with F = 1 averaged over 71 bins
    assert result.fscore == pytest.approx(3 / 71)
    assert result.frame_metrics.miou_no_bg == pytest.approx(3 / 70)


def test_all_background_hand_computed(dataset, tmp_path):
    pred_dir = tmp_path / "pred"
    write_predictions(pred_dir, lambda uid, k: np.zeros((60, 80), np.uint8))
    result = evaluate_predictions(pred_dir, dataset, "test")
    # foreground GT pixels at 112 x 112 (x4 at 224, the same factor everywhere so fractions are exact)
    guitar = 10 * 112 * 28
    man = sum((8 + k) * 84 for k in range(10))
    violin = 5 * 56 * 56
    total = 25 * 112 * 112
    background_iou = (total - guitar - man - violin) / total
    assert result.per_class_iou[0] == pytest.approx(background_iou, abs=1e-12)
    for c in (28, 41, 68):
        assert result.per_class_iou[c] == 0.0
    assert result.miou == pytest.approx(background_iou / 4, abs=1e-12)
    assert result.base_miou == 0.0 and result.novel_miou == 0.0 and result.harmonic_miou == 0.0
    assert result.fscore == 0.0


def test_aobj_filter_applied_to_gt(dataset, tmp_path):
    """Predicting the raw (unfiltered) label makes the stray classes false positives."""
    pred_dir = tmp_path / "pred"
    write_predictions(pred_dir, lambda uid, k: VIDEOS[uid][1](k))
    result = evaluate_predictions(pred_dir, dataset, "test")
    assert result.per_class_iou[4] == 0.0 and result.per_class_iou[47] == 0.0  # baby, piano: predicted only
    stray = 10 * 12 * 12 + 10 * 10 * 10
    fg = 10 * 112 * 28 + sum((8 + k) * 84 for k in range(10)) + 5 * 56 * 56
    background = 25 * 112 * 112 - fg
    assert result.per_class_iou[0] == pytest.approx((background - stray) / background, abs=1e-12)
    assert result.per_class_iou[28] == result.per_class_iou[41] == result.per_class_iou[68] == 1.0
    assert result.base_miou == pytest.approx(2 / 4)  # guitar 1, man 1, baby 0, piano 0 (both base)
    assert result.novel_miou == 1.0  # violin
    # the per-frame metric ignores predictions on GT background: strays cost nothing there
    assert result.fscore == pytest.approx(3 / 71)


def test_odd_sizes_against_independent_pipeline(tmp_path):
    """GT at 90 x 120 (PIL NEAREST), predictions at 75 x 130 (torch nearest): non-integer ratios."""
    rng = np.random.default_rng(0)
    root = tmp_path / "root"
    records = [
        VideoRecord("u1", "v2", "test", ["dog", "tabla"], [17, 56], 10, list(range(10)), 90, 120),
        VideoRecord("u2", "v1m", "test", ["cat"], [12], 5, list(range(5)), 90, 120),
    ]
    pred_dir = tmp_path / "pred"
    pairs = []
    for record in records:
        for k in record.labelled_frames:
            label = rng.choice([0, 0, *record.class_ids, 3], size=(90, 120)).astype(np.uint8)
            pred = rng.choice([0, *record.class_ids, 3, 69], size=(75, 130)).astype(np.uint8)
            path = record.label_path(root, k)
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(PALETTE[label]).save(path)
            writer = write_colour_mask if k % 2 else write_index_mask  # both forms, alternating
            writer(pred_dir / record.uid / f"{k}.png", pred)
            # independent GT: PIL resize of the colour image, colour -> id by dictionary, a_obj filter
            with Image.open(path) as image:
                rgb = np.asarray(image.convert("RGB").resize((224, 224), Image.NEAREST))
            gt = np.full((224, 224), -1)
            for class_id, colour in enumerate(PALETTE):
                gt[np.all(rgb == colour, axis=2)] = class_id
            assert gt.min() >= 0
            gt[~np.isin(gt, [0, *record.class_ids])] = 0
            expected_pred = F.interpolate(torch.from_numpy(pred)[None, None].float(), size=(224, 224))
            pairs.append((gt, expected_pred[0, 0].long().numpy()))
    data_dir = tmp_path / "data"
    write_dataset_json(data_dir, root, include_v1m=True)
    write_jsonl(data_dir / "splits" / "test.jsonl", [r.to_json() for r in records])
    result = evaluate_predictions(pred_dir, PreparedData.open(data_dir), "test")
    expected = []
    for c in range(71):
        tp = sum(int(((g == c) & (p == c)).sum()) for g, p in pairs)
        union = sum(int(((g == c) | (p == c)).sum()) for g, p in pairs)
        expected.append(math.nan if union == 0 else tp / union)
    np.testing.assert_allclose(result.per_class_iou, expected, atol=1e-12, equal_nan=True)
    assert result.miou == pytest.approx(np.nanmean(expected), abs=1e-12)
    assert result.base_miou == pytest.approx(np.nanmean(np.array(expected)[list(BASE_IDS)]), abs=1e-12)
    assert result.novel_miou == pytest.approx(np.nanmean(np.array(expected)[list(NOVEL_IDS)]), abs=1e-12)
    assert result.per_class_iou[3] == 0.0  # axe: in the labels but outside every a_obj -> predicted only
    assert result.num_frames == 15


# ------------------------------------------------------------------------------------------- layout errors


def _perfect(pred_dir: Path) -> None:
    write_predictions(pred_dir, filtered_gt_224)


def test_missing_video_folder_and_frames(dataset, tmp_path):
    pred_dir = tmp_path / "pred"
    _perfect(pred_dir)
    shutil.rmtree(pred_dir / "-vidB")
    (pred_dir / "vidA" / "3.png").unlink()
    (pred_dir / "vidA" / "7.png").unlink()
    with pytest.raises(AVSegError) as info:
        evaluate_predictions(pred_dir, dataset, "test")
    message = str(info.value)
    assert "\n" not in message
    assert "1 video folder(s) missing (-vidB)" in message
    assert "2 frame file(s) missing (vidA/3.png, vidA/7.png)" in message


def test_extra_entries_are_errors_but_hidden_and_json_files_are_not(dataset, tmp_path):
    pred_dir = tmp_path / "pred"
    _perfect(pred_dir)
    (pred_dir / ".DS_Store").write_text("x")
    (pred_dir / "vidA" / ".hidden").write_text("x")
    (pred_dir / "RESULT.json").write_text("{}")
    assert evaluate_predictions(pred_dir, dataset, "test").miou == 1.0
    (pred_dir / "otherVid").mkdir()
    write_index_mask(pred_dir / "-vidB" / "5.png", np.zeros((4, 4), np.uint8))  # v1s has frames 0..4
    write_index_mask(pred_dir / "vidA" / "00.png", np.zeros((4, 4), np.uint8))
    write_index_mask(pred_dir / "0.png", np.zeros((4, 4), np.uint8))
    (pred_dir / "vidC" / "sub").mkdir()
    with pytest.raises(AVSegError) as info:
        evaluate_predictions(pred_dir, dataset, "test")
    message = str(info.value)
    assert "5 unexpected entries (-vidB/5.png, 0.png, otherVid/, ...)" in message
    assert "do not match the test split (3 videos, 25 labelled frames" in message


def test_unlabelled_frames_may_be_present(tmp_path):
    root = tmp_path / "root"
    record = VideoRecord("s", "v1s", "test", ["dog"], [17], 5, [0], 64, 64)
    label = np.zeros((64, 64), np.uint8)
    label[:32] = 17
    record.label_path(root, 0).parent.mkdir(parents=True)
    Image.fromarray(PALETTE[label]).save(record.label_path(root, 0))
    write_dataset_json(tmp_path / "data", root, include_v1m=False)
    write_jsonl(tmp_path / "data" / "splits" / "test.jsonl", [record.to_json()])
    for k in range(5):  # frames 1..4 have no label: allowed, not scored
        write_index_mask(tmp_path / "pred" / "s" / f"{k}.png", label if k == 0 else np.zeros_like(label))
    result = evaluate_predictions(tmp_path / "pred", PreparedData.open(tmp_path / "data"), "test")
    assert result.num_frames == 1 and result.miou == 1.0


def test_bad_prediction_files(dataset, tmp_path):
    pred_dir = tmp_path / "pred"
    _perfect(pred_dir)
    (pred_dir / "vidC" / "4.png").write_bytes(b"not a png")
    with pytest.raises(AVSegError, match=r"unreadable mask image: .*vidC/4\.png"):
        evaluate_predictions(pred_dir, dataset, "test")
    too_big = np.zeros((8, 8), np.uint8)
    too_big[0, 0] = 200
    Image.fromarray(too_big).save(pred_dir / "vidC" / "4.png")
    with pytest.raises(AVSegError, match=r"vidC/4\.png: class id 200 out of range"):
        evaluate_predictions(pred_dir, dataset, "test")
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[1, 1] = (7, 7, 7)
    Image.fromarray(rgb).save(pred_dir / "vidC" / "4.png")
    with pytest.raises(AVSegError, match=r"vidC/4\.png: 1 pixels have colours"):
        evaluate_predictions(pred_dir, dataset, "test")


def test_missing_pred_dir_root_and_split(dataset, tmp_path):
    with pytest.raises(AVSegError, match="predictions folder not found"):
        evaluate_predictions(tmp_path / "nope", dataset, "test")
    with pytest.raises(AVSegError, match="split file not found"):
        evaluate_predictions(tmp_path, dataset, "val")
    with pytest.raises(AVSegError, match="cannot evaluate split 'train'"):
        evaluate_predictions(tmp_path, dataset, "train")
    moved = PreparedData(data_dir=dataset.data_dir, root=tmp_path / "gone")
    with pytest.raises(AVSegError, match="AVSBench-semantic folder not found"):
        evaluate_predictions(tmp_path, moved, "test")


# ------------------------------------------------------------------------------------------- CLI


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    from avseg_cli.main import run

    monkeypatch.setattr(sys, "argv", ["avseg", *args])
    with pytest.raises(SystemExit) as info:
        run()
    captured = capsys.readouterr()
    code = info.value.code
    return (0 if code is None else int(code)), captured.out, captured.err


def test_cli_prints_tables_and_writes_json(dataset, tmp_path, monkeypatch, capsys):
    pred_dir = tmp_path / "pred"
    write_predictions(pred_dir, lambda uid, k: np.zeros((50, 50), np.uint8))
    json_path = tmp_path / "out" / "result.json"
    code, out, err = run_cli(
        monkeypatch, capsys, "eval", "--predictions", str(pred_dir), "--data", str(dataset.data_dir),
        "--split", "test", "--json", str(json_path),
    )
    assert code == 0, err
    assert "mIoU" in out and "base mIoU" in out and "harmonic" in out and "secondary" in out
    assert "eval test: 3/3 videos," in err  # the progress line (not a terminal): "videos", plural
    assert "background" in out and "guitar" in out and "baby" not in out  # only non-NaN classes listed
    result = json.loads(json_path.read_text())
    assert result["mode"] == "predictions" and result["predictions"] == str(pred_dir)  # how it was made, as all
    assert result["split"] == "test" and result["num_frames"] == 25 and result["num_videos"] == 3
    assert result["base_miou"] == 0.0 and result["harmonic_miou"] == 0.0
    assert 0.0 < result["miou"] < 1.0 and result["fscore"] == 0.0
    assert result["per_class_iou"]["baby"] is None and result["per_class_iou"]["guitar"] == 0.0
    assert list(result["per_class_iou"]) == list(CLASS_NAMES)
    background = result["per_class_iou"]["background"]
    assert f"{100 * background:.2f}" in out and f"{100 * result['miou']:.2f}" in out
    assert sorted(p.name for p in json_path.parent.iterdir()) == ["result.json"]


@pytest.mark.parametrize(
    "case",
    ["missing_pred_dir", "missing_videos", "unreadable_png", "not_prepared", "json_not_writable", "json_in_proc",
     "json_folder_not_creatable", "checkpoint", "no_predictions", "device", "vggish_weights", "sound_threshold"],
)
def test_cli_errors_are_one_line(dataset, tmp_path, monkeypatch, capsys, case):
    pred_dir = tmp_path / "pred"
    _perfect(pred_dir)
    data_dir = str(dataset.data_dir)
    json_path = tmp_path / "result.json"
    args = ["eval", "--predictions", str(pred_dir), "--data", data_dir, "--json", str(json_path)]
    expected = ""
    if case == "missing_pred_dir":
        args[2] = str(tmp_path / "absent")
        expected = "predictions folder not found"
    elif case == "missing_videos":
        shutil.rmtree(pred_dir / "vidA")
        expected = "1 video folder(s) missing (vidA)"
    elif case == "unreadable_png":
        (pred_dir / "vidA" / "2.png").write_bytes(b"\x89PNG garbage")
        expected = "vidA/2.png"
    elif case == "not_prepared":
        (tmp_path / "empty").mkdir()
        args[4] = str(tmp_path / "empty")
        expected = "not a prepared data folder"
    elif case == "json_not_writable":
        (tmp_path / "afile").write_text("x")
        json_path = tmp_path / "afile" / "result.json"
        args[6] = str(json_path)
        expected = "cannot write"
    elif case in ("json_in_proc", "json_folder_not_creatable"):  # found before scoring (no progress line first)
        json_path = Path("/proc/avseg-eval-test.json" if case == "json_in_proc" else "/proc/avseg-eval-test/r.json")
        args[6] = str(json_path)
        expected = f"cannot write {json_path}"
    elif case in ("device", "vggish_weights"):  # no model runs: an option that would be ignored is refused
        name = "--" + case.replace("_", "-")
        args += [name, "cpu"]
        expected = f"{name} applies to a model that predicts (--checkpoint or --method zeroshot)"
    elif case == "sound_threshold":
        args += ["--sound-threshold", "0.3"]
        expected = "--sound-threshold applies to --class-agnostic evaluation only"
    elif case == "checkpoint":
        args += ["--checkpoint", str(tmp_path / "model.pth")]
        expected = "either --predictions or --checkpoint"
    elif case == "no_predictions":
        args = ["eval", "--data", data_dir]
        expected = "missing option --predictions"
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code != 0
    assert expected in err
    assert "Traceback" not in err + out
    assert err.strip().startswith("error:") and len(err.strip().splitlines()) == 1, err
    assert not json_path.exists()
    assert not [p for p in tmp_path.rglob("*.tmp*")]  # nothing half-written


def test_json_replaces_earlier_results_only(dataset, tmp_path, monkeypatch, capsys):
    """--json never replaces a file that is not an avseg eval results JSON (a checkpoint, a user's notes); an
    earlier results JSON - of this avseg or an older one, without "mode" - is replaced (re-running is normal)."""
    from models.pipeline.evaluate_predictions import is_results_json

    pred_dir = tmp_path / "pred"
    _perfect(pred_dir)
    args = ["eval", "--predictions", str(pred_dir), "--data", str(dataset.data_dir), "--json"]
    weights = tmp_path / "last.pt"
    weights.write_bytes(b"PK\x03\x04 not json" * 100)
    notes = tmp_path / "notes.json"
    notes.write_text('{"split": "mine"}')
    for path in (weights, notes):
        before = path.read_bytes()
        code, out, err = run_cli(monkeypatch, capsys, *args, str(path))
        assert code == 2 and f"refusing to overwrite {path}: it is not an avseg eval results JSON" in err
        assert len(err.strip().splitlines()) == 1 and "eval test" not in err, err  # refused before scoring
        assert path.read_bytes() == before
    result = tmp_path / "result.json"
    result.write_text(json.dumps({"split": "test", "miou": 0.5, "per_class_iou": {}}))  # an older avseg's result
    assert is_results_json(result)
    code, _, err = run_cli(monkeypatch, capsys, *args, str(result))
    assert code == 0, err
    assert json.loads(result.read_text())["miou"] == 1.0 and is_results_json(result)
    code, _, err = run_cli(monkeypatch, capsys, *args, str(result))  # and again: its own result
    assert code == 0, err
    for mode in ("open-vocabulary", "class-agnostic"):
        result.write_text(json.dumps({"mode": mode, "split": "val"}))
        assert is_results_json(result)
    assert not is_results_json(weights) and not is_results_json(notes) and not is_results_json(tmp_path)


# ------------------------------------------------------------------------------------------- round trip


def test_round_trip_synthetic_prepare_eval(tmp_path, monkeypatch, capsys):
    """synthetic AVSBench tree -> prepare -> predictions from the GT -> `avseg eval`."""
    from models.data.synthetic import make_synthetic_avsbench
    from models.pipeline.prepare import prepare_dataset

    synthetic = make_synthetic_avsbench(tmp_path / "root", num_train=2, num_val=2, num_test=4, seed=3)
    prepare_dataset(tmp_path / "root", tmp_path / "data")
    records = PreparedData.open(tmp_path / "data").load_split("test")
    assert records
    gt_224 = {}  # the evaluator's GT, derived here from the synthetic clean labels with PIL NEAREST
    for record in records:
        video = synthetic.video(record.uid)
        assert (video.height, video.width) != (224, 224)
        for k in record.labelled_frames:
            label = Image.fromarray(video.label_index(k)).resize((224, 224), Image.NEAREST)
            gt_224[record.uid, k] = np.asarray(label)

    def evaluate_cli(pred_dir: Path, json_name: str) -> dict:
        json_path = tmp_path / json_name
        code, out, err = run_cli(
            monkeypatch, capsys, "eval", "--predictions", str(pred_dir), "--data", str(tmp_path / "data"),
            "--split", "test", "--json", str(json_path),
        )
        assert code == 0, err
        return json.loads(json_path.read_text())

    for k_uid, gt in gt_224.items():  # index PNGs at 448 x 448 and RGB palette PNGs at 224 x 224
        uid, k = k_uid
        write_index_mask(tmp_path / "pred_index" / uid / f"{k}.png", gt.repeat(2, 0).repeat(2, 1))
        write_colour_mask(tmp_path / "pred_rgb" / uid / f"{k}.png", gt)
    present = sorted({int(c) for gt in gt_224.values() for c in np.unique(gt)})
    assert any(c in BASE_IDS for c in present) and any(c in NOVEL_IDS for c in present)
    for folder in ("pred_index", "pred_rgb"):
        result = evaluate_cli(tmp_path / folder, f"{folder}.json")
        assert result["num_frames"] == len(gt_224)
        assert result["miou"] == 1.0 and result["harmonic_miou"] == 1.0 and result["base_miou"] == 1.0
        assert result["novel_miou"] == 1.0
        assert sorted(i for i, v in enumerate(result["per_class_iou"].values()) if v is not None) == present
        assert all(v == 1.0 for v in result["per_class_iou"].values() if v is not None)
        assert result["fscore"] == pytest.approx((len(present) - 1) / 71)

    for (uid, k), gt in gt_224.items():
        write_index_mask(tmp_path / "pred_bg" / uid / f"{k}.png", np.zeros((30, 40), np.uint8))
    result = evaluate_cli(tmp_path / "pred_bg", "bg.json")
    total = sum(gt.size for gt in gt_224.values())
    background = sum(int((gt == 0).sum()) for gt in gt_224.values())
    assert result["per_class_iou"]["background"] == pytest.approx(background / total, abs=1e-12)
    assert result["miou"] == pytest.approx(background / total / len(present), abs=1e-12)
    assert result["base_miou"] == 0.0 and result["novel_miou"] == 0.0
    assert result["harmonic_miou"] == 0.0 and result["fscore"] == 0.0

    # The official protocol's quirk: GT is resized with PIL NEAREST, predictions with torch nearest, so
    # a prediction equal to the GT at the original frame size does not score exactly 1.
    for (uid, k) in gt_224:
        write_index_mask(tmp_path / "pred_native" / uid / f"{k}.png", synthetic.video(uid).label_index(k))
    result = evaluate_cli(tmp_path / "pred_native", "native.json")
    assert 0.8 < result["miou"] < 1.0
