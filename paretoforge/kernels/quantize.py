"""Post-training quantization of exported ONNX models, and precision as a build step."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

from paretoforge.exceptions import BuildError, SpecError

__all__ = ["PRECISIONS", "apply_precision", "quantize_dynamic_int8"]

# Precisions a candidate can be built in. fp32 is the exported graph as is; int8 is dynamic
# quantization (int8 weights, activations quantized per call), which needs no calibration data.
PRECISIONS: tuple[str, ...] = ("fp32", "int8")


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
    src_fp32: str | os.PathLike[str], dst: str | os.PathLike[str], precision: str
) -> Path:
    """Write the ``precision`` version of the fp32 model ``src_fp32`` to ``dst``.

    Args:
        src_fp32: The exported fp32 ONNX model.
        dst: Destination file.
        precision: One of :data:`PRECISIONS`. ``fp32`` hard-links (or copies) the source;
            files are only ever replaced by rename, never edited, so sharing an inode is safe.

    Returns:
        ``dst`` as a :class:`~pathlib.Path`.

    Raises:
        SpecError: unknown precision.
        BuildError: the conversion failed.

    Example:
        >>> apply_precision("model.onnx", "model.int8.onnx", "int4")
        Traceback (most recent call last):
        ...
        paretoforge.exceptions.SpecError: Unknown precision 'int4'. Available: fp32, int8.
    """
    if precision not in PRECISIONS:
        raise SpecError(f"Unknown precision {precision!r}. Available: {', '.join(PRECISIONS)}.")
    src, dst = Path(src_fp32), Path(dst)
    if precision == "int8":
        return quantize_dynamic_int8(src, dst)
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
