from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from paretoforge.evaluators import measure_latency
from paretoforge.exceptions import MeasurementError
from paretoforge.hw_profiles import HardwareProfile, get_profile
from paretoforge.kernels import apply_precision
from paretoforge.kernels.ort import providers_for
from paretoforge.kernels.runtime import (
    OrtRuntime,
    Runtime,
    TorchRuntime,
    load_runtime,
    placement_report,
)

FAST = {"warmup": 2, "min_runs": 20, "max_runs": 60, "max_seconds": 0.5}
X = np.random.default_rng(0).standard_normal((6, 1, 8, 8)).astype(np.float32)


def torch_profile(mode: str = "torch-eager", **kw: object) -> HardwareProfile:
    return HardwareProfile(name=mode, device="cpu", runtime=mode, intra_op_threads=1,
                           resource=None, **kw)


@pytest.fixture(scope="module")
def int8_onnx(vit_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return apply_precision(vit_onnx, tmp_path_factory.mktemp("rt") / "int8.onnx", "int8")


def test_ort_runtime_matches_a_plain_session(vit_onnx: Path) -> None:
    ref = ort.InferenceSession(str(vit_onnx), providers=["CPUExecutionProvider"])
    want = ref.run(None, {"pixel_values": X})[0]
    with load_runtime(vit_onnx, get_profile("cpu-1t")) as rt:
        assert isinstance(rt, OrtRuntime) and rt.input_names == ["pixel_values"]
        np.testing.assert_allclose(rt.run({"pixel_values": X})[0], want, rtol=1e-5, atol=1e-6)
        ns = rt.timed_call(rt.stage({"pixel_values": X[:1]}))
        assert isinstance(ns, int) and ns > 0
        assert rt.describe()["provider"] == "CPUExecutionProvider"


def test_an_artifact_directory_loads_its_model_onnx(vit_onnx: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copy(vit_onnx, tmp_path / "model.onnx")
    with load_runtime(tmp_path, get_profile("cpu-1t")) as rt:
        assert rt.run({"pixel_values": X})[0].shape == (6, 10)


def test_io_binding_gives_the_same_outputs(vit_onnx: Path) -> None:
    bound = get_profile("cpu-1t").model_copy(update={"io_binding": True})
    with load_runtime(vit_onnx, get_profile("cpu-1t")) as plain, \
            load_runtime(vit_onnx, bound) as rt:
        staged = rt.stage({"pixel_values": X})
        assert rt.timed_call(staged) > 0
        out = staged[0].copy_outputs_to_cpu()[0]
        np.testing.assert_allclose(out, plain.run({"pixel_values": X})[0], rtol=1e-5, atol=1e-6)
    m = measure_latency(vit_onnx, bound, {"pixel_values": X}, **FAST)
    assert m.env["io_binding"] is True and m.env["timer"] == "perf_counter_ns"


def test_torch_eager_runtime_matches_the_module(vit: torch.nn.Module) -> None:
    before = torch.get_num_threads()
    with torch.no_grad():
        want = vit(pixel_values=torch.from_numpy(X)).logits.numpy()
    with load_runtime(vit, torch_profile()) as rt:
        assert isinstance(rt, TorchRuntime)
        assert torch.get_num_threads() == 1
        np.testing.assert_allclose(rt.run({"pixel_values": X})[0], want, rtol=1e-5, atol=1e-6)
        assert "pixel_values" in rt.input_names
        with pytest.raises(MeasurementError, match="'images'"):
            rt.validate({"images": X}, 1)
    assert torch.get_num_threads() == before  # global torch state restored on close
    m = measure_latency(vit, torch_profile(), {"pixel_values": X}, **FAST)
    assert m.env["runtime"] == "torch-eager" and m.env["provider"] == "torch-cpu"
    assert 0 < m.p50_ms <= m.p99_ms


def test_torch_runtime_loads_an_artifact_directory(vit: torch.nn.Module, tmp_path: Path) -> None:
    from paretoforge.models.io import save_pretrained

    save_pretrained(vit, tmp_path)
    with load_runtime(tmp_path, torch_profile()) as rt, torch.no_grad():
        want = vit(pixel_values=torch.from_numpy(X)).logits.numpy()
        np.testing.assert_allclose(rt.run({"pixel_values": X})[0], want, rtol=1e-5, atol=1e-5)
    with pytest.raises(MeasurementError, match="config.json"):
        load_runtime(tmp_path / "nowhere", torch_profile())


@pytest.mark.slow
def test_torch_compile_runtime_matches_eager(vit: torch.nn.Module) -> None:
    with load_runtime(vit, torch_profile("torch-compile")) as rt, torch.no_grad():
        want = vit(pixel_values=torch.from_numpy(X)).logits.numpy()
        np.testing.assert_allclose(rt.run({"pixel_values": X})[0], want, rtol=1e-4, atol=1e-5)


def test_a_loaded_runtime_can_be_measured_and_stays_open(vit_onnx: Path) -> None:
    rt = load_runtime(vit_onnx, get_profile("cpu-1t"))
    m1 = measure_latency(rt, get_profile("cpu-1t"), {"pixel_values": X}, **FAST)
    m2 = measure_latency(rt, get_profile("cpu-1t"), {"pixel_values": X}, **FAST)
    assert m1.runs >= FAST["min_runs"] and m2.runs >= FAST["min_runs"]
    assert rt.run({"pixel_values": X[:1]})[0].shape == (1, 10)


def test_load_runtime_errors(tmp_path: Path) -> None:
    with pytest.raises(MeasurementError, match="No ONNX model"):
        load_runtime(tmp_path / "missing.onnx", get_profile("cpu-1t"))
    with pytest.raises(MeasurementError, match="No ONNX model"):
        load_runtime(tmp_path, get_profile("cpu-1t"))  # a directory without model.onnx
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        (tmp_path / "model.onnx").write_bytes(b"x")
        with pytest.raises(MeasurementError, match="CUDAExecutionProvider"):
            load_runtime(tmp_path, get_profile("gpu-fp16"))


def test_providers_for() -> None:
    assert providers_for(get_profile("cpu")) == ["CPUExecutionProvider"]
    name, opts = providers_for(get_profile("gpu-fp16"))[0]
    assert name == "CUDAExecutionProvider" and opts["enable_cuda_graph"] == "0"
    graph = get_profile("gpu-fp16").model_copy(update={"cuda_graph": True})
    assert providers_for(graph)[0][1]["enable_cuda_graph"] == "1"
    assert providers_for(graph, cuda_graph=False)[0][1]["enable_cuda_graph"] == "0"


def _optimized_ops(path: Path, tmp: Path) -> Counter[str]:
    """Op counts of the graph ONNX Runtime optimised, dumped through optimized_model_filepath."""
    import onnx

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    so.optimized_model_filepath = str(tmp / f"{path.stem}.opt.onnx")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_placement_report_agrees_with_the_optimised_graph(
    vit_onnx: Path, int8_onnx: Path, tmp_path: Path, precision: str
) -> None:
    path = vit_onnx if precision == "fp32" else int8_onnx
    r = placement_report(path, get_profile("cpu-1t"))
    ops = _optimized_ops(path, tmp_path)
    # The profiler's per-node records are the optimised graph, node for node.
    assert r["nodes_after"] == sum(ops.values())
    assert r["ops_by_provider"]["CPUExecutionProvider"] == dict(sorted(ops.items()))
    assert r["nodes_by_provider"] == {"CPUExecutionProvider": r["nodes_after"]}
    assert r["nodes_before"] > r["nodes_after"]  # optimisation fused something
    assert r["fallback_ops"] == {} and r["on_requested_provider"] == 1.0
    assert r["memcpy_nodes"] == 0
    assert r["unfused_qdq"] == ops["QuantizeLinear"] + ops["DequantizeLinear"]
    assert r["dynamic_quantize_nodes"] == ops["DynamicQuantizeLinear"]
    if precision == "int8":
        assert r["dynamic_quantize_nodes"] > 0  # activations quantized per call
    # Real samples give the same placement as synthetic ones, pinned or not.
    assert placement_report(path, get_profile("cpu-1t"), {"pixel_values": X})["nodes_after"] \
        == r["nodes_after"]
    if hasattr(os, "sched_getaffinity"):
        before = os.sched_getaffinity(0)
        pinned = placement_report(path, get_profile("cpu"), {"pixel_values": X},
                                  cores=[min(before)])
        assert pinned["nodes_after"] == r["nodes_after"]
        assert os.sched_getaffinity(0) == before


def test_placement_report_counts_unfused_qdq(tmp_path: Path) -> None:
    # Q -> DQ around an Identity-like op: nothing to fuse them into, so both stay.
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zp = numpy_helper.from_array(np.array(0, np.int8), "z")
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
         helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"]),
         helper.make_node("Softmax", ["dq"], ["y"])],
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        initializer=[scale, zp],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "qdq.onnx"))
    r = placement_report(tmp_path / "qdq.onnx", get_profile("cpu-1t"))
    assert r["unfused_qdq"] == 2
    assert r["unfused_qdq_ops"] == {"QuantizeLinear": 1, "DequantizeLinear": 1}


