"""Hugging Face hub models in the weights registry: explicit folders, the avseg cache, the Hugging Face cache
(real on-disk layout, pinned commit only), fast offline messages, `snapshot_download` calls (faked: no network
ever) and the `avseg weights list / fetch` commands."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

try:  # huggingface_hub 2.x is built on httpx2, 1.x on httpx
    import httpx2
except ImportError:  # pragma: no cover
    import httpx as httpx2
import huggingface_hub
import huggingface_hub.constants
import pytest
from huggingface_hub import errors as hub_errors
from typer.testing import CliRunner

from models import hub_models, weights
from models.download import OFFLINE_VARIABLES
from models.errors import AVSegError

HUB_NAMES = ["clap-htsat-unfused", "grounding-dino-tiny", "owlv2-base", "sam-vit-base"]
OTHER_REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_env(monkeypatch, tmp_path):
    """Offline, with the avseg cache and the Hugging Face cache under tmp_path."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("AVSEG_OFFLINE", raising=False)
    monkeypatch.setenv("AVSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    # huggingface_hub reads HF_HUB_CACHE once, at import: point the imported constant there too.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path


@pytest.fixture
def online(hub_env, monkeypatch):
    for variable in OFFLINE_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    return hub_env


def model_folder(folder: Path, weights_file: str = "model.safetensors") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "test"}')
    if weights_file:
        (folder / weights_file).write_bytes(b"weights")
    return folder


def hf_cache_snapshot(root: Path, repo_id: str, revision: str, ref: str | None = None) -> Path:
    """The layout huggingface_hub writes: blobs/<hash>, snapshots/<commit>/<name> -> ../../blobs/<hash>, refs/<ref>."""
    storage = root / f"models--{repo_id.replace('/', '--')}"
    snapshot = storage / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (storage / "blobs").mkdir(exist_ok=True)
    for index, (name, content) in enumerate((("config.json", b"{}"), ("model.safetensors", b"weights"))):
        blob = storage / "blobs" / f"{revision[:8]}{index:032d}"
        blob.write_bytes(content)
        (snapshot / name).symlink_to(Path("..") / ".." / "blobs" / blob.name)
    if ref is not None:
        (storage / "refs").mkdir(exist_ok=True)
        (storage / "refs" / ref).write_text(revision)
    return snapshot


def record_local_lookups(monkeypatch) -> list[dict]:
    """Wrap the real snapshot_download: record the calls, fail the test on any call that could download."""
    real = huggingface_hub.snapshot_download
    calls: list[dict] = []

    def spy(repo_id, **kwargs):
        calls.append({"repo_id": repo_id, **kwargs})
        assert kwargs.get("local_files_only") is True, "a lookup must never download"
        return real(repo_id, **kwargs)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", spy)
    return calls


# ---------------------------------------------------------------------------------------------- registry
def test_registry_has_the_four_pinned_hub_models():
    names = list(weights.REGISTRY)
    assert names[-4:] == HUB_NAMES
    assert [weights.CLAP_HTSAT_UNFUSED, weights.GROUNDING_DINO_TINY, weights.OWLV2_BASE, weights.SAM_VIT_BASE] == [
        weights.get_weight(name) for name in HUB_NAMES]
    repos = {"clap-htsat-unfused": "laion/clap-htsat-unfused",
             "grounding-dino-tiny": "IDEA-Research/grounding-dino-tiny",
             "owlv2-base": "google/owlv2-base-patch16-ensemble", "sam-vit-base": "facebook/sam-vit-base"}
    for name in HUB_NAMES:
        weight = weights.get_weight(name)
        assert weight.source == weights.SOURCE_HF == "huggingface"
        assert weight.repo_id == repos[name] and weight.filename == name
        assert re.fullmatch(r"[0-9a-f]{40}", weight.revision)
        assert weight.url == f"https://huggingface.co/{weight.repo_id}/tree/{weight.revision}"
        assert weight.purpose.startswith("zero-shot: ") and weight.approx_size_mb
    assert weights.SAM_VIT_BASE.revision == "70c1a07f894ebb5b307fd9eaaee97b9dfc16068f"
    assert hub_models.hub_label(weights.SAM_VIT_BASE) == "facebook/sam-vit-base@70c1a07"
    assert all(weights.get_weight(n).repo_id is None for n in names[:-4])  # older entries unchanged
    assert hub_models.HF_ALLOW_PATTERNS == ("*.json", "*.txt", "*.model", "*.safetensors")


