"""Where a run lives: a local directory, or a storage URI the driver mirrors its copy to.

A run given as a plain path (``runs/x``) is used in place, as it always was. A run given as
an fsspec URI (``s3://bucket/run``, ``gs://…``, ``file:///shared/run``; the protocol's package
is an optional extra, ``pip install paretoforge[s3]``) is a :class:`RunStore` with a *working
copy*: a local directory (under :func:`~paretoforge.pipeline.prepare.cache_dir`, ``runs/``)
that the driver reads and writes as it would a local run, and that the store mirrors to the
URI:

* an artifact is uploaded file by file, its ``manifest.json`` last: an artifact whose manifest
  is not there is not complete, and one is taken back only when every file matches the
  manifest's sha256 (:meth:`RunStore.fetch_artifact`), so a half-written upload never passes;
* the study's journal (``study.journal``) is kept locally by the driver and uploaded whole at
  most every few seconds and when the driver stops; ``spec.yaml``, ``run.json``,
  ``front.json``, ``predictors.json``, the run's base latencies and the report are uploaded
  when written (a single object PUT is atomic on S3 and GCS);
* opening the run again (``resume``, ``front``, ``report``, ``export``, ``pull``) brings the
  journal and the run's small files down, unless the local copy's journal is the remote one
  plus more (a driver killed before its last upload), and artifacts as they are needed.

One driver at a time: the run lock is the working copy's, so two machines resuming one URI at
once are not stopped; do not.

Example:
    >>> store = RunStore.open("s3://bucket/run")  # doctest: +SKIP
    >>> store.pull()  # doctest: +SKIP
    >>> store.local / "spec.yaml"  # doctest: +SKIP
    PosixPath('/home/me/.cache/paretoforge/runs/s3-bucket-run-1a2b3c4d/spec.yaml')
    >>> RunStore.open("runs/x").remote  # doctest: +SKIP
    False
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from paretoforge._io import atomic_write_bytes
from paretoforge.exceptions import ParetoforgeError
from paretoforge.manifest import Manifest
from paretoforge.pipeline.artifacts import artifact_path, verify_artifact

__all__ = ["META_FILES", "RunStore", "is_uri", "verify_payload"]

# The run's small files, mirrored whenever they change and brought down on open.
META_FILES = ("spec.yaml", "run.json", "front.json", "predictors.json", "report.html",
              "pareto.png")
JOURNAL = "study.journal"


def is_uri(where: str | os.PathLike[str]) -> bool:
    """Whether ``where`` names a storage URI (``scheme://…``) rather than a local path."""
    return isinstance(where, str) and re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", where) is not None


class RunStore:
    """A run's storage: its local directory, and the URI it is mirrored to when it has one.

    Use :meth:`open`; ``local`` is the directory everything else reads and writes.

    Example:
        >>> store = RunStore.open("file:///tmp/pf-doc-run", local=Path("/tmp/pf-doc-copy"))
        >>> store.remote, store.uri
        (True, 'file:///tmp/pf-doc-run')
    """

    def __init__(self, local: Path, *, uri: str | None = None, fs: Any = None,
                 root: str = "") -> None:
        self.local = Path(local)
        # How an artifact is checked (a fake search's tests pass verify_fake_artifact).
        self.verify: Callable[..., Any] = verify_artifact
        self.uri = uri or str(local)
        self.fs = fs
        self.root = root.rstrip("/")
        self._journal_pushed = 0.0
        self._journal_size = -1
        self._remote_keys: set[str] | None = None

    @property
    def remote(self) -> bool:
        return self.fs is not None

    @classmethod
    def open(cls, where: str | os.PathLike[str], *, local: Path | None = None) -> RunStore:
        """The store of run ``where`` (a path or a URI); ``local``: the working copy's
        directory for a URI (default: one per URI under the cache directory)."""
        if not is_uri(where):
            return cls(Path(where))
        uri = str(where).rstrip("/")
        try:
            from fsspec.core import url_to_fs

            fs, root = url_to_fs(uri)
        except ImportError as e:
            scheme = uri.split("://", 1)[0]
            extra = {"s3": "s3", "gs": "gcs", "gcs": "gcs"}.get(scheme, scheme)
            raise ParetoforgeError(
                f"run directory {uri!r}: the {scheme}:// filesystem needs a package that is not "
                f"installed ({e}); install it, e.g. `pip install 'paretoforge[{extra}]'`"
            ) from None
        except ValueError as e:
            raise ParetoforgeError(f"run directory {uri!r}: {e}; use a local path or a URI "
                                   "such as s3://bucket/run") from None
        if local is None:
            from paretoforge.pipeline.prepare import cache_dir

            slug = re.sub(r"[^A-Za-z0-9]+", "-", uri)[:60].strip("-")
            digest = hashlib.sha256(uri.encode()).hexdigest()[:8]
            local = cache_dir() / "runs" / f"{slug}-{digest}"
        return cls(Path(local), uri=uri, fs=fs, root=root)

    # -- paths --------------------------------------------------------------------------------

    def _r(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def exists(self, rel: str) -> bool:
        """Whether ``rel`` exists in the run (remotely for a URI run)."""
        if not self.remote:
            return (self.local / rel).exists()
        return bool(self.fs.exists(self._r(rel)))

    # -- down ---------------------------------------------------------------------------------

    def pull(self, *, artifacts: Iterable[str] | str | None = None) -> None:
        """Bring the run's journal and small files into the working copy, and the artifacts
        of ``artifacts`` (config keys, or ``"all"``); nothing for a local run.

        The local journal is kept when the remote one is a prefix of it (this machine's driver
        wrote more before it stopped); otherwise the remote one replaces it.
        """
        if not self.remote:
            return
        self.local.mkdir(parents=True, exist_ok=True)
        for name in META_FILES:
            data = self._get(name)
            if data is not None:
                atomic_write_bytes(self.local / name, data)
        for rel in self._find("reference", suffix=".json"):
            data = self._get(rel)
            if data is not None and not (self.local / rel).exists():
                atomic_write_bytes(self.local / rel, data)
        remote = self._get(JOURNAL)
        if remote is not None:
            path = self.local / JOURNAL
            have = path.read_bytes() if path.is_file() else b""
            if not (len(have) >= len(remote) and have.startswith(remote)):
                atomic_write_bytes(path, remote)
        if artifacts == "all":
            artifacts = sorted(self.remote_keys())
        for key in artifacts or ():
            self.fetch_artifact(key)

    def remote_keys(self) -> set[str]:
        """Config keys of the artifacts in the store that have a manifest (complete uploads;
        whether the files match is checked when one is fetched)."""
        if not self.remote:
            root = self.local / "artifacts"
            return {p.parent.name for p in root.glob("*/manifest.json")}
        if self._remote_keys is None:
            keys = set()
            for rel in self._find("artifacts", suffix="/manifest.json"):
                parts = rel.split("/")
                if len(parts) == 3:
                    keys.add(parts[1])
            self._remote_keys = keys
        return set(self._remote_keys)

    def fetch_artifact(self, key: str) -> Path | None:
        """The verified local copy of artifact ``key``, fetched from the store when the
        working copy lacks it; None when the store has no complete one."""
        final = artifact_path(self.local, key)
        if self.verify(final, key=key) is not None or not self.remote:
            return final if final.is_dir() else None
        rel = f"artifacts/{key}"
        data = self._get(f"{rel}/manifest.json")
        if data is None:
            return None
        try:  # read loosely: whether it is a real build's is for self.verify to say
            files = dict(json.loads(data)["files"])
        except (ValueError, KeyError, TypeError):
            return None
        if not files or not all(_safe_name(n) for n in files):
            return None
        tmp = final.parent / f".{key}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            for name in files:
                blob = self._get(f"{rel}/{name}")
                if blob is None:
                    return None
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                (tmp / name).write_bytes(blob)
            (tmp / "manifest.json").write_bytes(data)
            if self.verify(tmp, key=key) is None:
                return None
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final

    # -- up -----------------------------------------------------------------------------------

    def push_file(self, rel: str) -> None:
        """Upload ``rel`` of the working copy (one object: whole or not at all)."""
        if not self.remote:
            return
        src = self.local / rel
        if src.is_file():
            self.fs.makedirs(self._r(str(Path(rel).parent)), exist_ok=True)
            self.fs.put_file(str(src), self._r(rel))

    def push_meta(self) -> None:
        """Upload the run's small files that exist locally, and its base latencies."""
        if not self.remote:
            return
        for name in META_FILES:
            self.push_file(name)
        ref = self.local / "reference"
        if ref.is_dir():
            for p in ref.glob("*/latency@*.json"):
                self.push_file(str(p.relative_to(self.local)))

    def push_journal(self, *, min_interval_s: float = 0.0) -> None:
        """Upload the journal when it grew and ``min_interval_s`` passed since the last time."""
        if not self.remote:
            return
        path = self.local / JOURNAL
        if not path.is_file():
            return
        size = path.stat().st_size
        now = time.monotonic()
        if size == self._journal_size or now - self._journal_pushed < min_interval_s:
            return
        self.push_file(JOURNAL)
        self._journal_size, self._journal_pushed = size, now

    def push_artifact(self, key: str) -> None:
        """Upload the (verified) local artifact ``key``: every file, then its manifest."""
        if not self.remote or key in self.remote_keys():
            return
        src = artifact_path(self.local, key)
        manifest = self.verify(src, key=key)
        files = manifest.files if hasattr(manifest, "files") else (manifest or {}).get("files")
        if manifest is None or not files:
            raise ParetoforgeError(f"artifact {key} in {str(src)!r} does not match its "
                                   "manifest; it is not uploaded")
        rel = f"artifacts/{key}"
        for name in files:
            self.push_file(f"{rel}/{name}")
        self.push_file(f"{rel}/manifest.json")  # last: its presence marks a complete upload
        if self._remote_keys is not None:
            self._remote_keys.add(key)

    # -- a worker's artifact, sent back --------------------------------------------------------

    def commit_payload(self, key: str, payload: dict[str, Any]) -> Path:
        """Write an artifact a worker sent back (``{"manifest": bytes, "files": {name:
        bytes}}``) into the working copy, after checking every file against the manifest.

        Raises:
            ParetoforgeError: a file is missing, extra or differs from its sha256.
        """
        manifest = verify_payload(key, payload)
        final = artifact_path(self.local, key)
        tmp = final.parent / f".{key}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            for name in manifest.files:
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                (tmp / name).write_bytes(payload["files"][name])
            (tmp / "manifest.json").write_bytes(payload["manifest"])
            if verify_artifact(tmp, key=key) is None:  # what landed on disk, read back
                raise ParetoforgeError(f"artifact {key}: written files do not match their "
                                       "manifest (disk full?)")
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final

    # -- helpers -------------------------------------------------------------------------------

    def _get(self, rel: str) -> bytes | None:
        try:
            with self.fs.open(self._r(rel), "rb") as f:
                return bytes(f.read())
        except (FileNotFoundError, OSError):
            return None

    def _find(self, rel: str, *, suffix: str) -> list[str]:
        base = self._r(rel)
        try:
            found = self.fs.find(base)
        except (FileNotFoundError, OSError):
            return []
        prefix = self.root + "/"
        out = []
        for p in found:
            p = str(p)
            if p.startswith(prefix) and p.endswith(suffix):
                out.append(p[len(prefix):])
        return out


def verify_payload(key: str, payload: dict[str, Any]) -> Manifest:
    """The manifest of a sent-back artifact whose files are exactly the manifest's, each
    with its sha256.

    Raises:
        ParetoforgeError: it is not so (names which file).
    """
    try:
        manifest = Manifest.model_validate_json(payload["manifest"])
    except (KeyError, ValueError) as e:
        raise ParetoforgeError(f"artifact {key}: the worker sent no valid manifest "
                               f"({type(e).__name__})") from None
    files = dict(payload.get("files") or {})
    unsafe = [n for n in files if not _safe_name(n)]
    if unsafe:
        raise ParetoforgeError(f"artifact {key}: file names {unsafe} leave the artifact "
                               "directory or are hidden; it is not committed")
    if manifest.key != key:
        raise ParetoforgeError(f"artifact {key}: the worker sent the manifest of {manifest.key}")
    if set(files) != set(manifest.files) or not files:
        raise ParetoforgeError(f"artifact {key}: files sent {sorted(files)} are not the "
                               f"manifest's {sorted(manifest.files)}")
    for name, digest in manifest.files.items():
        if hashlib.sha256(files[name]).hexdigest() != digest:
            raise ParetoforgeError(f"artifact {key}: {name} arrived with another sha256 than "
                                   "its manifest's; it is not committed")
    return manifest


def _safe_name(name: str) -> bool:
    """A relative path that stays inside its directory and names no hidden file."""
    parts = PurePosixPath(name).parts
    return bool(parts) and not PurePosixPath(name).is_absolute() and not any(
        p in ("..", "") or p.startswith(".") for p in parts)


# -- the driver's side of a worker that cannot see the run directory ----------------------------

PAYLOAD = "artifact_payload"  # a result's key for an artifact sent back as bytes (not stored)
TOKEN = ".run-token"  # in the working copy: a worker that reads it shares the driver's files


def accept_artifact(store: RunStore, res: dict[str, Any]) -> dict[str, Any]:
    """What the driver does with a build's result before the trial is told COMPLETE.

    An artifact sent back as bytes (:data:`PAYLOAD`, from a worker on a node that cannot see
    the working copy) is checked against its manifest and committed into the working copy; a
    URI run's artifact is then uploaded (files, manifest last). ``res`` comes back without the
    payload.

    Raises:
        ParetoforgeError: the artifact does not match its manifest.
    """
    from paretoforge.names import TrialAttr

    payload = res.pop(PAYLOAD, None)
    rel = res.get(TrialAttr.ARTIFACT_DIR)
    if not rel:
        return res
    key = PurePosixPath(str(rel)).name
    if payload is not None:
        store.commit_payload(key, payload)
    if store.remote:
        # the journal first: an artifact in the store always has its trial in the remote
        # journal (at least RUNNING), so a resume elsewhere reuses it instead of rebuilding
        store.push_journal()
        store.push_artifact(key)
    return res


class RunKeeper:
    """Runs on the driver's node for the workers: tells them where the working copy is (so a
    worker that can read :data:`TOKEN` there writes its artifacts in place), and records the
    run's base latency per profile for workers that cannot (the first one wins).

    Example:
        >>> keeper = RunKeeper("/tmp/pf-doc-run", "abc")
        >>> keeper.probe()
        ('/tmp/pf-doc-run', 'abc')
    """

    def __init__(self, run_dir: str, token: str) -> None:
        self.run_dir = str(run_dir)
        self.token = token

    def probe(self) -> tuple[str, str]:
        return self.run_dir, self.token

    def base_latency(self, rel: str, measured_ms: float, extra: dict[str, Any]) -> float:
        """The run's base latency recorded at ``rel`` (e.g.
        ``reference/<base key>/latency@cpu-1t.json``), or ``measured_ms`` when it is the
        first."""
        from paretoforge.orchestrator.worker import _run_base_latency

        if not _safe_name(rel):
            raise ParetoforgeError(f"base latency path {rel!r} leaves the run directory")
        path = Path(self.run_dir) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return _run_base_latency(path, measured_ms, extra)


def start_keeper(run_dir: Path) -> Any:
    """Write a fresh :data:`TOKEN` into ``run_dir`` and start a :class:`RunKeeper` actor on
    this (the driver's) node."""
    import secrets

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = secrets.token_hex(16)
    atomic_write_bytes(Path(run_dir) / TOKEN, token.encode())
    here = ray.get_runtime_context().get_node_id()
    return ray.remote(num_cpus=0, max_restarts=0)(RunKeeper).options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)
    ).remote(str(run_dir), token)


