"""Weights registry, cache lookups, downloads (served from local bytes: no network ever), offline messages,
official-checkpoint conversion and the `avseg weights` commands."""

from __future__ import annotations

import errno
import hashlib
import http.client
import io
import socket
import ssl
import time
import urllib.error
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import fake_official as fake
from models import download
from models import official_conversion, weights
from models.errors import AVSegError, UsageError
from models.ovavss.config import get_config

PAYLOAD = bytes(range(256)) * 4099  # ~1 MB, more than one download chunk


class FakeResponse(io.BytesIO):
    """What urlopen returns: a readable body with headers."""

    def __init__(self, body: bytes, length: int | None) -> None:
        super().__init__(body)
        self.headers = {} if length is None else {"Content-Length": str(length)}


@pytest.fixture
def served(monkeypatch):
    """Replace the downloader's URL opener: serves PAYLOAD for every URL and records the calls."""
    calls: list[str] = []
    state = {"body": PAYLOAD, "length": len(PAYLOAD), "error": None}

    def opener(request, timeout=None):
        calls.append(request.full_url)
        if state["error"] is not None:
            raise state["error"]
        return FakeResponse(state["body"], state["length"])

    monkeypatch.setattr(download, "urlopen", opener)
    return {"calls": calls, "state": state}


@pytest.fixture
def online(monkeypatch, tmp_path):
    for variable in download.OFFLINE_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AVSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