# ------------------------------------------------------------------------------------------------ lookups
def test_explicit_folder(hub_env):
    weight = weights.SAM_VIT_BASE
    folder = model_folder(hub_env / "my-sam")
    assert hub_models.resolve_hub_model(weight, folder) == folder
    assert hub_models.resolve_hub_model(weight, str(folder)) == folder
    assert weights.find_weight(weight, folder) == folder and weights.ensure_weight(weight, folder) == folder

    with pytest.raises(AVSegError) as info:
        hub_models.resolve_hub_model(weight, hub_env / "nowhere")
    assert str(info.value) == f"sam-vit-base weights folder not found: {hub_env / 'nowhere'}"

    no_config = hub_env / "no-config"
    no_config.mkdir()
    (no_config / "model.safetensors").write_bytes(b"w")
    with pytest.raises(AVSegError) as info:
        weights.find_weight(weight, no_config)
    assert str(info.value) == f"sam-vit-base weights folder {no_config} has no config.json"

    no_weights = model_folder(hub_env / "no-weights", weights_file="")
    with pytest.raises(AVSegError, match=r"no-weights has no weights file \(\*\.safetensors or \*\.bin\)$"):
        hub_models.resolve_hub_model(weight, no_weights)
    a_file = hub_env / "model.safetensors"
    a_file.write_bytes(b"w")
    with pytest.raises(AVSegError, match="model.safetensors is not a folder$"):
        hub_models.resolve_hub_model(weight, a_file)
    # a folder holding only pytorch_model.bin loads too
    bin_only = model_folder(hub_env / "bin-only", weights_file="pytorch_model.bin")
    assert hub_models.resolve_hub_model(weight, bin_only) == bin_only


def test_avseg_cache_folder_comes_first(hub_env, monkeypatch):
    weight = weights.OWLV2_BASE
    hf_cache_snapshot(hub_env / "hf", weight.repo_id, weight.revision)
    own = model_folder(hub_env / "cache" / "owlv2-base")
    calls = record_local_lookups(monkeypatch)
    assert hub_models.resolve_hub_model(weight) == own
    assert weights.cached_path(weight) == own and weights.ensure_weight(weight) == own
    assert weights.fetch_weight(weight) == own
    assert calls == []  # found before the Hugging Face cache is asked
    (own / "config.json").unlink()  # incomplete copy: ignored, the Hugging Face snapshot is used
    assert weights.cached_path(weight).resolve() == (
        hub_env / "hf" / "models--google--owlv2-base-patch16-ensemble" / "snapshots" / weight.revision).resolve()


def test_hf_cache_snapshot_of_the_pinned_commit(hub_env, monkeypatch):
    weight = weights.CLAP_HTSAT_UNFUSED
    calls = record_local_lookups(monkeypatch)
    snapshot = hf_cache_snapshot(hub_env / "hf", "laion/clap-htsat-unfused", weight.revision, ref="main")
    assert snapshot == (hub_env / "hf" / "models--laion--clap-htsat-unfused" / "snapshots"
                        / "8fa0f1c6d0433df6e97c127f64b2a1d6c0dcda8a")
    found = hub_models.resolve_hub_model(weight)
    assert found.resolve() == snapshot.resolve()
    assert (found / "config.json").read_bytes() == b"{}"
    assert weights.cached_path(weight).resolve() == snapshot.resolve()
    assert weights.find_weight(weight).resolve() == snapshot.resolve()
    assert calls[0] == {"repo_id": "laion/clap-htsat-unfused", "revision": weight.revision, "local_files_only": True,
                        "allow_patterns": list(hub_models.HF_ALLOW_PATTERNS)}


