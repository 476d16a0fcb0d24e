"""Loading CLIP through open_clip: local files in several formats, clear offline and mismatch errors."""

from __future__ import annotations

import json
import re
import time
import urllib.error

import numpy as np
import open_clip
import pytest
import torch
from open_clip.model import QuickGELU

from models.errors import AVSegError
from models.ovavss import clip_model as clip_module
from models.ovavss.clip_model import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    WEIGHTS_OPTION,
    canonical_model_name,
    file_sha256,
    load_clip,
)

torch.set_num_threads(1)

TINY = "avseg-test-tiny-clip"
TINY_WIDE = "avseg-test-tiny-clip-wide"


def tiny_config(width: int) -> dict:
    return {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": width, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """Registers two tiny architectures with open_clip and saves random weights of the first one."""
    folder = tmp_path_factory.mktemp("clip-configs")
    (folder / f"{TINY}.json").write_text(json.dumps(tiny_config(32)))
    (folder / f"{TINY_WIDE}.json").write_text(json.dumps(tiny_config(48)))
    open_clip.add_model_config(folder)
    torch.manual_seed(0)
    model = open_clip.create_model(TINY, pretrained=None)
    state = {key: value.clone() for key, value in model.state_dict().items()}
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    torch.save(state, path)
    return path, state


def assert_same_weights(model: torch.nn.Module, state: dict) -> None:
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


def test_local_state_dict_file(tiny_weights):
    path, state = tiny_weights
    clip = load_clip(TINY, pretrained=None, weights_path=path)
    assert_same_weights(clip.model, state)
    assert clip.weights_id == f"sha256-{file_sha256(path)[:16]}"
    assert clip.model_name == TINY and clip.image_size == 32 and clip.embed_dim == 16
    assert clip.mean == OPENAI_CLIP_MEAN and clip.std == OPENAI_CLIP_STD
    assert not clip.model.training and not any(p.requires_grad for p in clip.model.parameters())
    assert not clip.quick_gelu
    tokens = clip.tokenizer(["a photo of a hair-dryer."])
    assert tokens.shape == (1, 77)
    assert clip.model.encode_text(tokens).shape == (1, 16)
    # `pretrained` given a path behaves like weights_path.
    again = load_clip(TINY, pretrained=str(path))
    assert_same_weights(again.model, state)
    assert again.weights_id == clip.weights_id


def test_prefixed_checkpoint_and_safetensors(tiny_weights, tmp_path):
    path, state = tiny_weights
    wrapped = {"model": {f"clip_adapter.clip_model.{k}": v for k, v in state.items()}, "iteration": 5}
    wrapped["model"]["backbone.stem.conv1.weight"] = torch.zeros(2, 3)  # other parts of an OV-AVSS checkpoint
    wrapped["model"]["criterion.empty_weight"] = torch.tensor([1.0, 0.1])
    checkpoint = tmp_path / "model_ov_avss.pth"
    torch.save(wrapped, checkpoint)
    assert_same_weights(load_clip(TINY, weights_path=checkpoint).model, state)

    from safetensors.torch import save_file

    safetensors_path = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(safetensors_path))
    assert_same_weights(load_clip(TINY, weights_path=safetensors_path).model, state)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_openai_style_torchscript_archive_implies_quick_gelu(tiny_weights, tmp_path):
    path, state = tiny_weights
    source = open_clip.create_model(TINY, pretrained=None, force_quick_gelu=True)
    source.load_state_dict(state)
    archive = tmp_path / "ViT-tiny.pt"
    torch.jit.script(source.eval()).save(str(archive))
    clip = load_clip(TINY, weights_path=archive)
    assert_same_weights(clip.model, state)
    assert clip.quick_gelu
    assert any(isinstance(m, QuickGELU) for m in clip.model.modules())
    image = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(clip.model.encode_image(image), source.encode_image(image))


def test_quick_gelu_option(tiny_weights):
    path, _ = tiny_weights
    assert any(isinstance(m, QuickGELU) for m in load_clip(TINY, weights_path=path, quick_gelu=True).model.modules())
    assert not any(isinstance(m, QuickGELU) for m in load_clip(TINY, weights_path=path).model.modules())


def test_random_weights_have_no_identity(tiny_weights):
    clip = load_clip(TINY)
    assert clip.weights_id is None


def test_file_errors(tiny_weights, tmp_path):
    path, state = tiny_weights
    with pytest.raises(AVSegError, match="CLIP weights file not found: .*missing.pt"):
        load_clip(TINY, weights_path=tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00\x01 not a checkpoint")
    with pytest.raises(AVSegError, match="cannot read CLIP weights file .*garbage.pt"):
        load_clip(TINY, weights_path=garbage)
    with pytest.raises(AVSegError) as info:
        load_clip(TINY_WIDE, weights_path=path)
    assert f"{path} does not hold {TINY_WIDE} CLIP weights" in str(info.value)
    assert "shape" in str(info.value)
    partial = tmp_path / "partial.pt"
    torch.save({k: v for k, v in state.items() if not k.startswith("visual.")}, partial)
    with pytest.raises(AVSegError, match=r"tensors missing \(e.g. 'visual\."):
        load_clip(TINY, weights_path=partial)
    not_tensors = tmp_path / "list.pt"
    torch.save([1, 2, 3], not_tensors)
    with pytest.raises(AVSegError, match="does not hold a state dict"):
        load_clip(TINY, weights_path=not_tensors)


class _NotAWeight:
    """Something only a full unpickling could rebuild."""


def test_damaged_files_give_a_plain_reason(tiny_weights, tmp_path):
    """`--clip-weights` given a damaged file: one line naming it, with a reason and none of torch's internals."""
    path, _ = tiny_weights
    good = path.read_bytes()
    cases = {
        # LONG_BINGET of a missing memo slot: was "cannot read CLIP weights file corrupt.pt: 3700098262"
        "corrupt.pt": (b"j" + (3700098262).to_bytes(4, "little") + np.random.default_rng(7).bytes(64),
                       "not a PyTorch or safetensors file (corrupt or truncated?)"),
        "empty.pt": (b"", "the file is empty (0 bytes; an interrupted copy?)"),
        "truncated.pt": (good[: len(good) // 2], "a zip archive that is not a readable PyTorch file"),
        "random.safetensors": (np.random.default_rng(1).bytes(300), "not a safetensors file (corrupt or truncated?)"),
        **{f"random{seed}.pt": (np.random.default_rng(seed).bytes(size), "not a PyTorch or safetensors file")
           for seed, size in ((0, 1), (2, 100), (3, 4096), (5, 65536))},
    }
    torch.save({"weight": torch.ones(1), "extra": _NotAWeight()}, tmp_path / "objects.pt")
    for name, (content, reason) in cases.items():
        (tmp_path / name).write_bytes(content)
    cases["objects.pt"] = (None, f"not a plain weights file (it needs the Python object {__name__}._NotAWeight")
    for name, (_, reason) in cases.items():
        bad = tmp_path / name
        with pytest.raises(AVSegError) as info:
            load_clip(TINY, weights_path=bad)
        message = info.value.message
        assert message.startswith(f"cannot read CLIP weights file {bad}: ") and "\n" not in message, message
        rest = message.replace(str(bad), "")
        assert reason in rest, message
        assert not re.search(r"[A-Za-z]*(Error|Exception)\b", rest), message  # no "KeyError", "EOFError"
        assert not re.search(r"\d{2,}", rest), message  # no bare numbers (memo slots, opcodes)
        assert "PytorchStreamReader" not in rest and "Weights only" not in rest and "operand" not in rest, message


def test_unknown_model_and_tag():
    with pytest.raises(AVSegError, match="unknown CLIP model 'ViT-Q-99'"):
        load_clip("ViT-Q-99", "openai")
    with pytest.raises(AVSegError) as info:
        load_clip("ViT-B-16", "nonexistent_tag")
    assert "unknown pretrained tag 'nonexistent_tag'" in str(info.value) and "'openai'" in str(info.value)


def test_offline_tag_gives_one_clear_error_quickly(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    start = time.perf_counter()
    with pytest.raises(AVSegError) as info:
        load_clip("ViT-B/16", "openai")
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert "\n" not in message
    assert "ViT-B-16 'openai'" in message and "HF_HUB_OFFLINE" in message
    assert "https://huggingface.co/timm/vit_base_patch16_clip_224.openai" in message
    assert "openaipublic.azureedge.net" in message and f"{WEIGHTS_OPTION} PATH" in message

    with pytest.raises(AVSegError, match="local-dir:FOLDER"):
        load_clip("hf-hub:laion/CLIP-ViT-B-16-laion2B-s34B-b88K")


def test_network_errors_are_recognised_through_the_cause_chain():
    try:
        try:
            try:
                raise urllib.error.URLError("[Errno -2] Name or service not known")
            except urllib.error.URLError as inner:
                raise FileNotFoundError("could not fetch") from inner
        except FileNotFoundError as middle:
            raise RuntimeError("Failed to download weights for tag 'openai': could not fetch") from middle
    except RuntimeError as error:
        wrapped = error
    config = open_clip.get_pretrained_cfg("ViT-L-14-336", "openai")
    user_error = clip_module._user_error(wrapped, "ViT-L-14-336", "openai", config)
    assert isinstance(user_error, AVSegError)
    assert "ViT-L-14-336 'openai'" in str(user_error) and "vit_large_patch14_clip_336.openai" in str(user_error)
    assert clip_module._user_error(RuntimeError("shape bug"), "ViT-B-16", "openai", {}) is None


def test_canonical_model_names():
    assert canonical_model_name("ViT-B/16") == "ViT-B-16"
    assert canonical_model_name("ViT-L/14@336px") == "ViT-L-14-336"
    assert canonical_model_name("ViT-L-14-336") == "ViT-L-14-336"
    assert canonical_model_name("local-dir:/a/b") == "local-dir:/a/b"


def test_open_clip_folder_with_damaged_weights_is_one_plain_line(tmp_path):
    """`--clip-weights FOLDER` whose weights file is empty, cut short or not PyTorch: open_clip raises EOFError (which
    click turns into a bare "Aborted."), RuntimeError or KeyError; each is one line naming the folder and why."""
    from test_predictor import make_tiny_clip_dir

    good = make_tiny_clip_dir(tmp_path / "good")
    weights = (good / "open_clip_pytorch_model.bin").read_bytes()
    cases = {
        "empty": (b"", "the file is empty"),
        "cut": (weights[: len(weights) // 2], "a zip archive that is not a readable PyTorch file"),
        "text": (b"hello, these are not weights\n" * 20, "not a PyTorch or safetensors file"),
    }
    for name, (content, reason) in cases.items():
        folder = make_tiny_clip_dir(tmp_path / name)
        (folder / "open_clip_pytorch_model.bin").write_bytes(content)
        with pytest.raises(AVSegError) as info:
            load_clip(f"local-dir:{folder}", pretrained=None)
        message = info.value.message
        assert message.startswith(f"CLIP model folder {folder} unusable: cannot read CLIP weights file ")
        assert reason in message and "\n" not in message
    load_clip(f"local-dir:{good}", pretrained=None)  # the intact folder loads
