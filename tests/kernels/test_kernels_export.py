from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

from paretoforge.exceptions import BuildError
from paretoforge.kernels import export_onnx


def _run(path: Path, x: np.ndarray) -> list[np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"pixel_values": x})


@pytest.mark.parametrize("batch", [1, 7])
def test_onnx_matches_torch_with_dynamic_batch(
    vit: torch.nn.Module, vit_onnx: Path, batch: int
) -> None:
    x = torch.randn(batch, 1, 8, 8, generator=torch.Generator().manual_seed(batch))
    (got,) = _run(vit_onnx, x.numpy())
    with torch.no_grad():
        want = vit(pixel_values=x).logits.numpy()
    assert got.shape == (batch, 10)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_graph_declares_symbolic_batch(vit_onnx: Path) -> None:
    from paretoforge.kernels import graph_summary

    s = graph_summary(vit_onnx)
    assert s["inputs"] == [
        {"name": "pixel_values", "dtype": "float32", "shape": ["batch", 1, 8, 8]}
    ]
    assert s["outputs"][0]["name"] == "logits" and s["outputs"][0]["shape"][0] == "batch"


def test_static_batch_when_asked(vit: torch.nn.Module, tmp_path: Path) -> None:
    from paretoforge.kernels import graph_summary

    p = export_onnx(
        vit, {"pixel_values": torch.randn(2, 1, 8, 8)}, tmp_path / "s.onnx", dynamic_batch=False
    )
    assert graph_summary(p)["inputs"][0]["shape"] == [2, 1, 8, 8]


def test_custom_output_fn_and_names(vit: torch.nn.Module, tmp_path: Path) -> None:
    def two(out: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return out.logits, out.logits.softmax(-1)

    p = export_onnx(
        vit,
        {"pixel_values": torch.randn(2, 1, 8, 8)},
        tmp_path / "two.onnx",
        output_names=("logits", "probs"),
        output_fn=two,
    )
    logits, probs = _run(p, np.ones((3, 1, 8, 8), np.float32))
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    assert logits.shape == probs.shape == (3, 10)


def test_output_names_must_match_outputs(vit: torch.nn.Module, tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="output_names"):
        export_onnx(
            vit,
            {"pixel_values": torch.randn(1, 1, 8, 8)},
            tmp_path / "m.onnx",
            output_names=("a", "b"),
        )
    assert list(tmp_path.iterdir()) == []


def test_training_mode_restored(make_vit: Callable[..., torch.nn.Module], tmp_path: Path) -> None:
    model = make_vit().train()
    export_onnx(model, {"pixel_values": torch.randn(1, 1, 8, 8)}, tmp_path / "m.onnx")
    assert model.training


def test_failure_is_build_error_and_leaves_nothing(tmp_path: Path) -> None:
    class Broken(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom in forward")

    target = tmp_path / "sub" / "broken.onnx"
    with pytest.raises(BuildError, match="boom in forward"):
        export_onnx(Broken(), {"x": torch.randn(1, 2)}, target)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_empty_inputs_rejected(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="example input"):
        export_onnx(torch.nn.Identity(), {}, tmp_path / "m.onnx")


def test_existing_file_replaced_atomically(vit: torch.nn.Module, tmp_path: Path) -> None:
    target = tmp_path / "m.onnx"
    target.write_bytes(b"old")
    export_onnx(vit, {"pixel_values": torch.randn(1, 1, 8, 8)}, target)
    assert target.stat().st_size > 1000
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


@pytest.mark.parametrize("family", ["bert", "distilbert", "roberta"])
def test_a_symbolic_length_lets_quality_run_trimmed_batches(family: str, tmp_path: Path) -> None:
    """Token inputs exported with a symbolic length: onnx_logits feeds padded text in batches
    of neighbours in length, each cut after its last attended position, and gets the outputs
    of the padded inputs (a fixed-length graph of the same model takes them as they are)."""
    from paretoforge.evaluators.quality import _length_order, onnx_logits
    from paretoforge.kernels import graph_summary
    from paretoforge.tasks.embedding import PooledEncoder, Pooling
    from paretoforge.testing.contracts import tiny_inputs, tiny_model

    encoder = tiny_model(family)
    model = PooledEncoder(encoder, Pooling("mean", normalize=True))
    example = tiny_inputs(tiny_model(family), 1, seed=0)
    names = list(example)
    dyn = export_onnx(model, example, tmp_path / "dyn.onnx", output_names=("emb",),
                      dynamic_sequence=names)
    fixed = export_onnx(model, example, tmp_path / "fixed.onnx", output_names=("emb",))
    assert graph_summary(dyn)["inputs"][0]["shape"] == ["batch", "sequence"]
    assert isinstance(graph_summary(fixed)["inputs"][0]["shape"][1], int)
    feeds = {k: v.numpy() for k, v in tiny_inputs(tiny_model(family), 70, seed=5).items()}
    feeds["attention_mask"][1:, -2:] = 0  # the last columns padding in all but the first row
    sess = ort.InferenceSession(str(dyn), providers=["CPUExecutionProvider"])
    order = _length_order(sess, feeds)
    assert order is not None and (np.diff(feeds["attention_mask"].sum(1)[order]) >= 0).all()
    assert _length_order(ort.InferenceSession(str(fixed), providers=["CPUExecutionProvider"]),
                      feeds) is None
    got, want = onnx_logits(dyn, feeds), onnx_logits(fixed, feeds)
    assert got.shape == want.shape == (70, encoder.config.hidden_size)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    with pytest.raises(BuildError, match=r"dynamic_sequence names \['nope'\]"):
        export_onnx(model, example, tmp_path / "bad.onnx", dynamic_sequence=["nope"])
