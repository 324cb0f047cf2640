"""CUDA paths of the runtime layer; skipped on machines without CUDA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch


def _cuda() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers() and torch.cuda.is_available()


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _cuda(), reason="needs CUDA (GPU, "
                                                   "onnxruntime-gpu and a CUDA torch)")]

X = np.random.default_rng(0).standard_normal((8, 1, 8, 8)).astype(np.float32)
FAST = {"warmup": 5, "min_runs": 20, "max_runs": 100, "max_seconds": 1.0}


def test_cuda_io_binding_matches_cpu(vit_onnx: Path) -> None:
    from paretoforge.hw_profiles import get_profile
    from paretoforge.kernels.runtime import load_runtime

    gpu = get_profile("gpu-fp16")
    with load_runtime(vit_onnx, get_profile("cpu-1t")) as cpu, load_runtime(vit_onnx, gpu) as rt:
        np.testing.assert_allclose(rt.run({"pixel_values": X})[0],
                                   cpu.run({"pixel_values": X})[0], rtol=1e-3, atol=1e-4)
        assert rt.describe()["provider"] == "CUDAExecutionProvider"
        assert rt.timed_call(rt.stage({"pixel_values": X[:1]})) > 0


def test_cuda_graph_replays_with_fresh_inputs(vit_onnx: Path) -> None:
    from paretoforge.evaluators import measure_latency
    from paretoforge.hw_profiles import get_profile
    from paretoforge.kernels.runtime import load_runtime

    prof = get_profile("gpu-fp16").model_copy(update={"cuda_graph": True})
    with load_runtime(vit_onnx, get_profile("cpu-1t")) as cpu, load_runtime(vit_onnx, prof) as rt:
        for i in range(3):  # capture, then replays must see each new batch
            got = rt.run({"pixel_values": X[i : i + 1]})[0]
            want = cpu.run({"pixel_values": X[i : i + 1]})[0]
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
    m = measure_latency(vit_onnx, prof, {"pixel_values": X}, **FAST)
    assert m.env["cuda_graph"] is True and m.p50_ms > 0


def test_torch_on_cuda_is_timed_with_events(vit: torch.nn.Module) -> None:
    from paretoforge.evaluators import measure_latency
    from paretoforge.hw_profiles import HardwareProfile

    p = HardwareProfile(name="tc", device="cuda", runtime="torch-eager", intra_op_threads=1,
                        resource=None)
    m = measure_latency(vit, p, {"pixel_values": X}, **FAST)
    assert m.env["timer"] == "cuda_event" and m.env["provider"] == "torch-cuda"
    assert 0 < m.min_ms <= m.p50_ms


def test_placement_on_cuda_names_fallbacks(vit_onnx: Path) -> None:
    from paretoforge.hw_profiles import get_profile
    from paretoforge.kernels.runtime import placement_report

    r = placement_report(vit_onnx, get_profile("gpu-fp16"))
    assert r["nodes_by_provider"].get("CUDAExecutionProvider", 0) > 0
    assert sum(r["fallback_ops"].values()) == r["nodes_after"] - r["memcpy_nodes"] - \
        r["nodes_by_provider"]["CUDAExecutionProvider"]
