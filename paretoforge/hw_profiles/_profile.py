"""The hardware profile model: one named target a candidate is measured on."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from paretoforge._sysinfo import ISA_FEATURES
from paretoforge.exceptions import PlacementError
from paretoforge.names import PRECISIONS, TORCH_PRECISIONS

__all__ = ["HardwareProfile"]

# Execution providers that run on a CUDA device; a cuda profile with any other provider would
# silently measure the CPU.
_CUDA_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


class HardwareProfile(BaseModel):
    """A named hardware target: device, runtime, threads, batch shape and where it lives.

    A profile is data: the numbers about the hardware a candidate serves on live here, never in
    the code that measures it. ``resource`` names the Ray custom resource a node must carry to
    measure the profile, so that a profile is never measured on hardware it does not describe;
    ``None`` means any node will do (the built-in ``cpu`` profiles: "the CPU this cluster has").

    Example:
        >>> p = HardwareProfile(name="edge-2t", device="cpu", intra_op_threads=2)
        >>> p.resource
        'hw:edge-2t'
        >>> p.threads_for(8)
        2
        >>> HardwareProfile(name="any", device="cpu", resource=None).threads_for(8)
        8
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        description="Unique name of the profile, referenced from specs and the CLI.",
        min_length=1,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$",
    )
    description: str = Field(default="", description="One line for humans: what hardware this is.")
    device: Literal["cpu", "cuda"] = Field(description="Device class the runtime executes on.")
    runtime: Literal["onnxruntime", "torch-eager", "torch-compile"] = Field(
        default="onnxruntime",
        description=(
            "Runtime that executes the candidate: onnxruntime runs the exported ONNX file; "
            "torch-eager / torch-compile run the PyTorch checkpoint (safetensors + config)."
        ),
    )
    provider: str = Field(
        default="CPUExecutionProvider",
        description="ONNX Runtime execution provider, e.g. CPUExecutionProvider.",
        min_length=1,
    )
    device_id: int = Field(default=0, ge=0, description="Index of the CUDA device (cuda only).")
    io_binding: bool = Field(
        default=False,
        description=(
            "ONNX Runtime only: bind inputs and outputs to device memory once, so timed calls "
            "measure the model, not host-device copies."
        ),
    )
    cuda_graph: bool = Field(
        default=False,
        description=(
            "ONNX Runtime on CUDA only: capture the model in a CUDA graph and replay it; needs "
            "io_binding, fixed shapes and every node on the CUDA provider."
        ),
    )
    intra_op_threads: int | None = Field(
        default=None,
        ge=1,
        description="Threads inside one operator; None uses every core the measurement may use.",
    )
    inter_op_threads: int = Field(
        default=1, ge=1, description="Threads running independent operators concurrently."
    )
    allow_spinning: bool = Field(
        default=True,
        description=(
            "Let idle intra-op threads busy-wait between operators (ONNX Runtime's default). "
            "Lowest latency when the runtime owns its cores; turn off on shared cores."
        ),
    )
    batch_size: int = Field(default=1, ge=1, description="Samples per inference call.")
    sequence_length: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Tokens per sample for text models: the fixed length with sequence_lengths 'fixed', "
            "the cap with 'task'; None keeps the task's own length."
        ),
    )
    sequence_lengths: Literal["fixed", "task"] = Field(
        default="fixed",
        description=(
            "'fixed': every sample has sequence_length tokens; 'task': each batch is as long as "
            "the longest real sample in it, so lengths follow the task's distribution."
        ),
    )
    graph_optimization: Literal["disable", "basic", "extended", "all"] = Field(
        default="all", description="ONNX Runtime graph optimization level."
    )
    precisions: tuple[str, ...] = Field(
        default=("fp32", "int8"),
        min_length=1,
        description="Numeric precisions this target can run, each one of "
        + ", ".join(PRECISIONS) + ".",
    )
    resource: str | None = Field(
        default=None,
        description=(
            "Ray custom resource a node must carry to measure this profile; defaults to "
            "'hw:<name>'. null: any node."
        ),
    )
    requires: tuple[str, ...] = Field(
        default=(),
        description=(
            "CPU instruction-set features a node must have to measure this profile, e.g. "
            "[avx512_vnni] (Linux /proc/cpuinfo names, one of " + ", ".join(ISA_FEATURES)
            + "). A search whose nodes that may measure it lack one is refused at start."
        ),
    )

    latency_rounds: int = Field(
        default=3, ge=1, le=50,
        description=(
            "Independent rounds (fresh sessions each) a latency measurement takes at least; "
            "the between-round spread is what `converged` and the reported interval cover."
        ),
    )
    latency_max_rounds: int = Field(
        default=5, ge=1, le=50,
        description="Rounds at most, when the first ones disagree by more than the target.",
    )
    latency_target_spread: float = Field(
        default=0.02, gt=0, lt=1,
        description=(
            "Target half-range of the round medians over their median (of the candidate's "
            "latency relative to the base's, when measured against it): 0.02 is +-2%."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _default_resource(cls, data: Any) -> Any:
        # Absent means "hw:<name>"; an explicit null means "any node". Only a before-validator
        # can tell the two apart.
        if isinstance(data, dict) and "resource" not in data and isinstance(data.get("name"), str):
            data = {**data, "resource": f"hw:{data['name']}"}
        return data

    @field_validator("precisions")
    @classmethod
    def _known_unique_precisions(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [p for p in v if p not in PRECISIONS]
        if unknown:
            raise ValueError(f"precisions: unknown precision {unknown[0]!r}; the precisions are "
                             f"{', '.join(PRECISIONS)}")
        if len(set(v)) != len(v):
            raise ValueError(f"precisions {list(v)} repeat a value; list each precision once")
        return v

    @field_validator("requires")
    @classmethod
    def _known_features(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        import difflib

        for f in v:
            if f not in ISA_FEATURES:
                close = difflib.get_close_matches(f.lower(), ISA_FEATURES, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ValueError(f"requires: unknown CPU feature {f!r}; {hint}the features are "
                                 f"{', '.join(ISA_FEATURES)}")
        return tuple(sorted(set(v)))

    def missing_features(self, isa: list[str] | tuple[str, ...] | None) -> list[str]:
        """The features in ``requires`` that a machine with features ``isa`` lacks.

        Example:
            >>> p = HardwareProfile(name="vnni", device="cpu", requires=["avx512_vnni"])
            >>> p.missing_features(["avx2", "fma"]), p.missing_features(["avx512_vnni"])
            (['avx512_vnni'], [])
        """
        have = set(isa or ())
        return [f for f in self.requires if f not in have]

    @model_validator(mode="after")
    def _torch_runs_its_precisions(self) -> HardwareProfile:
        """A torch profile measures each candidate at its precision, built in PyTorch: only
        the precisions PyTorch has (dynamic int8 on CPU only) may be listed."""
        if self.runtime.startswith("torch"):
            allowed = [p for p in TORCH_PRECISIONS if p != "int8" or self.device == "cpu"]
            bad = [p for p in self.precisions if p not in allowed]
            if bad and "precisions" not in self.model_fields_set:  # the default, not asked
                kept = tuple(p for p in self.precisions if p in allowed)
                object.__setattr__(self, "precisions", kept)
            elif bad:
                raise ValueError(
                    f"precisions: profile {self.name!r} runs {self.runtime} on {self.device}, "
                    f"which builds {', '.join(allowed)}, not {bad[0]!r}; drop it, or measure "
                    "that precision on an onnxruntime profile"
                )
        return self

    @model_validator(mode="after")
    def _rounds_in_order(self) -> HardwareProfile:
        if self.latency_max_rounds < self.latency_rounds:
            raise ValueError(
                f"latency_max_rounds ({self.latency_max_rounds}) is below latency_rounds "
                f"({self.latency_rounds}); set latency_max_rounds >= latency_rounds"
            )
        return self

    @model_validator(mode="after")
    def _provider_matches_device(self) -> HardwareProfile:
        if self.cuda_graph and not (self.device == "cuda" and self.io_binding):
            raise ValueError(
                "cuda_graph needs device 'cuda' and io_binding: true; set both or drop cuda_graph"
            )
        if self.cuda_graph and self.sequence_lengths == "task":
            raise ValueError(
                "cuda_graph replays fixed shapes and cannot follow sequence_lengths 'task'; "
                "use sequence_lengths: fixed or drop cuda_graph"
            )
        if self.runtime != "onnxruntime":
            if self.io_binding or self.cuda_graph:
                raise ValueError(
                    f"io_binding and cuda_graph are ONNX Runtime options; runtime "
                    f"{self.runtime!r} does not use them, drop them"
                )
            return self  # a torch runtime has no execution provider to check
        if self.device == "cuda" and self.provider not in _CUDA_PROVIDERS:
            raise ValueError(
                f"device 'cuda' needs a CUDA execution provider, got {self.provider!r}; "
                f"use one of {', '.join(_CUDA_PROVIDERS)}"
            )
        if self.device == "cpu" and self.provider in _CUDA_PROVIDERS:
            raise ValueError(
                f"device 'cpu' cannot use {self.provider!r}; set device: cuda or a CPU provider"
            )
        return self

    @property
    def on_gpu(self) -> bool:
        """Whether the profile runs on a CUDA device (its bench needs a GPU from Ray)."""
        return self.device == "cuda"

    def supports(self, precision: str) -> bool:
        """Whether candidates of ``precision`` (e.g. ``"int8"``) can run on this profile."""
        return precision in self.precisions

    def ray_options(self) -> dict[str, Any]:
        """Ray ``.options()`` keyword arguments that place a bench task where this profile is.

        The profile's resource is asked for whole (one measurement slot per node that carries
        one unit); a cuda profile also asks for a GPU, without which Ray hides the devices
        (``CUDA_VISIBLE_DEVICES`` is emptied for tasks that ask for none).

        Example:
            >>> HardwareProfile(name="edge", device="cpu").ray_options()
            {'resources': {'hw:edge': 1}}
            >>> HardwareProfile(name="g", device="cuda", provider="CUDAExecutionProvider",
            ...                 resource="GPU").ray_options()
            {'num_gpus': 1}
        """
        opts: dict[str, Any] = {}
        if self.device == "cuda":
            opts["num_gpus"] = 1
        if self.resource and self.resource not in ("GPU", "CPU"):
            opts["resources"] = {self.resource: 1}
        return opts

    def threads_for(self, n_cores: int) -> int:
        """Intra-op threads to use on a measurement slot of ``n_cores`` cores.

        Args:
            n_cores: Cores the measurement may use (its affinity mask, not the whole node).

        Returns:
            ``n_cores`` when the profile takes every core, else the profile's thread count.

        Raises:
            PlacementError: the slot has fewer cores than the profile's threads; running more
                threads than cores would measure contention, not the target hardware.
        """
        if n_cores < 1:
            raise PlacementError(f"n_cores must be >= 1, got {n_cores}")
        if self.intra_op_threads is None:
            return n_cores
        if self.intra_op_threads > n_cores:
            raise PlacementError(
                f"Profile {self.name!r} needs {self.intra_op_threads} intra-op threads but the "
                f"measurement slot has {n_cores} core(s); give the bench slot more cores or "
                f"lower intra_op_threads."
            )
        return self.intra_op_threads
