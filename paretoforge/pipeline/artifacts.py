"""Artifacts on disk: ``<run>/artifacts/<config key>/`` with a manifest that checksums every file.

A build writes a temporary directory and renames it into place, so a directory under its final
name is complete unless a file was changed afterwards; :func:`verify_artifact` checks that, and a
verified artifact can stand in for a rebuild (a retried trial, a trial a dead driver left
RUNNING). Only a manifest of format :data:`ARTIFACT_FORMAT` verifies: what a stand-in worker
(:mod:`paretoforge.testing`) wrote never passes for a real artifact.

Example:
    >>> manifest = verify_artifact("runs/quickstart/artifacts/0123456789abcdef")  # doctest: +SKIP
    >>> manifest is None or "accuracy" in manifest.metrics  # doctest: +SKIP
    True
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

from paretoforge._io import sha256_file
from paretoforge.manifest import ARTIFACT_FORMAT, Manifest, read_manifest
from paretoforge.names import TrialAttr

__all__ = ["ARTIFACT_FORMAT", "artifact_path", "files_match", "remove_partial",
           "result_from_manifest", "verify_artifact"]


def artifact_path(run_dir: str | os.PathLike[str], key: str) -> Path:
    """Where the artifact of config ``key`` lives in ``run_dir``: a hex digest, or for a
    one-shot search's finishing trial the digest with ``-r<epochs>``."""
    digest, sep, epochs = key.partition("-r")
    if (not digest or not all(c in "0123456789abcdef" for c in digest)
            or (sep and not epochs.isdigit())):
        raise ValueError(f"config key {key!r} is not a hex digest (optionally with -r<epochs>)")
    return Path(run_dir) / "artifacts" / key


def files_match(directory: str | os.PathLike[str], files: dict[str, str]) -> bool:
    """Whether every file (a relative path inside ``directory``, never escaping it, never
    hidden) exists and has its sha256; False for an empty list."""
    d = Path(directory)
    if not files:
        return False
    try:
        for name, digest in files.items():
            parts = PurePosixPath(name).parts
            if (not parts or PurePosixPath(name).is_absolute()
                    or any(p in ("..", "") or p.startswith(".") for p in parts)):
                return False
            if sha256_file(d / name) != digest:
                return False
    except OSError:
        return False
    return True


def verify_artifact(directory: str | os.PathLike[str], *, key: str | None = None
                    ) -> Manifest | None:
    """The :class:`~paretoforge.manifest.Manifest` of a complete real artifact whose
    every file matches its sha256, else None.

    A manifest whose ``format`` is not :data:`ARTIFACT_FORMAT` (a fake's, say) is refused.

    Args:
        directory: The artifact directory.
        key: When given, the manifest must be for this config key.
    """
    manifest = read_manifest(Path(directory) / "manifest.json")
    if manifest is None or (key is not None and manifest.key != key):
        return None
    return manifest if files_match(directory, manifest.files) else None


def result_from_manifest(manifest: Manifest, *, reused: bool = True) -> dict[str, Any]:
    """The ``Worker.evaluate`` result of a build (``reused``: an artifact already on disk
    stands for it)."""
    out = {
        TrialAttr.METRICS: dict(manifest.metrics),
        TrialAttr.ARTIFACT_DIR: str(Path("artifacts") / manifest.key),
        TrialAttr.TIMINGS: dict(manifest.timings),
        TrialAttr.WORKER: manifest.built_on.get("worker"),
        TrialAttr.NODE_ID: manifest.built_on.get("node_id"),
    }
    if reused:
        out[TrialAttr.REUSED_ARTIFACT] = True
    return out


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
