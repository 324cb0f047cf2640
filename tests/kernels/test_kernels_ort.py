from __future__ import annotations

import os
from pathlib import Path

import onnxruntime as ort
import pytest

from paretoforge.exceptions import MeasurementError, PlacementError
from paretoforge.hw_profiles import HardwareProfile, get_profile
from paretoforge.kernels import create_session, graph_summary, session_options_for


def test_session_options_follow_profile() -> None:
    so = session_options_for(get_profile("cpu-1t"), n_cores=2)
    assert so.intra_op_num_threads == 1
    assert so.inter_op_num_threads == 1
    assert so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert session_options_for(get_profile("cpu"), n_cores=3).intra_op_num_threads == 3
    p = HardwareProfile(name="b", device="cpu", graph_optimization="basic", allow_spinning=False)
    so = session_options_for(p, n_cores=1)
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_too_few_cores_is_placement_error() -> None:
    with pytest.raises(PlacementError):
        session_options_for(HardwareProfile(name="w", device="cpu", intra_op_threads=64), 2)


def test_create_session(vit_onnx: Path) -> None:
    sess = create_session(vit_onnx, get_profile("cpu-1t"))
    assert sess.get_providers()[0] == "CPUExecutionProvider"
    assert [i.name for i in sess.get_inputs()] == ["pixel_values"]


def test_missing_provider_is_measurement_error(vit_onnx: Path) -> None:
    p = HardwareProfile(name="g", device="cuda", provider="TensorrtExecutionProvider")
    if p.provider in ort.get_available_providers():
        pytest.skip("this onnxruntime has TensorRT")
    with pytest.raises(MeasurementError, match="TensorrtExecutionProvider"):
        create_session(vit_onnx, p)


def test_unloadable_model_is_measurement_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"junk")
    with pytest.raises(MeasurementError, match=r"bad\.onnx"):
        create_session(bad, get_profile("cpu-1t"))


def test_graph_summary_fields(vit_onnx: Path) -> None:
    s = graph_summary(vit_onnx)
    assert s["node_count"] == sum(s["op_counts"].values()) > 0
    assert s["initializer_bytes"] == sum(s["initializer_dtype_bytes"].values()) > 0
    assert s["file_bytes"] > s["initializer_bytes"]
    assert s["opset"]["ai.onnx"] == 17
    # The tiny ViT: 2 layers of 4 h^2 + 2 h*ffn linear MACs per token, plus patch embedding and
    # classifier; two activation matmuls (scores, context) per layer.
    assert s["matmul_weight_elems"] >= 2 * (4 * 32 * 32 + 2 * 32 * 64)
    assert s["activation_matmuls"] == 2 * 2
    assert set(s["quant_op_counts"]) >= {
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "MatMulInteger",
    }


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity")
def test_session_threads_inherit_affinity(vit_onnx: Path) -> None:
    # The bench relies on this: pin, then create the session, and ORT's pool stays on the pins.
    def masks() -> dict[str, str]:
        out = {}
        for task in Path("/proc/self/task").iterdir():
            status = (task / "status").read_text()
            out[task.name] = next(
                line.split()[-1]
                for line in status.splitlines()
                if line.startswith("Cpus_allowed_list")
            )
        return out

    before = masks()
    prev = os.sched_getaffinity(0)
    core = max(prev)
    os.sched_setaffinity(0, {core})
    try:
        two = HardwareProfile(name="two", device="cpu", intra_op_threads=2)
        sess = create_session(vit_onnx, two, n_cores=2)
    finally:
        os.sched_setaffinity(0, prev)
    new = {k: v for k, v in masks().items() if k not in before}
    assert new, "expected ONNX Runtime to start a worker thread"
    assert set(new.values()) == {str(core)}
    del sess


def test_graph_summary_counts_macs_the_same_for_every_precision(
    vit_onnx: Path, tmp_path: Path
) -> None:
    import numpy as np

    from paretoforge.kernels import PRECISIONS, apply_precision

    fp32 = graph_summary(vit_onnx)["matmul_weight_elems"]
    x = np.random.default_rng(0).standard_normal((16, 1, 8, 8)).astype(np.float32)
    for precision in PRECISIONS:
        kw = {"calibration": {"pixel_values": x}} if precision == "int8-static" else {}
        path = apply_precision(vit_onnx, tmp_path / f"{precision}.onnx", precision, **kw)
        # Dynamic int8 keeps int8 initializers on MatMulInteger; static int8 (QDQ) puts them
        # behind DequantizeLinear: both are followed back to the weight.
        assert graph_summary(path)["matmul_weight_elems"] == fp32, precision
