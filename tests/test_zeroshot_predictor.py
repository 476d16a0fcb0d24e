"""ZeroShotPredictor's logic with controlled components: audio gating, per-frame windows, fusion, output format."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from models.prediction import ClipInput
from models.zeroshot.config import ZeroShotConfig
from models.zeroshot.predictor import ZeroShotPredictor
from zeroshot_fakes import BoxMaskSegmenter

SR = 16000
TONES = {"violin": 440.0, "dog": 1000.0, "man": 200.0}


def tone(freq: float, seconds: float, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


class ToneTagger:
    """Similarity 0.9 for the prompt of each class whose tone is in the window, 0.5 for null prompts, 0 else."""

    logit_scale = 30.0

    def __init__(self):
        self.calls = []

    def similarities(self, windows, texts):
        self.calls.append((len(windows), list(texts)))
        out = np.zeros((len(windows), len(texts)))
        for w, window in enumerate(windows):
            spectrum = np.abs(np.fft.rfft(window, n=SR))  # 1 Hz bins
            for k, text in enumerate(texts):
                name = next((n for n in TONES if f"sound of {n}." in text), None)
                if name is None:
                    out[w, k] = 0.5
                elif spectrum[int(TONES[name]) - 3 : int(TONES[name]) + 4].max() > 0.3 * spectrum.max():
                    out[w, k] = 0.9
        return out


class SceneDetector:
    """Every frame shows the same objects: (name, box, score); queried names get `score`, others 0.01."""

    name = "fake"

    def __init__(self, objects):
        self.objects = objects
        self.calls = []

    def detect(self, frames, names):
        self.calls.append((len(frames), list(names)))
        boxes = np.array([box for _, box, _ in self.objects], dtype=np.float32).reshape(-1, 4)
        scores = np.array([[score if name == queried else 0.01 for queried in names]
                           for name, _, score in self.objects], dtype=np.float32).reshape(len(self.objects), len(names))
        return [SimpleNamespace(boxes=boxes, class_scores=scores) for _ in frames]


class TableRescorer:
    """CLIP stand-in: the probabilities of the class whose box contains the mask's centre, from a table."""

    def __init__(self, table):
        self.table = table  # list of (box, probabilities over the vocabulary)
        self.vocabulary = ()

    def set_vocabulary(self, names):
        self.vocabulary = tuple(names)

    def probabilities(self, frame, masks):
        out = []
        for mask in masks:
            ys, xs = np.nonzero(mask)
            cx, cy = xs.mean(), ys.mean()
            row = next(p for (x1, y1, x2, y2), p in self.table if x1 <= cx < x2 and y1 <= cy < y2)
            out.append(row)
        return np.array(out, dtype=np.float32).reshape(len(masks), len(self.vocabulary))


def make_predictor(objects, config=ZeroShotConfig(rescore=False), rescorer=None, vocabulary=("violin", "dog", "man")):
    predictor = ZeroShotPredictor(ToneTagger(), SceneDetector(objects), BoxMaskSegmenter(), rescorer, config)
    predictor.set_vocabulary(vocabulary)
    return predictor


def clip_of(waveform, times, frames=None, size=(48, 64)):
    if frames is None:
        frames = np.full((len(times),) + size + (3,), 100, dtype=np.uint8)
    return ClipInput(frames=frames, audio_examples=np.zeros((len(times), 1, 96, 64), np.float32),
                     waveform_16k=waveform, times=tuple(times))


VIOLIN_BOX = (2, 2, 20, 30)
DOG_BOX = (30, 10, 60, 40)
OBJECTS = [("violin", VIOLIN_BOX, 0.8), ("dog", DOG_BOX, 0.7)]


def test_only_sounding_classes_are_segmented_frame_by_frame():
    # frames at 10..14 s; the waveform span starts at 10 s: violin for 2 s, silence 1 s, dog for 2 s
    waveform = np.concatenate([tone(440, 2), np.zeros(SR, np.float32), tone(1000, 2.5)])
    predictor = make_predictor(OBJECTS)
    predictions = predictor.predict_clip(clip_of(waveform, [10.0, 11.0, 12.0, 13.0, 14.0]))
    labels = [[inst.label for inst in p.instances] for p in predictions]
    assert labels == [["violin"], ["violin"], [], ["dog"], ["dog"]]
    # the detector ran once, on the four sounding frames, asked only for the sounding names
    assert predictor.detector.calls == [(4, ["violin", "dog"])]
    x1, y1, x2, y2 = VIOLIN_BOX
    expected = np.zeros((48, 64), np.uint8)
    expected[y1:y2, x1:x2] = 1
    np.testing.assert_array_equal(predictions[0].label_map, expected)
    instance = predictions[0].instances[0]
    assert instance.class_index == 0 and instance.score == pytest.approx(0.8)
    assert 0.9 < instance.sound_score <= 1.0  # CLAP probability of "violin" in that window
    assert predictions[2].label_map.sum() == 0
    evidence = predictor.last_evidence
    assert evidence[2].loudness_dbfs == float("-inf") and not evidence[2].sounding.any()