def test_snapshot_of_another_revision_is_not_accepted(hub_env, monkeypatch):
    weight = weights.CLAP_HTSAT_UNFUSED
    record_local_lookups(monkeypatch)
    hf_cache_snapshot(hub_env / "hf", weight.repo_id, OTHER_REVISION, ref="main")
    assert hub_models.cached_hub_model(weight) is None
    assert weights.cached_path(weight) is None
    with pytest.raises(AVSegError, match="clap-htsat-unfused .*not found"):
        hub_models.resolve_hub_model(weight)
    with pytest.raises(AVSegError, match="clap-htsat-unfused .*not found: run 'avseg weights fetch"):
        weights.find_weight(weight)


# ------------------------------------------------------------------------------------------------ offline
@pytest.mark.parametrize("how", ["HF_HUB_OFFLINE", "AVSEG_OFFLINE", "argument", "download=False"])
def test_offline_missing_model_is_one_fast_line(online, monkeypatch, how):
    if how in ("HF_HUB_OFFLINE", "AVSEG_OFFLINE"):
        monkeypatch.setenv(how, "1")
    calls = record_local_lookups(monkeypatch)
    weight = weights.SAM_VIT_BASE
    started = time.monotonic()
    with pytest.raises(AVSegError) as info:
        if how == "download=False":
            hub_models.resolve_hub_model(weight, download=False)
        else:
            weights.ensure_weight(weight, offline=how == "argument")
    assert time.monotonic() - started < 2.0
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    assert "facebook/sam-vit-base@70c1a07" in message
    assert "https://huggingface.co/facebook/sam-vit-base/tree/70c1a07f894ebb5b307fd9eaaee97b9dfc16068f" in message
    assert str(online / "cache" / "sam-vit-base") in message
    assert "'avseg weights fetch sam-vit-base'" in message
    reason = {"HF_HUB_OFFLINE": "HF_HUB_OFFLINE is set", "AVSEG_OFFLINE": "AVSEG_OFFLINE is set",
              "argument": "offline mode", "download=False": "this command does not download"}[how]
    assert f"downloads are off ({reason})" in message
    assert len(calls) == 1  # only the cache lookup ran
    with pytest.raises(AVSegError, match="downloads are off"):
        weights.fetch_weight(weight, offline=True)


# ----------------------------------------------------------------------------------------------- download
class FakeHub:
    """Stands in for `huggingface_hub.snapshot_download`: records every call, writes what a download would."""

    def __init__(self, root: Path, files: tuple[str, ...] = ("config.json", "model.safetensors")) -> None:
        self.root = root
        self.files = files
        self.calls: list[dict] = []
        self.error: BaseException | None = None

    def __call__(self, repo_id, **kwargs):
        self.calls.append({"repo_id": repo_id, **kwargs})
        if kwargs.get("local_files_only"):
            raise hub_errors.LocalEntryNotFoundError("Cannot find an appropriate cached snapshot folder")
        if self.error is not None:
            raise self.error
        import fnmatch

        folder = self.root / f"models--{repo_id.replace('/', '--')}" / "snapshots" / kwargs["revision"]
        folder.mkdir(parents=True, exist_ok=True)
        for name in self.files:
            if any(fnmatch.fnmatch(name, pattern) for pattern in kwargs["allow_patterns"]):
                (folder / name).write_bytes(b"x")
        return str(folder)


@pytest.fixture
def fake_hub(online, monkeypatch) -> FakeHub:
    hub = FakeHub(online / "hf")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub)
    return hub


