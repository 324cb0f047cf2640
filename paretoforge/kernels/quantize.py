"""Post-training quantization of exported ONNX models, and precision as a build step.

Precisions beside fp32 (the exported graph): two int8 schemes, fp16 and weight-only int4.

* ``int8`` (dynamic): int8 weights, activations quantized per call from their observed range;
  needs no data. As a build step (:func:`apply_precision`) weights get one scale per output
  channel: on all-MiniLM-L6-v2 (128 tokens, one core) that kept embedding cosine 0.993 to the
  fp32 model against 0.962 with one scale per tensor, at 0.48x against 0.47x its latency
  (``benchmarks/minilm_recovery.py``).
* ``int8-static`` (QDQ): int8 weights and activations, with activation ranges fixed ahead of
  time by running the fp32 model on calibration inputs from the task's training split
  (:class:`ArrayCalibrationReader`); ranges from min/max, entropy or a percentile.
* ``fp16``: weights and activations in float16 (ONNX Runtime's transformers float16
  converter), graph inputs and outputs kept as exported (int64 ids, float32 logits). Meant for
  GPUs; ONNX Runtime's CPU provider runs it too, slowly (:func:`convert_fp16`).
* ``int4``: weight-only 4-bit quantization of the linear layers' weights to ``MatMulNBits``
  (blocks of 32 along the input axis, one symmetric scale per block), activations fp32; meant
  for decoders, valid for any model with constant matmul weights (:func:`quantize_int4`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paretoforge.exceptions import BuildError, SpecError
from paretoforge.kernels._quiet import quiet
from paretoforge.names import PRECISIONS

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "CALIBRATION_METHODS",
    "PRECISIONS",
    "ArrayCalibrationReader",
    "apply_precision",
    "convert_fp16",
    "quantize_dynamic_int8",
    "quantize_int4",
    "quantize_static_int8",
]

# Precisions a candidate can be built in (the one list, paretoforge.names.PRECISIONS). fp32 is
# the exported graph as is; int8 is dynamic quantization (needs no data); int8-static is QDQ with
# activation ranges calibrated on inputs; fp16 is the float16 graph; int4 is 4-bit weight-only
# MatMulNBits (activations fp32).

#: Block size (input-axis weights sharing one scale) of the ``int4`` precision.
INT4_BLOCK_SIZE = 32

#: Ways to turn calibration activations into int8 ranges (ONNX Runtime calibrators).
CALIBRATION_METHODS: tuple[str, ...] = ("minmax", "entropy", "percentile")


@contextlib.contextmanager
def _tmp_beside(dst: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``dst``; the caller renames it over ``dst`` when done."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    finally:
        if tmp.exists():
            tmp.unlink()


def _commit(tmp: Path, dst: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, dst)


def quantize_dynamic_int8(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    per_channel: bool = False,
) -> Path:
    """Dynamically quantize ``src`` to int8 weights and write it atomically to ``dst``.

    MatMul/Gemm weights become int8 (``QInt8``) and activations are quantized per call
    (``DynamicQuantizeLinear`` + ``MatMulInteger``), so no calibration data is needed. ONNX
    Runtime's ``quant_pre_process`` is not run: on exported transformers it did not change what
    gets quantized and costs a second pass over the graph.

    Args:
        src: fp32 ONNX model.
        dst: Where to write the int8 model.
        per_channel: One scale per output channel instead of per tensor (more accurate, and
            slightly larger and slower on some CPUs).

    Returns:
        ``dst`` as a :class:`~pathlib.Path`.

    Raises:
        BuildError: quantization failed; the message carries the cause.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise BuildError(f"Cannot quantize {str(src)!r}: no such file; export the model first")
    # Fused graphs hold tensors whose type the quantizer cannot infer; without a default it
    # aborts on them.
    extra_options = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    with _tmp_beside(dst) as tmp:
        try:
            # The quantizer logs per-node notes at INFO/WARNING; failures still raise.
            with quiet():
                if per_channel:
                    _quantize_dynamic_per_channel(src, tmp, extra_options)
                else:
                    quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8,
                                     per_channel=False, extra_options=extra_options)
            onnx.checker.check_model(str(tmp))
        except Exception as err:
            raise BuildError(
                f"int8 dynamic quantization of {str(src)!r} failed: {type(err).__name__}: {err}"
            ) from err
        _commit(tmp, dst)
    return dst


