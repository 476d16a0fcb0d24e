"""Official OV-AVSS checkpoints and Mask2Former init files against fakes built from ovavss-spec.md §10."""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from models import official
from models.checkpoint import CHECKPOINT_FORMAT, save_checkpoint
from models.errors import AVSegError
from models.training_init import load_matching
import fake_official as fake

torch.set_num_threads(1)


def _params(shapes: dict, buffers: set, prefix: str) -> int:
    return sum(math.prod(s) for k, s in shapes.items() if k.startswith(prefix) and k not in buffers)


def _mirror_module(shapes: dict[str, tuple[int, ...]], buffers: set[str]) -> nn.Module:
    """An nn.Module whose state_dict has exactly `shapes` (zeros), parameters vs buffers as given."""
    root = nn.Module()
    for key, shape in shapes.items():
        *path, leaf = key.split(".")
        module = root
        for part in path:
            if part not in module._modules:
                module.add_module(part, nn.Module())
            module = module._modules[part]
        dtype = torch.int64 if leaf == "relative_position_index" else torch.float32
        value = torch.zeros(shape, dtype=dtype)
        if key in buffers:
            module.register_buffer(leaf, value)
        else:
            module.register_parameter(leaf, nn.Parameter(value))
    return root


# ------------------------------------------------------------------------------ the reference tables
def test_r50_totals_match_spec():
    shapes, buffers = fake.official_r50_key_shapes(), fake.official_buffer_keys("r50")
    assert _params(shapes, buffers, "backbone.") == 23_454_912
    assert sum(math.prod(shapes[k]) for k in buffers if k.startswith("backbone.")) == 106_240  # FrozenBN stats
    assert _params(shapes, buffers, "sem_seg_head.pixel_decoder.") == 7_221_184
    assert _params(shapes, buffers, "sem_seg_head.pixel_decoder.transformer.encoder.vl_layer.") == 1_185_280
    assert _params(shapes, buffers, "sem_seg_head.predictor.") == 17_459_714
    trained = _params(shapes, buffers, "backbone.") + _params(shapes, buffers, "sem_seg_head.")
    assert trained == 48_135_810
    assert round(trained * 4 / 2**20, 1) == 183.6  # paper Table 2 "Param." (MiB, spec §12 item 8)
    assert {k for k in buffers if not k.startswith("backbone.")} == {
        "criterion.empty_weight", "clip_adapter.pixel_mean", "clip_adapter.pixel_std"}
    vggish = fake.official_r50_key_shapes(with_vggish=True)
    assert _params(vggish, buffers, "audio_encoder.audio_backbone.") == 72_141_184


def test_swinb_totals_match_spec():
    shapes, buffers = fake.official_swinb_key_shapes(), fake.official_buffer_keys("swinb")
    assert _params(shapes, buffers, "backbone.") == 86_880_376
    assert _params(shapes, buffers, "sem_seg_head.pixel_decoder.") == 6_729_664
    assert _params(shapes, buffers, "sem_seg_head.predictor.") == 17_459_714
    trained = _params(shapes, buffers, "backbone.") + _params(shapes, buffers, "sem_seg_head.")
    assert trained == 111_069_754 and round(trained * 4 / 2**20, 1) == 423.7
    index_buffers = [k for k in buffers if k.endswith("relative_position_index")]
    assert len(index_buffers) == 24 and all(shapes[k] == (144, 144) for k in index_buffers)
    # LayerNorms in Swin are parameters, not buffers.
    assert "backbone.layers.0.downsample.norm.weight" in shapes
    assert "backbone.layers.0.downsample.norm.weight" not in buffers


def test_mask2former_table_differs_only_by_audio_parts_and_class_count():
    ovavss, m2f = fake.official_r50_key_shapes(), fake.mask2former_key_shapes("r50")
    assert set(m2f) - set(ovavss) == set()
    new = {k for k in ovavss if k.startswith("sem_seg_head.") and k not in m2f}
    new_params = sum(math.prod(ovavss[k]) for k in new)
    assert new_params == 4_185_856  # "new audio-specific parameters overall (incl. fusion)", §10.3
    assert m2f["sem_seg_head.predictor.class_embed.weight"] == (81, 256)
    assert ovavss["sem_seg_head.predictor.class_embed.weight"] == (2, 256)


