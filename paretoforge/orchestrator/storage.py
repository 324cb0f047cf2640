"""Where the study lives: a journal file in the run directory, or any Optuna storage URL.

A storage URL (``postgresql+psycopg2://user@host:5432/db``, ``sqlite:///study.db``) is an
Optuna ``RDBStorage``, opened -- and its server reached -- before any expensive work, so a
missing database driver or a server that does not answer is one line naming ``storage`` and the
fix. Every record of the run (its ``spec.yaml``, messages) keeps the URL without its password
(:func:`url_without_password`): a driver that resumes the run from that record gives the
password the database client's own way (``PGPASSWORD``, ``~/.pgpass``).

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

__all__ = ["JOURNAL", "SyncingJournalBackend", "open_storage", "open_study",
           "url_without_password"]

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
    """The run's Optuna storage, and its journal backend when it is the run's journal file.

    A ``spec.storage`` URL is opened here as an ``RDBStorage``: the database is reached and
    Optuna's tables created now, or a SpecError says why not (driver missing, server down,
    password refused).
    """
    if spec.storage:
        return open_rdb(spec.storage), None
    backend = SyncingJournalBackend(str(Path(run_dir) / JOURNAL))
    return JournalStorage(backend), backend


# The pip package that provides a DB-API module SQLAlchemy imports for a URL's dialect.
_DRIVER_PACKAGES = {"psycopg2": "psycopg2-binary (or paretoforge[postgres])",
                    "psycopg": "psycopg[binary]", "pg8000": "pg8000", "asyncpg": "asyncpg",
                    "pymysql": "PyMySQL", "MySQLdb": "mysqlclient"}


def open_rdb(url: str, *, connect_timeout_s: int = 10) -> Any:
    """An Optuna ``RDBStorage`` at ``url``, its server reached; SpecError when it cannot be.

    A PostgreSQL URL without its own ``connect_timeout`` gets ``connect_timeout_s``, so a host
    that does not answer fails in seconds, not after the operating system's TCP timeout.

    Example:
        >>> open_rdb("postgresql+psycopg2://pf@127.0.0.1:5432/studies")  # doctest: +SKIP
        >>> open_rdb("sqlite:///study.db")  # doctest: +SKIP
    """
    import sqlalchemy.exc
    from optuna.storages import RDBStorage

    shown = repr(url_without_password(url, mask=True))
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("postgresql") and "connect_timeout" not in url:
        engine_kwargs["connect_args"] = {"connect_timeout": connect_timeout_s}
    try:
        return RDBStorage(url, engine_kwargs=engine_kwargs)
    except ImportError as e:  # Optuna's message drops the module's name; its cause has it
        cause = e.__cause__ if isinstance(e.__cause__, ImportError) else e
        module = (getattr(cause, "name", None) or "").split(".")[0]
        package = _DRIVER_PACKAGES.get(module, module or "the dialect's driver")
        raise SpecError(f"storage {shown}: the database driver {module or '?'!r} is not "
                        f"installed; install it (pip install {package}), or leave `storage` "
                        "unset for a journal file in the run directory") from None
    except sqlalchemy.exc.OperationalError as e:
        first = _first_line(e.orig if e.orig is not None else e)
        hint = ""
        if "password" in first.lower() or "authentication" in first.lower():
            hint = ("; a run's spec.yaml keeps no password: give it in PGPASSWORD or "
                    "~/.pgpass (or in the URL of the spec you search with)")
        raise SpecError(f"storage {shown}: cannot open the database: {first}{hint}; check that "
                        "the server runs and the URL's host, port, user and database in "
                        "`storage`") from None
    except (sqlalchemy.exc.ArgumentError, ValueError) as e:  # unknown dialect, bad URL
        raise SpecError(f"storage {shown}: {_first_line(e)}; use e.g. "
                        "postgresql+psycopg2://user@host:5432/db or sqlite:///study.db, or leave "
                        "`storage` unset for a journal file in the run directory") from None


def url_without_password(url: str, *, mask: bool = False) -> str:
    """``url`` with its password removed (``mask``: shown as ``***``), for every record.

    Example:
        >>> url_without_password("postgresql://pf:secret@db:5432/studies")
        'postgresql://pf@db:5432/studies'
        >>> url_without_password("postgresql://pf:secret@db/studies", mask=True)
        'postgresql://pf:***@db/studies'
    """
    from sqlalchemy.engine import URL, make_url

    try:
        u = make_url(url)
    except Exception:  # not a URL SQLAlchemy reads: drop whatever sits before the last '@'
        if "@" not in url or "://" not in url:
            return url
        scheme, rest = url.split("://", 1)
        return f"{scheme}://{'***@' if mask else ''}{rest.rsplit('@', 1)[1]}"
    query = {k: v for k, v in u.query.items() if k != "password"}
    if u.password is None and len(query) == len(u.query):
        return url
    kept = URL.create(u.drivername, u.username, u.password if mask else None, u.host, u.port,
                      u.database, query)
    return kept.render_as_string(hide_password=mask)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0].strip() if text else type(e).__name__


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
    except (ImportError, ValueError) as e:  # a URL string passed without open_storage
        raise SpecError(f"storage {_shown(spec)}: {_first_line(e)}; use e.g. "
                        "sqlite:///study.db, or leave `storage` unset for a journal file in the "
                        "run directory") from None


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
    return repr(url_without_password(spec.storage, mask=True))  # never print a password
