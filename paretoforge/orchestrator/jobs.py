"""Searches as Ray Jobs: submit one from a laptop, watch it, come back to it later.

:func:`submit_search` sends ``paretoforge search`` to a cluster's Ray Jobs API
(``ray.job_submission.JobSubmissionClient``, the dashboard's HTTP address, e.g.
``http://HEAD:8265``). The job's working directory holds the spec and the local files it names
(``task.data``, ``model.path``), rewritten to paths inside it, within Ray's size limit for a
working directory; the run goes to a storage URI (or an absolute path on the head node), never
into the job's working directory, which Ray deletes. A storage URL travels without its
password: the head node's driver gives it the database client's way (``PGPASSWORD``).
:func:`job_status` and :func:`job_logs` need only the job id, so they work from any machine
that reaches the dashboard.

Token auth is as for the cluster: a token in ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or
``~/.ray/auth_token`` is sent as the ``Authorization`` header (Ray's client adds it when
``RAY_AUTH_MODE=token``, which is set here when a token is found and the mode is unset).

Example:
    >>> job = submit_search(Path("spec.yaml"), address="http://127.0.0.1:8265",
    ...                     run_dir="s3://bucket/run")  # doctest: +SKIP
    >>> job_status(job, address="http://127.0.0.1:8265")["status"]  # doctest: +SKIP
    'RUNNING'
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from paretoforge.exceptions import ParetoforgeError, SpecError
from paretoforge.orchestrator.runstore import is_uri

__all__ = ["DEFAULT_ADDRESS", "READY_TIMEOUT_S", "WORKING_DIR_LIMIT", "follow_job", "job_logs",
           "job_status", "submit_search"]

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
WORKING_DIR_LIMIT = 500 * 1024**2  # Ray's limit on a job's working_dir package
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
# How long a freshly started head may take before its Jobs API accepts a submission (the
# dashboard answers within seconds of `ray start` on an idle machine; its job agent and a
# loaded machine can take minutes); PARETOFORGE_JOBS_READY_TIMEOUT_S changes it.
READY_TIMEOUT_S = float(os.environ.get("PARETOFORGE_JOBS_READY_TIMEOUT_S", "300"))
# Failures that a head still starting gives: the dashboard not listening yet, or up while its
# job agent is not. Anything else (token refused, a bad request) is reported at once.
_NOT_READY = ("connection", "connect", "refused", "timed out", "timeout", "503", "502", "500",
              "not ready", "agent", "temporarily", "reset by peer", "cannot reach")


def _address(address: str | None) -> str:
    return (address or os.environ.get("RAY_API_SERVER_ADDRESS") or DEFAULT_ADDRESS).rstrip("/")


def _client(address: str | None) -> Any:
    """A JobSubmissionClient for ``address``, with the cluster's token when one is found."""
    addr = _address(address)
    if not addr.startswith(("http://", "https://")):
        raise ParetoforgeError(f"--address {addr!r}: the Jobs API is the dashboard's HTTP "
                               "address, e.g. http://HEAD:8265")
    have_token = (os.environ.get("RAY_AUTH_TOKEN")
                  or os.environ.get("RAY_AUTH_TOKEN_PATH")
                  or (Path.home() / ".ray" / "auth_token").is_file())
    if have_token and not os.environ.get("RAY_AUTH_MODE"):
        os.environ["RAY_AUTH_MODE"] = "token"
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(addr)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise ParetoforgeError(
            f"could not reach the Ray Jobs API at {addr!r}: {first}. Check the address (the "
            "head's dashboard port, 8265 by default); a cluster with token auth needs "
            "RAY_AUTH_TOKEN (or ~/.ray/auth_token) set here") from None