def test_silent_clip_costs_no_vision_work():
    predictor = make_predictor(OBJECTS)
    predictions = predictor.predict_clip(clip_of(np.zeros(5 * SR, np.float32), [0.0, 1.0, 2.0, 3.0, 4.0]))
    assert all(not p.instances and p.label_map.shape == (48, 64) and not p.label_map.any() for p in predictions)
    assert predictor.detector.calls == [] and predictor.segmenter.calls == 0 and predictor.tagger.calls == []
    no_track = predictor.predict_clip(clip_of(None, [0.0, 1.0]))
    assert len(no_track) == 2 and not any(p.instances for p in no_track)


def test_quiet_sound_below_the_silence_level_is_ignored():
    predictor = make_predictor(OBJECTS)
    faint = tone(440, 2, amplitude=1e-4)  # about -83 dBFS
    assert not any(p.instances for p in predictor.predict_clip(clip_of(faint, [0.0, 1.0])))
    loud = make_predictor(OBJECTS, ZeroShotConfig(rescore=False, silence_dbfs=-100.0))
    assert [p.instances[0].label for p in loud.predict_clip(clip_of(faint, [0.0, 1.0]))] == ["violin", "violin"]


def test_windows_follow_the_frame_times_not_the_frame_order():
    predictor = make_predictor(OBJECTS)
    waveform = np.concatenate([tone(440, 1), tone(1000, 1.5)])
    windows = predictor.audio_windows(clip_of(waveform, [3.0, 4.0]))
    assert [len(w) for w in windows] == [15600, 15600]
    np.testing.assert_array_equal(windows[1], waveform[SR : SR + 15600])
    # times that are not whole seconds: 2.504 s rounds to the 10 ms grid like the VGGish examples (2.50 s)
    windows = predictor.audio_windows(clip_of(np.arange(3 * SR, dtype=np.float32) / (4 * SR), [2.0, 2.504]))
    assert windows[1][0] * 4 * SR == 0.5 * SR
    with pytest.raises(ValueError, match="timestamp"):
        predictor.audio_windows(ClipInput(np.zeros((2, 4, 4, 3), np.uint8), np.zeros((2, 1, 96, 64)), waveform, (0.0,)))


def test_motion_policy_prefers_the_moving_instance_of_a_sounding_class():
    objects = [("violin", (0, 0, 20, 20), 0.8), ("violin", (30, 0, 50, 20), 0.7)]
    frames = np.full((2, 48, 64, 3), 100, dtype=np.uint8)
    frames[1, 0:20, 30:50] = 200  # the second (lower-scoring) violin moves
    waveform = tone(440, 2)
    moving = make_predictor(objects, ZeroShotConfig(rescore=False, instance_policy="motion"))
    chosen = [[tuple(np.argwhere(i.mask).min(axis=0)) for i in p.instances]
              for p in moving.predict_clip(clip_of(waveform, [0.0, 1.0], frames))]
    assert chosen == [[(0, 30)], [(0, 30)]]
    best = make_predictor(objects, ZeroShotConfig(rescore=False, instance_policy="best"))
    assert [len(p.instances) for p in best.predict_clip(clip_of(waveform, [0.0, 1.0], frames))] == [1, 1]
    assert best.predict_clip(clip_of(waveform, [0.0], frames[:1]))[0].instances[0].score == pytest.approx(0.8)
    keep_all = make_predictor(objects, ZeroShotConfig(rescore=False, instance_policy="all"))
    assert [len(p.instances) for p in keep_all.predict_clip(clip_of(waveform, [0.0, 1.0], frames))] == [2, 2]