def test_placement_report_for_torch_and_missing_providers(vit_onnx: Path) -> None:
    assert placement_report(vit_onnx, torch_profile())["method"] == "none"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(MeasurementError, match="CUDAExecutionProvider"):
            placement_report(vit_onnx, get_profile("gpu-fp16"))


def test_runtime_is_the_documented_abc() -> None:
    assert issubclass(OrtRuntime, Runtime) and issubclass(TorchRuntime, Runtime)
    with pytest.raises(TypeError):
        Runtime()  # type: ignore[abstract]


def test_cuda_graph_plumbing_runs_on_the_cpu(vit_onnx: Path) -> None:
    """The fixed-address binding path (pre-allocated outputs, inputs refreshed in place).

    The profile validator refuses cuda_graph off CUDA, so the profile is constructed without
    validation: on the CPU provider the same binding code runs without a graph capture.
    """
    p = HardwareProfile.model_construct(**{**get_profile("cpu-1t").model_dump(),
                                           "io_binding": True, "cuda_graph": True})
    with load_runtime(vit_onnx, get_profile("cpu-1t")) as plain, load_runtime(vit_onnx, p) as rt:
        for i in range(3):  # every call must see its own batch through the fixed buffers
            got = rt.run({"pixel_values": X[i : i + 1]})[0]
            np.testing.assert_allclose(got, plain.run({"pixel_values": X[i : i + 1]})[0],
                                       rtol=1e-5, atol=1e-6)
        with pytest.raises(MeasurementError, match="captures a CUDA graph of shape"):
            rt.stage({"pixel_values": X[:2]})
        with pytest.raises(MeasurementError, match="captured for inputs"):
            rt.stage({"other": X[:1]})
    m = measure_latency(vit_onnx, p, {"pixel_values": X}, **FAST)
    assert m.env["cuda_graph"] is True and m.p50_ms > 0


