"""Run a candidate the way a hardware profile runs it: ONNX Runtime or PyTorch, one interface.

:func:`load_runtime` opens a candidate for a profile and returns a :class:`Runtime`:

* ``OrtRuntime`` -- an ONNX Runtime session with the profile's provider, graph optimization
  level and threads; with ``io_binding`` the inputs and outputs of each batch are bound to
  device memory once (``stage``), so timed calls measure the model, not host-device copies;
  with ``cuda_graph`` the model is captured once and replayed. A KV-cache decoder graph
  (:mod:`paretoforge.kernels.decoder_export`) is fed its positions and past tensors in its
  own cache layout (:func:`~paretoforge.kernels.decoder_export.complete_feeds`): a batch of
  token inputs is a prefill, a mask wider than the tokens a decode step, so a candidate and
  its reference run the same batches whatever heads and layers each kept.
* ``TorchRuntime`` -- the PyTorch checkpoint in eager mode or through ``torch.compile``;
  CUDA calls are timed with CUDA events.

:func:`placement_report` answers "why isn't it faster": which execution provider ran each node
after optimisation, and how many quantize / dequantize nodes were left unfused.

Example:
    >>> from paretoforge.hw_profiles import get_profile
    >>> rt = load_runtime("model.onnx", get_profile("cpu-1t"))  # doctest: +SKIP
    >>> rt.run({"pixel_values": x})[0].shape  # doctest: +SKIP
    (1, 10)
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from abc import ABC, abstractmethod
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paretoforge.exceptions import MeasurementError
from paretoforge.names import TORCH_PRECISIONS

if TYPE_CHECKING:
    import numpy as np

    from paretoforge.hw_profiles import HardwareProfile

__all__ = ["OrtRuntime", "Runtime", "TorchRuntime", "load_runtime", "placement_report"]

_MEMCPY_OPS = ("MemcpyToHost", "MemcpyFromHost")


class Runtime(ABC):
    """A candidate loaded for one profile. Same verbs for every backend.

    ``stage(batch)`` is called once per distinct batch before timing (device copies, IO
    bindings, compilation); ``timed_call(staged)`` runs one staged batch and returns its
    duration in nanoseconds, synchronised with the device; ``run(batch)`` returns the outputs
    as host arrays. ``close()`` releases the session and restores global state (torch threads).

    Example:
        >>> with load_runtime(path, profile) as rt:  # doctest: +SKIP
        ...     staged = rt.stage(batch)
        ...     ns = rt.timed_call(staged)
    """

    profile: HardwareProfile
    timer: str = "perf_counter_ns"

    @property
    @abstractmethod
    def input_names(self) -> list[str]:
        """Names of the model's inputs."""

    @abstractmethod
    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run one batch; return the outputs as host numpy arrays."""

    @abstractmethod
    def stage(self, inputs: dict[str, np.ndarray]) -> Any:
        """Prepare one batch for timed calls (untimed)."""

    @abstractmethod
    def timed_call(self, staged: Any) -> int:
        """Run one staged batch; nanoseconds from launch to results ready."""

    def validate(self, inputs: dict[str, np.ndarray], batch_size: int) -> None:
        """Raise :class:`MeasurementError` naming an input that does not fit the model."""
        missing = sorted(set(self.input_names) - set(inputs))
        extra = sorted(set(inputs) - set(self.input_names))
        if extra:
            raise MeasurementError(
                f"Input {extra[0]!r} is not an input of the model; it expects "
                f"{sorted(self.input_names)}"
            )
        if missing:
            raise MeasurementError(
                f"Input {missing[0]!r} is missing; the model expects {sorted(self.input_names)}"
            )

    def describe(self) -> dict[str, Any]:
        """What ran the model, for the measurement's environment."""
        return {"runtime": self.profile.runtime, "timer": self.timer}

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release resources and restore any global state changed at load."""

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class OrtRuntime(Runtime):
    """An ONNX Runtime session configured from ``profile`` (see :func:`load_runtime`)."""

    def __init__(
        self, path: str | os.PathLike[str], profile: HardwareProfile, n_cores: int | None = None
    ) -> None:
        from paretoforge.kernels.ort import create_session

        self.path = Path(path)
        self.profile = profile
        self._n_cores = n_cores
        self.session = create_session(self.path, profile, n_cores)
        from paretoforge.kernels.decoder_export import decoder_layout

        self._layout = decoder_layout(self.session)  # None: not a KV-cache decoder graph
        self._device = "cuda" if profile.device == "cuda" else "cpu"
        self._graph: Any = None  # (binding, input OrtValues, output OrtValues) when capturing
        if profile.device == "cuda":
            self.timer = "perf_counter_ns+sync"  # ORT's Run returns after the stream finished

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.session.get_inputs()]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    @property
    def cache_layout(self) -> Any:
        """The graph's :class:`~paretoforge.kernels.decoder_export.CacheLayout`, or None
        when it is not a KV-cache decoder graph."""
        return self._layout

    def _complete(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A decoder graph's positions and past tensors added to token inputs."""
        if self._layout is None:
            return inputs
        from paretoforge.kernels.decoder_export import complete_feeds

        return complete_feeds(self._layout, inputs)

    def validate(self, inputs: dict[str, np.ndarray], batch_size: int) -> None:
        from paretoforge.kernels.ort import validate_inputs

        validate_inputs(self.session, self._complete(inputs), batch_size=batch_size)

    def _fail(self, err: Exception) -> MeasurementError:
        return MeasurementError(f"ONNX Runtime failed on {str(self.path)!r}: {err}")

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        inputs = self._complete(inputs)
        if self.profile.cuda_graph:
            self.timed_call(self.stage(inputs))
            return [v.numpy() for v in self._graph[2]]
        try:
            return list(self.session.run(None, inputs))
        except Exception as err:
            raise self._fail(err) from err

    def stage(self, inputs: dict[str, np.ndarray]) -> Any:
        import onnxruntime as ort

        inputs = self._complete(inputs)
        if self.profile.cuda_graph:
            return self._stage_graph(inputs)
        if not self.profile.io_binding:
            return inputs
        # One binding per batch: inputs copied to the device once, outputs left there.
        binding = self.session.io_binding()
        values = []
        for name, arr in inputs.items():
            v = ort.OrtValue.ortvalue_from_numpy(arr, self._device, self.profile.device_id)
            binding.bind_ortvalue_input(name, v)
            values.append(v)  # keep the device buffers alive as long as the binding
        for name in self.output_names:
            binding.bind_output(name, self._device, self.profile.device_id)
        return binding, values

    def _stage_graph(self, inputs: dict[str, np.ndarray]) -> Any:
        # A CUDA graph replays fixed device addresses: one binding for every batch, inputs
        # refreshed in place before each (untimed) call.
        if self._graph is None:
            self._graph = self._capture_binding(inputs)
        bound = self._graph[1]
        if set(bound) != set(inputs):
            raise MeasurementError(
                f"CUDA graph was captured for inputs {sorted(bound)}, got {sorted(inputs)}"
            )
        for name, arr in inputs.items():
            if tuple(arr.shape) != tuple(bound[name].shape()):
                raise MeasurementError(
                    f"Profile {self.profile.name!r} captures a CUDA graph of shape "
                    f"{tuple(bound[name].shape())} for input {name!r} but a batch has "
                    f"{tuple(arr.shape)}; "
                    f"use a fixed sequence_length or set cuda_graph: false"
                )
        return inputs

    def _capture_binding(self, inputs: dict[str, np.ndarray]) -> Any:
        import onnxruntime as ort

        from paretoforge.kernels.ort import create_session

        # Output shapes first, from a session that does not capture (a capture needs its
        # outputs pre-allocated).
        probe = create_session(self.path, self.profile, self._n_cores, cuda_graph=False)
        pb = probe.io_binding()
        for name, arr in inputs.items():
            pb.bind_cpu_input(name, arr)
        for name in self.output_names:
            pb.bind_output(name, self._device, self.profile.device_id)
        probe.run_with_iobinding(pb)
        out_meta = [(v.shape(), v.data_type()) for v in pb.get_outputs()]
        del pb, probe
        dtypes = {"tensor(float)": "float32", "tensor(float16)": "float16",
                  "tensor(int64)": "int64", "tensor(int32)": "int32"}  # fmt: skip
        import numpy as np

        binding = self.session.io_binding()
        ins = {}
        for name, arr in inputs.items():
            v = ort.OrtValue.ortvalue_from_numpy(arr, self._device, self.profile.device_id)
            binding.bind_ortvalue_input(name, v)
            ins[name] = v
        outs = []
        for name, (shape, dtype) in zip(self.output_names, out_meta, strict=True):
            v = ort.OrtValue.ortvalue_from_shape_and_type(
                shape, np.dtype(dtypes.get(dtype, "float32")), self._device, self.profile.device_id
            )
            binding.bind_ortvalue_output(name, v)
            outs.append(v)
        return binding, ins, outs

    def timed_call(self, staged: Any) -> int:
        perf = time.perf_counter_ns
        sess = self.session
        try:
            if self.profile.cuda_graph:
                binding, ins, _ = self._graph
                for name, arr in staged.items():
                    ins[name].update_inplace(arr)  # host -> device copy, before the clock
                t0 = perf()
                sess.run_with_iobinding(binding)
                binding.synchronize_outputs()
                return perf() - t0
            if self.profile.io_binding:
                binding = staged[0]
                t0 = perf()
                sess.run_with_iobinding(binding)
                binding.synchronize_outputs()
                return perf() - t0
            t0 = perf()
            sess.run(None, staged)
            return perf() - t0
        except MeasurementError:
            raise
        except Exception as err:
            raise self._fail(err) from err

    def describe(self) -> dict[str, Any]:
        import onnxruntime as ort

        return {
            **super().describe(),
            "provider": self.session.get_providers()[0],
            "onnxruntime_version": ort.__version__,
            "io_binding": self.profile.io_binding,
            "cuda_graph": self.profile.cuda_graph,
        }