def test_download_passes_repo_revision_and_patterns(fake_hub, online):
    weight = weights.GROUNDING_DINO_TINY
    folder = hub_models.resolve_hub_model(weight)
    assert folder == online / "hf" / "models--IDEA-Research--grounding-dino-tiny" / "snapshots" / weight.revision
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert fake_hub.calls == [
        {"repo_id": "IDEA-Research/grounding-dino-tiny", "revision": "a2bb814dd30d776dcf7e30523b00659f4f141c71",
         "local_files_only": True, "allow_patterns": ["*.json", "*.txt", "*.model", "*.safetensors"]},
        {"repo_id": "IDEA-Research/grounding-dino-tiny", "revision": "a2bb814dd30d776dcf7e30523b00659f4f141c71",
         "allow_patterns": ["*.json", "*.txt", "*.model", "*.safetensors"], "force_download": False},
    ]
    fake_hub.calls.clear()
    assert weights.fetch_weight(weight, force=True) == folder
    assert [call.get("force_download") for call in fake_hub.calls] == [True]  # force skips the cache lookup


def test_download_falls_back_to_pytorch_bin_without_safetensors(online, monkeypatch):
    hub = FakeHub(online / "hf", files=("config.json", "preprocessor_config.json", "pytorch_model.bin", "tf_model.h5"))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub)
    folder = weights.ensure_weight(weights.CLAP_HTSAT_UNFUSED)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "preprocessor_config.json", "pytorch_model.bin"]
    assert [call["allow_patterns"] for call in hub.calls] == [
        list(hub_models.HF_ALLOW_PATTERNS), list(hub_models.HF_ALLOW_PATTERNS), list(hub_models.HF_BIN_PATTERNS)]
    assert hub_models.HF_BIN_PATTERNS == ("pytorch_model*.bin",)


def _response(status: int) -> httpx2.Response:
    return httpx2.Response(status, request=httpx2.Request("GET", "https://huggingface.co/api/models/x"))


@pytest.mark.parametrize("case", ["network", "offline-constant", "revision", "gated", "missing", "server", "disk"])
def test_download_failures_are_one_line(fake_hub, online, case):
    weight = weights.SAM_VIT_BASE
    if case == "network":
        try:
            raise httpx2.ConnectError("[Errno -3] Temporary failure in name resolution")
        except httpx2.ConnectError as cause:
            error: BaseException = hub_errors.LocalEntryNotFoundError(
                "Got: ConnectError\nAn error happened while trying to locate the files on the Hub")
            error.__cause__ = cause
    elif case == "offline-constant":
        error = hub_errors.OfflineModeIsEnabled("Cannot reach https://huggingface.co: offline mode is enabled.")
    elif case == "revision":
        error = hub_errors.RevisionNotFoundError("404 Client Error. Revision Not Found", response=_response(404))
    elif case == "gated":
        error = hub_errors.GatedRepoError("403 Client Error. Cannot access gated repo", response=_response(403))
    elif case == "missing":
        error = hub_errors.RepositoryNotFoundError("401 Client Error. Repository Not Found", response=_response(401))
    elif case == "server":
        error = hub_errors.HfHubHTTPError("504 Server Error: Gateway Time-out\nmore", response=_response(504))
    else:
        error = OSError(28, "No space left on device")
    fake_hub.error = error
    with pytest.raises(AVSegError) as info:
        weights.fetch_weight(weight)
    message = str(info.value)
    assert "\n" not in message and message.startswith("cannot download sam-vit-base (facebook/sam-vit-base@70c1a07)")
    assert info.value.__cause__ is error
    expected = {
        "network": "(no network?): run 'avseg weights fetch sam-vit-base' with network, or put a copy of "
                   f"{weight.url} in {online / 'cache' / 'sam-vit-base'}",
        "offline-constant": "(no network?)",
        "revision": f"revision {weight.revision} does not exist in https://huggingface.co/facebook/sam-vit-base",
        "gated": "the repository is gated; accept its terms at https://huggingface.co/facebook/sam-vit-base",
        "missing": "repository https://huggingface.co/facebook/sam-vit-base not found or private",
        "server": ": 504 Server Error: Gateway Time-out",
        "disk": "into the Hugging Face cache: [Errno 28] No space left on device",
    }[case]
    assert expected in message


