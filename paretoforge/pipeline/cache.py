"""The stage cache: a build's intermediate outputs, kept by content key for the next build.

Candidates with the same weights (same slice of the base, same recovery) that differ only in
their graph passes (precision, fusion) reuse the recovered model and its export instead of
retraining. The cache is a worker's own (in memory for models, a temporary folder for
exports, named after the process, which removes it when closed; a later cache removes those
of processes that are gone: :func:`sweep_stale_caches`), bounded, least recently used first
out; a hit is recorded in the manifest's ``stages``.

Example:
    >>> cache = StageCache(max_models=1)
    >>> cache.put_model("k1", "model-1"); cache.put_model("k2", "model-2")
    >>> cache.get_model("k1") is None, cache.get_model("k2")
    (True, 'model-2')
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

__all__ = ["StageCache", "sweep_stale_caches"]

_PREFIX = "pf-stage-cache-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def sweep_stale_caches(root: str | os.PathLike[str] | None = None) -> int:
    """Remove the stage-cache folders of processes that no longer run; return how many.

    A worker clears its own folder when it is closed; one killed (SIGKILL, out of memory, the
    end of a search: Ray kills its actors) cannot, and its exports (hundreds of MB for a
    MiniLM-sized model) would stay in the temporary directory. Each folder is named after its
    process id (``pf-stage-cache-<pid>-...``); a new cache sweeps the others whose process is
    gone, on its machine.
    """
    root = Path(root) if root is not None else Path(tempfile.gettempdir())
    removed = 0
    for d in root.glob(f"{_PREFIX}*"):
        pid = d.name[len(_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid() or _pid_alive(int(pid)):
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed += 1
    return removed


class StageCache:
    """Recovered models (in memory) and exports (files) by content key, LRU-bounded.

    Args:
        max_models: Recovered PyTorch models kept (0: none).
        max_exports: Exported directories kept (0: none).
    """

    def __init__(self, *, max_models: int = 2, max_exports: int = 4) -> None:
        self.max_models = max(0, int(max_models))
        self.max_exports = max(0, int(max_exports))
        self._models: OrderedDict[str, Any] = OrderedDict()
        self._exports: OrderedDict[str, tuple[Path, Any]] = OrderedDict()
        self._root: Path | None = None

    def get_model(self, key: str) -> Any | None:
        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key]
        return None

    def put_model(self, key: str, value: Any) -> None:
        if self.max_models == 0:
            return
        self._models[key] = value
        self._models.move_to_end(key)
        while len(self._models) > self.max_models:
            self._models.popitem(last=False)

    def get_export(self, key: str) -> tuple[Path, Any] | None:
        """``(directory, what the export stage returned)`` cached under ``key`` (read the
        directory, never write into it), or None."""
        entry = self._exports.get(key)
        if entry is not None and entry[0].is_dir():
            self._exports.move_to_end(key)
            return entry
        return None

    def put_export(self, key: str, directory: Path, value: Any = None) -> None:
        """Keep a copy of ``directory``'s files, and ``value``, under ``key``."""
        if self.max_exports == 0:
            return
        if self._root is None:
            sweep_stale_caches()
            self._root = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-"))
        dst = self._root / key
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(directory, dst)
        self._exports[key] = (dst, value)
        self._exports.move_to_end(key)
        while len(self._exports) > self.max_exports:
            _, (old, _value) = self._exports.popitem(last=False)
            shutil.rmtree(old, ignore_errors=True)

    def clear(self) -> None:
        self._models.clear()
        self._exports.clear()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def __del__(self) -> None:  # the temporary folder goes with the worker
        try:
            self.clear()
        except Exception:  # interpreter shutdown
            pass
