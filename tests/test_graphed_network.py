"""`GraphedNetwork`'s bookkeeping on the CPU, with CUDA's graph API replaced by a simulation.

The simulated graph has the semantics that matter here: capturing records the work without running it, and a
replay recomputes it from the static input tensors into the static output tensors (whatever the caller
changed). So these tests check what the real CUDA tests (tests/test_cuda.py) check, minus CUDA: the first call of
a shape captures and later calls replay with the new inputs, results equal the eager forward, outputs handed
out are the caller's, shapes are kept least-recently-used first, a failed capture falls back to eager.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from models.ovavss import graphed_network
from models.ovavss.graphed_network import GraphedNetwork
from models.ovavss.model import build_ovavss
from test_host_reads import tiny_inputs


class SimulatedGraph:
    """Records the network call made during capture; `replay` redoes it into the recorded output tensors."""

    capturing: "SimulatedGraph | None" = None

    def __init__(self) -> None:
        self.recorded = None
        self.replays = 0

    def replay(self) -> None:
        run, outputs = self.recorded
        fresh = run()
        for key, tensor in outputs.items():
            tensor.copy_(fresh[key])
        self.replays += 1


class SimulatedCuda:
    """Stand-ins for the torch.cuda calls GraphedNetwork makes."""

    def __init__(self, fail_capture: bool = False) -> None:
        self.fail_capture = fail_capture
        self.graphs: list[SimulatedGraph] = []

    class Stream:
        def __init__(self, device=None) -> None:
            pass

        def wait_stream(self, other) -> None:
            pass

        def synchronize(self) -> None:
            pass

    def current_stream(self, device=None):
        return SimulatedCuda.Stream()

    def stream(self, stream):
        return contextlib.nullcontext()

    def synchronize(self, device=None) -> None:
        pass

    def CUDAGraph(self) -> SimulatedGraph:  # noqa: N802 (torch's name)
        graph = SimulatedGraph()
        self.graphs.append(graph)
        return graph

    @contextlib.contextmanager
    def graph(self, graph: SimulatedGraph, stream=None):
        if self.fail_capture:
            raise RuntimeError("operation not permitted when stream is capturing\nmore detail")
        SimulatedGraph.capturing = graph
        try:
            yield
        finally:
            SimulatedGraph.capturing = None


class CudaLooking(torch.nn.Module):
    """The tiny network on the CPU, with parameters that say they are on CUDA (all GraphedNetwork checks)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0

    def parameters(self, recurse: bool = True):
        return iter([CudaParameter()])

    def forward(self, images, audio_examples):
        self.calls += 1
        return self.inner(images, audio_examples=audio_examples)


class CudaParameter:
    device = torch.device("cuda", 0)


@pytest.fixture
def simulated(monkeypatch):
    cuda = SimulatedCuda()
    for name in ("Stream", "current_stream", "stream", "synchronize", "CUDAGraph", "graph"):
        monkeypatch.setattr(graphed_network.torch.cuda, name, getattr(cuda, name))
    original_eager = GraphedNetwork._eager

    def eager(self, images, audio):
        outputs = original_eager(self, images, audio)
        if SimulatedGraph.capturing is not None:  # captured work does not run: its outputs hold garbage
            outputs = {key: torch.full_like(value, float("nan")) for key, value in outputs.items()}
            SimulatedGraph.capturing.recorded = (lambda: original_eager(self, images, audio), outputs)
        return outputs

    monkeypatch.setattr(GraphedNetwork, "_eager", eager)
    return cuda


def network():
    config, images, audio = tiny_inputs()
    torch.manual_seed(0)
    model = CudaLooking(build_ovavss(config)).eval()
    return model, images, audio