@pytest.fixture
def offline_env(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("AVSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def entry(sha256_prefix: str | None = None, sha256: str | None = None) -> weights.WeightFile:
    return weights.WeightFile(name="test-weights", filename="test-10086976.pth", url="https://example.invalid/w.pth",
                              sha256_prefix=sha256_prefix, sha256=sha256)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ---------------------------------------------------------------------------------------------- registry
def test_registry_entries():
    assert list(weights.REGISTRY) == ["vggish", "clip-vit-b-16", "clip-vit-l-14-336", "mask2former-r50-coco",
                                      "mask2former-swinb-coco", "ovavss-r50", "ovavss-swinb",
                                      "clap-htsat-unfused", "grounding-dino-tiny", "owlv2-base", "sam-vit-base"]
    vggish = weights.get_weight("vggish")
    assert vggish.url == "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth"
    assert vggish.sha256_prefix == "10086976" and vggish.filename.endswith("10086976.pth")
    r50 = weights.get_weight("mask2former-r50-coco")
    assert r50.url.endswith("/coco/instance/maskformer2_R50_bs16_50ep/model_final_3c8ec9.pkl")
    swinb = weights.get_weight("mask2former-swinb-coco")
    assert swinb.url.endswith("/coco/instance/maskformer2_swin_base_IN21k_384_bs16_50ep/model_final_83d103.pkl")
    for name, config in (("clip-vit-b-16", "r50"), ("clip-vit-l-14-336", "swinb")):
        clip = weights.get_weight(name)
        assert clip.source == weights.SOURCE_OPEN_CLIP
        assert (clip.clip_model, clip.clip_tag) == (get_config(config).clip_model, get_config(config).clip_pretrained)
        assert weights.clip_weight(clip.clip_model, "openai") is clip
    assert weights.get_weight("ovavss-r50").source == weights.SOURCE_MANUAL
    with pytest.raises(UsageError, match="unknown weights 'nope'"):
        weights.get_weight("nope")


# --------------------------------------------------------------------------------------------- download
def test_download_checks_the_hash_prefix_and_reports_progress(served, tmp_path):
    prefix = hashlib.sha256(PAYLOAD).hexdigest()[:8]
    seen: list[tuple[int, int | None]] = []
    path = download.download_file("https://example.invalid/w.pth", tmp_path / "dl" / f"w-{prefix}.pth",
                                  sha256_prefix=prefix, progress=lambda done, total: seen.append((done, total)))
    assert path.read_bytes() == PAYLOAD
    assert seen[0] == (0, len(PAYLOAD)) and seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) >= 3
    assert leftovers(tmp_path / "dl") == [path.name]


@pytest.mark.parametrize("case", ["prefix", "full"])
def test_hash_mismatch_keeps_nothing(served, tmp_path, case):
    destination = tmp_path / "dl" / "w.pth"
    kwargs = {"sha256_prefix": "10086976"} if case == "prefix" else {"sha256": "0" * 64}
    with pytest.raises(AVSegError, match="checksum mismatch for https://example.invalid/w.pth"):
        download.download_file("https://example.invalid/w.pth", destination, **kwargs)
    assert leftovers(tmp_path / "dl") == []


def test_truncated_and_failed_transfers_keep_nothing(served, tmp_path):
    served["state"]["length"] = len(PAYLOAD) + 10
    with pytest.raises(AVSegError, match="cut short"):
        download.download_file("https://example.invalid/w.pth", tmp_path / "dl" / "w.pth")
    served["state"]["error"] = urllib.error.URLError("[Errno -2] Name or service not known")
    with pytest.raises(AVSegError, match=r"cannot download w.pth from https://example.invalid/w.pth: .*Name or service"):
        download.download_file("https://example.invalid/w.pth", tmp_path / "dl" / "w.pth")
    served["state"]["error"] = urllib.error.HTTPError("https://example.invalid/w.pth", 404, "Not Found", {}, None)
    with pytest.raises(AVSegError, match="HTTP 404"):
        download.download_file("https://example.invalid/w.pth", tmp_path / "dl" / "w.pth")
    assert leftovers(tmp_path / "dl") == []


@pytest.mark.parametrize("failure, message", [
    (ssl.SSLError(1, "[SSL: DECRYPTION_FAILED_OR_BAD_RECORD_MAC] decryption failed"),
     r"cannot download w.pth from https://example.invalid/w.pth: .*DECRYPTION_FAILED.* \(no network\?"),
    (ConnectionResetError(104, "Connection reset by peer"), r"cannot download w.pth from .*: .*Connection reset"),
    (socket.timeout("timed out"), r"cannot download w.pth from .*: timed out"),
    (http.client.IncompleteRead(b"abc", 10), r"download of w.pth from .* was cut short: the server closed the "
                                             r"connection 10 bytes early"),
])
def test_errors_while_reading_the_response_are_download_errors(monkeypatch, tmp_path, failure, message):
    """The network failing in the middle of the body is reported as a failed download, not as "cannot write" the
    destination (an SSLError is an OSError) nor as an internal error (IncompleteRead is none)."""
    class Failing(FakeResponse):
        def read(self, size=-1):
            if self.tell() > 0:
                raise failure
            return super().read(size)

    monkeypatch.setattr(download, "urlopen", lambda request, timeout=None: Failing(PAYLOAD, len(PAYLOAD)))
    with pytest.raises(AVSegError, match=message) as info:
        download.download_file("https://example.invalid/w.pth", tmp_path / "dl" / "w.pth")
    assert "cannot write" not in info.value.message
    assert leftovers(tmp_path / "dl") == []


def test_a_full_disk_while_downloading_is_a_write_error(served, monkeypatch, tmp_path):
    real_open = open

    class FullDisk:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(download, "open", lambda path, mode: FullDisk(real_open(path, mode)), raising=False)
    with pytest.raises(AVSegError, match=r"cannot write .*w.pth: No space left on device"):
        download.download_file("https://example.invalid/w.pth", tmp_path / "dl" / "w.pth")
    assert leftovers(tmp_path / "dl") == []


def test_interrupted_download_removes_the_temporary_file(monkeypatch, tmp_path):
    class Interrupting(FakeResponse):
        def read(self, size=-1):
            if self.tell() > 0:
                raise KeyboardInterrupt
            return super().read(size)

    monkeypatch.setattr(download, "urlopen", lambda request, timeout=None: Interrupting(PAYLOAD, len(PAYLOAD)))
    with pytest.raises(KeyboardInterrupt):
        download.download_file("https://example.invalid/w.pth", tmp_path / "dl" / "w.pth")
    assert leftovers(tmp_path / "dl") == []


def test_ensure_weight_downloads_once_into_the_cache(served, online, tmp_path):
    weight = entry(sha256_prefix=hashlib.sha256(PAYLOAD).hexdigest()[:8])
    path = weights.ensure_weight(weight)
    assert path == tmp_path / "cache" / weight.filename and path.read_bytes() == PAYLOAD
    assert served["calls"] == [weight.url]
    assert weights.ensure_weight(weight) == path and len(served["calls"]) == 1
    assert weights.find_weight(weight) == path


@pytest.mark.parametrize("how", ["HF_HUB_OFFLINE", "AVSEG_OFFLINE", "argument"])
def test_offline_missing_weight_is_one_fast_line(served, online, tmp_path, monkeypatch, how):
    if how != "argument":
        monkeypatch.setenv(how, "1")
    started = time.perf_counter()
    with pytest.raises(AVSegError) as info:
        weights.ensure_weight(weights.VGGISH, offline=how == "argument")
    assert time.perf_counter() - started < 1.0
    message = str(info.value)
    assert "\n" not in message
    assert weights.VGGISH.filename in message and weights.VGGISH.url in message
    assert str(tmp_path / "cache" / weights.VGGISH.filename) in message
    assert served["calls"] == []


def test_local_paths_and_torch_hub_cache_work_offline(served, offline_env, tmp_path):
    explicit = tmp_path / "my-vggish.pth"
    explicit.write_bytes(b"x")
    assert weights.ensure_weight(weights.VGGISH, explicit) == explicit
    with pytest.raises(AVSegError, match="vggish weights not found: .*missing.pth"):
        weights.ensure_weight(weights.VGGISH, tmp_path / "missing.pth")
    hub = tmp_path / "torch" / "hub" / "checkpoints" / weights.VGGISH.filename
    hub.parent.mkdir(parents=True)
    hub.write_bytes(b"x")  # an interrupted copy: far smaller than the weights
    with pytest.raises(AVSegError, match=r"the cached vggish weights .* are damaged \(it is 1 byte, the weights are "
                                         r"about 289 MB\): `avseg weights fetch --force vggish`"):
        weights.ensure_weight(weights.VGGISH)
    full_size(hub)
    assert weights.ensure_weight(weights.VGGISH) == hub
    assert served["calls"] == []


def test_fetch_replaces_a_damaged_cached_copy_when_online(served, online, tmp_path):
    good = hashlib.sha256(PAYLOAD).hexdigest()
    weight = replace(entry(sha256=good), approx_size_mb=None)
    cached = tmp_path / "cache" / weight.filename
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not the weights")
    assert weights.fetch_weight(weight) == cached and cached.read_bytes() == PAYLOAD  # hash mismatch: downloaded
    assert len(served["calls"]) == 1
    assert weights.fetch_weight(weight) == cached and len(served["calls"]) == 1  # intact now: nothing to do
    hub = tmp_path / "torch" / "hub" / "checkpoints" / weight.filename  # torch.hub's copy is not avseg's to replace
    hub.parent.mkdir(parents=True)
    hub.write_bytes(b"damaged too")
    cached.unlink()
    with pytest.raises(AVSegError, match="are damaged .*: delete the file and fetch again"):
        weights.fetch_weight(weight)


def test_official_checkpoint_names_find_the_file_in_the_cache(offline_env, tmp_path, monkeypatch):
    with pytest.raises(AVSegError, match="ovavss-r50: model_ov_avss_r50.pth is not in the avseg cache; get it from "
                                         ".*pan.baidu.com.* and put it at .*cache/model_ov_avss_r50.pth"):
        weights.checkpoint_path("ovavss-r50")
    cached = tmp_path / "cache" / "model_ov_avss_r50.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"checkpoint")  # an interrupted copy
    with pytest.raises(AVSegError, match="ovavss-r50: the cached .* is damaged .it is 10 bytes, the weights are about "
                                         "1080 MB.; get it from"):
        weights.checkpoint_path("ovavss-r50")
    full_size(cached, 1080)
    assert weights.checkpoint_path("ovavss-r50") == cached
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ovavss-r50").write_bytes(b"a file of that name here")  # a path that exists is a path
    assert weights.checkpoint_path("ovavss-r50") == Path("ovavss-r50")
    assert weights.checkpoint_path("vggish") == Path("vggish")  # not a checkpoint name: left to the caller
    assert weights.checkpoint_path("runs/r50/last.pt") == Path("runs/r50/last.pt")
    # the official file's name as a path that is not there: how avseg finds it (the cached copy exists now)
    with pytest.raises(UsageError, match=r"^checkpoint not found: model_ov_avss_r50.pth \(a copy is in the avseg "
                                         r"cache: use --checkpoint ovavss-r50\)$"):
        weights.checkpoint_path("model_ov_avss_r50.pth")
    with pytest.raises(UsageError, match=r"^checkpoint not found: dl/model_ov_avss_swinb.pth \(get it from "
                                         r"https://pan.baidu.com/.*, then give its path, or put it at "
                                         r".*cache/model_ov_avss_swinb.pth and use --checkpoint ovavss-swinb\)$"):
        weights.checkpoint_path("dl/model_ov_avss_swinb.pth")
    (tmp_path / "model_ov_avss_r50.pth").write_bytes(b"x")  # a file that is there is the user's to give
    assert weights.checkpoint_path("model_ov_avss_r50.pth") == Path("model_ov_avss_r50.pth")


def test_a_cache_folder_that_is_a_file_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "cachefile").write_text("x")
    monkeypatch.setenv("AVSEG_CACHE", str(tmp_path / "cachefile"))
    with pytest.raises(AVSegError, match=f"the avseg cache folder {tmp_path / 'cachefile'} is a file"):
        weights.cache_dir()
    monkeypatch.setenv("AVSEG_CACHE", str(tmp_path / "cachefile" / "sub"))
    with pytest.raises(AVSegError, match="lies under .*cachefile, which is a file"):
        weights.ensure_weight(weights.VGGISH, offline=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AVSEG_CACHE", "relative/cache")
    assert weights.cache_dir() == tmp_path / "relative" / "cache"  # shown and used as an absolute path


def full_size(path: Path, megabytes: int = 289) -> Path:
    """Give `path` the size of the real weights without writing them (a sparse file of zeros)."""
    with open(path, "wb") as handle:
        handle.truncate(megabytes * 1_000_000)
    return path


def test_manual_weights_say_where_to_get_them(served, online, tmp_path):
    with pytest.raises(AVSegError) as info:
        weights.ensure_weight(weights.OVAVSS_R50)
    message = str(info.value)
    assert "pan.baidu.com" in message and "1234" in message
    assert str(tmp_path / "cache" / "model_ov_avss_r50.pth") in message
    assert served["calls"] == []


# ------------------------------------------------------------------------------------------------- CLIP
def fake_hf_cache(root: Path, repo: str, filename: str) -> Path:
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("abc123")
    snapshot = folder / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / filename).write_bytes(b"weights")
    return snapshot / filename