def torch_at_precision(module: Any, precision: str, device_type: str, profile_name: str) -> Any:
    """``module`` at the candidate's ``precision`` as PyTorch runs it.

    Raises:
        MeasurementError: torch has no counterpart of the precision on this device (static
            int8 and int4 are ONNX Runtime graphs; dynamic int8 is CPU only).
    """
    import torch

    if precision == "fp32":
        return module
    if precision == "int8" and device_type == "cpu":
        return torch.ao.quantization.quantize_dynamic(module, {torch.nn.Linear},
                                                      dtype=torch.qint8)
    if precision == "fp16":
        import copy

        return copy.deepcopy(module).half()  # never the caller's module, in place
    raise MeasurementError(
        f"Profile {profile_name!r} runs PyTorch, which has no {precision} counterpart of the "
        f"candidate's ONNX graph on {device_type} (it runs {', '.join(TORCH_PRECISIONS)}, int8 "
        "on CPU only); drop the precision from the profile's `precisions` or measure it on an "
        "onnxruntime profile"
    )


class TorchRuntime(Runtime):
    """The PyTorch checkpoint, eager or compiled, at the candidate's precision, on the
    profile's device."""

    def __init__(self, model: Any, profile: HardwareProfile, n_cores: int | None = None, *,
                 precision: str = "fp32") -> None:
        import torch

        from paretoforge._system import available_cores

        self.profile = profile
        if profile.device == "cuda":
            if not torch.cuda.is_available():
                raise MeasurementError(
                    f"Profile {profile.name!r} runs torch on CUDA but torch.cuda.is_available() "
                    f"is False here; measure it on a node with a GPU (and ask Ray for it)"
                )
            self.device = torch.device("cuda", profile.device_id)
            self.timer = "cuda_event"
        else:
            self.device = torch.device("cpu")
        self.threads = profile.threads_for(n_cores or available_cores())
        module = model.to(self.device).eval()  # the caller's module, moved and in eval mode
        module = torch_at_precision(module, precision, self.device.type, profile.name)
        self.precision = precision
        self._float = torch.float16 if precision == "fp16" else None
        self._names = list(_forward_names(module))
        self.module = module
        self.model = torch.compile(module) if profile.runtime == "torch-compile" else module
        # Global torch state: set last, so a failure above leaves nothing to restore.
        self._threads_before = torch.get_num_threads()
        torch.set_num_threads(self.threads)

    @property
    def input_names(self) -> list[str]:
        return self._names

    def validate(self, inputs: dict[str, np.ndarray], batch_size: int) -> None:
        # Only named parameters count: a **kwargs catch-all (transformers' forward has one)
        # would swallow a misspelt input and measure a model run without it.
        extra = sorted(set(inputs) - set(self._names))
        if extra:
            raise MeasurementError(
                f"Input {extra[0]!r} is not an argument of the model's forward; it takes "
                f"{self._names}"
            )

    def _call(self, staged: dict[str, Any]) -> Any:
        from paretoforge.kernels.export import default_output_fn

        try:
            return default_output_fn(self.model(**staged))
        except Exception as err:
            raise MeasurementError(
                f"PyTorch ({self.profile.runtime}) failed on profile {self.profile.name!r}: {err}"
            ) from err

    def stage(self, inputs: dict[str, np.ndarray]) -> Any:
        import torch

        staged = {k: torch.from_numpy(v).to(self.device) for k, v in inputs.items()}
        if self._float is not None:  # a half-precision model takes half-precision features
            staged = {k: v.to(self._float) if v.is_floating_point() else v
                      for k, v in staged.items()}
        if self.profile.runtime == "torch-compile":
            with torch.inference_mode():
                self._call(staged)  # compile for this shape now, not inside a timed call
        return staged

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            out = self._call(self.stage(inputs))
        return [out.detach().float().cpu().numpy()]

    def timed_call(self, staged: Any) -> int:
        import torch

        with torch.inference_mode():
            if self.device.type == "cuda":
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                self._call(staged)
                end.record()
                end.synchronize()
                return int(start.elapsed_time(end) * 1e6)  # ms -> ns
            perf = time.perf_counter_ns
            t0 = perf()
            self._call(staged)
            return perf() - t0

    def describe(self) -> dict[str, Any]:
        import torch

        return {
            **super().describe(),
            "provider": f"torch-{self.device.type}",
            "precision": self.precision,
            "torch_version": torch.__version__,
            "torch_threads": self.threads,
        }

    def close(self) -> None:
        import torch

        torch.set_num_threads(self._threads_before)


