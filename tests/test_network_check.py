"""The download-server probe (`models.network_check`) and what it spares a user without network: one line at
once instead of huggingface_hub's retry loop (real sockets on 127.0.0.1; name lookups faked)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants
import pytest

from models import clip_weights, hub_models, network_check, weights
from models.download import OFFLINE_VARIABLES
from models.errors import AVSegError

pytestmark = pytest.mark.real_network_probe
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def listening_port():
    """A port on 127.0.0.1 that accepts connections."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def no_proxy(monkeypatch):
    for variable in network_check.PROXY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def counted_lookups(monkeypatch):
    """Count name lookups (the real resolver still answers for 127.0.0.1)."""
    real = socket.getaddrinfo
    hosts: list[str] = []

    def counting(host, *args, **kwargs):
        hosts.append(host)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", counting)
    return hosts


def test_a_listening_server_is_reachable(no_proxy, listening_port, counted_lookups):
    assert network_check.unreachable_reason(f"http://127.0.0.1:{listening_port}/x") is None
    assert counted_lookups == ["127.0.0.1"]


def test_a_refused_connection_is_named(no_proxy, closed_port):
    reason = network_check.unreachable_reason(f"https://127.0.0.1:{closed_port}/file.bin")
    assert reason == f"127.0.0.1:{closed_port} cannot be reached (connection refused)"


def test_an_unknown_host_is_named(no_proxy, monkeypatch):
    def no_dns(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    assert network_check.unreachable_reason("https://huggingface.co") == "huggingface.co cannot be resolved (no network?)"


def test_a_hanging_name_lookup_is_cut_short(no_proxy, monkeypatch):
    release = threading.Event()

    def hanging(host, *args, **kwargs):
        release.wait(30)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    try:
        reason = network_check.unreachable_reason("https://slow.example", timeout=0.2)
    finally:
        release.set()
    assert reason == "looking up slow.example took more than 0.2 s (no network?)"


def test_connection_attempts_share_one_time_budget(no_proxy, monkeypatch):
    """A network that drops packets never refuses: each address would wait the full timeout. The attempts share
    one budget, so eight unanswered addresses cost one timeout, not eight."""
    attempts: list[float] = []

    class SilentSocket:
        def __init__(self, *args):
            self.wait = None

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def settimeout(self, seconds):
            self.wait = seconds

        def connect(self, address):
            attempts.append(self.wait)
            time.sleep(self.wait)
            raise socket.timeout("timed out")

    addresses = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (f"192.0.2.{n}", 443)) for n in range(1, 9)]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: addresses)
    monkeypatch.setattr(socket, "socket", SilentSocket)
    assert network_check.unreachable_reason("https://dropped.example", timeout=0.2) == \
        "dropped.example:443 cannot be reached (timed out)"
    assert len(attempts) == 1 and 0 < attempts[0] <= 0.2


def test_an_unusable_address_family_moves_on_to_the_next_address(no_proxy, monkeypatch, listening_port):
    """A host with an IPv6 address on a machine without IPv6: making the socket fails; the IPv4 address works."""
    real_socket = socket.socket

    def no_ipv6(family=socket.AF_INET, *args):
        if family == socket.AF_INET6:
            raise OSError(97, "Address family not supported by protocol")
        return real_socket(family, *args)

    addresses = [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", listening_port, 0, 0)),
                 (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", listening_port))]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: addresses)
    monkeypatch.setattr(socket, "socket", no_ipv6)
    assert network_check.unreachable_reason(f"http://dual.example:{listening_port}") is None
    network_check.forget_verdicts()
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: addresses[:1])
    assert network_check.unreachable_reason(f"http://dual.example:{listening_port}") == \
        f"dual.example:{listening_port} cannot be reached (address family not supported by protocol)"
    network_check.forget_verdicts()
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: [])
    assert network_check.unreachable_reason("http://empty.example") == "empty.example:80 cannot be reached (no address)"


def test_the_verdict_is_kept_per_server(no_proxy, listening_port, closed_port, counted_lookups):
    for _ in range(3):
        assert network_check.unreachable_reason(f"http://127.0.0.1:{listening_port}") is None
        assert network_check.unreachable_reason(f"http://127.0.0.1:{closed_port}") is not None
    assert len(counted_lookups) == 2  # one probe per (host, port)
    network_check.forget_verdicts()
    network_check.unreachable_reason(f"http://127.0.0.1:{listening_port}")
    assert len(counted_lookups) == 3


def test_default_server_is_the_hub_endpoint(no_proxy, monkeypatch, closed_port):
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{closed_port}")
    assert network_check.hub_endpoint() == f"http://127.0.0.1:{closed_port}"
    assert network_check.unreachable_reason() == f"127.0.0.1:{closed_port} cannot be reached (connection refused)"


@pytest.mark.parametrize("url", ["file:///tmp/weights.bin", "https://host.example:notaport/x"])
def test_urls_without_a_server_to_probe_are_left_to_the_download(no_proxy, monkeypatch, url):
    def fail(*args, **kwargs):
        raise AssertionError("probed")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    assert network_check.unreachable_reason(url) is None