def test_clip_cache_lookup_and_fast_offline_message(offline_env, tmp_path, monkeypatch):
    import huggingface_hub.constants

    from models.clip_loading import load_classifier_clip

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    assert weights.cached_path(weights.CLIP_VIT_B_16) is None
    started = time.perf_counter()
    with pytest.raises(AVSegError) as info:
        load_classifier_clip(get_config("r50"), torch.device("cpu"), offline=True)
    assert time.perf_counter() - started < 1.5
    message = str(info.value)
    assert "\n" not in message and weights.CLIP_VIT_B_16.url in message
    assert str(tmp_path / "cache" / "clip-ViT-B-16-openai.safetensors") in message and "--clip-weights" in message

    cached = fake_hf_cache(tmp_path / "hf", "timm/vit_base_patch16_clip_224.openai", "open_clip_model.safetensors")
    assert weights.cached_path(weights.CLIP_VIT_B_16) == cached
    own = tmp_path / "cache" / weights.CLIP_VIT_B_16.filename
    own.parent.mkdir(parents=True, exist_ok=True)
    own.write_bytes(b"weights")
    assert weights.cached_path(weights.CLIP_VIT_B_16) == own  # the avseg cache comes first


# -------------------------------------------------------------------------------------------- conversion
def test_convert_official_checkpoint(tmp_path):
    source = tmp_path / "model_ov_avss_r50.pth"
    official = fake.make_fake_official_checkpoint(source, "r50", with_vggish=True, module_prefix=True, compact=True)
    report = official_conversion.convert_official_checkpoint(source, tmp_path / "out" / "r50.pt")
    assert report.kind == "official-ovavss-r50" and report.config_name == "r50"
    assert report.has_audio and not report.has_clip and report.iteration == 96227 and report.module_prefix_stripped
    assert set(report.dropped) == {"criterion.empty_weight", "clip_adapter.pixel_mean", "clip_adapter.pixel_std"}
    model_keys = [k for k in official if k.startswith(("backbone.", "sem_seg_head."))]
    assert report.model_tensors == len(model_keys)
    assert "with VGGish" in report.summary() and "without CLIP" in report.summary()

    from models.checkpoint import load_checkpoint

    converted = load_checkpoint(tmp_path / "out" / "r50.pt")
    assert converted["kind"] == official_conversion.CONVERTED_KIND and converted["config_name"] == "r50"
    assert set(converted["model"]) == set(model_keys)
    assert all(torch.equal(converted["model"][k], official[k]) for k in model_keys)
    prefix = "audio_encoder.audio_backbone."
    assert all(torch.equal(converted["audio"][k[len(prefix):]], v) for k, v in official.items() if k.startswith(prefix))

    from models.checkpoint_parts import read_checkpoint_parts

    parts = read_checkpoint_parts(tmp_path / "out" / "r50.pt")
    assert parts.kind == official_conversion.CONVERTED_KIND and parts.config_name == "r50" and parts.audio_state is not None
    assert parts.iteration == 96227