def _forward_names(module: Any) -> list[str]:
    import inspect

    params = inspect.signature(module.forward).parameters
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [n for n, p in params.items() if p.kind not in variadic]


def _resolve_onnx(source: Any) -> Path:
    path = Path(source)
    if path.is_dir():
        path = path / "model.onnx"
    if not path.is_file():
        raise MeasurementError(
            f"No ONNX model at {str(path)!r}; pass a .onnx file or an artifact directory "
            f"holding model.onnx"
        )
    return path


def load_runtime(
    model: Any, profile: HardwareProfile, *, n_cores: int | None = None,
    precision: str = "fp32",
) -> Runtime:
    """Open ``model`` the way ``profile`` runs it.

    Args:
        model: For ``onnxruntime`` profiles, a ``.onnx`` file or an artifact directory holding
            ``model.onnx``. For ``torch-eager`` / ``torch-compile`` profiles, a
            ``torch.nn.Module`` or an artifact directory holding ``config.json`` and
            ``model.safetensors``.
        profile: The hardware profile.
        n_cores: Cores the runtime may use; default: this thread's affinity mask.
        precision: The candidate's precision. ONNX Runtime profiles run the graph as built;
            torch profiles build the same precision in PyTorch (:func:`torch_at_precision`),
            never the fp32 checkpoint under another precision's name.

    Raises:
        MeasurementError: the model is missing or cannot be loaded, the profile's
            provider / device is not available here, or torch has no such precision.
        PlacementError: the profile needs more threads than ``n_cores``.
    """
    if profile.runtime == "onnxruntime":
        return OrtRuntime(_resolve_onnx(model), profile, n_cores)
    if isinstance(model, (str, os.PathLike)):
        directory = Path(model)
        directory = directory.parent if directory.is_file() else directory
        if not (directory / "config.json").is_file():
            raise MeasurementError(
                f"Profile {profile.name!r} runs {profile.runtime} and needs the PyTorch "
                f"checkpoint, but {str(directory)!r} holds no config.json; pass the artifact "
                f"directory (config.json + model.safetensors) or a torch.nn.Module"
            )
        from paretoforge.models.io import load_pretrained

        model = load_pretrained(directory)
    return TorchRuntime(model, profile, n_cores, precision=precision)