def test_unexpected_download_errors_are_not_hidden(fake_hub):
    fake_hub.error = KeyError("a bug")
    with pytest.raises(KeyError):
        hub_models.resolve_hub_model(weights.SAM_VIT_BASE)


def test_download_without_weights_is_an_error(online, monkeypatch):
    hub = FakeHub(online / "hf", files=("config.json",))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub)
    with pytest.raises(AVSegError, match=r"sam-vit-base \(facebook/sam-vit-base@70c1a07\) was downloaded to .* but it "
                                         r"has no weights file"):
        weights.fetch_weight(weights.SAM_VIT_BASE)


# --------------------------------------------------------------------------------------------------- CLI
def test_weights_list_shows_the_hub_models(hub_env):
    from avseg_cli.weights_cmd import weights_app

    own = model_folder(hub_env / "cache" / "owlv2-base")
    snapshot = hf_cache_snapshot(hub_env / "hf", "facebook/sam-vit-base", weights.SAM_VIT_BASE.revision)
    listed = CliRunner().invoke(weights_app, ["list"], env={"COLUMNS": "300"})
    assert listed.exit_code == 0, listed.output
    rows = {line.split("│")[1].strip(): line for line in listed.output.splitlines() if line.count("│") >= 5}
    assert set(HUB_NAMES) <= set(rows) and set(weights.REGISTRY) <= set(rows)
    cells = {name: [cell.strip() for cell in rows[name].split("│")[1:-1]] for name in HUB_NAMES}
    assert cells["owlv2-base"][2:] == ["~620 MB", "yes", f"google/owlv2-base-patch16-ensemble@cfd3195: {own}"]
    assert cells["sam-vit-base"][2:4] == ["~375 MB", "yes"]
    assert cells["sam-vit-base"][4].startswith("facebook/sam-vit-base@70c1a07: ")
    assert Path(cells["sam-vit-base"][4].split(": ", 1)[1]).resolve() == snapshot.resolve()
    assert cells["clap-htsat-unfused"][2:] == [
        "~615 MB", "no",
        "laion/clap-htsat-unfused@8fa0f1c: avseg weights fetch clap-htsat-unfused (Hugging Face cache)"]
    assert cells["grounding-dino-tiny"][1] == "zero-shot: boxes for class names (default detector)"


def test_weights_fetch_offline_exits_with_one_line(hub_env, monkeypatch, capsys):
    from avseg_cli.main import run

    monkeypatch.setattr(sys, "argv", ["avseg", "weights", "fetch", "sam-vit-base"])
    monkeypatch.setenv("COLUMNS", "250")
    started = time.monotonic()
    with pytest.raises(SystemExit) as exit_info:
        run()
    assert time.monotonic() - started < 2.0
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in captured.err
    assert lines[0].startswith("error: sam-vit-base (facebook/sam-vit-base@70c1a07) not found and downloads are off "
                               "(HF_HUB_OFFLINE is set): run 'avseg weights fetch sam-vit-base' with network")
    assert str(hub_env / "cache" / "sam-vit-base") in lines[0]
    assert lines[0].endswith("(or pass its folder with --sam-weights)")


def test_weights_fetch_downloads_a_hub_model(fake_hub, online):
    from avseg_cli.weights_cmd import weights_app

    fetched = CliRunner().invoke(weights_app, ["fetch", "clap-htsat-unfused"], env={"COLUMNS": "300"})
    assert fetched.exit_code == 0, fetched.output
    folder = online / "hf" / "models--laion--clap-htsat-unfused" / "snapshots" / weights.CLAP_HTSAT_UNFUSED.revision
    assert fetched.output.strip() == f"clap-htsat-unfused: {folder}"
    assert [call["repo_id"] for call in fake_hub.calls] == ["laion/clap-htsat-unfused"] * 2