# ----------------------------------------------------------------------------- official checkpoints
def test_read_official_r50_wrapped(tmp_path: Path):
    path = tmp_path / "model_ov_avss_r50.pth"
    written = fake.make_fake_official_checkpoint(path, "r50", with_clip=True, with_vggish=True, compact=True)
    state, info = official.read_checkpoint_file(path)
    assert info.kind == "official-ovavss-r50" and info.backbone == "r50"
    assert info.wrapped and not info.module_prefix_stripped and info.iteration == 96227
    assert info.other_keys == ("iteration",)
    assert list(state) == list(written)
    assert all(torch.equal(state[k], written[k]) and state[k].dtype == written[k].dtype for k in written)
    expected = fake.official_r50_key_shapes(with_vggish=True, with_clip=True)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    assert info.num_tensors == len(expected) and info.num_values == sum(math.prod(s) for s in expected.values())


@pytest.mark.parametrize("module_prefix, wrap", [(True, True), (True, False), (False, False)])
def test_read_official_swinb_prefix_and_bare(tmp_path: Path, module_prefix: bool, wrap: bool):
    path = tmp_path / "model_ov_avss_swinb.pth"
    written = fake.make_fake_official_checkpoint(path, "swinb", with_vggish=False, module_prefix=module_prefix,
                                                 wrap_in_model=wrap, compact=True, seed=4)
    state, info = official.read_checkpoint_file(path)
    assert info.kind == "official-ovavss-swinb" and info.backbone == "swinb"
    assert info.module_prefix_stripped == module_prefix and info.wrapped == wrap
    assert info.iteration == (96227 if wrap else None)
    assert list(state) == list(written) and all(torch.equal(state[k], written[k]) for k in written)
    assert state["backbone.layers.2.blocks.17.attn.relative_position_index"].dtype == torch.int64


def test_module_prefix_only_stripped_when_on_every_key():
    mixed = {"module.backbone.stem.conv1.weight": torch.ones(1), "backbone.res2.0.conv1.weight": torch.ones(1)}
    assert official.strip_module_prefix(mixed) == (mixed, False)


def test_convert_splits_parts_without_renaming(tmp_path: Path):
    written = fake.make_fake_official_state_dict("r50", with_clip=True, with_vggish=True, compact=True)
    converted = official.convert_official_state_dict(written)
    table = fake.official_r50_key_shapes()
    model_keys = [k for k in table if k.startswith(("backbone.", "sem_seg_head."))]
    assert list(converted.model) == model_keys  # identity: our module tree uses the official names
    assert all(converted.model[k] is written[k] for k in model_keys)
    vggish = {k[len("audio_encoder.audio_backbone."):] for k in fake.official_r50_key_shapes(with_vggish=True)
              if k.startswith("audio_encoder.")}
    assert set(converted.audio) == vggish and "features.0.weight" in vggish and "embeddings.4.bias" in vggish
    assert converted.audio["embeddings.0.weight"].shape == (4096, 12288)
    assert "visual.conv1.weight" in converted.clip and "logit_scale" in converted.clip
    assert converted.clip["visual.conv1.weight"].shape == (768, 3, 16, 16)
    assert sorted(converted.dropped) == ["clip_adapter.pixel_mean", "clip_adapter.pixel_std",
                                         "criterion.empty_weight"]


def test_convert_no_legacy_renames_and_upcasts_half():
    state = {
        "module.sem_seg_head.input_proj.0.0.weight": torch.ones(2),  # legacy detectron2 would move this
        "module.sem_seg_head.predictor.static_query.weight": torch.ones(2),  # ... and rename this
        "module.clip_adapter.clip_model.visual.proj": torch.tensor([1.5, -2.25], dtype=torch.float16),
        "module.backbone.stem.conv1.weight": torch.tensor([0.1], dtype=torch.float64),
        "module.something.else": torch.ones(1),
    }
    converted = official.convert_official_state_dict(state)
    assert set(converted.model) == {"sem_seg_head.input_proj.0.0.weight",
                                    "sem_seg_head.predictor.static_query.weight", "backbone.stem.conv1.weight"}
    assert converted.clip["visual.proj"].dtype == torch.float32
    assert converted.clip["visual.proj"].tolist() == [1.5, -2.25]
    assert converted.model["backbone.stem.conv1.weight"].dtype == torch.float64  # only half types change
    assert converted.audio is None and converted.dropped == ["something.else"]
    with pytest.raises(AVSegError, match="no backbone"):
        official.convert_official_state_dict({"criterion.empty_weight": torch.ones(2)})