@functools.cache
def _per_channel_quantizer_class() -> Any:
    """ONNX Runtime's ``ONNXQuantizer`` with its per-channel weight quantization done for all
    channels at once.

    The stock method quantizes one channel at a time in Python (a scale, a zero point and a
    rounding per channel): on all-MiniLM-L6-v2, 20,739 channels took 1.2 s of the 2.1 s the
    whole quantization took. This one computes the same numbers with the same numpy
    operations in the same precision, array-wide, so its weights, scales and zero points are
    bit-for-bit the stock ones (a test compares every initializer). Anything else -- tensor
    overrides, 4-bit or float types, a float weight kept -- goes to the stock method.
    """
    import numpy as np
    import onnx
    from onnxruntime.quantization.onnx_quantizer import ONNXQuantizer
    from onnxruntime.quantization.quant_utils import (
        TENSOR_NAME_QUANT_SUFFIX,
        find_by_name,
        get_qmin_qmax_for_qType,
        normalize_axis,
        tensor_proto_to_array,
    )

    integer = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)

    class _Quantizer(ONNXQuantizer):  # type: ignore[misc, valid-type]
        def quantize_weight_per_channel_impl(self, weight_name: str, weight_qType: int,
                                             channel_axis: int, reduce_range: bool = True,
                                             keep_float_weight: bool = False) -> Any:
            initializer = find_by_name(weight_name, self.model.initializer())
            overrides = self.tensor_quant_overrides.get_per_channel_overrides(
                weight_name, default_val=None)
            ok, axis = (False, None) if initializer is None else normalize_axis(
                channel_axis, len(initializer.dims))
            if (not ok or overrides is not None or keep_float_weight
                    or weight_qType not in integer
                    or initializer.data_type != onnx.TensorProto.FLOAT):
                return super().quantize_weight_per_channel_impl(
                    weight_name, weight_qType, channel_axis, reduce_range, keep_float_weight)
            weights = tensor_proto_to_array(initializer)
            symmetric = self.is_weight_symmetric(weight_qType)
            reduce = self.reduce_range and reduce_range
            zero, scale = _per_channel_params(
                np.moveaxis(weights, axis, 0).reshape(weights.shape[axis], -1),
                get_qmin_qmax_for_qType(weight_qType, reduce, symmetric=symmetric),
                symmetric, self.min_real_range)  # fmt: skip
            shape = [1] * weights.ndim
            shape[axis] = -1
            # quantize_nparray's rounding, channel by channel: x / scale, round, + zero point,
            # clipped to the type's full range
            lo, hi = get_qmin_qmax_for_qType(weight_qType, reduce_range=False, symmetric=False)
            q = (weights.astype(np.float32) / scale.reshape(shape)).round() + zero.reshape(shape)
            np.clip(q, lo, hi, out=q)
            dtype = onnx.helper.tensor_dtype_to_np_dtype(weight_qType)
            q_name = weight_name + TENSOR_NAME_QUANT_SUFFIX
            zp_name, scale_name = weight_name + "_zero_point", weight_name + "_scale"
            count = [weights.shape[axis]]
            self.model.initializer_extend([
                onnx.helper.make_tensor(scale_name, initializer.data_type, count,
                                        scale.tolist()),
                onnx.helper.make_tensor(zp_name, weight_qType, count, zero.tolist()),
                onnx.numpy_helper.from_array(q.astype(dtype).reshape(initializer.dims), q_name),
            ])  # fmt: skip
            return q_name, zp_name, scale_name

    return _Quantizer


