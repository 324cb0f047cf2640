"""Artifacts on disk: ``<run>/artifacts/<config key>/`` with a manifest that checksums every file.

A build writes a temporary directory and renames it into place, so a directory under its final
name is complete unless a file was changed afterwards; :func:`verify_artifact` checks that, and a
verified artifact can stand in for a rebuild (a retried trial, a trial a dead driver left
RUNNING). Only a manifest of format :data:`ARTIFACT_FORMAT` verifies: what a stand-in worker
(:mod:`paretoforge.testing`) wrote never passes for a real artifact.

Example:
    >>> manifest = verify_artifact("runs/quickstart/artifacts/0123456789abcdef")  # doctest: +SKIP
    >>> manifest is None or "metrics" in manifest  # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from paretoforge._io import sha256_file

__all__ = ["ARTIFACT_FORMAT", "artifact_path", "remove_partial", "result_from_manifest",
           "verify_artifact"]

ARTIFACT_FORMAT = "paretoforge-artifact/1"  # the manifest format a real build writes


def artifact_path(run_dir: str | os.PathLike[str], key: str) -> Path:
    """Where the artifact of config ``key`` lives in ``run_dir``."""
    if not key or not all(c in "0123456789abcdef" for c in key):
        raise ValueError(f"config key {key!r} is not a hex digest")
    return Path(run_dir) / "artifacts" / key


def verify_artifact(directory: str | os.PathLike[str], *, key: str | None = None
                    ) -> dict[str, Any] | None:
    """The manifest of a complete real artifact whose every file matches its sha256, else None.

    A manifest whose ``format`` is not :data:`ARTIFACT_FORMAT` (a fake's, say) is refused.

    Args:
        directory: The artifact directory.
        key: When given, the manifest must be for this config key.
    """
    d = Path(directory)
    try:
        manifest = json.loads((d / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        return None
    if manifest.get("format") != ARTIFACT_FORMAT:
        return None
    if key is not None and manifest.get("key") != key:
        return None
    if not isinstance(manifest.get("metrics"), dict) or not manifest["files"]:
        return None
    try:
        for name, digest in manifest["files"].items():
            if "/" in name or name.startswith(".") or sha256_file(d / name) != digest:
                return None
    except OSError:
        return None
    return manifest


def result_from_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """The ``Worker.evaluate`` result that a verified artifact stands for."""
    built = manifest.get("built_on") or {}
    timings = dict(manifest.get("timings") or {})
    return {
        "metrics": dict(manifest["metrics"]),
        "artifact_dir": str(Path("artifacts") / manifest["key"]),
        "timings": timings,
        "worker": built.get("worker"),
        "node_id": built.get("node_id"),
        "reused_artifact": True,
    }


def remove_partial(run_dir: str | os.PathLike[str], *, pid: int | None = None) -> int:
    """Remove half-written artifacts (``artifacts/.<key>.tmp-<pid>``) of dead workers.

    Args:
        run_dir: The run directory.
        pid: Only this (dead) worker process's; None: every one (no worker may be running).

    Returns:
        How many were removed.
    """
    root = Path(run_dir) / "artifacts"
    if not root.is_dir():
        return 0
    pattern = f".*.tmp-{pid}" if pid is not None else ".*.tmp-*"
    n = 0
    for d in root.glob(pattern):
        if d.is_dir():
            shutil.rmtree(d, ignore_errors=True)
            n += 1
    return n
