"""The profile registry, the built-in profiles, and loading user profiles from YAML."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from paretoforge.exceptions import SpecError
from paretoforge.hw_profiles._profile import HardwareProfile
from paretoforge.registry import Registry

__all__ = [
    "PROFILES",
    "get_profile",
    "load_profiles_yaml",
    "parse_profile",
    "register_profile",
]

PROFILES: Registry[HardwareProfile] = Registry("profile")

# `cpu` and `cpu-1t` describe "the CPU this cluster has", so any node may measure them
# (resource=None). A profile for specific hardware names a resource its nodes carry.
for _p in (
    HardwareProfile(
        name="cpu",
        description="Every core of the measuring node's CPU, ONNX Runtime CPU provider.",
        device="cpu",
        intra_op_threads=None,
        # Every precision the kernels build runs on ONNX Runtime's CPU provider (fp16 slowly,
        # through casts); a spec whose space suggests another one is refused.
        precisions=("fp32", "int8", "int8-static", "fp16", "int4"),
        resource=None,
    ),
    HardwareProfile(
        name="cpu-1t",
        description="One core of the measuring node's CPU, ONNX Runtime CPU provider.",
        device="cpu",
        intra_op_threads=1,
        # Every precision the kernels build runs on ONNX Runtime's CPU provider (fp16 slowly,
        # through casts); a spec whose space suggests another one is refused.
        precisions=("fp32", "int8", "int8-static", "fp16", "int4"),
        resource=None,
    ),
    # Specific hardware: measured only on nodes that carry the resource. An ARM board joins
    # the cluster with `ray start --address HEAD:6379 --resources '{"hw:edge-arm": 1}'`.
    HardwareProfile(
        name="edge-arm",
        description=(
            "An ARM board (e.g. Raspberry Pi 5, Jetson CPU) on all its cores, ONNX Runtime CPU "
            "provider; nodes join with --resources '{\"hw:edge-arm\": 1}'."
        ),
        device="cpu",
        intra_op_threads=None,
        resource="hw:edge-arm",
    ),
    # Any node Ray saw a GPU on (Ray's own "GPU" resource); the bench asks Ray for the GPU.
    HardwareProfile(
        name="gpu-fp16",
        description=(
            "One NVIDIA GPU, ONNX Runtime CUDA provider with IO binding, fp16 weights and "
            "activations (fp32 runs too)."
        ),
        device="cuda",
        provider="CUDAExecutionProvider",
        io_binding=True,
        intra_op_threads=1,
        precisions=("fp16", "fp32"),
        resource="GPU",
    ),
):
    PROFILES.add(_p.name, _p)
del _p


def get_profile(name: str) -> HardwareProfile:
    """Return the registered profile called ``name``.

    Raises:
        UnknownComponentError: no such profile; the message lists them and suggests the closest.
    """
    return PROFILES.get(name)


def register_profile(profile: HardwareProfile) -> HardwareProfile:
    """Add a user profile to :data:`PROFILES` so specs and the CLI can name it.

    Registering the same definition again is a no-op: every process that validates a spec with
    ``hardware:`` profiles (the driver, each worker) registers them, some more than once.

    Example:
        >>> p = HardwareProfile(name="doc-edge", device="cpu", intra_op_threads=1)
        >>> register_profile(p) is register_profile(p)
        True

    Raises:
        SpecError: a different profile is already registered under that name (a built-in, or
            a user profile defined twice).
    """
    if profile.name in PROFILES:
        old = PROFILES.get(profile.name)
        if old == profile:
            return old
        diff = sorted(k for k in HardwareProfile.model_fields
                      if getattr(old, k) != getattr(profile, k))
        raise SpecError(
            f"Profile {profile.name!r} is already registered with a different definition "
            f"(fields {diff} differ); rename the user profile, or define it identically."
        )
    PROFILES.add(profile.name, profile)
    return profile


def _format_validation_error(err: ValidationError, where: str) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(profile)"
        if e["type"] == "extra_forbidden":
            allowed = ", ".join(HardwareProfile.model_fields)
            parts.append(f"unknown field {loc!r} (allowed: {allowed})")
        elif e["type"] == "missing":
            parts.append(f"missing required field {loc!r}")
        elif not e["loc"]:  # a cross-field rule: the message names the fields itself
            parts.append(e["msg"].removeprefix("Value error, "))
        else:
            msg = e["msg"].removeprefix("Value error, ")
            parts.append(f"field {loc!r}: {msg} (got {e.get('input')!r})")
    return f"Invalid hardware profile {where}: " + "; ".join(parts)


def parse_profile(data: Any, *, where: str = "") -> HardwareProfile:
    """Validate one profile mapping, turning pydantic's error into a one-line SpecError.

    Args:
        data: The profile as a mapping (from YAML, JSON or a spec).
        where: Says where it came from, for the message (e.g. ``"profiles.yaml[0]"``).

    Raises:
        SpecError: the mapping is not a valid profile; the message names each bad field.
    """
    if not isinstance(data, dict):
        raise SpecError(
            f"Invalid hardware profile {where}: expected a mapping of fields, "
            f"got {type(data).__name__}"
        )
    label = f"{where} ({data['name']!r})" if isinstance(data.get("name"), str) else where
    try:
        return HardwareProfile.model_validate(data)
    except ValidationError as err:
        raise SpecError(_format_validation_error(err, label.strip())) from None


def load_profiles_yaml(path: str | os.PathLike[str]) -> list[HardwareProfile]:
    """Load user hardware profiles from a YAML file.

    The file holds a list of profiles, either at the top level or under a ``profiles:`` key::

        profiles:
          - name: edge-2t
            device: cpu
            intra_op_threads: 2
            resource: hw:edge      # only nodes started with this Ray resource measure it

    The profiles are returned, not registered; pass them to :func:`register_profile` to make
    them available by name.

    Raises:
        SpecError: the file is missing, is not YAML, or a profile is invalid (the message names
            the file, the profile and the field).
    """
    import yaml  # lazy: keep `paretoforge --help` instant

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise SpecError(f"Cannot read hardware profiles file {str(path)!r}: {err}") from None
    except yaml.YAMLError as err:
        raise SpecError(f"Hardware profiles file {str(path)!r} is not valid YAML: {err}") from None
    items: Iterable[Any]
    if isinstance(raw, dict) and set(raw) == {"profiles"}:
        raw = raw["profiles"]
    if not isinstance(raw, list):
        raise SpecError(
            f"Hardware profiles file {str(path)!r} must hold a list of profiles "
            f"(top level or under 'profiles:'), got {type(raw).__name__}"
        )
    items = raw
    profiles = [parse_profile(d, where=f"{path.name}[{i}]") for i, d in enumerate(items)]
    names = [p.name for p in profiles]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SpecError(f"Hardware profiles file {str(path)!r} defines {dupes} more than once")
    return profiles
