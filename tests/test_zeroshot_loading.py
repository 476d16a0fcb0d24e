"""Loading the zero-shot method's Hugging Face folders: damaged weights are refused in one line, never run on random
layers; transformers' own LOAD REPORT stays off the terminal; messages for wrong folders (tiny models, no download)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from models import hub_models, weights
from models.errors import AVSegError
from models.zeroshot.audio_text import ClapAudioTagger
from models.zeroshot.detector import load_detector
from models.zeroshot.owlv2 import Owlv2Detector
from models.zeroshot.segmenter import SamBoxSegmenter

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def tiny(tiny_zeroshot_folders) -> dict[str, Path]:
    folders = tiny_zeroshot_folders
    return {"clap": folders["clap"], "sam": folders["sam"], "gdino": folders["grounding-dino"], "owl": folders["owlv2"]}


LOADERS = {
    "clap": ClapAudioTagger.from_folder,
    "sam": SamBoxSegmenter.from_folder,
    "gdino": lambda folder: load_detector("grounding-dino", folder),
    "owl": lambda folder: load_detector("owlv2", folder),
}


def damaged_copy(source: Path, target: Path, drop) -> tuple[Path, list[str]]:
    """A copy of a model folder whose model.safetensors lacks the tensors `drop(key)` selects; (folder, dropped)."""
    shutil.copytree(source, target)
    tensors = load_file(target / "model.safetensors")
    dropped = sorted(key for key in tensors if drop(key))
    assert dropped
    save_file({k: v for k, v in tensors.items() if k not in dropped}, target / "model.safetensors",
              metadata={"format": "pt"})
    return target, dropped


def one_line_error(call) -> str:
    with pytest.raises(AVSegError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize("part, label, drop", [
    ("sam", "SAM", lambda key: key.startswith("mask_decoder.")),
    ("clap", "CLAP", lambda key: key.startswith("audio_projection.")),
    ("gdino", "Grounding DINO",
     lambda key: any(part in key for part in ("bbox_embed", "class_embed", "decoder.layers.1"))),
    ("owl", "OWLv2", lambda key: key.startswith("box_head.")),
    ("clap", "CLAP", lambda key: key.endswith("batch_norm.running_mean")),  # learned statistics, not computed
])
def test_missing_tensors_are_refused_in_one_line(tiny, tmp_path, capfd, part, label, drop):
    folder, dropped = damaged_copy(tiny[part], tmp_path / "damaged", drop)
    message = one_line_error(lambda: LOADERS[part](folder))
    assert message.startswith(f"the {label} weights in {folder} are incomplete: "), message
    assert "tensor(s) of the model are missing (" in message and dropped[0] in message
    assert "LOAD REPORT" not in "".join(capfd.readouterr())


def test_incomplete_weights_load_with_a_warning_only_when_asked(tiny, tmp_path, monkeypatch):
    folder, dropped = damaged_copy(tiny["sam"], tmp_path / "damaged", lambda key: key.startswith("mask_decoder."))
    assert "AVSEG_ALLOW_INCOMPLETE_WEIGHTS=1 loads it anyway" in one_line_error(lambda: LOADERS["sam"](folder))
    monkeypatch.setenv("AVSEG_ALLOW_INCOMPLETE_WEIGHTS", "1")
    with pytest.warns(UserWarning, match="are incomplete: .*loaded anyway with those tensors random"):
        assert LOADERS["sam"](folder) is not None


def test_unmodified_tiny_models_load(tiny):
    for part, load in LOADERS.items():
        assert load(tiny[part]) is not None


def test_computed_buffers_may_be_absent(tiny, tmp_path):
    # position ids, token type ids and relative position indices are rebuilt by the model itself
    folder, _ = damaged_copy(tiny["clap"], tmp_path / "no_buffers",
                             lambda key: key.endswith(("position_ids", "token_type_ids", "relative_position_index",
                                                       "num_batches_tracked")))
    loaded = ClapAudioTagger.from_folder(folder)
    reference = ClapAudioTagger.from_folder(tiny["clap"])
    assert torch.equal(loaded.model.text_model.embeddings.position_ids,
                       reference.model.text_model.embeddings.position_ids)


def test_config_that_does_not_fit_the_weights_is_one_line_naming_tensors(tiny, tmp_path, capfd):
    from transformers.utils import logging as transformers_logging

    folder = shutil.copytree(tiny["clap"], tmp_path / "other_projection")
    config = json.loads((folder / "config.json").read_text())
    config["projection_dim"] = 17
    (folder / "config.json").write_text(json.dumps(config))
    before = transformers_logging.get_verbosity()
    try:
        transformers_logging.set_verbosity(logging.INFO)
        message = one_line_error(lambda: ClapAudioTagger.from_folder(folder))
        assert transformers_logging.get_verbosity() == logging.INFO  # restored after loading
    finally:
        transformers_logging.set_verbosity(before)
    assert message.startswith(f"the CLAP weights in {folder} do not fit its config.json: "), message
    assert "audio_projection.linear1.bias is (16,) in the file but (17,) in the model" in message
    assert "report" not in message.lower()
    captured = "".join(capfd.readouterr())
    assert "LOAD REPORT" not in captured and "MISMATCH" not in captured


def test_config_without_model_type_says_so(tiny, tmp_path):
    folder = shutil.copytree(tiny["owl"], tmp_path / "no_type")
    (folder / "config.json").write_text("{}")
    message = one_line_error(lambda: Owlv2Detector.from_folder(folder))
    assert message == f"{folder / 'config.json'} has no model_type: not an OWLv2 model (expected model_type 'owlv2')"
    assert "None" not in message


def test_wrong_model_type_uses_the_right_article(tiny):
    message = one_line_error(lambda: Owlv2Detector.from_folder(tiny["sam"]))
    assert message == f"{tiny['sam']} holds model_type 'sam', not an OWLv2 model ('owlv2')"
    assert "not a CLAP model" in one_line_error(lambda: ClapAudioTagger.from_folder(tiny["sam"]))


def hf_cache_repo(root: Path, source: Path, revisions: list[str]) -> Path:
    """`models--laion--clap-htsat-unfused` as the Hugging Face cache lays it out, one snapshot per revision."""
    repo = root / "models--laion--clap-htsat-unfused"
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    for revision in revisions:
        shutil.copytree(source, repo / "snapshots" / revision)
    (repo / "refs" / "main").write_text(revisions[0])
    return repo


def test_hf_cache_repo_root_gets_a_hint_to_its_snapshots(tiny, tmp_path):
    revisions = ["cca9e288ab447cee67d9ada1085b6ed2fb2b3bd5", "0123456789abcdef0123456789abcdef01234567"]
    repo = hf_cache_repo(tmp_path, tiny["clap"], revisions)
    snapshot = repo / "snapshots" / sorted(revisions)[0]
    for message in (one_line_error(lambda: ClapAudioTagger.from_folder(repo)),
                    one_line_error(lambda: hub_models.check_model_folder(weights.get_weight("clap-htsat-unfused"),
                                                                         repo))):
        assert "has no config.json" in message and str(snapshot) in message, message
        assert all(revision in message for revision in revisions), message
    assert ClapAudioTagger.from_folder(snapshot) is not None  # the hinted folder loads
    single = hf_cache_repo(tmp_path / "single", tiny["clap"], revisions[:1])
    assert one_line_error(lambda: ClapAudioTagger.from_folder(single)).endswith(
        f"(it looks like a Hugging Face cache folder: pass its snapshot {single / 'snapshots' / revisions[0]})")
    plain = tmp_path / "plain"
    plain.mkdir()
    assert "snapshots" not in one_line_error(lambda: ClapAudioTagger.from_folder(plain))
