"""Post-training quantization of exported ONNX models, and precision as a build step.

Two int8 schemes:

* ``int8`` (dynamic): int8 weights, activations quantized per call from their observed range;
  needs no data. As a build step (:func:`apply_precision`) weights get one scale per output
  channel: on all-MiniLM-L6-v2 (128 tokens, one core) that kept embedding cosine 0.993 to the
  fp32 model against 0.962 with one scale per tensor, at 0.48x against 0.47x its latency
  (``benchmarks/minilm_recovery.py``).
* ``int8-static`` (QDQ): int8 weights and activations, with activation ranges fixed ahead of
  time by running the fp32 model on calibration inputs from the task's training split
  (:class:`ArrayCalibrationReader`); ranges from min/max, entropy or a percentile.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paretoforge.exceptions import BuildError, SpecError

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "CALIBRATION_METHODS",
    "PRECISIONS",
    "ArrayCalibrationReader",
    "apply_precision",
    "quantize_dynamic_int8",
    "quantize_static_int8",
]

# Precisions a candidate can be built in. fp32 is the exported graph as is; int8 is dynamic
# quantization (needs no data); int8-static is QDQ with activation ranges calibrated on inputs.
PRECISIONS: tuple[str, ...] = ("fp32", "int8", "int8-static")

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
    with _tmp_beside(dst) as tmp:
        try:
            # The quantizer logs per-node notes at INFO/WARNING; failures still raise.
            with (
                warnings.catch_warnings(),
                contextlib.redirect_stdout(io.StringIO()),
                _quiet_logging(),
            ):
                warnings.simplefilter("ignore")
                quantize_dynamic(
                    str(src),
                    str(tmp),
                    weight_type=QuantType.QInt8,
                    per_channel=per_channel,
                    # Fused graphs hold tensors whose type the quantizer cannot infer;
                    # without a default it aborts on them.
                    extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
                )
            onnx.checker.check_model(str(tmp))
        except Exception as err:
            raise BuildError(
                f"int8 dynamic quantization of {str(src)!r} failed: {type(err).__name__}: {err}"
            ) from err
        _commit(tmp, dst)
    return dst


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
            with (
                warnings.catch_warnings(),
                contextlib.redirect_stdout(io.StringIO()),
                _quiet_logging(),
            ):
                warnings.simplefilter("ignore")
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


@contextlib.contextmanager
def _quiet_logging() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def apply_precision(
    src_fp32: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    precision: str,
    *,
    calibration: Mapping[str, np.ndarray] | ArrayCalibrationReader | None = None,
    calibration_method: str = "minmax",
    per_channel: bool | None = None,
) -> Path:
    """Write the ``precision`` version of the fp32 model ``src_fp32`` to ``dst``.

    Args:
        src_fp32: The exported fp32 ONNX model.
        dst: Destination file.
        precision: One of :data:`PRECISIONS`. ``fp32`` hard-links (or copies) the source;
            files are only ever replaced by rename, never edited, so sharing an inode is safe.
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
        >>> apply_precision("model.onnx", "model.int8.onnx", "int4")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        paretoforge.exceptions.SpecError: Unknown precision 'int4'. Available: fp32, int8, ...
    """
    if precision not in PRECISIONS:
        raise SpecError(f"Unknown precision {precision!r}. Available: {', '.join(PRECISIONS)}.")
    src, dst = Path(src_fp32), Path(dst)
    if precision == "int8":
        return quantize_dynamic_int8(src, dst,
                                     per_channel=True if per_channel is None else per_channel)
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
