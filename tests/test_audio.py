"""Audio branch: VGGish front end (vs torchvggish), wav reading, padding, VGGish network, frozen encoder, weights."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch

from models.errors import AVSegError
from models.ovavss.audio import (
    AudioEncoder,
    VGGish,
    load_vggish_weights,
    pad_examples,
    read_wav,
    read_wav_examples,
    waveform_to_log_mel_examples,
)
from models.ovavss.audio_frontend import (
    mel_matrix,
    num_examples_for,
    num_log_mel_frames,
    periodic_hann,
)

torch.set_num_threads(1)

vggish_input = pytest.importorskip("torchvggish.vggish_input")
torchvggish_net = pytest.importorskip("torchvggish.torchvggish")
mel_features = pytest.importorskip("torchvggish.mel_features")


# --------------------------------------------------------------------------------------------- front end


def test_front_end_matches_torchvggish_16k_mono() -> None:
    rng = np.random.default_rng(0)
    wave = rng.uniform(-1, 1, 16000 * 3 + 4321)
    ours = waveform_to_log_mel_examples(wave, 16000)
    ref = vggish_input.waveform_to_examples(wave, 16000, return_tensor=False)
    assert ours.dtype == np.float32 and ours.shape == ref.shape == (3, 96, 64)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)


def test_front_end_matches_torchvggish_44k_stereo() -> None:
    rng = np.random.default_rng(1)
    t = np.arange(int(44100 * 2.5)) / 44100
    left = 0.5 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)
    right = 0.3 * np.sin(2 * np.pi * 3000 * t) + 0.05 * rng.standard_normal(t.size)
    wave = np.stack([left, right], axis=1)  # (N, 2)
    ours = waveform_to_log_mel_examples(wave, 44100)
    ref = vggish_input.waveform_to_examples(wave, 44100, return_tensor=False)
    assert ours.shape == ref.shape == (2, 96, 64)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)


def test_frame_and_example_count_formula() -> None:
    # 5 s: 1 + (80000 - 400) // 160 = 498 frames -> 5 examples; 10 s: 998 frames -> 10 examples
    assert num_log_mel_frames(80_000) == 498 and num_examples_for(80_000) == 5
    assert num_log_mel_frames(160_000) == 998 and num_examples_for(160_000) == 10
    # exactly 288 frames needs 400 + 287 * 160 samples; one sample less gives 287 frames -> 2 examples
    exact = 400 + 287 * 160
    assert num_log_mel_frames(exact) == 288 and num_examples_for(exact) == 3
    assert num_log_mel_frames(exact - 1) == 287 and num_examples_for(exact - 1) == 2
    assert num_log_mel_frames(399) == 0 and num_examples_for(399) == 0
    zeros = np.zeros
    assert waveform_to_log_mel_examples(zeros(exact), 16000).shape == (3, 96, 64)
    assert waveform_to_log_mel_examples(zeros(exact - 1), 16000).shape == (2, 96, 64)
    assert waveform_to_log_mel_examples(zeros(100), 16000).shape == (0, 96, 64)  # reference crashes here
    assert waveform_to_log_mel_examples(zeros(0), 44100).shape == (0, 96, 64)
    assert waveform_to_log_mel_examples(zeros((3, 2)), 44100).shape == (0, 96, 64)  # too short for resampy


def test_silence_is_log_offset_and_examples_are_consecutive_blocks() -> None:
    silent = waveform_to_log_mel_examples(np.zeros(16000 * 2), 16000)
    np.testing.assert_allclose(silent, np.log(0.01), rtol=1e-6)
    rng = np.random.default_rng(2)
    wave = rng.uniform(-1, 1, 16000 * 2)
    both = waveform_to_log_mel_examples(wave, 16000)
    # example 1 starts at frame 96 = sample 96 * 160; computing from there gives the same first example
    second = waveform_to_log_mel_examples(wave[96 * 160:], 16000)
    np.testing.assert_allclose(both[1], second[0], atol=1e-6)


def test_mel_matrix_and_window() -> None:
    ours = mel_matrix()
    ref = mel_features.spectrogram_to_mel_matrix(
        num_mel_bins=64, num_spectrogram_bins=257, audio_sample_rate=16000, lower_edge_hertz=125.0,
        upper_edge_hertz=7500.0)
    assert ours.shape == (257, 64)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)
    assert (ours[0] == 0).all() and (ours >= 0).all() and ours.max() <= 1.0
    n = np.arange(400)
    np.testing.assert_allclose(periodic_hann(400), 0.5 - 0.5 * np.cos(2 * np.pi * n / 400), atol=1e-15)
    assert periodic_hann(400)[0] == 0 and periodic_hann(400)[-1] > 0  # periodic, not symmetric


def test_pure_tone_peaks_in_its_mel_band() -> None:
    t = np.arange(16000 * 2) / 16000
    examples = waveform_to_log_mel_examples(0.5 * np.sin(2 * np.pi * 1000 * t), 16000)
    peak_band = int(examples[0].mean(0).argmax())
    mel = lambda f: 1127 * np.log(1 + f / 700)  # noqa: E731
    centres = np.linspace(mel(125), mel(7500), 66)[1:-1]
    assert peak_band == int(np.abs(centres - mel(1000)).argmin())


def test_front_end_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="waveform must be"):
        waveform_to_log_mel_examples(np.zeros((2, 3, 4)), 16000)
    with pytest.raises(ValueError, match="sample_rate"):
        waveform_to_log_mel_examples(np.zeros(1000), 0)


# --------------------------------------------------------------------------------------------- reading, padding


def test_read_wav_int16_scaling_mono_and_stereo(tmp_path) -> None:
    rng = np.random.default_rng(3)
    mono = rng.integers(-32768, 32767, 1234, dtype=np.int16)
    stereo = rng.integers(-32768, 32767, (999, 2), dtype=np.int16)
    soundfile.write(tmp_path / "m.wav", mono, 16000, subtype="PCM_16")
    soundfile.write(tmp_path / "s.wav", stereo, 44100, subtype="PCM_16")
    wave, sr = read_wav(tmp_path / "m.wav")
    assert sr == 16000 and wave.dtype == np.float64 and wave.shape == (1234,)
    np.testing.assert_array_equal(wave, mono / 32768.0)
    wave, sr = read_wav(tmp_path / "s.wav")
    assert sr == 44100 and wave.shape == (999, 2)
    np.testing.assert_array_equal(wave, stereo / 32768.0)
    assert wave.min() >= -1.0 and wave.max() < 1.0


def test_read_wav_errors_are_one_line_and_name_the_path(tmp_path) -> None:
    missing = tmp_path / "nope.wav"
    with pytest.raises(AVSegError, match="audio file not found") as info:
        read_wav(missing)
    assert str(missing) in str(info.value)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(AVSegError, match="cannot read audio file .*garbage.wav: Format not recognised") as info:
        read_wav(garbage)
    assert str(garbage) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(AVSegError, match="not a file"):
        read_wav(tmp_path)


def test_pad_examples() -> None:
    ex = np.random.default_rng(4).standard_normal((3, 96, 64)).astype(np.float32)
    padded = pad_examples(ex)
    assert padded.shape == (10, 96, 64) and padded.dtype == np.float32
    np.testing.assert_array_equal(padded[:3], ex)
    assert (padded[3:] == 0).all()  # zeros in the log-mel domain, not ln(0.01)
    many = np.random.default_rng(5).standard_normal((12, 96, 64))
    np.testing.assert_array_equal(pad_examples(many), many[:10])
    np.testing.assert_array_equal(pad_examples(ex, num_examples=3), ex)
    assert pad_examples(np.zeros((0, 96, 64)), 5).shape == (5, 96, 64)
    with pytest.raises(ValueError, match="examples must be"):
        pad_examples(np.zeros((3, 64, 96)))


def test_read_wav_examples(tmp_path) -> None:
    rng = np.random.default_rng(6)
    samples = rng.integers(-20000, 20000, (16000 * 5 + 777, 2), dtype=np.int16)
    soundfile.write(tmp_path / "audio.wav", samples, 16000, subtype="PCM_16")
    examples = read_wav_examples(tmp_path / "audio.wav")
    assert isinstance(examples, torch.Tensor)
    assert examples.dtype == torch.float32 and examples.shape == (10, 1, 96, 64)
    ref = vggish_input.wavfile_to_examples(str(tmp_path / "audio.wav"))  # official read + front end
    assert ref.shape == (5, 1, 96, 64)
    torch.testing.assert_close(examples[:5], ref.detach(), rtol=0, atol=1e-5)
    assert (examples[5:] == 0).all()
    assert read_wav_examples(tmp_path / "audio.wav", num_examples=4).shape == (4, 1, 96, 64)
    with pytest.raises(AVSegError):
        read_wav_examples(tmp_path / "missing.wav")


# --------------------------------------------------------------------------------------------- VGGish network


def _expected_vggish_keys() -> set[str]:
    keys = {f"features.{i}.{p}" for i in (0, 3, 6, 8, 11, 13) for p in ("weight", "bias")}
    return keys | {f"embeddings.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")}


def _reference_vgg():
    return torchvggish_net.VGG(torchvggish_net.make_layers(), postprocess=False).eval()


def test_vggish_keys_and_parameter_count() -> None:
    model = VGGish()
    assert set(model.state_dict()) == _expected_vggish_keys()
    assert sum(p.numel() for p in model.parameters()) == 72_141_184
    assert model.state_dict()["embeddings.0.weight"].shape == (4096, 12288)


def test_vggish_matches_torchvggish() -> None:
    torch.manual_seed(0)
    ref = _reference_vgg()
    model = VGGish().eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(3, 1, 96, 64) * 3 - 2  # roughly log-mel scale
    with torch.no_grad():
        ours, want = model(x), ref(x)
    assert ours.shape == (3, 128)
    assert (ours >= 0).all() and (ours > 0).float().mean() > 0.1  # post-ReLU and not trivially zero
    torch.testing.assert_close(ours, want, rtol=1e-5, atol=1e-6)


def test_vggish_flattens_nhwc() -> None:
    """The first Linear sees (h, w, c) order: feature (c, h, w) lands at column (h * 4 + w) * 512 + c."""
    model = VGGish().eval()
    captured = {}
    model.embeddings[0].register_forward_hook(lambda m, i, o: captured.update(inp=i[0]))
    conv_out = {}
    model.features.register_forward_hook(lambda m, i, o: conv_out.update(out=o))
    with torch.no_grad():
        model(torch.randn(2, 1, 96, 64))
    feat = conv_out["out"]
    assert feat.shape == (2, 512, 6, 4)
    for c, h, w in [(0, 0, 1), (5, 2, 3), (511, 5, 0)]:
        assert captured["inp"][1, (h * 4 + w) * 512 + c] == feat[1, c, h, w]


# --------------------------------------------------------------------------------------------- encoder, weights


def test_audio_encoder_is_frozen() -> None:
    encoder = AudioEncoder()
    assert isinstance(encoder.audio_backbone, VGGish)
    assert all(not p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert encoder.training and not encoder.audio_backbone.training
    assert not any(m.training for m in encoder.audio_backbone.modules())
    x = torch.randn(4, 1, 96, 64, requires_grad=True)
    out = encoder(x)
    assert out.shape == (4, 128) and out.grad_fn is None and not out.requires_grad
    assert set(encoder.state_dict()) == {f"audio_backbone.{k}" for k in _expected_vggish_keys()}


def _fake_weights(path, generator_seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(generator_seed)
    state = _reference_vgg().state_dict()
    torch.save(state, path)
    return state


def test_load_vggish_weights_into_vggish_and_encoder(tmp_path) -> None:
    path = tmp_path / "vggish-10086976.pth"
    state = _fake_weights(path)
    model = VGGish()
    load_vggish_weights(model, path)
    for key, value in state.items():
        assert torch.equal(model.state_dict()[key], value)
    encoder = AudioEncoder(weights=path)
    assert torch.equal(encoder.audio_backbone.embeddings[4].weight, state["embeddings.4.weight"])
    assert not encoder.audio_backbone.embeddings[4].weight.requires_grad
    ref = _reference_vgg()
    ref.load_state_dict(state)
    x = torch.randn(2, 1, 96, 64)
    with torch.no_grad():
        torch.testing.assert_close(encoder(x), ref(x), rtol=1e-5, atol=1e-6)


class NotWeights:
    """A pickled object that weights_only loading refuses."""


def test_load_vggish_weights_errors(tmp_path) -> None:
    model = VGGish()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(AVSegError, match="VGGish weights not found") as info:
        load_vggish_weights(model, tmp_path / "vggish.pth")
    assert str(tmp_path / "vggish.pth") in str(info.value)

    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(AVSegError, match="cannot read VGGish weights") as info:
        load_vggish_weights(model, corrupt)
    assert "\n" not in str(info.value) and str(info.value).endswith(": not a PyTorch weights file (corrupt or truncated?)")

    state = _fake_weights(tmp_path / "good.pth")
    prefixed = tmp_path / "prefixed.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, prefixed)
    with pytest.raises(AVSegError, match="missing embeddings.0.bias.*; unexpected module.embeddings.0.bias"):
        load_vggish_weights(model, prefixed)

    wrong_shape = dict(state, **{"embeddings.4.weight": torch.zeros(64, 4096)})
    torch.save(wrong_shape, tmp_path / "shape.pth")
    with pytest.raises(AVSegError, match=r"embeddings.4.weight has shape \(64, 4096\), expected \(128, 4096\)"):
        load_vggish_weights(model, tmp_path / "shape.pth")

    torch.save([torch.zeros(3)], tmp_path / "list.pth")
    with pytest.raises(AVSegError, match=r"not VGGish weights: .*list.pth holds no plain state dict of tensors \(found "
                                         r"a list, not a dict\)$"):
        load_vggish_weights(model, tmp_path / "list.pth")
    torch.save({"avseg_format": 1, "model": {"a": torch.zeros(1)}, "iteration": 3}, tmp_path / "run.pt")
    with pytest.raises(AVSegError, match=r"found keys avseg_format, model, iteration\) \(an avseg or OV-AVSS "
                                         r"checkpoint\? those go to --checkpoint\)$"):
        load_vggish_weights(model, tmp_path / "run.pt")

    torch.save({"features.0.weight": NotWeights()}, tmp_path / "object.pth")
    with pytest.raises(AVSegError, match="cannot read VGGish weights .*stores Python objects besides tensors"):
        load_vggish_weights(model, tmp_path / "object.pth")

    (tmp_path / "truncated.pth").write_bytes((tmp_path / "good.pth").read_bytes()[:100_000])
    with pytest.raises(AVSegError, match="cannot read VGGish weights .*truncated.pth: a zip archive that is not a "
                                         r"readable PyTorch file \(corrupt or truncated\?\)$"):
        load_vggish_weights(model, tmp_path / "truncated.pth")
    # failed loads leave the weights untouched (the shape error is caught before anything is copied)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