def test_convert_refuses_other_files(tmp_path):
    pkl = tmp_path / "model_final_3c8ec9.pkl"
    fake.make_fake_mask2former_pkl(pkl)
    with pytest.raises(AVSegError, match="not an official OV-AVSS checkpoint"):
        official_conversion.convert_official_checkpoint(pkl, tmp_path / "out.pt")
    source = tmp_path / "model_ov_avss_r50.pth"
    state = fake.make_fake_official_state_dict("r50", compact=True)
    del state["sem_seg_head.predictor.query_feat.weight"]
    torch.save({"model": state}, source)
    with pytest.raises(AVSegError, match="1 missing .*query_feat"):
        official_conversion.convert_official_checkpoint(source, tmp_path / "out.pt")
    with pytest.raises(AVSegError, match="refusing to overwrite"):
        official_conversion.convert_official_checkpoint(source, source)
    assert not (tmp_path / "out.pt").exists()
    good = tmp_path / "model_ov_avss_r50_good.pth"
    fake.make_fake_official_checkpoint(good, "r50", with_vggish=False, compact=True)
    official_conversion.convert_official_checkpoint(good, tmp_path / "converted.pt")
    with pytest.raises(AVSegError, match="converted.pt is already an avseg checkpoint .nothing to convert.: give it "
                                         "to --checkpoint"):
        official_conversion.convert_official_checkpoint(tmp_path / "converted.pt", tmp_path / "again.pt")