def _synthetic_batch(session: Any, profile: HardwareProfile) -> dict[str, np.ndarray]:
    import numpy as np

    from paretoforge.kernels.ort import ORT_DTYPES

    feed = {}
    rng = np.random.default_rng(0)
    for i in session.get_inputs():
        dims = list(i.shape)
        shape = [
            d if isinstance(d, int) and d > 0
            else profile.batch_size if axis == 0
            else profile.sequence_length or 16
            for axis, d in enumerate(dims)
        ]
        dtype = np.dtype(ORT_DTYPES.get(i.type, "float32"))
        if dtype.kind == "f":
            feed[i.name] = rng.standard_normal(shape).astype(dtype)
        else:  # token ids 1 and an all-ones mask are valid for any vocabulary
            feed[i.name] = np.ones(shape, dtype=dtype)
    return feed


# Initializer types whose values are weights: a graph's structure does not depend on them
# (integer initializers, such as a Reshape's target shape, are structure and are kept).
_WEIGHT_TYPES = frozenset({1, 2, 3, 10, 16})  # FLOAT, UINT8, INT8, FLOAT16, BFLOAT16


def graph_structure_key(onnx_path: str | os.PathLike[str]) -> str:
    """A digest of an ONNX graph without its weights: what the graph optimizer and the
    provider assignment see apart from the weights' values and sizes.

    It covers the opsets, the inputs and outputs, every node (op, domain, wiring,
    attributes, constants included) and each initializer's name, type and rank; the
    values of integer initializers (shapes, axes) too, but not those of weights (float,
    8-bit). Two sub-networks that keep the same layers, at the same precision and fusion,
    have the same key, whatever heads and FFN neurons each layer keeps. External data is
    not read.

    Example:
        >>> graph_structure_key("model.onnx")  # doctest: +SKIP
        '9c1e0d2f44a6b7e1'
    """
    import hashlib

    import onnx

    model = onnx.load(str(_resolve_onnx(onnx_path)), load_external_data=False)
    g = model.graph
    for t in g.initializer:
        keep_values = t.data_type not in _WEIGHT_TYPES
        dims = len(t.dims)
        t.ClearField("dims")
        t.dims.extend([0] * dims)  # the rank, not the sizes
        if not keep_values:
            for name in ("raw_data", "float_data", "int32_data", "external_data"):
                t.ClearField(name)
    h = hashlib.blake2b(digest_size=8)
    for part in (model.opset_import, g.input, g.output, g.node, g.initializer):
        for item in part:
            h.update(item.SerializeToString(deterministic=True))
        h.update(b"|")
    return h.hexdigest()


