"""Static int8 (QDQ) calibrated on task data: accuracy holds, every method and layout works."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from paretoforge.exceptions import BuildError, SpecError
from paretoforge.kernels import export_onnx, graph_summary
from paretoforge.kernels.quantize import (
    CALIBRATION_METHODS,
    ArrayCalibrationReader,
    apply_precision,
    quantize_static_int8,
)


@pytest.fixture(scope="module")
def digits():
    from paretoforge.tasks import load_task

    return load_task("digits")


@pytest.fixture(scope="module")
def trained_onnx(digits, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ViT trained on digits for a few epochs (about 95% held-out), exported fp32."""
    from paretoforge.models.vit import ViTRecipe, train_base

    recipe = ViTRecipe(
        hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, epochs=12, lr=3e-3,
        warmup_epochs=1, aug_rotate_deg=0.0, aug_scale=0.0, aug_shift_px=0.0,
    )  # fmt: skip
    model = train_base(recipe, digits)
    path = tmp_path_factory.mktemp("static") / "vit.onnx"
    return export_onnx(model, {"pixel_values": torch.from_numpy(digits.x_train[:2])}, path)


def _accuracy(path: Path, digits) -> float:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"pixel_values": digits.x_heldout})[0]
    return float((logits.argmax(1) == digits.y_heldout).mean())


@pytest.mark.parametrize("method", CALIBRATION_METHODS)
@pytest.mark.parametrize("per_channel", [False, True])
def test_static_int8_within_two_points_of_fp32(
    trained_onnx, digits, tmp_path, method, per_channel
):
    fp32 = _accuracy(trained_onnx, digits)
    assert fp32 > 0.85  # the model learned something, so the comparison means something
    q = quantize_static_int8(
        trained_onnx, tmp_path / "s8.onnx", {"pixel_values": digits.x_train},
        method=method, per_channel=per_channel, max_examples=256,
    )  # fmt: skip
    assert abs(_accuracy(q, digits) - fp32) <= 0.02
    summary = graph_summary(q)
    assert summary["quant_op_counts"]["QuantizeLinear"] > 0
    assert summary["quant_op_counts"]["DequantizeLinear"] > 0
    assert summary["quant_op_counts"]["DynamicQuantizeLinear"] == 0
    assert summary["initializer_dtype_bytes"].get("int8", 0) > 0


def test_apply_precision_int8_static_needs_calibration(trained_onnx, digits, tmp_path):
    with pytest.raises(BuildError, match="needs calibration inputs"):
        apply_precision(trained_onnx, tmp_path / "a.onnx", "int8-static")
    out = apply_precision(
        trained_onnx, tmp_path / "a.onnx", "int8-static",
        calibration={"pixel_values": digits.x_train[:64]}, calibration_method="entropy",
    )  # fmt: skip
    assert graph_summary(out)["quant_op_counts"]["QuantizeLinear"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx"]  # no temporary left


def test_static_errors_name_the_problem(trained_onnx, digits, tmp_path):
    with pytest.raises(SpecError, match="'kl'. Available: minmax, entropy, percentile"):
        quantize_static_int8(trained_onnx, tmp_path / "x.onnx", {"pixel_values": digits.x_train},
                             method="kl")  # fmt: skip
    with pytest.raises(BuildError, match=r"lacks input\(s\) \['pixel_values'\]"):
        quantize_static_int8(trained_onnx, tmp_path / "x.onnx", {"images": digits.x_train})
    with pytest.raises(BuildError, match="no such file"):
        quantize_static_int8(tmp_path / "none.onnx", tmp_path / "x.onnx", {"a": digits.x_train})
    with pytest.raises(SpecError, match="percentile"):
        quantize_static_int8(trained_onnx, tmp_path / "x.onnx", {"pixel_values": digits.x_train},
                             method="percentile", percentile=0.0)  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_calibration_reader_batches_and_rewinds():
    x = {"a": np.arange(10).reshape(5, 2), "b": np.zeros((5, 1))}
    reader = ArrayCalibrationReader(x, batch_size=2)
    assert len(reader) == 2  # equal batches only: the fifth example is left out
    first = [b["a"][:, 0].tolist() for b in iter(reader.get_next, None)]
    assert first == [[0, 2], [4, 6]]
    reader.rewind()
    assert reader.get_next()["b"].shape == (2, 1)
    assert len(ArrayCalibrationReader(x, batch_size=8)) == 1  # fewer than a batch: one batch
    assert len(ArrayCalibrationReader(x, batch_size=1, max_examples=3)) == 3
    with pytest.raises(BuildError, match="one length"):
        ArrayCalibrationReader({"a": np.zeros(3), "b": np.zeros(4)})
    with pytest.raises(BuildError, match="batch_size"):
        ArrayCalibrationReader({"a": np.zeros(3)}, batch_size=0)


def test_static_int8_on_a_text_encoder_with_padding(tmp_path):
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        vocab_size=99, max_position_embeddings=40, num_labels=3, attn_implementation="eager",
    )  # fmt: skip
    model = transformers.BertForSequenceClassification(config).eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 99, (64, 16), generator=g)
    mask = (torch.arange(16)[None] < torch.randint(4, 17, (64, 1), generator=g)).long()
    inputs = {"input_ids": ids.masked_fill(mask == 0, 0), "attention_mask": mask}
    fp32 = export_onnx(model, {k: v[:2] for k, v in inputs.items()}, tmp_path / "bert.onnx")
    calib = {k: v[:48].numpy() for k, v in inputs.items()}
    q = quantize_static_int8(fp32, tmp_path / "bert.s8.onnx", calib, method="percentile")
    test = {k: v[48:].numpy() for k, v in inputs.items()}
    ref = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).run(None, test)[0]
    got = ort.InferenceSession(str(q), providers=["CPUExecutionProvider"]).run(None, test)[0]
    assert got.shape == ref.shape and np.isfinite(got).all()
    assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.9
