"""ONNX Runtime sessions configured from a hardware profile, the inputs a session accepts,
and graph summaries for manifests."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paretoforge._system import available_cores
from paretoforge.exceptions import MeasurementError

if TYPE_CHECKING:
    import numpy as np
    import onnxruntime

    from paretoforge.hw_profiles import HardwareProfile

__all__ = [
    "ORT_DTYPES",
    "create_session",
    "graph_summary",
    "one_thread_options",
    "providers_for",
    "session_options_for",
    "validate_inputs",
]

_QUANT_OPS = (
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "MatMulInteger",
    "ConvInteger",
    "QLinearMatMul",
    "QLinearConv",
    "MatMulNBits",  # weight-only int4 (or int8) matmul: ONNX Runtime contrib op
)


# Ops whose second input is a weight when it is an initializer.
_WEIGHT_OPS = ("MatMul", "Gemm", "MatMulInteger", "QLinearMatMul", "Conv", "ConvInteger",
               "QLinearConv", "FusedMatMul")


# ONNX type string of a tensor input -> numpy dtype name.
ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


def validate_inputs(
    session: onnxruntime.InferenceSession, inputs: dict[str, np.ndarray], *, batch_size: int = 1
) -> None:
    """Check that ``inputs`` (sample axis first) fit the session's inputs.

    Raises:
        MeasurementError: an input is missing, unexpected, of the wrong dtype or shape; the
            message names it and what the model expects.
    """
    expected = {i.name: i for i in session.get_inputs()}
    missing = sorted(set(expected) - set(inputs))
    extra = sorted(set(inputs) - set(expected))
    if extra:
        raise MeasurementError(
            f"Input {extra[0]!r} is not an input of the model; it expects {sorted(expected)}"
        )
    if missing:
        raise MeasurementError(
            f"Input {missing[0]!r} is missing; the model expects {sorted(expected)}"
        )
    for name, arg in expected.items():
        arr = inputs[name]
        want = ORT_DTYPES.get(arg.type)
        if want is not None and arr.dtype.name != want:
            raise MeasurementError(
                f"Input {name!r} has dtype {arr.dtype.name}, the model expects {want}; "
                f"pass it as .astype(np.{want})"
            )
        shape = list(arg.shape)
        if arr.ndim != len(shape):
            raise MeasurementError(
                f"Input {name!r} has shape {list(arr.shape)} (rank {arr.ndim}); the model "
                f"expects rank {len(shape)} {shape} with samples on axis 0"
            )
        if arr.shape[0] < 1:
            raise MeasurementError(f"Input {name!r} holds no samples; pass real task samples")
        if isinstance(shape[0], int) and shape[0] != batch_size:
            raise MeasurementError(
                f"Input {name!r} has a fixed batch of {shape[0]} in the model but the profile's "
                f"batch_size is {batch_size}; export with a dynamic batch axis"
            )
        for axis, (got, dim) in enumerate(zip(arr.shape[1:], shape[1:], strict=True), start=1):
            if isinstance(dim, int) and dim > 0 and got != dim:
                raise MeasurementError(
                    f"Input {name!r} has size {got} on axis {axis}; the model expects {dim} "
                    f"(model shape {shape})"
                )


def one_thread_options(optimization: str = "all") -> onnxruntime.SessionOptions:
    """Options of a one-thread CPU session that scores or checks a graph, not one that times
    it: one intra- and one inter-op thread (the same numbers on every node, no competition
    with other work), graph optimization ``all`` / ``disable`` (or ``basic``, ``extended``),
    errors only in the log."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = _optimization_level(optimization)
    so.log_severity_level = 3
    return so