def _per_channel_params(rows: np.ndarray, qrange: tuple[Any, Any], symmetric: bool,
                        min_real_range: float | None) -> tuple[np.ndarray, np.ndarray]:
    """(zero points, scales) of each row of ``rows`` (channels, values), as ONNX Runtime's
    ``compute_data_quant_params`` computes them for one channel, for all rows at once: the
    range widened to hold 0 (and ``min_real_range``), made symmetric if asked, the scale in
    float64 stored in the data's type, and a scale below the type's smallest normal replaced
    by 1 with zero point 0."""
    import numpy as np

    qmin, qmax = qrange
    if rows.shape[1] == 0:
        return (np.zeros(len(rows), qmin.dtype), np.ones(len(rows), rows.dtype))
    rmin = np.minimum(rows.min(axis=1), np.array(0, rows.dtype))
    rmax = np.maximum(rows.max(axis=1), np.array(0, rows.dtype))
    if min_real_range is not None:
        rmax = np.maximum(rmax, rmin + np.asarray(min_real_range, dtype=rmin.dtype))
    if symmetric:
        absmax = np.maximum(np.abs(rmin), np.abs(rmax))
        rmin, rmax = -absmax, absmax
    dq = np.array(qmax, dtype=np.float64) - np.array(qmin, dtype=np.float64)
    scale64 = (rmax.astype(np.float64) - rmin.astype(np.float64)) / dq
    tiny = scale64 < np.finfo(rows.dtype).tiny
    if symmetric:
        zero = np.full(len(rows), np.round((qmin + qmax) / np.array(2.0, dtype=np.float64)))
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            zero = np.round(qmin - rmin / scale64)
    zero = np.where(tiny, 0, zero).astype(qmin.dtype)
    scale = np.where(tiny, 1.0, scale64.astype(rows.dtype)).astype(rows.dtype)
    return zero, scale


