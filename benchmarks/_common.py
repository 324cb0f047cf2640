"""What the benchmarks share: waiting for a quiet machine, describing it, writing results."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any


def wait_quiet(limit_s: float, threshold: float = 0.6) -> float:
    """Wait up to ``limit_s`` seconds for the 1-minute load average to drop below
    ``threshold``; return the load average when done waiting (met or not)."""
    t0 = time.time()
    while limit_s and os.getloadavg()[0] > threshold and time.time() - t0 < limit_s:
        time.sleep(10)
    return os.getloadavg()[0]


def machine(*packages: str) -> dict[str, Any]:
    """The machine and the versions of ``packages`` (those installed)."""
    from importlib import metadata

    from paretoforge._sysinfo import machine_identity

    ident = machine_identity()
    out: dict[str, Any] = {"cpus": os.cpu_count(), "cpu_model": ident["cpu_model"],
                           "arch": ident["arch"], "isa": ident["isa"],
                           "machine_fingerprint": ident["fingerprint"],
                           "python": platform.python_version()}
    for p in packages:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return out


def write_result(path: Path, data: dict[str, Any]) -> None:
    """``data`` as indented JSON at ``path``, written atomically."""
    from paretoforge._io import atomic_write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, data)


def finished_run(arg: str) -> Path | None:
    """``--run ARG`` as a run directory, or None after one line on stderr when it holds no
    finished run (no ``run.json``)."""
    import sys

    run_dir = Path(arg)
    if not (run_dir / "run.json").is_file():
        print(f"--run {run_dir}: no run.json there; give a finished run directory",
              file=sys.stderr)
        return None
    return run_dir