@pytest.mark.parametrize("variable", network_check.PROXY_VARIABLES)
def test_with_a_proxy_nothing_is_probed(no_proxy, monkeypatch, variable):
    monkeypatch.setenv(variable, "http://proxy.internal:3128")

    def fail(*args, **kwargs):
        raise AssertionError("probed despite the proxy")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    assert network_check.unreachable_reason("https://huggingface.co") is None


# ------------------------------------------------------------------------------------------ the callers
@pytest.fixture
def unreachable_hub(no_proxy, monkeypatch, tmp_path, closed_port):
    """Downloads allowed (no offline variable), empty caches, the hub endpoint on a refusing local port; any
    call that would download fails the test."""
    for variable in OFFLINE_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AVSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{closed_port}")
    real = huggingface_hub.snapshot_download

    def lookups_only(repo_id, **kwargs):
        assert kwargs.get("local_files_only") is True, "tried to download from an unreachable hub"
        return real(repo_id, **kwargs)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", lookups_only)
    return closed_port


def test_hub_model_without_network_fails_at_once(unreachable_hub):
    weight = weights.SAM_VIT_BASE
    with pytest.raises(AVSegError) as caught:
        hub_models.resolve_hub_model(weight)
    message = caught.value.message
    assert message.startswith(f"cannot download sam-vit-base (facebook/sam-vit-base@70c1a07): 127.0.0.1:"
                              f"{unreachable_hub} cannot be reached (connection refused): ")
    assert "'avseg weights fetch sam-vit-base' with network" in message and "\n" not in message
    with pytest.raises(AVSegError, match="cannot be reached"):
        weights.fetch_weight(weight)  # `avseg weights fetch` says the same


def test_cached_models_need_no_network(unreachable_hub, tmp_path, monkeypatch):
    """Looking in the caches never probes (and never fails): only a download does."""
    from typer.testing import CliRunner

    from avseg_cli.weights_cmd import weights_app
    from test_hub_models import hf_cache_snapshot, model_folder

    def no_probe(*args):
        raise AssertionError("probed the network for a cached model")

    monkeypatch.setattr(network_check, "_probe", no_probe)
    snapshot = hf_cache_snapshot(tmp_path / "hf", "facebook/sam-vit-base", weights.SAM_VIT_BASE.revision)
    own = model_folder(tmp_path / "cache" / "owlv2-base")
    assert hub_models.resolve_hub_model(weights.SAM_VIT_BASE) == snapshot
    assert hub_models.resolve_hub_model(weights.OWLV2_BASE) == own
    listed = CliRunner().invoke(weights_app, ["list"], env={"COLUMNS": "300"})
    assert listed.exit_code == 0, listed.output
    assert "avseg weights fetch clap-htsat-unfused (Hugging Face cache)" in listed.output


def test_clip_without_network_fails_at_once(unreachable_hub, monkeypatch):
    import open_clip

    from models.clip_loading import load_pretrained_clip

    def no_download(*args, pretrained=None, **kwargs):
        assert pretrained is None, "tried to download CLIP from an unreachable hub"
        raise AssertionError("the weights file is missing: nothing should be built")

    monkeypatch.setattr(open_clip, "create_model", no_download)
    monkeypatch.setattr(clip_weights, "open_clip_cached_file", lambda *args: None)
    with pytest.raises(AVSegError) as caught:
        load_pretrained_clip("ViT-B-16", "openai", device="cpu")
    message = caught.value.message
    assert message.startswith(f"CLIP ViT-B-16 'openai' weights not found and 127.0.0.1:{unreachable_hub} cannot be "
                              "reached (connection refused): download https://huggingface.co/")
    assert "--clip-weights PATH (`clip_weights=PATH` in Python)" in message  # the CLI and the API route
    with pytest.raises(AVSegError, match="cannot be reached"):
        weights.fetch_weight(weights.clip_weight("ViT-B-16", "openai"))


def test_demo_without_network_prints_one_line_without_retrying(tmp_path, closed_port):
    """`make demo` on a machine without network (and without HF_HUB_OFFLINE): before the probe, huggingface_hub
    retried every model five times (two minutes of warnings) before the one-line error."""
    env = {key: value for key, value in os.environ.items()
           if key not in (*OFFLINE_VARIABLES, *network_check.PROXY_VARIABLES, "AVSEG_CHECKPOINT")}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", COLUMNS="200",
               AVSEG_CACHE=str(tmp_path / "cache"), HF_HOME=str(tmp_path / "hf_home"),
               HF_HUB_CACHE=str(tmp_path / "hf"), HF_ENDPOINT=f"http://127.0.0.1:{closed_port}")
    started = time.monotonic()
    completed = subprocess.run(["bash", str(REPO / "examples" / "demo.sh")], capture_output=True, text=True,
                               env=env, cwd="/", timeout=300)
    elapsed = time.monotonic() - started
    assert completed.returncode == 1, completed.stderr
    assert "Retrying" not in completed.stderr and "Traceback" not in completed.stderr
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, completed.stderr
    assert f"127.0.0.1:{closed_port} cannot be reached (connection refused)" in errors[0]
    assert "also missing: grounding-dino-tiny, sam-vit-base, CLIP ViT-B-16" in errors[0]
    print(f"demo without network: exit 1 after {elapsed:.1f} s")