def _quantize_dynamic_per_channel(src: Path, dst: Path, extra_options: dict[str, Any]) -> None:
    """``onnxruntime.quantization.quantize_dynamic(src, dst, weight_type=QInt8,
    per_channel=True, extra_options=...)``, step for step, with
    :func:`_per_channel_quantizer_class` as its quantizer."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.quant_utils import (
        QuantizationMode,
        load_model_with_shape_infer,
        update_opset_version,
    )
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    model = update_opset_version(load_model_with_shape_infer(src), QuantType.QInt8)
    quantizer = _per_channel_quantizer_class()(
        model, True, False, QuantizationMode.IntegerOps, False, QuantType.QInt8,
        QuantType.QUInt8, None, [], [], list(IntegerOpsRegistry.keys()),
        {"MatMulConstBOnly": True, **extra_options})  # fmt: skip
    quantizer.quantize_model()
    quantizer.model.save_model_to_file(str(dst), False)


class ArrayCalibrationReader:
    """Feeds calibration inputs to ONNX Runtime's static quantizer, batch by batch.

    Implements ``onnxruntime.quantization.CalibrationDataReader`` (``get_next`` returns the
    next ``{input name: array}`` batch, then ``None``; ``rewind`` starts over) without
    importing onnxruntime until used. Every batch has the same size: the entropy and
    percentile calibrators stack the batches' activations and fail on a ragged last batch, so
    the examples past the last full batch are left out (unless there is no full batch).

    Args:
        inputs: Input name -> array with the examples on axis 0 (e.g. ``pixel_values`` of the
            training split, or ``input_ids`` and ``attention_mask``); all the same length.
        batch_size: Examples per calibration batch.
        max_examples: Use at most this many examples (the first ones), if given.

    Example:
        >>> import numpy as np
        >>> reader = ArrayCalibrationReader({"x": np.zeros((5, 3), np.float32)}, batch_size=2)
        >>> [b["x"].shape[0] for b in iter(reader.get_next, None)]
        [2, 2]
    """

    def __init__(
        self,
        inputs: Mapping[str, np.ndarray],
        *,
        batch_size: int = 32,
        max_examples: int | None = None,
    ) -> None:
        import numpy as np

        if not inputs:
            raise BuildError("Calibration needs at least one named input; got an empty mapping.")
        arrays = {str(k): np.asarray(v) for k, v in inputs.items()}
        sizes = {k: len(v) for k, v in arrays.items()}
        if len(set(sizes.values())) != 1 or 0 in sizes.values():
            raise BuildError(
                f"Calibration inputs must be non-empty and of one length, got sizes {sizes}."
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise BuildError(
                f"Calibration batch_size must be an integer >= 1, got {batch_size!r}."
            )
        n = next(iter(sizes.values()))
        if max_examples is not None:
            n = min(n, int(max_examples))
        if n >= batch_size:
            n -= n % batch_size  # equal batches only (see the class docstring)
        self._arrays = {k: np.ascontiguousarray(v[:n]) for k, v in arrays.items()}
        self._n, self._batch = n, batch_size
        self._start = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._start >= self._n:
            return None
        sl = slice(self._start, self._start + self._batch)
        self._start += self._batch
        return {k: v[sl] for k, v in self._arrays.items()}

    def rewind(self) -> None:
        self._start = 0

    def __len__(self) -> int:
        return -(-self._n // self._batch)


def _as_ort_reader(reader: ArrayCalibrationReader) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def get_next(self) -> dict[str, Any] | None:
            return reader.get_next()

        def rewind(self) -> None:
            reader.rewind()

    return _Reader()


def quantize_static_int8(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    calibration: Mapping[str, np.ndarray] | ArrayCalibrationReader,
    *,
    method: str = "minmax",
    per_channel: bool = False,
    percentile: float = 99.999,
    op_types: Sequence[str] | None = ("MatMul", "Gemm"),
    batch_size: int = 32,
    max_examples: int | None = 512,
) -> Path:
    """Statically quantize ``src`` to int8 in QDQ format; write it atomically to ``dst``.

    Weights are int8 (symmetric); activations int8 with ranges calibrated by running ``src``
    on ``calibration``. QDQ keeps the graph readable (QuantizeLinear / DequantizeLinear pairs
    around each quantized op) and lets ONNX Runtime fuse them into int8 kernels.

    Args:
        src: fp32 ONNX model.
        dst: Where to write the int8 model.
        calibration: Calibration inputs (input name -> array, from the training split, never
            the held-out one), or a reader over them.
        method: ``minmax`` (observed range), ``entropy`` (KL-optimal range) or ``percentile``
            (clip the ``percentile``-th absolute value), see :data:`CALIBRATION_METHODS`.
        per_channel: One weight scale per output channel instead of per tensor.
        percentile: Percentile kept by ``method="percentile"``, in (0, 100].
        op_types: Operator types to quantize; ``None`` quantizes every type ONNX Runtime can.
            The default, MatMul and Gemm, keeps LayerNorm, Softmax and GELU in fp32, where
            int8 costs transformers most accuracy for the least speed.
        batch_size: Examples per calibration batch (when ``calibration`` is a mapping).
        max_examples: Calibrate on at most this many examples (when a mapping).

    Returns:
        ``dst`` as a :class:`~pathlib.Path`.

    Raises:
        SpecError: ``method`` is unknown or ``percentile`` out of range.
        BuildError: calibration or quantization failed; the message carries the cause.

    Example:
        >>> quantize_static_int8("m.onnx", "m.s8.onnx", {"pixel_values": task.x_train},
        ...                      method="percentile")  # doctest: +SKIP
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    if method not in methods:
        raise SpecError(
            f"Unknown calibration method {method!r}. Available: {', '.join(CALIBRATION_METHODS)}."
        )
    if isinstance(percentile, bool) or not 0.0 < float(percentile) <= 100.0:
        raise SpecError(f"Calibration percentile must be in (0, 100], got {percentile!r}.")
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise BuildError(f"Cannot quantize {str(src)!r}: no such file; export the model first")
    reader = (
        calibration
        if isinstance(calibration, ArrayCalibrationReader)
        else ArrayCalibrationReader(calibration, batch_size=batch_size, max_examples=max_examples)
    )
    graph_inputs = {i.name for i in onnx.load(str(src), load_external_data=False).graph.input}
    missing = sorted(graph_inputs - set(reader._arrays))
    if missing:
        raise BuildError(
            f"Calibration data for {str(src)!r} lacks input(s) {missing}; give arrays for "
            f"{sorted(graph_inputs)}."
        )
    reader.rewind()
    extra: dict[str, Any] = {
        "ActivationSymmetric": False,
        "WeightSymmetric": True,
        # Fused graphs hold tensors whose type the quantizer cannot infer.
        "DefaultTensorType": onnx.TensorProto.FLOAT,
    }
    if method == "percentile":
        extra["CalibPercentile"] = float(percentile)
    with _tmp_beside(dst) as tmp:
        try:
            with quiet():
                # The calibrator's augmented model copy goes to its own temporary directory.
                ort_quantize_static(
                    str(src),
                    str(tmp),
                    _as_ort_reader(reader),
                    quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(op_types) if op_types is not None else None,
                    per_channel=per_channel,
                    activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=methods[method],
                    extra_options=extra,
                )
            onnx.checker.check_model(str(tmp))
        except Exception as err:
            raise BuildError(
                f"int8 static ({method}) quantization of {str(src)!r} failed: "
                f"{type(err).__name__}: {err}"
            ) from err
        _commit(tmp, dst)
    return dst