def test_numpy_inside_torch_file_is_accepted(tmp_path: Path):
    # detectron2 checkpoints may carry numpy arrays; allowed, converted to tensors.
    path = tmp_path / "np.pth"
    arrays = {"backbone.stem.conv1.weight": np.arange(6, dtype=np.float32).reshape(1, 6),
              "sem_seg_head.predictor.audio_query_embed.weight": np.ones((5, 2), np.float32)}
    torch.save({"model": arrays, "iteration": np.int64(10)}, path)
    state, info = official.read_checkpoint_file(path)
    assert info.kind == "official-ovavss-r50" and info.iteration == 10
    assert torch.equal(state["backbone.stem.conv1.weight"], torch.arange(6.0).reshape(1, 6))


def test_read_avseg_and_vggish_files(tmp_path: Path):
    model = {"backbone.w": torch.randn(3), "sem_seg_head.b": torch.randn(2)}
    save_checkpoint(tmp_path / "last.pt", {"avseg_format": CHECKPOINT_FORMAT, "kind": "train", "config_name": "r50",
                                            "model": model, "iteration": 12})
    state, info = official.read_checkpoint_file(tmp_path / "last.pt")
    assert info.kind == "avseg" and info.backbone == "r50" and info.iteration == 12 and info.config_name == "r50"
    assert all(torch.equal(state[k], model[k]) for k in model) and list(state) == list(model)
    vggish = {k[len("audio_encoder.audio_backbone."):]: torch.zeros(1)
              for k in fake.official_r50_key_shapes(with_vggish=True) if k.startswith("audio_encoder.")}
    torch.save(vggish, tmp_path / "vggish-10086976.pth")
    _, info = official.read_checkpoint_file(tmp_path / "vggish-10086976.pth")
    assert info.kind == "vggish" and info.backbone is None


class _Sneaky:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_read_errors(tmp_path: Path):
    with pytest.raises(AVSegError, match="not found"):
        official.read_checkpoint_file(tmp_path / "missing.pth")
    good = tmp_path / "good.pth"
    fake.make_fake_official_checkpoint(good, "r50", with_vggish=False, compact=True)
    data = good.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 3])
    with pytest.raises(AVSegError, match="corrupt") as info:
        official.read_checkpoint_file(tmp_path / "cut.pth")
    assert str(tmp_path / "cut.pth") in str(info.value)
    pwned = tmp_path / "pwned"
    torch.save({"model": {"backbone.stem.conv1.weight": torch.ones(1)}, "x": _Sneaky(pwned)}, tmp_path / "evil.pth")
    with pytest.raises(AVSegError, match="not a plain weights file"):
        official.read_checkpoint_file(tmp_path / "evil.pth")
    assert not pwned.exists()
    torch.save({"model": {"encoder.layer.0.weight": torch.ones(1), "head.bias": torch.ones(1)}},
               tmp_path / "other.pth")
    with pytest.raises(AVSegError, match=r"foreign checkpoint: .*first keys: encoder.layer.0.weight, head.bias"):
        official.read_checkpoint_file(tmp_path / "other.pth")
    torch.save([torch.ones(1)], tmp_path / "list.pth")
    with pytest.raises(AVSegError, match="foreign checkpoint.*list"):
        official.read_checkpoint_file(tmp_path / "list.pth")