def test_torch_profiles_measure_the_candidates_precision_as_built(vit: torch.nn.Module) -> None:
    """int8 and fp16 candidates run as int8 / fp16 PyTorch, never as the fp32 checkpoint."""
    with torch.no_grad():
        want = vit(pixel_values=torch.from_numpy(X)).logits.numpy()
    with load_runtime(vit, torch_profile(), precision="int8") as rt:
        kinds = {type(m).__module__ for m in rt.module.modules()}
        assert any("quantized" in k for k in kinds), kinds  # dynamic int8 Linear layers
        got = rt.run({"pixel_values": X})[0]
        assert rt.describe()["precision"] == "int8"
    cos = (got * want).sum(-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(want, axis=-1))
    assert cos.min() > 0.98 and not np.array_equal(got, want)
    with load_runtime(vit, torch_profile(), precision="fp16") as rt:
        assert next(rt.module.parameters()).dtype == torch.float16
        np.testing.assert_allclose(rt.run({"pixel_values": X})[0].astype(np.float32), want,
                                   atol=5e-2)
    assert next(vit.parameters()).dtype == torch.float32  # the caller's module untouched
    for precision in ("int8-static", "int4"):
        with pytest.raises(MeasurementError, match=f"no {precision} counterpart"):
            load_runtime(vit, torch_profile(), precision=precision)
    m = measure_latency(vit, torch_profile(), {"pixel_values": X}, precision="int8", **FAST)
    assert m.env["precision"] == "int8"


def test_a_torch_profile_lists_only_precisions_torch_builds() -> None:
    with pytest.raises(ValueError, match="not 'int4'"):
        torch_profile(precisions=("fp32", "int4"))
    gpu = HardwareProfile(name="tg", device="cuda", runtime="torch-eager")
    assert "int8" not in gpu.precisions  # dynamic int8 is CPU-only in torch
    with pytest.raises(ValueError, match="not 'int8'"):
        HardwareProfile(name="tg", device="cuda", runtime="torch-eager",
                        precisions=("fp32", "int8"))