def test_captures_once_per_shape_and_replays_new_inputs(simulated):
    model, images, audio = network()
    graphed = GraphedNetwork(model, max_graphs=2, warmup=2)
    gen = torch.Generator().manual_seed(1)
    with torch.inference_mode():
        results = []
        for step in range(3):
            x = images + step * torch.randn(images.shape, generator=gen)
            a = audio + step * torch.randn(audio.shape, generator=gen)
            want = model.inner(x, audio_examples=a)
            got = graphed(x, a)
            torch.testing.assert_close(got["pred_masks"], want["pred_masks"], rtol=0, atol=0)
            torch.testing.assert_close(got["pred_logits"], want["pred_logits"], rtol=0, atol=0)
            results.append(got)
        assert len(simulated.graphs) == 1 and simulated.graphs[0].replays == 3
        assert model.calls == 2 + 1 + 3  # warm-ups, the captured call, 3 replays
        kept = results[2]["pred_masks"].clone()
        graphed(images, audio)
        assert torch.equal(results[2]["pred_masks"], kept)  # handed-out outputs are copies
        assert not torch.equal(results[0]["pred_masks"], results[2]["pred_masks"])


def test_shapes_are_kept_least_recently_used_first(simulated):
    model, images, audio = network()
    graphed = GraphedNetwork(model, max_graphs=2)
    with torch.inference_mode():
        graphed(images, audio)  # 3 frames
        graphed(images[:, :2], audio[:, :2])
        graphed(images, audio)  # 3 frames again: replayed, now the most recent
        graphed(images[:, :1], audio[:, :1])  # a third shape: the 2-frame graph goes
        assert [key[0][1] for key in graphed.captures] == [3, 1]
        assert len(simulated.graphs) == 3
        short = graphed(images[:, :1], audio[:, :1])
        torch.testing.assert_close(short["pred_masks"],
                                   model.inner(images[:, :1], audio_examples=audio[:, :1])["pred_masks"])


def test_a_failed_capture_warns_once_and_runs_eagerly(simulated):
    simulated.fail_capture = True
    model, images, audio = network()
    graphed = GraphedNetwork(model)
    with torch.inference_mode():
        with pytest.warns(RuntimeWarning, match="CUDA graph capture failed \\(operation not permitted when stream "
                          "is capturing\\); the network runs without CUDA graphs"):
            first = graphed(images, audio)
        torch.testing.assert_close(first["pred_masks"], model.inner(images, audio_examples=audio)["pred_masks"])
        simulated.fail_capture = False
        graphed(images, audio)  # no second attempt, no second warning
    assert graphed.failed is not None and not graphed.captures and len(simulated.graphs) == 1  # one attempt


def test_training_mode_runs_eagerly(simulated):
    model, images, audio = network()
    graphed = GraphedNetwork(model)
    model.train()
    graphed(images, audio)
    assert not simulated.graphs and not graphed.captures


def test_arguments_are_checked(simulated):
    model, _, _ = network()
    with pytest.raises(ValueError, match="at least 1"):
        GraphedNetwork(model, max_graphs=0)
    with pytest.raises(ValueError, match="at least 1"):
        GraphedNetwork(model, warmup=0)


def test_a_kept_graph_keeps_the_constants_it_reads_alive(simulated):
    """A CUDA graph reads the modules' kept constants (`DeviceConstants`) by address: while a capture is kept,
    the tensors it may read stay alive even when the caches drop them (e.g. after 64 other resolutions)."""
    import gc
    import weakref

    from models.ovavss.device_constants import DeviceConstants

    model, images, audio = network()
    graphed = GraphedNetwork(model, max_graphs=1)
    with torch.inference_mode():
        graphed(images, audio)
    kept = DeviceConstants.entries_in(model)
    assert kept  # the deformable attention's level-size divisors, the encodings, the reference points
    watched = [weakref.ref(tensor) for tensor in kept]
    del kept
    for module in model.modules():
        for constants in DeviceConstants.attributes_of(module):
            constants.clear()
    gc.collect()
    assert all(ref() is not None for ref in watched)  # held by the capture
    with torch.inference_mode():
        graphed(images[:, :2], audio[:, :2])  # another shape: the only kept graph is replaced
    gc.collect()
    assert all(ref() is None for ref in watched)
