"""Export by filling a traced ONNX graph of the same structure with another model's weights.

Sub-networks cut from one supernet that keep the same layers trace to the same ONNX graph:
the same nodes, attributes and initializer names, only the initializers' shapes differ (the
attention reshapes infer the head count from the weights, ``view(..., -1, head_dim)``). A
trace costs most of a one-shot trial (0.06-0.13 s of a tiny ViT's 0.3 s; seconds for
MiniLM), so :class:`ExportTemplates` traces a structure once and exports every later model of
that structure by writing its weights into a copy of that graph.

A template is learned from two traces of the first model of a structure: one of the model
itself (the file the caller gets) and one of a copy whose parameters are distinct random
values. Each initializer of the random trace is matched, by its exact bytes, to the parameter
it came from, as it is or transposed (the exporter folds a ``Linear``'s transpose into a
``MatMul`` initializer). The two traces must agree in everything else: the same nodes with the
same attributes, and every initializer no parameter explains (constants) byte for byte; where
they do not, the structure is traced every time.

Every filled graph is checked before it is committed: ONNX Runtime runs it on the example
inputs and its outputs must match the model's own in PyTorch (``rtol=1e-3``, ``atol=1e-4``).
A graph that fails to load or to match is traced instead, and its structure is not templated
again in this process: a wrong signature costs a trace, never a wrong graph.

Example:
    >>> templates = ExportTemplates()
    >>> templates.export(model, example, "a.onnx", signature=("vit", 2))  # doctest: +SKIP
    'traced'
    >>> templates.export(other, example, "b.onnx", signature=("vit", 2))  # doctest: +SKIP
    'template'
"""

from __future__ import annotations

import copy
import hashlib
import os
import tempfile
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paretoforge.kernels.export import _commit_onnx, _wrapper, default_output_fn, export_onnx

if TYPE_CHECKING:
    import onnx
    import torch

__all__ = ["ExportTemplates", "structure_signature"]

_RTOL, _ATOL = 1e-3, 1e-4


@dataclass
class _Template:
    """A traced graph with the parameter-derived initializers emptied, and where each comes
    from: ``fills[i] = (initializer index, parameter name, transposed)``."""

    graph: onnx.ModelProto
    fills: list[tuple[int, str, bool]]


def structure_signature(module: torch.nn.Module, example_inputs: dict[str, torch.Tensor],
                        *extra: Hashable) -> tuple[Hashable, ...]:
    """What a trace's graph depends on besides the weights' values and sizes: the module
    types in order, the parameter names and ranks, the buffers' names and shapes, the input
    names, dtypes and ranks, the attention implementation, and ``extra`` (export options).

    Example:
        >>> import torch
        >>> sig = structure_signature(torch.nn.Linear(4, 2), {"x": torch.zeros(1, 4)})
        >>> sig == structure_signature(torch.nn.Linear(8, 3), {"x": torch.zeros(1, 8)})
        True
    """
    config = getattr(module, "config", None)
    return (
        tuple(type(m).__qualname__ for m in module.modules()),
        tuple((n, p.dim()) for n, p in module.named_parameters()),
        tuple((n, tuple(b.shape)) for n, b in module.named_buffers()),
        tuple((n, str(t.dtype), t.dim()) for n, t in example_inputs.items()),
        getattr(config, "_attn_implementation", None),
        *extra,
    )


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def _param_arrays(module: torch.nn.Module) -> dict[str, Any]:
    """Parameter name (as the export wrapper names it) -> float32 numpy array."""
    return {f"model.{n}": p.detach().cpu().numpy() for n, p in module.named_parameters()}


