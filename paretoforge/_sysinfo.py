"""Facts about the machine that measurements and probes record."""

from __future__ import annotations

import hashlib
import platform

__all__ = ["cpu_model", "isa_features", "machine_identity"]

# Instruction-set features that change which kernels ONNX Runtime and torch run (int8 GEMMs
# with VNNI / AMX, fp16 with F16C / AVX512-FP16, ARM dot products): two machines that both say
# "AMD EPYC" differ in exactly these.
_ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
              "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_int8",
              "amx_bf16", "asimd", "asimddp", "asimdhp", "i8mm", "bf16", "sve", "sve2")


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (x86 "model name", ARM "Hardware"/"CPU model")."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def isa_features() -> list[str]:
    """The CPU's instruction-set features that matter for inference kernels (sorted), from
    the ``flags`` / ``Features`` line of /proc/cpuinfo; empty where it cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("flags", "features")):
                    have = set(line.split(":", 1)[1].split())
                    return sorted(x for x in _ISA_FLAGS if x in have)
    except OSError:
        pass
    return []


def machine_identity() -> dict[str, object]:
    """What a measured number came from: CPU model, architecture, ISA features and a short
    fingerprint of the three (equal fingerprints: the same kind of CPU).

    Example:
        >>> sorted(machine_identity())
        ['arch', 'cpu_model', 'fingerprint', 'isa']
    """
    ident: dict[str, object] = {"cpu_model": cpu_model(), "arch": platform.machine(),
                                "isa": isa_features()}
    blob = f"{ident['cpu_model']}|{ident['arch']}|{','.join(ident['isa'])}"  # type: ignore[arg-type]
    ident["fingerprint"] = hashlib.sha256(blob.encode()).hexdigest()[:12]
    return ident