def test_fetch_zeroshot_expands_to_the_default_models_and_checks_names_first(monkeypatch):
    from typer.testing import CliRunner

    from avseg_cli.weights_cmd import weights_app

    fetched = []
    monkeypatch.setattr(weights, "fetch_weight", lambda weight, force=False, progress=None: fetched.append(weight.name)
                        or Path("/cache") / weight.name)
    result = CliRunner().invoke(weights_app, ["fetch", "zeroshot", "sam-vit-base", "owlv2-base"],
                                env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert fetched == ["clap-htsat-unfused", "grounding-dino-tiny", "sam-vit-base", "clip-vit-b-16", "owlv2-base"]
    fetched.clear()
    bad = CliRunner().invoke(weights_app, ["fetch", "zeroshot", "nope"], env={"COLUMNS": "300"})
    assert bad.exit_code != 0 and fetched == [] and "nope" in str(bad.exception or bad.output)


def test_fetch_of_several_goes_on_after_a_failure_and_names_each(monkeypatch, capsys):
    from avseg_cli.main import run

    def fetch(weight, force=False, progress=None):
        if weight.name in ("grounding-dino-tiny", "clip-vit-b-16"):
            return Path("/cache") / weight.name
        raise AVSegError(f"{weight.name} not found and downloads are off")

    monkeypatch.setattr(weights, "fetch_weight", fetch)
    monkeypatch.setattr(sys, "argv", ["avseg", "weights", "fetch", "zeroshot"])
    with pytest.raises(SystemExit) as exit_info:
        run()
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    assert [line for line in captured.err.splitlines() if line.strip()] == [
        "error: clap-htsat-unfused not found and downloads are off",
        "error: sam-vit-base not found and downloads are off",
    ]
    assert "grounding-dino-tiny: /cache/grounding-dino-tiny" in captured.out and "clip-vit-b-16" in captured.out


def test_fetch_interrupted_is_one_line_naming_the_weight(monkeypatch, capsys):
    from avseg_cli.main import run

    def interrupted(weight, force=False, progress=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(weights, "fetch_weight", interrupted)
    monkeypatch.setattr(sys, "argv", ["avseg", "weights", "fetch", "vggish"])
    with pytest.raises(SystemExit) as exit_info:
        run()
    assert exit_info.value.code == 130
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines == ["interrupted: vggish was not downloaded; run the same command again"]


def test_a_huggingface_hub_that_cannot_import_is_not_reported_as_not_cached(hub_env, monkeypatch, capsys):
    """A broken installation (here: a dependency of huggingface_hub's snapshot module missing) is named, in one
    line, by the lookup, the download and `avseg weights list`; it never reads as "not cached"."""
    from avseg_cli.main import run

    hf_cache_snapshot(hub_env / "hf", "facebook/sam-vit-base", weights.SAM_VIT_BASE.revision)
    # huggingface_hub loads its attributes lazily, through the module's __getattr__
    if "snapshot_download" in vars(huggingface_hub):
        monkeypatch.delitem(vars(huggingface_hub), "snapshot_download")

    def broken(name):
        raise ModuleNotFoundError("No module named 'certifi'")

    monkeypatch.setattr(huggingface_hub, "__getattr__", broken)
    expected = "huggingface_hub cannot be imported (No module named 'certifi'): reinstall it"
    with pytest.raises(AVSegError, match=re.escape(expected)):
        hub_models.cached_hub_model(weights.SAM_VIT_BASE)
    with pytest.raises(AVSegError, match=re.escape(expected)):
        hub_models.download_hub_model(weights.SAM_VIT_BASE)
    monkeypatch.setattr(sys, "argv", ["avseg", "weights", "list"])
    with pytest.raises(SystemExit) as exit_info:
        run()
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    assert expected in " ".join(captured.err.split()) and "Traceback" not in captured.err