def placement_report(
    onnx_path: str | os.PathLike[str],
    profile: HardwareProfile,
    inputs: dict[str, np.ndarray] | None = None,
    *,
    n_cores: int | None = None,
    cores: list[int] | None = None,
) -> dict[str, Any]:
    """Which execution provider ran each node after optimisation, and what stayed unfused.

    One call is run with ONNX Runtime's profiler on, with the profile's provider, graph
    optimization level and threads; each executed kernel is reported with the provider that
    ran it. This is the graph as optimised for this provider, and it works for every provider
    (dumping the optimised model through ``optimized_model_filepath`` fails for compiling
    providers such as TensorRT, and loses the provider assignment).

    Args:
        onnx_path: The candidate's ONNX file (or artifact directory).
        profile: The hardware profile; torch profiles have no placement to report.
        inputs: Real samples (input name -> samples on axis 0); the first batch is used.
            Default: random inputs of the model's input shapes.
        n_cores: Cores the session may use; default: this thread's affinity mask.
        cores: Pin to these cores while the session is made and run, as
            :func:`~paretoforge.evaluators.latency.measure_latency` does (restored after).

    Returns:
        ``{"method", "profile", "requested_provider", "nodes_before", "nodes_after",
        "nodes_by_provider", "ops_by_provider", "fallback_ops", "memcpy_nodes",
        "unfused_qdq", "dynamic_quantize_nodes", "on_requested_provider"}``:
        ``fallback_ops`` counts the nodes (by op) that ran on another provider than the
        profile's; ``unfused_qdq`` counts QuantizeLinear + DequantizeLinear nodes left after
        optimisation; ``on_requested_provider`` is the share of nodes on the profile's provider.

    Raises:
        MeasurementError: the model cannot be loaded or run with this profile's provider.

    Example:
        >>> from paretoforge.hw_profiles import get_profile
        >>> r = placement_report("model.onnx", get_profile("cpu-1t"))  # doctest: +SKIP
        >>> r["nodes_by_provider"], r["unfused_qdq"]  # doctest: +SKIP
        ({'CPUExecutionProvider': 112}, 0)
    """
    if profile.runtime != "onnxruntime":
        return {"method": "none", "profile": profile.name, "runtime": profile.runtime,
                "note": "placement is reported for onnxruntime profiles only"}
    import numpy as np
    import onnx
    import onnxruntime as ort

    from paretoforge.kernels.decoder_export import complete_feeds, decoder_layout
    from paretoforge.kernels.ort import providers_for, session_options_for

    if cores is not None:
        from paretoforge._system import pinned

        with pinned(cores) as affinity:
            return placement_report(onnx_path, profile, inputs,
                                    n_cores=len(affinity) if affinity else n_cores)
    path = _resolve_onnx(onnx_path)
    available = ort.get_available_providers()
    if profile.provider not in available:
        raise MeasurementError(
            f"Profile {profile.name!r} needs execution provider {profile.provider!r}, which this "
            f"onnxruntime {ort.__version__} lacks (available: {', '.join(available)}); report "
            f"placement on a node that has it"
        )
    nodes_before = len(onnx.load(str(path), load_external_data=False).graph.node)
    with tempfile.TemporaryDirectory(prefix="pf-placement-") as tmp:
        so = session_options_for(profile, n_cores)
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tmp, "ort")
        try:
            sess = ort.InferenceSession(
                str(path), sess_options=so, providers=providers_for(profile, cuda_graph=False)
            )
            layout = decoder_layout(sess)
            if inputs is None:
                feed = _synthetic_batch(sess, profile)
                if layout is not None:  # a prefill of synthetic tokens
                    feed = {k: feed[k] for k in ("input_ids", "attention_mask") if k in feed}
            else:
                bs = profile.batch_size
                feed = {k: np.ascontiguousarray(np.asarray(v)[np.arange(bs) % len(v)])
                        for k, v in inputs.items()}
            if layout is not None:
                feed = complete_feeds(layout, feed)
            sess.run(None, feed)
            trace = sess.end_profiling()
        except Exception as err:
            raise MeasurementError(
                f"ONNX Runtime cannot run {str(path)!r} for profile {profile.name!r}: {err}"
            ) from err
        with open(trace, encoding="utf-8") as f:
            events = json.load(f)
    kernels = [
        e["args"] for e in events
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")
    ]
    by_provider: Counter[str] = Counter(a.get("provider", "?") for a in kernels)
    ops_by_provider: dict[str, Counter[str]] = {}
    for a in kernels:
        ops_by_provider.setdefault(a.get("provider", "?"), Counter())[a.get("op_name", "?")] += 1
    ops = Counter(a.get("op_name", "?") for a in kernels)
    fallback = Counter(
        a.get("op_name", "?") for a in kernels
        if a.get("provider") != profile.provider and a.get("op_name") not in _MEMCPY_OPS
    )
    n_after = len(kernels)
    return {
        "method": "onnxruntime-profiling",
        "profile": profile.name,
        "requested_provider": profile.provider,
        "session_providers": sess.get_providers(),
        "graph_optimization": profile.graph_optimization,
        "nodes_before": nodes_before,
        "nodes_after": n_after,
        "nodes_by_provider": dict(sorted(by_provider.items())),
        "ops_by_provider": {
            p: dict(sorted(c.items())) for p, c in sorted(ops_by_provider.items())
        },
        "fallback_ops": dict(sorted(fallback.items())),
        "memcpy_nodes": sum(ops.get(op, 0) for op in _MEMCPY_OPS),
        "unfused_qdq": ops.get("QuantizeLinear", 0) + ops.get("DequantizeLinear", 0),
        "unfused_qdq_ops": {op: ops.get(op, 0) for op in ("QuantizeLinear", "DequantizeLinear")},
        "dynamic_quantize_nodes": ops.get("DynamicQuantizeLinear", 0),
        "on_requested_provider": by_provider.get(profile.provider, 0) / max(n_after, 1),
        "onnxruntime_version": ort.__version__,
    }