def test_convert_never_replaces_an_existing_file_without_force(tmp_path):
    source = tmp_path / "model_ov_avss_r50.pth"
    fake.make_fake_official_checkpoint(source, "r50", with_vggish=False, compact=True)
    trained = tmp_path / "last.pt"
    trained.write_bytes(b"a trained checkpoint")
    with pytest.raises(UsageError, match=f"{trained} exists: choose another output path, or --force to replace it"):
        official_conversion.convert_official_checkpoint(source, trained)
    assert trained.read_bytes() == b"a trained checkpoint"
    with pytest.raises(UsageError, match="is a folder"):
        official_conversion.convert_official_checkpoint(source, tmp_path)
    report = official_conversion.convert_official_checkpoint(source, trained, overwrite=True)
    assert report.destination == trained and trained.read_bytes() != b"a trained checkpoint"


def test_convert_refuses_incomplete_clip_weights_inside(tmp_path):
    """The fake official file holds 14 of CLIP's 302 tensors: a damaged file, not one "with CLIP"."""
    source = tmp_path / "model_ov_avss_r50.pth"
    fake.make_fake_official_checkpoint(source, "r50", with_clip=True, with_vggish=False, compact=True)
    with pytest.raises(AVSegError, match=r"does not hold ViT-B-16 CLIP weights: 288 of 302 tensors missing .*: the "
                                         "file is damaged"):
        official_conversion.convert_official_checkpoint(source, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def test_clip_weight_check_takes_the_whole_model_and_nothing_less():
    import open_clip

    from models.ovavss.clip_model import check_clip_weights

    with torch.device("meta"):
        whole = open_clip.create_model("ViT-B-16", device="meta").state_dict()
    check_clip_weights(whole, "x.pth", "ViT-B-16")  # shapes and names are all it looks at
    with pytest.raises(AVSegError, match="x.pth does not hold ViT-B-16 CLIP weights: 1 of 302 tensors missing"):
        check_clip_weights({k: v for k, v in whole.items() if k != "visual.proj"}, "x.pth", "ViT-B-16")
    with pytest.raises(AVSegError, match="'visual.proj' has shape"):
        check_clip_weights({**whole, "visual.proj": torch.empty(3, 3, device="meta")}, "x.pth", "ViT-B-16")


# --------------------------------------------------------------------------------------------------- CLI
def test_weights_cli(offline_env, tmp_path, monkeypatch):
    import huggingface_hub.constants

    from avseg_cli.weights_cmd import weights_app

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    (tmp_path / "cache").mkdir()
    cached = tmp_path / "cache" / weights.VGGISH.filename
    cached.write_bytes(b"x")
    runner = CliRunner()

    def rows() -> dict[str, str]:
        listed = runner.invoke(weights_app, ["list"], env={"COLUMNS": "300"})
        assert listed.exit_code == 0, listed.output
        return {line.split("│")[1].strip(): line for line in listed.output.splitlines() if line.count("│") >= 5}

    damaged = rows()["vggish"]  # a 1-byte file is no VGGish
    assert "damaged" in damaged and "it is 1 byte," in damaged and "avseg weights fetch --force vggish" in damaged
    refused = runner.invoke(weights_app, ["fetch", "vggish"])
    assert isinstance(refused.exception, AVSegError) and "are damaged (it is 1 byte," in str(refused.exception)
    assert "downloads are off" in str(refused.exception)

    full_size(cached)  # the right size, another content: listed (no hashing there), refused by fetch's hash check
    listed = rows()
    assert set(weights.REGISTRY) <= set(listed)
    assert "yes" in listed["vggish"] and str(cached) in listed["vggish"]
    assert "no" in listed["mask2former-r50-coco"] and "pan.baidu.com" in listed["ovavss-r50"]
    refused = runner.invoke(weights_app, ["fetch", "vggish"])
    assert "its SHA-256 starts" in str(refused.exception) and "not 10086976" in str(refused.exception)
    missing = runner.invoke(weights_app, ["fetch", "mask2former-r50-coco"])
    assert isinstance(missing.exception, AVSegError) and "HF_HUB_OFFLINE is set" in str(missing.exception)
    unknown = runner.invoke(weights_app, ["fetch", "nope"])
    assert isinstance(unknown.exception, UsageError)

    source = tmp_path / "model_ov_avss_r50.pth"
    fake.make_fake_official_checkpoint(source, "r50", with_vggish=False, compact=True)
    converted = runner.invoke(weights_app, ["convert", str(source), str(tmp_path / "r50.pt")], env={"COLUMNS": "300"})
    assert converted.exit_code == 0, converted.output
    assert "official-ovavss-r50" in converted.output and "without VGGish and CLIP" in converted.output
    assert (tmp_path / "r50.pt").is_file()


# ------------------------------------------------------------------------------------ download displays
class RecordingDisplay:
    made: list["RecordingDisplay"] = []

    def __init__(self, label: str) -> None:
        self.label, self.seen, self.closed = label, [], 0
        RecordingDisplay.made.append(self)

    def __call__(self, done: int, total: int | None) -> None:
        self.seen.append((done, total))

    def close(self) -> None:
        self.closed += 1


@pytest.fixture
def default_display(monkeypatch):
    RecordingDisplay.made = []
    monkeypatch.setattr(download, "_default_progress", None)
    download.set_default_progress(RecordingDisplay)
    return RecordingDisplay.made


def test_downloads_without_a_callback_use_the_default_display(served, tmp_path, default_display):
    download.download_file("https://example.invalid/w.pth", tmp_path / "a.pth", what="vggish weights")
    [display] = default_display
    assert display.label == "vggish weights" and display.closed == 1
    assert display.seen[0] == (0, len(PAYLOAD)) and display.seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    mine: list = []
    download.download_file("https://example.invalid/w.pth", tmp_path / "b.pth", progress=lambda *a: mine.append(a))
    assert len(default_display) == 1 and mine[-1] == (len(PAYLOAD), len(PAYLOAD))  # an explicit callback wins
    served["state"]["error"] = urllib.error.URLError("[Errno -2] Name or service not known")
    with pytest.raises(AVSegError):
        download.download_file("https://example.invalid/w.pth", tmp_path / "c.pth")
    assert default_display[-1].closed == 1 and not (tmp_path / "c.pth").exists()  # closed on failure too
    download.set_default_progress(None)
    served["state"]["error"] = None
    download.download_file("https://example.invalid/w.pth", tmp_path / "d.pth")
    assert len(default_display) == 2


def test_byte_bar_draws_and_falls_back_to_one_line(capsys, monkeypatch):
    from rich.errors import LiveError

    from avseg_cli import progress as cli_progress

    bar = cli_progress.ByteBar("vggish weights")
    bar(0, 288_000_000)
    bar(288_000_000, 288_000_000)
    assert bar._progress is not None and bar._progress.tasks[0].completed == 288_000_000
    bar.close()
    assert bar._progress is None

    def refuse(self):
        raise LiveError("Only one live display may be active at once")

    monkeypatch.setattr(cli_progress._RichProgressBar, "start", refuse)
    capsys.readouterr()
    bar = cli_progress.ByteBar("vggish weights")
    for done in (0, 1_000_000, 288_000_000):
        bar(done, 288_000_000)
    bar.close()
    assert capsys.readouterr().err.splitlines() == ["downloading vggish weights (288 MB) ..."]


def test_the_command_line_shows_downloads(monkeypatch):
    from avseg_cli.main import app
    from avseg_cli.progress import ByteBar

    monkeypatch.setattr(download, "_default_progress", None)
    assert CliRunner().invoke(app, ["weights", "list"]).exit_code == 0
    assert download._default_progress is ByteBar


def test_weights_list_piped_is_complete(tmp_path):
    """Piped (no terminal, no COLUMNS), the table keeps every name and path whole: nothing cut with an ellipsis."""
    import os
    import subprocess
    import sys

    from models.weights import REGISTRY

    env = {key: value for key, value in os.environ.items() if key not in ("COLUMNS", "LINES")}
    env["AVSEG_CACHE"] = str(tmp_path / "a-rather-long-cache-folder-name" / "avseg")
    done = subprocess.run([sys.executable, "-m", "avseg_cli", "weights", "list"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "…" not in done.stdout
    assert all(weight.name in done.stdout for weight in REGISTRY.values())
    assert max(map(len, done.stdout.splitlines())) > 80  # wider than rich's default for pipes
