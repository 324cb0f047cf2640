"""Task quality of a candidate: accuracy of its ONNX file or of its PyTorch module."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from paretoforge.exceptions import MeasurementError

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = ["onnx_accuracy", "onnx_logits", "torch_accuracy", "torch_logits"]


def _check_xy(x: np.ndarray, y: np.ndarray | None, batch_size: int) -> None:
    if batch_size < 1:
        raise MeasurementError(f"batch_size must be >= 1, got {batch_size}")
    if len(x) == 0:
        raise MeasurementError("x holds no samples; pass the held-out split")
    if y is not None and (y.ndim != 1 or len(y) != len(x)):
        raise MeasurementError(
            f"y must be a 1-D array of {len(x)} labels (one per sample in x), got shape "
            f"{list(y.shape)}"
        )


def onnx_logits(
    onnx_path: str | os.PathLike[str],
    x: np.ndarray | dict[str, np.ndarray],
    *,
    input_name: str = "pixel_values",
    batch_size: int = 256,
    session: Any = None,
) -> np.ndarray:
    """Run the ONNX model on ``x`` in batches and return its first output, concatenated.

    ``x`` is one input array (fed as ``input_name``) or, for a model with several inputs, a
    dict input name -> array (e.g. ``input_ids`` and ``attention_mask``), samples on axis 0.
    The session is single-threaded on the CPU with every graph optimization, so the numbers
    are the same on every node and a quality evaluation does not compete with other work. A
    KV-cache decoder graph is run as a prefill of each batch (positions from 0, empty past:
    :func:`~paretoforge.kernels.decoder_export.complete_feeds`) and its first output is the
    per-token ``logits``. ``session``: an open ``InferenceSession`` of ``onnx_path`` with
    those settings (one thread, every graph optimization, the CPU provider), used instead of
    a new one (e.g. the session a screening measurement times next).

    Raises:
        MeasurementError: ``x`` does not fit the model's input (named) or the runtime failed.
    """
    import numpy as np
    import onnxruntime as ort

    from paretoforge.kernels.decoder_export import complete_feeds, decoder_layout
    from paretoforge.kernels.ort import one_thread_options, validate_inputs

    feeds = dict(x) if isinstance(x, dict) else {input_name: x}
    n = len(next(iter(feeds.values()))) if feeds else 0
    _check_xy(np.empty(n), None, batch_size)
    if session is None:
        try:
            session = ort.InferenceSession(
                str(onnx_path), sess_options=one_thread_options("all"),
                providers=["CPUExecutionProvider"]
            )
        except Exception as err:
            raise MeasurementError(
                f"ONNX Runtime cannot load {str(onnx_path)!r}: {err}") from err
    layout = decoder_layout(session)

    def batch(i: int) -> dict[str, np.ndarray]:
        part = {k: np.ascontiguousarray(v[i : i + batch_size]) for k, v in feeds.items()}
        return part if layout is None else complete_feeds(layout, part)

    validate_inputs(session, feeds if layout is None else complete_feeds(layout, feeds),
                    batch_size=min(batch_size, n))
    order = _length_order(session, feeds) if layout is None else None
    try:
        if order is not None:
            return _run_trimmed(session, feeds, order, min(batch_size, _TRIMMED_BATCH))
        outs = [session.run(None, batch(i))[0] for i in range(0, n, batch_size)]
    except Exception as err:
        raise MeasurementError(f"ONNX Runtime failed on {str(onnx_path)!r}: {err}") from err
    return np.concatenate(outs, axis=0)


#: Examples per call when text is fed trimmed: neighbours in length, so little padding is left.
_TRIMMED_BATCH = 32


def _length_order(session: Any, feeds: dict[str, np.ndarray]) -> np.ndarray | None:
    """Example indices shortest first, when ``feeds`` is padded text (a 2-D
    ``attention_mask``), every token input of the graph has a symbolic length and its first
    output a fixed shape past the batch (a sentence embedding, a class's logits); else None.
    """
    import numpy as np

    mask = feeds.get("attention_mask")
    if mask is None or mask.ndim != 2 or mask.shape[1] < 2:
        return None
    shapes = {i.name: i.shape for i in session.get_inputs()}
    tokens = [k for k, v in feeds.items() if v.shape == mask.shape]
    if not all(len(shapes.get(k) or ()) == 2 and not isinstance(shapes[k][1], int)
               for k in tokens):
        return None  # a fixed length: the graph takes the padded inputs as they are
    if not all(isinstance(d, int) for d in session.get_outputs()[0].shape[1:]):
        return None  # a per-token output: its length would follow each batch's
    return np.argsort(mask.sum(1), kind="stable")


def _run_trimmed(session: Any, feeds: dict[str, np.ndarray], order: np.ndarray,
                 batch_size: int) -> np.ndarray:
    """The first output for every example, run in batches of neighbours in length, each cut
    by :func:`~paretoforge.models.distill.trim_padding` (the rule distillation and importance
    use: right padding, the positions dropped are masked out of attention and pooling, so the
    outputs are those of the padded inputs at a fraction of the compute), returned in the
    input order."""
    import numpy as np
    import torch

    from paretoforge.models.distill import trim_padding

    out: np.ndarray | None = None
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        part, _ = trim_padding({k: torch.from_numpy(v[idx]) for k, v in feeds.items()})
        res = session.run(None, {k: np.ascontiguousarray(v.numpy()) for k, v in part.items()})[0]
        if out is None:
            out = np.empty((len(order), *res.shape[1:]), dtype=res.dtype)
        out[idx] = res
    assert out is not None
    return out


def onnx_accuracy(
    onnx_path: str | os.PathLike[str],
    x: np.ndarray,
    y: np.ndarray,
    *,
    input_name: str = "pixel_values",
    batch_size: int = 256,
) -> float:
    """Top-1 accuracy of the ONNX classifier ``onnx_path`` on ``(x, y)``.

    Args:
        onnx_path: Exported classifier whose first output is logits ``(batch, classes)``.
        x: Inputs, samples on axis 0, in the model's dtype.
        y: Integer labels, shape ``(n,)``.
        input_name: The model's input name.
        batch_size: Samples per call.

    Raises:
        MeasurementError: shapes or dtypes do not fit (the message names the input).
    """
    _check_xy(x, y, batch_size)
    logits = onnx_logits(onnx_path, x, input_name=input_name, batch_size=batch_size)
    return float((logits.argmax(axis=-1) == y).mean())


def torch_logits(
    model: torch.nn.Module,
    x: np.ndarray | torch.Tensor,
    *,
    input_name: str = "pixel_values",
    batch_size: int = 256,
) -> np.ndarray:
    """Run ``model(**{input_name: batch})`` over ``x`` in eval mode; return the logits.

    The model's training mode is restored afterwards. Logits are ``.logits`` if the output has
    it, else ``out[0]`` (as :func:`paretoforge.kernels.export.default_output_fn`).
    """
    import numpy as np
    import torch

    from paretoforge.kernels.export import default_output_fn

    _check_xy(np.empty(len(x)), None, batch_size)
    xt = torch.as_tensor(x)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            outs: list[Any] = [
                default_output_fn(model(**{input_name: xt[i : i + batch_size]})).cpu().numpy()
                for i in range(0, len(xt), batch_size)
            ]
    finally:
        model.train(was_training)
    return np.concatenate(outs, axis=0)


def torch_accuracy(
    model: torch.nn.Module,
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    batch_size: int = 256,
    *,
    input_name: str = "pixel_values",
) -> float:
    """Top-1 accuracy of the PyTorch classifier ``model`` on ``(x, y)``.

    Example:
        >>> import torch
        >>> class Argmax(torch.nn.Module):
        ...     def forward(self, pixel_values):
        ...         return (pixel_values,)
        >>> torch_accuracy(Argmax(), torch.eye(3), torch.tensor([0, 1, 1]))
        0.6666666666666666
    """
    import numpy as np

    y_np = np.asarray(y.cpu() if hasattr(y, "cpu") else y)
    _check_xy(np.empty(len(x)), y_np, batch_size)
    logits = torch_logits(model, x, input_name=input_name, batch_size=batch_size)
    return float((logits.argmax(axis=-1) == y_np).mean())