# ----------------------------------------------------------------------------- Mask2Former .pkl init
def test_mask2former_pkl_loads_and_init_rule(tmp_path: Path):
    """Full-size R50 pickle (176 MB): keys/values round trip, detected kind, and the §9 init rule."""
    path = tmp_path / "model_final_3c8ec9.pkl"
    arrays = fake.make_fake_mask2former_pkl(path, "r50", seed=1)
    state = official.load_mask2former_pkl(path)
    assert list(state) == list(arrays)
    assert all(np.array_equal(state[k].numpy(), arrays[k]) for k in arrays)
    _, info = official.read_checkpoint_file(path)
    assert info.kind == "mask2former-r50" and info.wrapped and set(info.other_keys) == {
        "__author__", "matching_heuristics"}

    # Initialise the predictor + pixel decoder of an OV-AVSS-shaped module (built from the §10 table).
    shapes = {k: s for k, s in fake.official_r50_key_shapes().items()
              if k.startswith("sem_seg_head.") or k == "criterion.empty_weight"}
    module = _mirror_module(shapes, fake.official_buffer_keys("r50"))
    report = load_matching(module, state)
    assert set(report.skipped_shape) == {"sem_seg_head.predictor.class_embed.weight",
                                         "sem_seg_head.predictor.class_embed.bias", "criterion.empty_weight"}
    assert report.shape_mismatches["sem_seg_head.predictor.class_embed.weight"] == ((81, 256), (2, 256))
    new = set(report.missing)
    assert all(k.startswith(("sem_seg_head.pixel_decoder.transformer.encoder.vl_layer.",
                             "sem_seg_head.predictor.transformer_audio_cross_attention_layers.",
                             "sem_seg_head.predictor.audio_query_embed.", "sem_seg_head.predictor.audio_proj.",
                             "sem_seg_head.predictor.v2a.", "sem_seg_head.predictor.a2a.")) for k in new)
    assert sum(math.prod(shapes[k]) for k in new) == 4_185_856
    assert all(k.startswith("backbone.") for k in report.unexpected) and report.unexpected
    own = module.state_dict()
    for key in report.loaded:
        assert torch.equal(own[key], state[key])
    assert not own["sem_seg_head.predictor.class_embed.weight"].any()  # left at its initial value
    assert "3 skipped (shape)" in report.summary()


@pytest.mark.parametrize("protocol", [2, 5])
def test_pickle_protocols_and_bare_dict(tmp_path: Path, protocol: int):
    rng = np.random.default_rng(protocol)
    arrays = {"backbone.res2.0.conv1.weight": rng.standard_normal((4, 3, 1, 1)).astype(np.float32),
              "sem_seg_head.predictor.query_feat.weight": rng.standard_normal((2, 5)).astype(np.float32),
              "backbone.res2.0.conv1.norm.running_var": np.asfortranarray(rng.random((2, 3)))}
    path = tmp_path / "m.pkl"
    with open(path, "wb") as handle:
        pickle.dump(arrays, handle, protocol=protocol)
    state = official.load_mask2former_pkl(path)
    for key, array in arrays.items():
        assert state[key].dtype == torch.from_numpy(array).dtype
        assert np.array_equal(state[key].numpy(), array)
    assert official.read_checkpoint_file(path)[1].kind == "mask2former-r50"


@pytest.mark.parametrize("payload", ["system", "eval"])
def test_pickle_with_code_is_refused_without_running_it(tmp_path: Path, payload: str):
    pwned = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            if payload == "system":
                return (os.system, (f"touch {pwned}",))
            return (eval, (f"open({str(pwned)!r}, 'w').close()",))

    path = tmp_path / "evil.pkl"
    with open(path, "wb") as handle:
        pickle.dump({"model": {"backbone.stem.conv1.weight": np.zeros(2, np.float32), "x": Evil()}}, handle)
    for reader in (official.load_mask2former_pkl, official.read_checkpoint_file):
        with pytest.raises(AVSegError) as info:
            reader(path)
        message = str(info.value)
        assert message.startswith("refusing to unpickle ") and payload in message and str(path) in message
    assert not pwned.exists()


def test_pickle_errors(tmp_path: Path):
    path = tmp_path / "m.pkl"
    with open(path, "wb") as handle:
        pickle.dump({"model": {"backbone.stem.conv1.weight": np.ones((64, 3, 7, 7), np.float32)}}, handle, protocol=4)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AVSegError, match=r"^corrupt or truncated pickle, or not a pickle at all: .*m\.pkl$"):
        official.load_mask2former_pkl(path)
    with open(path, "wb") as handle:
        pickle.dump({"model": {"layer.weight": np.ones(2, np.float32)}}, handle, protocol=4)
    with pytest.raises(AVSegError, match="foreign checkpoint.*layer.weight"):
        official.load_mask2former_pkl(path)
    with pytest.raises(AVSegError, match="not found"):
        official.load_mask2former_pkl(tmp_path / "nope.pkl")
    (tmp_path / "t.pkl").write_text("not a pickle")
    with pytest.raises(AVSegError, match="not a pickle or PyTorch file"):
        official.load_mask2former_pkl(tmp_path / "t.pkl")


def test_load_mask2former_pkl_accepts_torch_files(tmp_path: Path):
    path = tmp_path / "init.pth"
    written = fake.make_fake_official_checkpoint(path, "r50", with_vggish=False, compact=True)
    state = official.load_mask2former_pkl(path)
    assert list(state) == list(written)