def _call(fn: Callable[..., Any], *args: Any, what: str, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except ParetoforgeError:
        raise
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise ParetoforgeError(f"{what}: {type(e).__name__}: {first}") from None


def submit_search(spec_path: Path, *, address: str | None = None, run_dir: str | None = None,
                  extra_args: list[str] | None = None) -> str:
    """Submit ``paretoforge search`` of ``spec_path`` as a Ray Job; return the job id.

    Args:
        spec_path: The spec (YAML or JSON).
        address: The dashboard's HTTP address (default ``$RAY_API_SERVER_ADDRESS``, else
            http://127.0.0.1:8265).
        run_dir: Where the run goes: a storage URI, or an absolute path on the head node
            (default: the spec's ``run_dir``).
        extra_args: More ``search`` options (``--trials 8``).

    Raises:
        SpecError: the run directory is relative (the job's working directory is temporary).
        ParetoforgeError: the files to send exceed Ray's limit, or the Jobs API refused.
    """
    from paretoforge.spec import Spec

    spec = Spec.from_file(spec_path)
    where = run_dir or spec.run_dir
    if not where or not (is_uri(where) or Path(where).is_absolute()):
        raise SpecError(
            f"run directory {where!r}: a submitted search needs a storage URI (s3://bucket/run)"
            " or an absolute path on the head node, because Ray deletes the job's working "
            "directory; pass --run-dir")
    work = Path(tempfile.mkdtemp(prefix="pf-job-"))
    try:
        data = spec.model_dump(mode="json", exclude_none=True)
        for section, field, folder in (("task", "data", "data"), ("model", "path", "model")):
            value = data.get(section, {}).get(field)
            if value and not is_uri(value):
                src = Path(value)
                dst = Path(folder) / src.name
                if src.is_dir():
                    shutil.copytree(src, work / dst)
                elif src.is_file():
                    (work / folder).mkdir(exist_ok=True)
                    shutil.copy2(src, work / dst)
                else:
                    continue
                data[section][field] = dst.as_posix()
        data.pop("run_dir", None)
        if data.get("storage"):  # no credential travels with a job: the head gives it
            from paretoforge.orchestrator.storage import url_without_password

            data["storage"] = url_without_password(data["storage"])
        import yaml

        (work / "spec.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        # A package of its own per submission: Ray names a working directory by its content
        # and skips the upload when one of that name exists, which a failed earlier attempt
        # may leave behind only to be deleted (its temporary reference expires) under this one.
        (work / "submission.json").write_text(json.dumps(
            {"spec": spec.name, "run_dir": where, "nonce": secrets.token_hex(8)}) + "\n")
        size = sum(p.stat().st_size for p in work.rglob("*") if p.is_file())
        if size > WORKING_DIR_LIMIT:
            raise ParetoforgeError(
                f"the spec's files are {size / 1024**2:.0f} MiB, over Ray's "
                f"{WORKING_DIR_LIMIT // 1024**2} MiB limit for a job's working directory; "
                "put the checkpoint where the head node reads it and name that path in "
                "model.path")
        entry = ["python", "-m", "paretoforge.cli", "search", "spec.yaml", "--run-dir", where,
                 *(extra_args or [])]
        # No credentials travel with the job (a job's runtime_env is visible on the
        # dashboard): the head node reads the storage URI with its own.
        return _submit_when_ready(
            address, entrypoint=shlex.join(entry), runtime_env={"working_dir": str(work)},
            metadata={"paretoforge": "search", "run_dir": where, "spec": spec.name})
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _submit_when_ready(address: str | None, *, timeout_s: float | None = None,
                       poll_s: float = 2.0, **job: Any) -> str:
    """Submit ``job`` once the head's Jobs API takes it, retrying while the head is starting.

    The submission has an id of its own, so a retry after a submission whose answer was lost
    finds that job instead of starting a second one.

    Raises:
        ParetoforgeError: the Jobs API refused for a reason other than starting up, or did not
            take the job within ``timeout_s`` (default :data:`READY_TIMEOUT_S`); one line.
    """
    limit = READY_TIMEOUT_S if timeout_s is None else timeout_s
    deadline = time.monotonic() + limit
    sid = f"paretoforge_{secrets.token_hex(8)}"
    last = ""
    while True:
        try:
            client = _client(address)
            try:
                return str(client.submit_job(submission_id=sid, **job))
            except Exception as e:
                last = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
                with_id = None
                try:
                    with_id = client.get_job_info(sid)
                except Exception:
                    pass
                if with_id is not None:  # it went through; only the answer was lost
                    return sid
                if not any(w in last.lower() for w in _NOT_READY):
                    raise ParetoforgeError(
                        f"submitting the search: {type(e).__name__}: {last}") from None
        except ParetoforgeError as e:
            if "could not reach" not in str(e):
                raise
            last = str(e)
        if time.monotonic() + poll_s > deadline:
            raise ParetoforgeError(
                f"the Ray Jobs API at {_address(address)!r} did not accept the job within "
                f"{limit:.0f} s (PARETOFORGE_JOBS_READY_TIMEOUT_S); last answer: {last}"
            ) from None
        time.sleep(poll_s)


def job_status(job_id: str, *, address: str | None = None) -> dict[str, Any]:
    """The job's status (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED), message, times and
    run directory."""
    client = _client(address)
    info = _call(client.get_job_info, job_id, what=f"job {job_id!r}")
    return {"job_id": job_id, "status": str(getattr(info.status, "value", info.status)),
            "message": info.message, "entrypoint": info.entrypoint,
            "start_time": info.start_time, "end_time": info.end_time,
            "run_dir": (info.metadata or {}).get("run_dir")}


def job_logs(job_id: str, *, address: str | None = None) -> str:
    """Everything the job printed so far."""
    client = _client(address)
    return str(_call(client.get_job_logs, job_id, what=f"job {job_id!r}"))


def follow_job(job_id: str, *, address: str | None = None, echo: Callable[[str], None] = print,
               poll_s: float = 2.0) -> str:
    """Print the job's new output as it comes until it ends; return its final status."""
    client = _client(address)
    shown = 0
    while True:
        logs = str(_call(client.get_job_logs, job_id, what=f"job {job_id!r}"))
        if len(logs) > shown:
            echo(logs[shown:].rstrip("\n"))
            shown = len(logs)
        status = str(_call(client.get_job_status, job_id, what=f"job {job_id!r}"))
        status = status.rsplit(".", 1)[-1]
        if status in TERMINAL:
            tail = str(_call(client.get_job_logs, job_id, what=f"job {job_id!r}"))
            if len(tail) > shown:
                echo(tail[shown:].rstrip("\n"))
            return status
        time.sleep(poll_s)