def test_clip_rescoring_renames_between_sounding_classes():
    # violin and man both sound; the detector calls the left box "violin" (0.6) but CLIP says "man" (0.9)
    waveform = tone(440, 2) + tone(200, 2)
    objects = [("violin", (0, 0, 20, 20), 0.6)]
    table = [((0, 0, 20, 20), [0.1, 0.0, 0.9])]
    config = ZeroShotConfig(rescore=True, rescore_weight=0.5, audio_threshold=0.2)
    predictor = make_predictor(objects, config, TableRescorer(table))
    # the fake detector gives "man" only 0.01 for this box: combined man = sqrt(0.01 * 0.9) = 0.095 < violin
    # sqrt(0.6 * 0.1) = 0.245, so the label stays violin; with CLIP alone (w = 1) it becomes man
    first = predictor.predict_clip(clip_of(waveform, [0.0]))[0].instances
    assert [(i.label, round(i.score, 3)) for i in first] == [("violin", round(np.sqrt(0.06), 3))]
    clip_only = make_predictor(objects, ZeroShotConfig(rescore=True, rescore_weight=1.0), TableRescorer(table))
    assert [i.label for i in clip_only.predict_clip(clip_of(waveform, [0.0]))[0].instances] == ["man"]
    # a class CLIP prefers but that is not sounding is never chosen
    dog_table = [((0, 0, 20, 20), [0.05, 0.9, 0.05])]
    silent_dog = make_predictor(objects, ZeroShotConfig(rescore=True, rescore_weight=1.0, score_threshold=0.01),
                                TableRescorer(dog_table))
    assert [i.label for i in silent_dog.predict_clip(clip_of(waveform, [0.0]))[0].instances] == ["violin"]
    # ... and with the default score threshold the weak violin (CLIP 0.05) is dropped rather than renamed
    strict = make_predictor(objects, ZeroShotConfig(rescore=True, rescore_weight=1.0), TableRescorer(dog_table))
    assert strict.predict_clip(clip_of(waveform, [0.0]))[0].instances == []


def test_describe_is_json_and_vocabulary_is_required():
    predictor = ZeroShotPredictor(ToneTagger(), SceneDetector(OBJECTS), BoxMaskSegmenter(), None,
                                  ZeroShotConfig(rescore=False), sources={"clap": "/x"})
    with pytest.raises(RuntimeError, match="set_vocabulary"):
        predictor.predict_clip(clip_of(tone(440, 1), [0.0]))
    predictor.set_vocabulary(["violin"])
    described = json.loads(json.dumps(predictor.describe()))
    assert described["method"] == "zeroshot" and described["weights"] == {"clap": "/x"} and described["detector"] == "fake"
    assert described["options"]["instance_policy"] == "motion"
    with pytest.raises(ValueError, match="rescorer"):
        ZeroShotPredictor(ToneTagger(), SceneDetector(OBJECTS), BoxMaskSegmenter(), None, ZeroShotConfig(rescore=True))
    with pytest.raises(ValueError, match="1 to 5 frames"):
        predictor.predict_clip(clip_of(tone(440, 6), [0.0, 1, 2, 3, 4, 5]))


# ---------------------------------------------------------------- input checks, predict_clips, config


@pytest.mark.parametrize("waveform, error, message", [
    (np.stack([tone(440, 3), tone(1000, 3)]), ValueError, "mono 16 kHz float"),  # stereo (2, N)
    (tone(440, 3)[:, None], ValueError, r"1-D \(N,\)"),
    ((tone(440, 3) * 32767).astype(np.int16), TypeError, "mono 16 kHz float"),
    (tone(440, 3) * 32767, ValueError, r"in \[-1, 1\]"),  # int16-scaled floats
    (np.full(3 * SR, np.nan, np.float32), ValueError, "NaN"),
])
def test_waveform_must_be_mono_float_samples(waveform, error, message):
    predictor = make_predictor(OBJECTS)
    with pytest.raises(error, match=message):
        predictor.predict_clip(clip_of(waveform, [0.0, 1.0, 2.0]))
    assert predictor.detector.calls == []


@pytest.mark.parametrize("times, error, message", [
    ([-1.0, 0.0], ValueError, ">= 0"),
    ([float("nan"), 1.0], ValueError, "finite"),
    ([0.0, float("inf")], ValueError, "finite"),
    (["0", "1"], TypeError, "numbers"),
])
def test_frame_times_must_be_finite_non_negative_seconds(times, error, message):
    with pytest.raises(error, match=message):
        make_predictor(OBJECTS).predict_clip(clip_of(tone(440, 3), times))