def sees_run_dir(run_dir: str | os.PathLike[str], token: str) -> bool:
    """Whether this process sees the driver's working copy (its :data:`TOKEN` reads back)."""
    try:
        return (Path(run_dir) / TOKEN).read_text() == token
    except (OSError, UnicodeDecodeError):
        return False


# -- directories the CLI writes ----------------------------------------------------------------

def check_out_dir(out: Path, *, force: bool, ours: Callable[[Path], set[str] | None],
                  what: str, option: str = "--out") -> Path:
    """Check ``out`` before anything is written or removed there; return it, resolved.

    ``out`` may be missing or an empty directory. A non-empty one is replaced only with
    ``force`` and only when ``ours(out)`` says it is an earlier ``what`` (the relative paths
    it wrote) and it holds nothing else: a file the command did not write is never removed.

    Raises:
        ParetoforgeError: ``out`` is a file, is not empty without ``force``, or holds a file
            an earlier ``what`` did not write (named in the message).
    """
    out = Path(out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise ParetoforgeError(f"{option} {str(out)!r} is a file, not a directory; name a "
                               "directory (new, empty, or an earlier " + what + ")")
    if not out.exists() or not any(out.iterdir()):
        return out
    if not force:
        raise ParetoforgeError(f"{option} directory {str(out)!r} is not empty; choose another "
                               f"{option}, or pass --force to replace an earlier {what}")
    mine = ours(out)
    if mine is None:
        raise ParetoforgeError(f"{option} directory {str(out)!r} is not an earlier {what} "
                               "(--force replaces only one); choose another " + option)
    for p in sorted(out.rglob("*")):
        if p.is_dir() and not p.is_symlink():
            continue
        rel = p.relative_to(out).as_posix()
        if rel not in mine:
            raise ParetoforgeError(f"{option} directory {str(out)!r} holds {rel!r}, which no "
                                   f"earlier {what} wrote; it is not removed: move it, or "
                                   f"choose another {option}")
    return out


PULL_MARKER = ".paretoforge-pull.json"


def _pull_files(out: Path) -> set[str] | None:
    """What an earlier pull wrote into ``out`` (its marker lists it), or None."""
    try:
        marker = json.loads((out / PULL_MARKER).read_text())
        files = set(marker["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    # and what reading the pulled run writes there (the journal's lock, the report)
    return files | {PULL_MARKER, f"{JOURNAL}.lock", *META_FILES}


def pull_run(source: str | os.PathLike[str], to: Path,
             trials: Iterable[str] = ("front",)) -> tuple[Path, list[int]]:
    """Bring a run's study, small files and chosen checkpoints into ``to``, so that
    ``front``, ``report`` and ``load_run`` work there.

    Args:
        source: The run: a storage URI, or a local run directory.
        to: The directory to write (new, empty, or an earlier pull, which is replaced; a
            directory holding anything else is refused).
        trials: ``front`` (the front's members), ``all`` (every completed trial with an
            artifact), or trial numbers (as strings).

    Returns:
        ``to`` resolved, and the numbers of the trials whose checkpoints came along.

    Raises:
        ParetoforgeError: ``to`` is refused, ``source`` is not a run, or a numbered trial has
            no complete artifact there.
    """
    from paretoforge.names import TrialAttr
    from paretoforge.orchestrator.results import Run

    out = check_out_dir(Path(to), force=True, ours=_pull_files, what="pull", option="--to")
    uri = str(source) if is_uri(source) else Path(source).resolve().as_uri()
    tmp = out.parent / f".{out.name}.pull-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        store = RunStore.open(uri, local=tmp)
        store.pull()
        if not (tmp / "spec.yaml").is_file():
            raise ParetoforgeError(f"{uri!r} is not a paretoforge run (no spec.yaml there)")
        run = Run(tmp)
        chosen = list(trials) or ["front"]
        numbers: list[int] = []
        for t in chosen:
            if t == "front":
                numbers += [m.trial for m in run.front()]
            elif t == "all":
                numbers += [x.number for x in run.trials()
                            if x.user_attrs.get(TrialAttr.ARTIFACT_DIR)]
            elif t.isdigit():
                numbers.append(int(t))
            else:
                raise ParetoforgeError(f"--trials {t!r}: use front, all, or trial numbers")
        numbers = sorted(set(numbers))
        for n in numbers:
            trial = run.trial(n)
            rel = trial.user_attrs.get(TrialAttr.ARTIFACT_DIR)
            if trial.state.name != "COMPLETE" or not rel:
                raise ParetoforgeError(f"trial {n} of {uri!r} is {trial.state.name} with no "
                                       "checkpoint; pull completed trials (see `front`)")
            if store.fetch_artifact(PurePosixPath(str(rel)).name) is None:
                raise ParetoforgeError(f"trial {n}: {uri!r} holds no complete artifact "
                                       f"{rel!r} (its upload never finished); re-run it")
        del run
        files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*")
                       if p.is_file() and p.name != f"{JOURNAL}.lock")
        (tmp / PULL_MARKER).write_text(json.dumps({"source": uri, "trials": numbers,
                                                   "files": files}, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out, numbers