def _optimization_level(name: str) -> onnxruntime.GraphOptimizationLevel:
    """ONNX Runtime's graph optimization level for a profile's ``graph_optimization``."""
    import onnxruntime as ort

    return {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[name]


def session_options_for(
    profile: HardwareProfile, n_cores: int | None = None
) -> onnxruntime.SessionOptions:
    """Build ONNX Runtime session options for ``profile``.

    Threads are always set explicitly: with ``intra_op_num_threads=0`` ONNX Runtime sizes its
    pool from the whole machine (and may set its own affinity), ignoring the cores the bench
    pinned the measurement to. With an explicit count, the pool's threads inherit the creating
    thread's affinity mask (checked in tests/kernels/test_kernels_ort.py).

    Args:
        profile: The hardware profile.
        n_cores: Cores the session may use; default: this thread's affinity mask.

    Raises:
        PlacementError: the profile needs more threads than ``n_cores``.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = profile.threads_for(n_cores or available_cores())
    so.inter_op_num_threads = profile.inter_op_threads
    # Parallel execution only helps graphs with independent branches; a transformer is a
    # chain, and sequential execution keeps run-to-run variance low.
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = _optimization_level(profile.graph_optimization)
    # Spinning keeps intra-op workers busy-waiting between operators. Without it, each parallel
    # operator pays a thread wake-up: the default ViT (4 layers, batch 1, 2 threads) went from
    # 0.15 to 0.33 ms p50 and its latency turned bimodal (benchmarks/latency_probe.py --spin);
    # with 1 thread there is no pool and it makes no difference. The cost is cores burnt while
    # idle, which is fine on cores the bench owns, so it is on unless the profile says not.
    spin = "1" if profile.allow_spinning else "0"
    so.add_session_config_entry("session.intra_op.allow_spinning", spin)
    so.add_session_config_entry("session.inter_op.allow_spinning", spin)
    so.log_severity_level = 3  # errors only: ORT's warnings go to stderr of every worker
    return so


def providers_for(profile: HardwareProfile, *, cuda_graph: bool | None = None) -> list[Any]:
    """The ``providers`` argument of an ONNX Runtime session for ``profile``.

    CUDA providers get the profile's device and CUDA-graph switch as provider options. Nodes
    the provider cannot run fall back to the CPU provider, which ONNX Runtime always adds;
    :func:`paretoforge.kernels.runtime.placement_report` shows which ones did.

    Args:
        profile: The hardware profile.
        cuda_graph: Override the profile's ``cuda_graph`` (the runtime opens one session
            without capture to learn output shapes).

    Example:
        >>> from paretoforge.hw_profiles import get_profile
        >>> providers_for(get_profile("cpu-1t"))
        ['CPUExecutionProvider']
        >>> providers_for(get_profile("gpu-fp16"))
        [('CUDAExecutionProvider', {'device_id': '0', 'enable_cuda_graph': '0'})]
    """
    graph = profile.cuda_graph if cuda_graph is None else cuda_graph
    if profile.provider == "CUDAExecutionProvider":
        opts = {"device_id": str(profile.device_id), "enable_cuda_graph": "1" if graph else "0"}
        return [(profile.provider, opts)]
    if profile.provider == "TensorrtExecutionProvider":
        return [(profile.provider, {"device_id": str(profile.device_id)})]
    return [profile.provider]


def create_session(
    path: str | os.PathLike[str],
    profile: HardwareProfile,
    n_cores: int | None = None,
    *,
    cuda_graph: bool | None = None,
) -> onnxruntime.InferenceSession:
    """Open ``path`` in ONNX Runtime the way ``profile`` runs it.

    Raises:
        MeasurementError: the profile's execution provider is not available in this
            onnxruntime build, or the model cannot be loaded.
        PlacementError: the profile needs more threads than the cores available.
    """
    import onnxruntime as ort

    if profile.runtime != "onnxruntime":
        raise MeasurementError(
            f"Profile {profile.name!r} uses runtime {profile.runtime!r}; "
            f"create_session only serves 'onnxruntime'"
        )
    available = ort.get_available_providers()
    if profile.provider not in available:
        raise MeasurementError(
            f"Profile {profile.name!r} needs execution provider {profile.provider!r}, which this "
            f"onnxruntime {ort.__version__} lacks (available: {', '.join(available)}); install "
            f"the matching onnxruntime package or measure the profile on a node that has it"
        )
    so = session_options_for(profile, n_cores)
    try:
        session = ort.InferenceSession(
            str(path), sess_options=so, providers=providers_for(profile, cuda_graph=cuda_graph)
        )
    except Exception as err:
        raise MeasurementError(
            f"ONNX Runtime cannot load {str(path)!r} for profile {profile.name!r}: {err}"
        ) from err
    check_session_provider(session.get_providers(), profile)
    return session


def check_session_provider(session_providers: list[str], profile: HardwareProfile) -> None:
    """Refuse a session that did not get the profile's execution provider.

    ONNX Runtime falls back to the CPU provider, with only a warning, when the requested one
    fails to initialise (a CUDA build on a node whose driver is missing, say): its timings
    would be recorded under the GPU profile's name. The session's own ``get_providers()``
    says what it runs on.

    Raises:
        MeasurementError: the profile's provider is not the session's first provider.

    Example:
        >>> from paretoforge.hw_profiles import get_profile
        >>> check_session_provider(["CPUExecutionProvider"], get_profile("cpu-1t"))
        >>> check_session_provider(["CPUExecutionProvider"], get_profile("gpu-fp16"))
        Traceback (most recent call last):
        ...
        paretoforge.exceptions.MeasurementError: Profile 'gpu-fp16' asked ... (it fell back); ...
    """
    if not session_providers or session_providers[0] != profile.provider:
        raise MeasurementError(
            f"Profile {profile.name!r} asked ONNX Runtime for {profile.provider} and the "
            f"session runs on {list(session_providers)} (it fell back); fix the node's CUDA "
            "setup or measure the profile on a node where the provider starts"
        )


def graph_summary(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Describe an ONNX file for a manifest: ops, quantization nodes, weight bytes.

    Returns:
        ``{"file_bytes", "opset", "node_count", "op_counts", "quant_op_counts",
        "matmul_weight_elems", "activation_matmuls", "initializer_count", "initializer_bytes",
        "initializer_dtype_bytes", "inputs", "outputs"}``, and for a graph with
        ``MatMulNBits`` nodes ``"matmulnbits_accuracy_levels"`` (their ``accuracy_level``,
        0 when unset, -> node count). ``initializer_bytes`` is the weights
        alone; on small models the file is mostly graph structure, so it is the better measure
        of what quantization saved. ``matmul_weight_elems`` sums the weights of matmul and conv
        nodes (followed through DequantizeLinear in QDQ models; ``K * N`` of a MatMulNBits):
        the multiply-accumulates per token of the linear layers, a FLOPs proxy that is the same
        for every precision.
        ``activation_matmuls`` counts matmuls of two activations (attention scores and
        context, two per kept layer).
    """
    import numpy as np
    import onnx

    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    ops = Counter(n.op_type for n in graph.node)
    init_elems = {i.name: int(np.prod(i.dims, dtype=np.int64)) for i in graph.initializer}
    for n in graph.node:  # QDQ models: a weight is DequantizeLinear(int8 initializer)
        if n.op_type == "DequantizeLinear" and n.input and n.input[0] in init_elems:
            init_elems[n.output[0]] = init_elems[n.input[0]]
    nbits_levels: Counter[str] = Counter()  # MatMulNBits accuracy_level (absent: 0) -> nodes
    weight_elems = 0  # multiply-accumulates per token of the weight matmuls (linear layers)
    activation_matmuls = 0  # activation x activation products: attention scores and context
    for n in graph.node:
        if n.op_type == "MatMulNBits":  # packed low-bit weight: its K x N from the attributes
            attrs = {a.name: a.i for a in n.attribute}
            weight_elems += int(attrs.get("K", 0)) * int(attrs.get("N", 0))
            nbits_levels[str(attrs.get("accuracy_level", 0))] += 1
            continue
        if n.op_type not in _WEIGHT_OPS or len(n.input) < 2:
            continue
        if n.input[1] in init_elems:
            weight_elems += init_elems[n.input[1]]
        elif n.op_type in ("MatMul", "MatMulInteger") and n.input[0] not in init_elems:
            activation_matmuls += 1
    dtype_bytes: Counter[str] = Counter()
    for init in graph.initializer:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(init.data_type))
        dtype_bytes[dtype.name] += int(np.prod(init.dims, dtype=np.int64)) * dtype.itemsize

    def _io(values: Any) -> list[dict[str, Any]]:
        out = []
        for v in values:
            t = v.type.tensor_type
            shape = [d.dim_param or d.dim_value for d in t.shape.dim]
            out.append(
                {
                    "name": v.name,
                    "dtype": np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)).name,
                    "shape": shape,
                }
            )
        return out

    return {
        "file_bytes": path.stat().st_size,
        "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import},
        "node_count": len(graph.node),
        "op_counts": dict(sorted(ops.items())),
        "quant_op_counts": {op: ops.get(op, 0) for op in _QUANT_OPS},
        "matmul_weight_elems": weight_elems,
        "activation_matmuls": activation_matmuls,
        "initializer_count": len(graph.initializer),
        "initializer_bytes": sum(dtype_bytes.values()),
        "initializer_dtype_bytes": dict(sorted(dtype_bytes.items())),
        "inputs": _io(graph.input),
        "outputs": _io(graph.output),
        **({"matmulnbits_accuracy_levels": dict(sorted(nbits_levels.items()))}
           if nbits_levels else {}),
    }
