"""Export a PyTorch model to ONNX, atomically, with a dynamic batch axis."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paretoforge.exceptions import BuildError
from paretoforge.kernels._quiet import quiet

if TYPE_CHECKING:
    import torch

__all__ = ["default_output_fn", "export_onnx"]


def default_output_fn(out: Any) -> Any:
    """Pick the tensor to export from a model's output: ``.logits`` if present, else ``out[0]``."""
    logits = getattr(out, "logits", None)
    if logits is not None:
        return logits
    if isinstance(out, (tuple, list)) or hasattr(out, "to_tuple"):
        return out[0]
    return out


def _commit_onnx(tmp: Path, path: Path) -> None:
    """Make the finished temporary graph ``tmp`` durable and rename it over ``path`` (one
    step: readers see the old file or the whole new one, never a part)."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _wrapper(model: torch.nn.Module, names: Sequence[str], output_fn: Callable[[Any], Any]) -> Any:
    import torch

    class _KeywordCall(torch.nn.Module):
        # The TorchScript tracer feeds inputs positionally; transformers 5 models misbind
        # positional tensors (their forward signatures grew), so re-key them by name.
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> Any:
            out = self.model(**dict(zip(names, tensors, strict=True)))
            return output_fn(out)

    return _KeywordCall()


def export_onnx(
    model: torch.nn.Module,
    example_inputs: dict[str, torch.Tensor],
    path: str | os.PathLike[str],
    *,
    output_names: Sequence[str] = ("logits",),
    output_fn: Callable[[Any], Any] | None = None,
    opset: int = 17,
    dynamic_batch: bool = True,
    dynamic_sequence: Sequence[str] = (),
) -> Path:
    """Export ``model`` to an ONNX file at ``path`` and check it.

    The model is called as ``model(**example_inputs)`` and ``output_fn`` picks the exported
    output(s). Export uses the TorchScript exporter (``dynamo=False``): on a small ViT it takes
    0.15 s against 2 s for dynamo, with the same numerics. The file is written under a temporary
    name in the same directory and renamed once it passes ``onnx.checker``, so ``path`` is
    either absent or a complete, valid model. Models over 2 GB (external data) are not handled.

    Args:
        model: The module to export; put in eval mode for the export and restored after.
        example_inputs: Input name -> example tensor (real data shapes, batch on axis 0).
        path: Destination ``.onnx`` file.
        output_names: ONNX names of the outputs, one per tensor ``output_fn`` returns.
        output_fn: Maps the model's output to a tensor or tuple of tensors;
            default :func:`default_output_fn`.
        opset: ONNX opset version.
        dynamic_batch: Make axis 0 of every input and output symbolic (``batch``).
        dynamic_sequence: Inputs whose axis 1 is symbolic too (``sequence``): token inputs,
            so that a quality evaluation can feed each batch trimmed to its own length.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        BuildError: the export or the ONNX check failed; the message carries the cause.

    Example:
        >>> import tempfile, torch
        >>> class Net(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.fc = torch.nn.Linear(4, 3)
        ...     def forward(self, x):
        ...         return self.fc(x)
        >>> export_onnx(Net(), {"x": torch.randn(2, 4)}, f"{tempfile.mkdtemp()}/net.onnx").name
        'net.onnx'
    """
    import onnx
    import torch

    path = Path(path)
    if not example_inputs:
        raise BuildError("export_onnx needs at least one example input; got an empty dict")
    names = list(example_inputs)
    tensors = tuple(example_inputs[n] for n in names)
    output_names = list(output_names)
    unknown = sorted(set(dynamic_sequence) - set(names))
    if unknown:
        raise BuildError(f"export_onnx: dynamic_sequence names {unknown}, which are not inputs "
                         f"({names})")
    dynamic_axes: dict[str, dict[int, str]] = {
        n: {0: "batch"} for n in [*names, *output_names]} if dynamic_batch else {}
    for n in dynamic_sequence:
        dynamic_axes.setdefault(n, {})[1] = "sequence"

    wrapper = _wrapper(model, names, output_fn or default_output_fn)
    was_training = model.training
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        model.eval()
        try:
            with quiet("torch.onnx", "torch._dynamo", "torch.export"), torch.no_grad():
                torch.onnx.export(
                    wrapper,
                    tensors,
                    str(tmp),
                    input_names=names,
                    output_names=output_names,
                    dynamic_axes=dynamic_axes or None,
                    opset_version=opset,
                    do_constant_folding=True,
                    dynamo=False,
                )
            # one parse of the file for the check and the outputs (MiniLM: 90 MB, 0.1 s each)
            graph = onnx.load(str(tmp), load_external_data=False)
            onnx.checker.check_model(graph)
        except Exception as err:
            raise BuildError(
                f"ONNX export of {type(model).__name__} to {str(path)!r} failed "
                f"(opset {opset}, inputs {names}): {type(err).__name__}: {err}"
            ) from err
        n_out = len(graph.graph.output)
        if n_out != len(output_names):
            raise BuildError(
                f"output_fn returned {n_out} output(s) but output_names has "
                f"{len(output_names)} ({output_names}); make them match"
            )
        _commit_onnx(tmp, path)
    finally:
        model.train(was_training)
        if tmp.exists():
            tmp.unlink()
    return path