def test_waveform_ending_early_is_silence_after_its_end_as_the_pipeline_cuts_it():
    from models.pipeline.frame_audio import FrameAudio

    # a 3.5 s track and frames at 1..4 s: the span the pipeline cuts ends with the audio, 1.5 s into frame 3's window
    track = tone(440, 3.5)
    times = [1.0, 2.0, 3.0, 4.0]
    span = FrameAudio(track).waveform_span(times)
    assert len(span) == int(2.5 * SR)
    predictor = make_predictor(OBJECTS)
    windows = predictor.audio_windows(clip_of(span, times))
    assert [len(w) for w in windows] == [15600] * 4  # every window has the full length
    np.testing.assert_array_equal(windows[2][: SR // 2], track[3 * SR : int(3.5 * SR)])
    assert not windows[2][SR // 2 :].any() and not windows[3].any()  # zeros past the end of the audio
    labels = [[i.label for i in p.instances] for p in predictor.predict_clip(clip_of(span, times))]
    assert labels == [["violin"], ["violin"], ["violin"], []]
    assert predictor.last_evidence[3].loudness_dbfs == float("-inf")


def test_predict_clips_equals_predict_clip_on_each_clip_in_order():
    waveform = np.concatenate([tone(440, 2), np.zeros(SR, np.float32), tone(1000, 2.5)])
    clips = [clip_of(waveform, [10.0, 11.0]), clip_of(waveform[2 * SR :], [12.0, 13.0, 14.0])]
    one_by_one = [make_predictor(OBJECTS).predict_clip(clip) for clip in clips]
    predictor = make_predictor(OBJECTS)
    results = predictor.predict_clips(iter(clips))
    assert iter(results) is results  # a generator: nothing runs before the first result is asked for
    assert predictor.detector.calls == []
    results = list(results)
    assert len(results) == 2
    for batched, single in zip(results, one_by_one):
        assert [[(i.label, i.score) for i in p.instances] for p in batched] == \
            [[(i.label, i.score) for i in p.instances] for p in single]
        for b, s in zip(batched, single):
            np.testing.assert_array_equal(b.label_map, s.label_map)
    assert [[i.label for i in p.instances] for p in results[1]] == [[], ["dog"], ["dog"]]


@pytest.mark.parametrize("options, error, message", [
    ({"silence_dbfs": float("nan")}, ValueError, "silence_dbfs must be a finite number"),
    ({"silence_dbfs": float("-inf")}, ValueError, "silence_dbfs must be a finite number"),
    ({"silence_dbfs": 5.0}, ValueError, "silence_dbfs must be <= 0"),
    ({"max_sounding": 1.5}, TypeError, "max_sounding must be a whole number"),
    ({"max_instances": True}, TypeError, "max_instances must be a whole number"),
    ({"detector_short_side": 400.0}, TypeError, "detector_short_side must be a whole number"),
    ({"score_threshold": "0.5"}, TypeError, "score_threshold must be a number"),
    ({"audio_threshold": float("nan")}, ValueError, "audio_threshold must be a finite number"),
    ({"box_threshold": "0.3"}, TypeError, "box_threshold must be a number"),
    ({"motion_weight": -1.0}, ValueError, "motion_weight must be >= 0"),
    ({"min_mask_pixels": -1}, ValueError, "min_mask_pixels must be >= 0"),
    ({"rescore": "no"}, TypeError, "rescore must be True or False"),
    ({"null_prompts": "silence"}, TypeError, "null_prompts must be a tuple of strings"),
    ({"audio_prompt": None}, TypeError, "audio_prompt must be a string"),
])
def test_config_checks_types_and_finite_numbers(options, error, message):
    with pytest.raises(error, match=message):
        ZeroShotConfig(**options)


def test_config_numbers_are_stored_as_python_numbers():
    config = ZeroShotConfig(max_sounding=np.int64(2), audio_threshold=np.float32(0.25), silence_dbfs=-50)
    assert type(config.max_sounding) is int and type(config.audio_threshold) is float
    json.dumps(config.to_dict())


def test_a_dict_is_not_a_config():
    with pytest.raises(TypeError, match="config must be a ZeroShotConfig, got dict"):
        ZeroShotPredictor.from_pretrained({"detector": "owlv2"})
    with pytest.raises(TypeError, match="config must be a ZeroShotConfig"):
        ZeroShotPredictor(ToneTagger(), SceneDetector(OBJECTS), BoxMaskSegmenter(), None, {"rescore": False})
