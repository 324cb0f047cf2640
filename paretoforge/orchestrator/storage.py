"""Where the study lives: a journal file in the run directory, or any Optuna storage URL.

The journal file is written the way a database writes its log: every change is appended (under
Optuna's lock file) as soon as it is made, so a driver that is killed loses nothing -- the
operating system holds every write -- and the file is fsynced at most once a second and when
the driver stops, rather than once per change (which cost ~3 ms each, fifteen times a trial). A
machine that loses power may drop the last second of changes; ``paretoforge resume`` then finds
the trials it lost as RUNNING or missing and takes their results from the verified artifacts on
disk.

Example:
    >>> storage, backend = open_storage(Path("runs/x"), spec)  # doctest: +SKIP
    >>> study = open_study(Path("runs/x"), spec, storage=storage)  # doctest: +SKIP
    >>> backend.sync()  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

from paretoforge.exceptions import SpecError
from paretoforge.spec import Spec

__all__ = ["JOURNAL", "SyncingJournalBackend", "open_storage", "open_study"]

JOURNAL = "study.journal"


class SyncingJournalBackend(JournalFileBackend):
    """A journal file whose appends are made durable by :meth:`sync`, not one fsync each.

    Example:
        >>> backend = SyncingJournalBackend("runs/x/study.journal")  # doctest: +SKIP
        >>> backend.sync(min_interval_s=1.0)  # doctest: +SKIP
    """

    def __init__(self, file_path: str) -> None:
        self._pf_path = file_path
        self._pf_lock = JournalFileSymlinkLock(file_path)
        self._pf_dirty = False
        self._pf_last_sync = time.monotonic()
        super().__init__(file_path, lock_obj=self._pf_lock)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs)
        self._pf_lock.acquire()
        try:
            with open(self._pf_path, "ab") as f:
                f.write(data.encode("utf-8"))
        finally:
            self._pf_lock.release()
        self._pf_dirty = True

    def sync(self, *, min_interval_s: float = 0.0) -> None:
        """fsync the journal if it changed and ``min_interval_s`` passed since the last sync."""
        now = time.monotonic()
        if not self._pf_dirty or now - self._pf_last_sync < min_interval_s:
            return
        fd = os.open(self._pf_path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._pf_dirty = False
        self._pf_last_sync = now


def open_storage(run_dir: Path, spec: Spec) -> tuple[Any, SyncingJournalBackend | None]:
    """The run's Optuna storage, and its journal backend when it is the run's journal file."""
    if spec.storage:
        return spec.storage, None
    backend = SyncingJournalBackend(str(Path(run_dir) / JOURNAL))
    return JournalStorage(backend), backend


def open_study(run_dir: Path, spec: Spec, *, sampler: Any = None, create: bool = True,
               storage: Any = None) -> Any:
    """Open (or create) the run's Optuna study in its storage (journal file or spec.storage).

    A study opened with ``create`` carries its objectives' metric names
    (``study.metric_names``, e.g. ``["accuracy", "latency_p50_ms@cpu-1t"]``), so Optuna's plots
    and optuna-dashboard opened on the run's storage label the objectives.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if storage is None:
        storage, _ = open_storage(run_dir, spec)
    directions = [o.direction for o in spec.objectives]
    try:
        if create:
            study = optuna.create_study(storage=storage, sampler=sampler, study_name=spec.name,
                                        directions=directions, load_if_exists=True)
            _name_metrics(study, [o.metric for o in spec.objectives])
            return study
        return optuna.load_study(storage=storage, study_name=spec.name, sampler=sampler)
    except KeyError:
        raise SpecError(f"storage {_shown(spec)} holds no study named {spec.name!r}; check "
                        "`storage` and `name` in the run's spec.yaml") from None
    except (ImportError, ValueError) as e:  # unknown dialect, missing driver, bad URL
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SpecError(f"storage {_shown(spec)}: {first}; use e.g. sqlite:///study.db, or "
                        "leave `storage` unset for a journal file in the run directory") from None


def _name_metrics(study: Any, names: list[str]) -> None:
    """Record the objectives' names in the study (once; a resumed study has them already)."""
    if study.metric_names == names:
        return
    if len(study.directions) != len(names):
        raise SpecError(f"study {study.study_name!r} in its storage has "
                        f"{len(study.directions)} objectives, the spec {len(names)} ({names}); "
                        "a run's objectives cannot change: start a new run (another `name` or "
                        "run directory)")
    with warnings.catch_warnings():  # "experimental" since Optuna 3.2; used knowingly
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(names)


def _shown(spec: Spec) -> str:
    if not spec.storage:
        return repr(JOURNAL)
    url = spec.storage
    if "@" in url and "://" in url:  # never print a password
        scheme, rest = url.split("://", 1)
        url = f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return repr(url)