class ExportTemplates:
    """Traced ONNX graphs by structure signature, filled with each later model's weights.

    Not thread-safe; one per process (a worker builds one candidate at a time).

    Args:
        max_templates: Structures kept; the oldest is dropped beyond it.
    """

    def __init__(self, max_templates: int = 64) -> None:
        self.max_templates = max_templates
        self._templates: dict[Hashable, _Template] = {}
        self._untemplatable: set[Hashable] = set()
        #: How each export went: ``traced`` (a trace; a template learned or not) and
        #: ``template`` (filled); ``rejected`` counts filled graphs that failed their check.
        self.counts = {"traced": 0, "template": 0, "rejected": 0}

    def export(self, model: torch.nn.Module, example_inputs: dict[str, torch.Tensor],
               path: str | os.PathLike[str], *, signature: Hashable,
               output_names: Sequence[str] = ("logits",), output_fn: Any = None,
               dynamic_sequence: Sequence[str] = ()) -> str:
        """Write ``model``'s ONNX graph to ``path``; return ``"template"`` or ``"traced"``.

        ``signature`` names the structure (see :func:`structure_signature`); the arguments
        are :func:`~paretoforge.kernels.export.export_onnx`'s (opset 17, dynamic batch).
        """
        kwargs = {"output_names": tuple(output_names), "output_fn": output_fn,
                  "dynamic_sequence": tuple(dynamic_sequence)}
        template = self._templates.get(signature)
        if template is not None:
            try:
                filled = self._fill(template, model, example_inputs, Path(path), output_fn)
            except Exception:  # noqa: BLE001  (anything unexpected: a trace decides)
                filled = False
            if filled:
                self.counts["template"] += 1
                return "template"
            self.counts["rejected"] += 1
            self._templates.pop(signature, None)
            self._untemplatable.add(signature)
        export_onnx(model, example_inputs, path, **kwargs)
        self.counts["traced"] += 1
        if template is None and signature not in self._untemplatable:
            try:
                learned = self._learn(model, example_inputs, Path(path), kwargs)
            except Exception:  # noqa: BLE001  (the trace above stands; no template)
                learned = None
            if learned is None:
                self._untemplatable.add(signature)
            else:
                if len(self._templates) >= self.max_templates:
                    self._templates.pop(next(iter(self._templates)))
                self._templates[signature] = learned
        return "traced"

    # -- learning a structure ----------------------------------------------------------------

    def _learn(self, model: torch.nn.Module, example_inputs: dict[str, torch.Tensor],
               traced: Path, kwargs: dict[str, Any]) -> _Template | None:
        """The template of ``model``'s structure from a trace of a copy with distinct random
        parameters, checked against ``model``'s own trace at ``traced`` (or, where that trace
        merged parameters of equal values into one initializer, against a second random
        copy's); None where the two cannot be reconciled."""
        import onnx

        with tempfile.TemporaryDirectory(prefix="pf-template-") as tmp:
            probe, probe_graph = _random_trace(model, example_inputs, Path(tmp) / "a.onnx",
                                               kwargs, seed=0)
            check, check_graph = model, onnx.load(str(traced))
            if _names(check_graph) != _names(probe_graph):
                check, check_graph = _random_trace(model, example_inputs, Path(tmp) / "b.onnx",
                                                   kwargs, seed=1)
        if _names(check_graph) != _names(probe_graph) or not _same_nodes(probe_graph,
                                                                         check_graph):
            return None
        fills = _fills(probe, probe_graph, check, check_graph)
        if not fills:
            return None
        for i, _, _ in fills:  # the template keeps no weights
            probe_graph.graph.initializer[i].ClearField("raw_data")
            probe_graph.graph.initializer[i].ClearField("float_data")
        return _Template(graph=probe_graph, fills=fills)

    # -- filling a template -------------------------------------------------------------------

    def _fill(self, template: _Template, model: torch.nn.Module,
              example_inputs: dict[str, torch.Tensor], path: Path, output_fn: Any) -> bool:
        """Write ``template`` filled with ``model``'s weights to ``path`` once it computes what
        ``model`` computes on ``example_inputs``; False (nothing written) where it does not."""
        import numpy as np
        import onnx

        params = _param_arrays(model)
        graph = onnx.ModelProto()
        graph.CopyFrom(template.graph)
        for i, name, transposed in template.fills:
            arr = params.get(name)
            if arr is None or arr.dtype != np.float32:
                return False
            arr = np.ascontiguousarray(arr.T if transposed else arr)
            init = graph.graph.initializer[i]
            del init.dims[:]
            init.dims.extend(arr.shape)
            init.raw_data = arr.tobytes()
        data = graph.SerializeToString()
        if not _computes_like(data, model, example_inputs, output_fn):
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            _commit_onnx(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return True


def _random_trace(model: torch.nn.Module, example_inputs: dict[str, torch.Tensor], path: Path,
                  kwargs: dict[str, Any], *, seed: int) -> tuple[torch.nn.Module, Any]:
    """A copy of ``model`` with distinct random parameters, and its trace."""
    import onnx
    import torch

    probe = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in probe.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return probe, onnx.load(str(export_onnx(probe, example_inputs, path, **kwargs)))


def _names(graph: onnx.ModelProto) -> list[str]:
    return [t.name for t in graph.graph.initializer]


def _fills(probe: torch.nn.Module, probe_graph: onnx.ModelProto, check: torch.nn.Module,
           check_graph: onnx.ModelProto) -> list[tuple[int, str, bool]] | None:
    """Each initializer of ``probe_graph`` that is a parameter of ``probe`` (by its bytes, as
    it is or transposed), checked in ``check_graph`` against ``check``'s parameter; None if
    an initializer of the two differs with no parameter to explain it."""
    import numpy as np
    from onnx import numpy_helper

    sources: dict[bytes, tuple[str, bool]] = {}
    for name, arr in _param_arrays(probe).items():
        sources[_digest(np.ascontiguousarray(arr).tobytes())] = (name, False)
        if arr.ndim == 2:
            sources[_digest(np.ascontiguousarray(arr.T).tobytes())] = (name, True)
    params = _param_arrays(check)
    fills: list[tuple[int, str, bool]] = []
    for i, (a, b) in enumerate(zip(probe_graph.graph.initializer, check_graph.graph.initializer,
                                   strict=True)):
        arr = numpy_helper.to_array(a)
        src = (sources.get(_digest(np.ascontiguousarray(arr).tobytes()))
               if arr.dtype == np.float32 else None)
        if src is None:  # a constant: the same in both traces, or the structure is unsafe
            if a.SerializeToString() != b.SerializeToString():
                return None
            continue
        name, transposed = src
        if not np.array_equal(numpy_helper.to_array(b),
                              params[name].T if transposed else params[name]):
            return None
        fills.append((i, name, transposed))
    return fills


def _same_nodes(a: onnx.ModelProto, b: onnx.ModelProto) -> bool:
    """The two graphs' nodes, inputs and outputs are the same (initializers aside)."""
    def shape(m: onnx.ModelProto) -> bytes:
        import onnx

        g = onnx.GraphProto()
        g.CopyFrom(m.graph)
        g.ClearField("initializer")
        return g.SerializeToString()

    return shape(a) == shape(b)


def _computes_like(data: bytes, model: torch.nn.Module,
                   example_inputs: dict[str, torch.Tensor], output_fn: Any) -> bool:
    """Whether the serialized graph ``data`` gives ``model``'s outputs on ``example_inputs``."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from paretoforge.kernels.ort import one_thread_options

    names = list(example_inputs)
    wrapper = _wrapper(model, names, output_fn or default_output_fn)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = wrapper(*(example_inputs[n] for n in names))
    finally:
        model.train(was_training)
    expected = [t.detach().cpu().numpy() for t in (out if isinstance(out, (tuple, list))
                                                   else (out,))]
    try:
        sess = ort.InferenceSession(data, one_thread_options("disable"),
                                    providers=["CPUExecutionProvider"])
        got = sess.run(None, {n: example_inputs[n].detach().cpu().numpy() for n in names})
    except Exception:  # a filled graph ONNX Runtime rejects: trace instead
        return False
    return len(got) == len(expected) and all(
        g.shape == e.shape and np.allclose(g, e, rtol=_RTOL, atol=_ATOL)
        for g, e in zip(got, expected, strict=True))