# ------------------------------------------------------------------------------------- load_matching
class _Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3, 4)
        self.head = nn.Linear(4, 2)
        self.register_buffer("scale", torch.zeros(4))
        self.register_buffer("cache", torch.zeros(1), persistent=False)


def test_load_matching_small_module():
    torch.manual_seed(0)
    module = _Small()
    head_before = module.head.weight.detach().clone()
    state = {
        "proj.weight": torch.randn(4, 3, dtype=torch.float64),  # matching name & shape (cast to float32)
        "proj.bias": torch.randn(4),
        "head.weight": torch.randn(81, 4),  # shape mismatch -> skipped
        "scale": torch.arange(4.0),  # buffer
        "cache": torch.ones(1),  # non-persistent buffer: not part of the state dict -> unexpected
        "extra.weight": torch.ones(1),
    }
    report = load_matching(module, state)
    assert report.loaded == ["proj.weight", "proj.bias", "scale"]
    assert report.skipped_shape == ["head.weight"]
    assert report.shape_mismatches == {"head.weight": ((81, 4), (2, 4))}
    assert report.missing == ["head.bias"] and report.unexpected == ["cache", "extra.weight"]
    assert report.loaded_values == 12 + 4 + 4
    assert torch.equal(module.proj.weight.detach(), state["proj.weight"].float())
    assert module.proj.weight.dtype == torch.float32
    assert torch.equal(module.scale, torch.arange(4.0)) and torch.equal(module.head.weight.detach(), head_before)
    assert not module.cache.any()
    summary = report.summary()
    assert "loaded 3 tensors" in summary and "head.weight (81, 4)->(2, 4)" in summary and "\n" not in summary


def test_load_matching_prefix():
    module = _Small()
    state = {"audio_encoder.audio_backbone.proj.bias": torch.full((4,), 7.0), "proj.bias": torch.ones(4),
             "audio_encoder.audio_backbone.zzz": torch.ones(1)}
    report = load_matching(module, state, prefix="audio_encoder.audio_backbone.")
    assert report.loaded == ["proj.bias"] and report.unexpected == ["zzz"]
    assert torch.equal(module.proj.bias.detach(), torch.full((4,), 7.0))
    assert set(report.missing) == {"proj.weight", "head.weight", "head.bias", "scale"}


# ------------------------------------------------------------------------ our model vs the §10 tables
def _build_our_model(config: str, meta: bool) -> nn.Module:
    try:
        from models.ovavss.config import get_config
        from models.ovavss.model import build_ovavss
    except ModuleNotFoundError as error:  # the network is not all there yet
        if (error.name or "").startswith("models."):
            pytest.skip(f"model code not available: {error}")
        raise
    if meta:
        try:
            with torch.device("meta"):
                return build_ovavss(get_config(config))
        except (RuntimeError, NotImplementedError):  # some initialisers need real values
            pass
    return build_ovavss(get_config(config))


@pytest.mark.parametrize("config", ["r50", "swinb"])
def test_our_model_uses_official_names_and_shapes(config: str):
    model = _build_our_model(config, meta=True)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    reference = {k: s for k, s in fake.official_key_shapes(config, with_vggish=True).items()
                 if k.startswith(("backbone.", "sem_seg_head.", "audio_encoder."))}
    assert sorted(set(ours) - set(reference)) == [] and sorted(set(reference) - set(ours)) == []
    assert {k for k in ours if ours[k] != reference[k]} == set()
    buffers = {k for k, _ in model.named_buffers() if k in ours}
    assert buffers == fake.official_buffer_keys(config) & set(reference)


def test_official_checkpoint_loads_into_our_model(tmp_path: Path):
    path = tmp_path / "model_ov_avss_r50.pth"
    written = fake.make_fake_official_checkpoint(path, "r50", with_clip=True, with_vggish=True, compact=True)
    state, _ = official.read_checkpoint_file(path)
    converted = official.convert_official_state_dict(state)
    model = _build_our_model("r50", meta=False)
    report = load_matching(model, converted.model)
    assert not report.skipped_shape and not report.unexpected
    assert all(k.startswith("audio_encoder.") for k in report.missing)
    audio = load_matching(model.audio_encoder.audio_backbone, converted.audio)
    assert not audio.missing and not audio.unexpected and not audio.skipped_shape
    own = model.state_dict()
    for key, value in written.items():
        if key.startswith(("backbone.", "sem_seg_head.", "audio_encoder.")):
            assert torch.equal(own[key], value.to(own[key].dtype)), key
