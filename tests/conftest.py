"""Shared test setup: offline hubs, few threads, paths to the optional shared reference data."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests never write into the user's avseg cache (text embeddings of test CLIPs piled up in ~/.cache/avseg): the
# session gets its own, removed at the end; tests that need a cache of their own still set AVSEG_CACHE themselves.
TEST_CACHE = Path(tempfile.mkdtemp(prefix="avseg-test-cache-"))
os.environ["AVSEG_CACHE"] = str(TEST_CACHE)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
METADATA_FIXTURE = SHARED / "fixtures" / "avsbench-semantic-metadata.csv"


def pytest_sessionfinish(session, exitstatus) -> None:
    shutil.rmtree(TEST_CACHE, ignore_errors=True)


@pytest.fixture
def real_metadata_csv() -> Path:
    """The complete AVSBench-semantic metadata.csv from ../shared (skips when it is not there)."""
    if not METADATA_FIXTURE.is_file():
        pytest.skip("../shared/fixtures/avsbench-semantic-metadata.csv not available")
    return METADATA_FIXTURE


@pytest.fixture(autouse=True)
def download_servers_look_reachable(request, monkeypatch):
    """Downloads in tests go to fakes, so the quick "is the server reachable" probe (`models.network_check`)
    answers yes without touching the network; tests marked `real_network_probe` keep the real probe."""
    import models.network_check as network_check

    network_check.forget_verdicts()
    if request.node.get_closest_marker("real_network_probe") is None:
        monkeypatch.setattr(network_check, "_probe", lambda host, port, timeout: None)
    yield
    network_check.forget_verdicts()


@pytest.fixture(autouse=True)
def wide_cli_consoles():
    """The CLI's rich consoles are made at import, so they keep the width of whichever test imported them
    first (80 columns without a terminal); tables in the tests' output must not depend on test order."""
    try:
        from avseg_cli import console
    except ImportError:  # pragma: no cover
        yield
        return
    saved = [(c, c._width) for c in (console.out, console.err)]
    for c, _ in saved:
        c.width = 300
    yield
    for c, width in saved:
        c._width = width


# ------------------------------------------------------------------------------- parity with the official code
@pytest.fixture(scope="module")
def official():
    """The official OV-AVSS code (`tests/official_code.py`); skips the test where it is not available."""
    from official_code import import_official

    return import_official()


@pytest.fixture(scope="module")
def parity_clip(tmp_path_factory):
    """(open_clip model, its folder for `--clip-weights`, the same weights in the OpenAI `clip` package)."""
    from official_code import parity_clip_models

    return parity_clip_models(tmp_path_factory.mktemp("parity_clip"))


@pytest.fixture(scope="session")
def tiny_zeroshot_folders(tmp_path_factory) -> dict[str, Path]:
    """Tiny random models of the zero-shot method in their Hugging Face / open_clip folder formats, made once per
    session: keys "clap", "grounding-dino", "owlv2", "sam", "clip". Tests must not change them (copy first)."""
    from test_predictor import make_tiny_clip_dir
    from tiny_clap_sam import save_tiny_clap, save_tiny_sam
    from tiny_detectors import save_tiny_grounding_dino, save_tiny_owlv2

    base = tmp_path_factory.mktemp("zeroshot-models")
    return {
        "clap": save_tiny_clap(base / "clap"),
        "grounding-dino": save_tiny_grounding_dino(base / "gdino"),
        "owlv2": save_tiny_owlv2(base / "owlv2"),
        "sam": save_tiny_sam(base / "sam"),
        "clip": make_tiny_clip_dir(base / "clip"),
    }
