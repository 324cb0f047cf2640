from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from paretoforge.exceptions import BuildError, SpecError
from paretoforge.kernels import (
    PRECISIONS,
    apply_precision,
    export_onnx,
    graph_summary,
    quantize_dynamic_int8,
)


@pytest.fixture(scope="module")
def wide_onnx(
    make_vit: Callable[..., torch.nn.Module], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    # Wide enough that weights, not graph structure, dominate the file.
    model = make_vit(hidden=64, ffn=256, layers=2)
    path = tmp_path_factory.mktemp("quant") / "wide.onnx"
    return export_onnx(model, {"pixel_values": torch.randn(1, 1, 8, 8)}, path)


@pytest.fixture(scope="module")
def wide_int8(wide_onnx: Path) -> Path:
    return quantize_dynamic_int8(wide_onnx, wide_onnx.with_name("wide.int8.onnx"))


def _logits(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"pixel_values": x})[0]


def test_int8_is_smaller(wide_onnx: Path, wide_int8: Path) -> None:
    fp32, int8 = graph_summary(wide_onnx), graph_summary(wide_int8)
    assert int8["file_bytes"] < 0.6 * fp32["file_bytes"]
    assert int8["initializer_bytes"] < 0.4 * fp32["initializer_bytes"]
    assert int8["initializer_dtype_bytes"].get("int8", 0) > 0


def test_int8_graph_has_dynamic_quantization(wide_onnx: Path, wide_int8: Path) -> None:
    q = graph_summary(wide_int8)["quant_op_counts"]
    assert q["MatMulInteger"] >= 2 * 6  # q, k, v, o, fc1, fc2 per layer
    assert q["DynamicQuantizeLinear"] > 0
    assert graph_summary(wide_onnx)["quant_op_counts"]["MatMulInteger"] == 0


def test_int8_output_close_to_fp32(wide_onnx: Path, wide_int8: Path) -> None:
    x = np.random.default_rng(0).standard_normal((256, 1, 8, 8)).astype(np.float32)
    ref, got = _logits(wide_onnx, x), _logits(wide_int8, x)
    assert got.shape == ref.shape
    # Random-init logits sit close together, so compare where fp32 has a clear winner, and
    # check the logits track each other overall.
    top2 = np.sort(ref, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 0.1 * ref.std()
    assert clear.sum() > 50
    agree = (ref.argmax(1) == got.argmax(1))[clear].mean()
    assert agree >= 0.95
    assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.99


def test_per_channel(wide_onnx: Path, tmp_path: Path) -> None:
    p = quantize_dynamic_int8(wide_onnx, tmp_path / "pc.onnx", per_channel=True)
    assert graph_summary(p)["quant_op_counts"]["MatMulInteger"] > 0


def test_apply_precision_int8_is_per_channel_by_default(wide_onnx: Path, tmp_path: Path) -> None:
    import onnx

    def scales(path: Path) -> list[int]:  # sizes of the weight scale initializers
        model = onnx.load(str(path))
        return [int(np.prod(t.dims)) for t in model.graph.initializer
                if t.name.endswith("_scale") and t.data_type == onnx.TensorProto.FLOAT]

    default = apply_precision(wide_onnx, tmp_path / "d.onnx", "int8")
    per_tensor = apply_precision(wide_onnx, tmp_path / "t.onnx", "int8", per_channel=False)
    assert max(scales(default)) > 1 and max(scales(per_tensor)) == 1


def test_apply_precision(wide_onnx: Path, tmp_path: Path) -> None:
    assert PRECISIONS == ("fp32", "int8", "int8-static", "fp16", "int4")
    fp32 = apply_precision(wide_onnx, tmp_path / "a.onnx", "fp32")
    assert fp32.read_bytes() == wide_onnx.read_bytes()
    apply_precision(wide_onnx, fp32, "fp32")  # replacing an existing file works
    int8 = apply_precision(wide_onnx, tmp_path / "b.onnx", "int8")
    assert graph_summary(int8)["quant_op_counts"]["MatMulInteger"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx", "b.onnx"]


def test_unknown_precision_lists_options(wide_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"'int2'\. Available: fp32, int8, int8-static, fp16"):
        apply_precision(wide_onnx, tmp_path / "x.onnx", "int2")


def test_quantize_failures_are_build_errors(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="no such file"):
        quantize_dynamic_int8(tmp_path / "missing.onnx", tmp_path / "q.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(BuildError, match="int8 dynamic quantization"):
        quantize_dynamic_int8(bad, tmp_path / "q.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]


def test_per_channel_int8_is_bit_for_bit_onnx_runtimes(wide_onnx: Path, tmp_path: Path) -> None:
    """The per-channel quantizer (all channels at once) writes the very model ONNX Runtime's
    own ``quantize_dynamic`` writes, on a ViT and on a BERT encoder with a zeroed channel."""
    import onnx
    import transformers
    from onnxruntime.quantization import QuantType, quantize_dynamic

    torch.manual_seed(0)
    encoder = transformers.BertModel(transformers.BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        vocab_size=99, max_position_embeddings=40)).eval()
    with torch.no_grad():
        encoder.encoder.layer[0].intermediate.dense.weight[3].zero_()  # a channel of zeros
    ids = torch.ones(1, 16, dtype=torch.long)
    text = export_onnx(encoder, {"input_ids": ids, "attention_mask": ids}, tmp_path / "t.onnx",
                       output_names=["last_hidden_state"])
    for src in (wide_onnx, text):
        ours = quantize_dynamic_int8(src, tmp_path / f"{src.stem}.ours.onnx", per_channel=True)
        stock = tmp_path / f"{src.stem}.stock.onnx"
        quantize_dynamic(str(src), str(stock), weight_type=QuantType.QInt8, per_channel=True,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        a, b = onnx.load(str(ours)), onnx.load(str(stock))
        assert a.SerializeToString() == b.SerializeToString(), src.name
        assert sum(i.data_type == onnx.TensorProto.INT8 for i in a.graph.initializer) >= 4


@pytest.mark.parametrize("qtype", ["int8", "uint8"])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("min_real_range", [None, 1e-3])
def test_per_channel_params_are_onnx_runtimes_channel_by_channel(
    qtype: str, symmetric: bool, min_real_range: float | None
) -> None:
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import (
        compute_data_quant_params,
        get_qmin_qmax_for_qType,
    )

    from paretoforge.kernels.quantize import _per_channel_params

    onnx_type = TensorProto.INT8 if qtype == "int8" else TensorProto.UINT8
    rng = np.random.default_rng(0)
    rows = (rng.standard_normal((40, 24)) * rng.uniform(1e-6, 3, (40, 1))).astype(np.float32)
    rows[0] = 0  # a scale of 0 becomes 1
    rows[1] = np.abs(rows[1])  # all positive
    rows[2] = -np.abs(rows[2])  # all negative
    rows[3] = 1e-40  # subnormal
    zero, scale = _per_channel_params(
        rows, get_qmin_qmax_for_qType(onnx_type, symmetric=symmetric), symmetric, min_real_range)
    for i, row in enumerate(rows):
        z, s = compute_data_quant_params(row, onnx_type, symmetric, min_real_range=min_real_range)
        assert zero[i] == z and zero.dtype == z.dtype, (i, zero[i], z)
        assert scale[i] == s and scale.dtype == s.dtype, (i, scale[i], s)