def _save_checked(model: Any, tmp: Path) -> None:
    import onnx

    onnx.save(model, str(tmp))
    onnx.checker.check_model(str(tmp))


def convert_fp16(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Convert ``src`` to float16 and write it atomically to ``dst``.

    ONNX Runtime's transformers converter (``onnxruntime.transformers.float16``) turns float
    initializers and float tensors into float16, leaving the ops it lists as unsafe in float32
    behind Cast nodes. Graph inputs and outputs keep their exported types (``keep_io_types``),
    so the model is fed and read exactly like the fp32 one. Fast on GPUs; ONNX Runtime's CPU
    provider runs it too, mostly through casts back to float32, so there it is slower than
    fp32 (the search measures it like any candidate).

    Args:
        src: fp32 ONNX model.
        dst: Where to write the fp16 model.

    Returns:
        ``dst`` as a :class:`~pathlib.Path`.

    Raises:
        BuildError: the conversion failed; the message carries the cause.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise BuildError(f"Cannot convert {str(src)!r}: no such file; export the model first")
    with _tmp_beside(dst) as tmp:
        try:
            with quiet():
                model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
                # The converter appends the Casts of kept float32 inputs at the end of the
                # node list; the checker wants the graph in topological order.
                OnnxModel(model).topological_sort()
            _save_checked(model, tmp)
        except Exception as err:
            raise BuildError(
                f"fp16 conversion of {str(src)!r} failed: {type(err).__name__}: {err}"
            ) from err
        _commit(tmp, dst)
    return dst


def _gemm_to_matmul(model: Any) -> int:
    """Rewrite each ``Gemm`` with a constant weight as ``MatMul`` (+ ``Add`` of the bias), in
    place, so the 4-bit quantizer (which handles MatMul only) reaches it; returns how many.

    Exported linear layers on 2-D inputs (GPT-2's Conv1D projections, classifier heads) are
    Gemm. ``alpha`` and ``beta`` are folded into the new weight and bias; ``transB`` into the
    weight. A Gemm with ``transA`` or a non-constant weight is left alone.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    nodes, rewritten = [], 0
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (
            node.op_type != "Gemm"
            or node.domain not in ("", "ai.onnx")
            or attrs.get("transA", 0)
            or len(node.input) < 2
            or node.input[1] not in inits
        ):
            nodes.append(node)
            continue
        alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if bias is not None and beta != 1.0 and bias not in inits:
            nodes.append(node)  # a computed bias scaled by beta: rare, left as Gemm
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        if attrs.get("transB", 0):
            w = w.T
        if alpha != 1.0:
            w = w * np.asarray(alpha, dtype=w.dtype)
        base = node.name or node.output[0]
        w_name = f"{node.input[1]}__matmul{rewritten}"
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w), w_name))
        mm_out = f"{node.output[0]}__matmul" if bias is not None else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], w_name], [mm_out],
                                      name=f"{base}__matmul"))
        if bias is not None:
            if beta != 1.0:
                b = numpy_helper.to_array(inits[bias])
                bias = f"{bias}__bias{rewritten}"
                graph.initializer.append(
                    numpy_helper.from_array(b * np.asarray(beta, dtype=b.dtype), bias))
            nodes.append(helper.make_node("Add", [mm_out, bias], [node.output[0]],
                                          name=f"{base}__bias"))
        rewritten += 1
    graph.ClearField("node")
    graph.node.extend(nodes)
    used = {i for n in graph.node for i in n.input}
    kept = [i for i in graph.initializer if i.name in used]
    graph.ClearField("initializer")
    graph.initializer.extend(kept)
    return rewritten


def _nbits_quantizer_class() -> Any:
    """ONNX Runtime's ``MatMulNBitsQuantizer``, imported without the side effect its module
    has of calling ``logging.basicConfig(level=INFO)`` (which would make every library's INFO
    logs print for the rest of the process)."""
    root = logging.getLogger()
    guard = logging.NullHandler() if not root.handlers else None
    if guard is not None:
        root.addHandler(guard)  # basicConfig does nothing when root has a handler
    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    finally:
        if guard is not None:
            root.removeHandler(guard)
    return MatMulNBitsQuantizer


def quantize_int4(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    block_size: int = INT4_BLOCK_SIZE,
    accuracy_level: int = 0,
) -> Path:
    """Quantize the constant matmul weights of ``src`` to 4 bits; write it atomically to ``dst``.

    Weight-only: each MatMul whose weight is an initializer becomes ONNX Runtime's
    ``MatMulNBits`` contrib op (``onnxruntime.quantization.matmul_nbits_quantizer``, round to
    nearest), holding the weight as 4-bit integers in blocks of ``block_size`` along the input
    axis, one symmetric scale per block; activations stay float32. Gemm layers with a constant
    weight are rewritten as MatMul (+ Add) first so that they are quantized too. ONNX Runtime
    runs ``MatMulNBits`` on CPU (and CUDA). ``accuracy_level`` is the type of the product:
    0 leaves the attribute unset (the weights are dequantized to float32, the most accurate
    mode), 1 fp32, 2 fp16, 3 bf16, 4 int8 (activations quantized per block, the fast CPU
    kernel); a level a provider lacks falls back to a lower one at run time.

    Args:
        src: fp32 ONNX model.
        dst: Where to write the int4 model.
        block_size: Weights sharing one scale (a power of two >= 16).
        accuracy_level: ``MatMulNBits`` ``accuracy_level`` of every quantized node, 0 to 4
            (:data:`~paretoforge.search_spaces.INT4_ACCURACY_LEVELS`).

    Returns:
        ``dst`` as a :class:`~pathlib.Path`.

    Raises:
        BuildError: quantization failed, or the model has no weight to quantize.
        SpecError: ``accuracy_level`` is not 0 to 4.

    Example:
        >>> quantize_int4("model.onnx", "model.int4.onnx", accuracy_level=5)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        paretoforge.exceptions.SpecError: int4 accuracy_level 5: use 0 (unset, fp32 on CPU), ...
    """
    import onnx

    if isinstance(accuracy_level, bool) or accuracy_level not in range(5):
        raise SpecError(f"int4 accuracy_level {accuracy_level!r}: use 0 (unset, fp32 on CPU), "
                        "1 (fp32), 2 (fp16), 3 (bf16) or 4 (int8)")
    MatMulNBitsQuantizer = _nbits_quantizer_class()  # noqa: N806
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise BuildError(f"Cannot quantize {str(src)!r}: no such file; export the model first")
    with _tmp_beside(dst) as tmp:
        try:
            model = onnx.load(str(src))
            _gemm_to_matmul(model)
            with quiet():
                quantizer = MatMulNBitsQuantizer(
                    model, bits=4, block_size=block_size, is_symmetric=True,
                    accuracy_level=accuracy_level or None,
                )
                quantizer.process()
            out = quantizer.model.model
            n = sum(1 for node in out.graph.node if node.op_type == "MatMulNBits")
            if n == 0:
                raise ValueError("no MatMul with a constant weight to quantize")
            _save_checked(out, tmp)
        except Exception as err:
            raise BuildError(
                f"int4 weight-only quantization of {str(src)!r} failed: "
                f"{type(err).__name__}: {err}"
            ) from err
        _commit(tmp, dst)
    return dst


def apply_precision(
    src_fp32: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    precision: str,
    *,
    calibration: Mapping[str, np.ndarray] | ArrayCalibrationReader | None = None,
    calibration_method: str = "minmax",
    per_channel: bool | None = None,
    int4_accuracy_level: int = 0,
) -> Path:
    """Write the ``precision`` version of the fp32 model ``src_fp32`` to ``dst``.

    Args:
        src_fp32: The exported fp32 ONNX model.
        dst: Destination file.
        precision: One of :data:`PRECISIONS`. ``fp32`` hard-links (or copies) the source;
            files are only ever replaced by rename, never edited, so sharing an inode is safe.
            ``int8``: dynamic int8 (:func:`quantize_dynamic_int8`); ``int8-static``: QDQ int8
            with calibrated activations (:func:`quantize_static_int8`); ``fp16``: the float16
            graph, inputs and outputs as exported (:func:`convert_fp16`); ``int4``: 4-bit
            weight-only ``MatMulNBits``, blocks of 32, symmetric (:func:`quantize_int4`).
        calibration: Calibration inputs, required by ``int8-static`` (input name -> array from
            the training split); ignored otherwise.
        calibration_method: ``int8-static`` only: one of :data:`CALIBRATION_METHODS`.
        per_channel: int8 only: one weight scale per output channel. Default: per channel
            for dynamic ``int8`` (far more accurate on transformers at a few percent of
            latency), per tensor for ``int8-static`` (per channel made the QDQ graph slower
            than fp32 on MiniLM).

    Returns:
        ``dst`` as a :class:`~pathlib.Path`.

    Raises:
        SpecError: unknown precision.
        BuildError: the conversion failed.

    Example:
        >>> apply_precision("model.onnx", "model.int2.onnx", "int2")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        paretoforge.exceptions.SpecError: Unknown precision 'int2'. Available: fp32, int8, ...
    """
    if precision not in PRECISIONS:
        raise SpecError(f"Unknown precision {precision!r}. Available: {', '.join(PRECISIONS)}.")
    src, dst = Path(src_fp32), Path(dst)
    if precision == "int8":
        return quantize_dynamic_int8(src, dst,
                                     per_channel=True if per_channel is None else per_channel)
    if precision == "fp16":
        return convert_fp16(src, dst)
    if precision == "int4":
        return quantize_int4(src, dst, accuracy_level=int4_accuracy_level)
    if precision == "int8-static":
        if calibration is None:
            raise BuildError(
                f"Precision 'int8-static' for {str(src)!r} needs calibration inputs; pass "
                "calibration={input name: training-split array}, or use precision 'int8'."
            )
        return quantize_static_int8(
            src, dst, calibration, method=calibration_method, per_channel=bool(per_channel)
        )
    if not src.is_file():
        raise BuildError(f"Cannot copy {str(src)!r}: no such file; export the model first")
    if src.resolve() == dst.resolve():
        return dst
    with _tmp_beside(dst) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:  # another filesystem, or links unsupported
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    return dst
