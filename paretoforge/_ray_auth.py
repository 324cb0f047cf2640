"""Ray clusters: token auth, the local cluster a command starts, and joining a real one.

Every command that needs Ray goes through :func:`start_local_cluster` (no address given) or
:func:`connect_cluster` (an address given): a command never joins a cluster it was not told
about, such as the one Ray's current-cluster file (``/tmp/ray/ray_current_cluster``) names.

* **Token auth.** Ray 2.60 turns token auth on for new local clusters by default;
  ``ray.init()`` provisions a token itself, but a ``ray.cluster_utils.Cluster`` started with
  ``RAY_AUTH_MODE=token`` and no token waits for one until it times out.
  :func:`ensure_ray_auth` makes sure a token exists.
* **Loopback only.** The local cluster's node address is 127.0.0.1, so its GCS, raylet, object
  manager, workers and agents listen on the loopback interface only (Ray binds its servers to
  the node address).
* **Bounded connection.** :func:`connect_cluster` checks that something answers at the address
  as a Ray GCS before ``ray.init``, within ``timeout_s``; Ray's own client retries a dead
  address for about ten minutes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from paretoforge.exceptions import PlacementError

__all__ = ["CONNECT_TIMEOUT_S", "LOCAL_ENV", "LOCAL_SYSTEM_CONFIG", "connect_cluster",
           "ensure_ray_auth", "set_local_env", "start_local_cluster", "stop_local_cluster"]

# How long an address may take to answer as a Ray cluster; PARETOFORGE_RAY_CONNECT_TIMEOUT_S
# changes it (a cluster across a slow link).
CONNECT_TIMEOUT_S = float(os.environ.get("PARETOFORGE_RAY_CONNECT_TIMEOUT_S", "30"))

# GCS health checks of the raylets, for a cluster on one machine. Ray's defaults (a check
# every 3 s, each allowed 10 s, dead after 5 failures: about a minute) suit a data centre,
# where a raylet that does not answer for a minute has most likely lost its machine. On one
# busy machine (two cores, pinned workers, a CPU hog) a raylet can be starved for longer and
# is not dead: Ray would then kill every worker of the only node. Each check may take 30 s and
# the node is dead after 10 failures in a row: a raylet that does not answer for about five
# minutes. A killed raylet still fails fast (its port refuses at once: 10 checks, 3 s apart).
#
# Ray also starts its worker processes at niceness 15, so that they never starve its own
# raylet and GCS. On a machine the search shares with work at normal priority (a user's build,
# a CPU hog) that leaves each of the search's workers about 1/30 of a core (3.8% CPU seen
# under two busy loops, and no trial done in minutes). The local cluster's workers therefore
# run at the priority of the command that started them; the raylet and GCS, mostly idle, still
# get their turn from the kernel's fair scheduler.
LOCAL_SYSTEM_CONFIG: dict[str, Any] = {
    "health_check_timeout_ms": 30_000,
    "health_check_failure_threshold": 10,
    "worker_niceness": 0,
}

# Environment of a local cluster's processes (set here unless already set). Ray Train's
# controller polls its workers every 2 s and notices a finished training only at the next
# poll: the quickstart's supernet (9 s of epochs) waited 3.5 s more to end. A poll that does
# not answer in time is waited for again, not counted as a failure (10 minutes make a worker
# dead), so a short interval is safe on a busy machine.
#
# Ray Train's preemption watcher (an actor per training run that polls for node drains, as
# cloud spot instances announce them) has nothing to watch on one machine and costs a process
# start (1.2-1.7 s of CPU on a 2-core machine) while the supernet's workers start.
LOCAL_ENV: dict[str, str] = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
                             "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}


def set_local_env() -> None:
    """Put :data:`LOCAL_ENV` into this process's environment (values already set win), before
    it starts a local cluster: the raylet and every worker inherit it."""
    for name, value in LOCAL_ENV.items():
        os.environ.setdefault(name, value)


def ensure_ray_auth() -> None:
    """Turn token auth on and provide a token, unless ``RAY_AUTH_MODE=disabled`` is set.

    An existing token (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``) is
    used as it is; otherwise a fresh random one is written to a private temporary file
    (mode 0600) and ``RAY_AUTH_TOKEN_PATH`` points to it, for this process and its children.
    """
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    have = (os.environ.get("RAY_AUTH_TOKEN")
            or Path(os.environ.get("RAY_AUTH_TOKEN_PATH", "/nonexistent")).is_file()
            or (Path.home() / ".ray" / "auth_token").is_file())
    if not have:
        path = Path(tempfile.mkdtemp(prefix="pf-ray-auth-")) / "auth_token"
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(path)


@contextlib.contextmanager
def _loopback_node_address() -> Iterator[None]:
    """While a local cluster starts, let its node address be 127.0.0.1.

    ``ray.init(_node_ip_address="127.0.0.1")`` replaces a loopback address with the machine's
    outward address unless Ray believes it cannot form clusters (as on macOS and Windows,
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``); that switch is read when Ray is imported, so it is
    set for the start only. A node started so can never be joined from elsewhere, which is
    the point.
    """
    from ray._private import ray_constants

    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def start_local_cluster(*, num_cpus: int, dashboard: bool = False,
                        object_store_memory: int = 256 * 1024**2, debug: bool = False,
                        **init_kwargs: Any) -> None:
    """Start a new Ray cluster of this process on this machine, and connect to it.

    Never one that another process started (``address="local"``): not the one Ray's
    current-cluster file names. It listens on 127.0.0.1 only, its health checks suit one
    machine (:data:`LOCAL_SYSTEM_CONFIG`) and token auth stays as Ray sets it (on).

    Args:
        num_cpus: The CPUs the cluster offers.
        dashboard: Start Ray's dashboard (on 127.0.0.1).
        object_store_memory: Object store size in bytes.
        debug: Ray's logs to the terminal at DEBUG level (default: warnings, in Ray's files).
        **init_kwargs: More ``ray.init`` arguments.
    """
    import ray

    set_local_env()
    with _loopback_node_address():
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=dashboard,
                 dashboard_host="127.0.0.1", object_store_memory=object_store_memory,
                 _node_ip_address="127.0.0.1", _system_config=dict(LOCAL_SYSTEM_CONFIG),
                 logging_level=logging.DEBUG if debug else logging.WARNING,
                 log_to_driver=debug, **init_kwargs)


def stop_local_cluster() -> None:
    """Disconnect and stop the cluster :func:`start_local_cluster` started (``ray.shutdown``),
    without waiting a second for Ray's autoscaler monitor.

    ``ray.shutdown`` stops the node's processes one after the other, each sent SIGTERM and
    given a second to exit. The autoscaler's monitor (it watches a cluster that a fixed local
    one never resizes) does not exit on SIGTERM within that second, so every command that
    started a cluster ended a second late (1.0 of ``ray.shutdown``'s 1.45 s here). It is
    killed first; the other processes stop as Ray stops them.
    """
    import ray

    with contextlib.suppress(Exception):  # Ray's internals: at worst the usual second
        from ray._private import ray_constants
        from ray._private import worker as ray_worker

        node = ray_worker._global_node
        if node is not None and node.is_head():
            monitors = list(node.all_processes.get(ray_constants.PROCESS_TYPE_MONITOR, []))
            for info in monitors:
                info.process.kill()
            for info in monitors:
                info.process.wait(timeout=1.0)
    ray.shutdown()


def _host_port(address: str) -> tuple[str, int] | None:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]") or "127.0.0.1", int(port)


def _fail(address: str, why: str) -> PlacementError:
    return PlacementError(
        f"could not connect to the Ray cluster at {address!r}: {why}. Check the address "
        "(`ray status` on the head node shows it); a cluster with token auth needs "
        "RAY_AUTH_TOKEN set here; without --address a command starts its own local cluster"
    )


def _answers_as_gcs(address: str, host_port: tuple[str, int], deadline: float) -> None:
    """Raise unless a Ray GCS answers at ``host_port`` before ``deadline`` (monotonic)."""
    try:
        with socket.create_connection(host_port, timeout=max(0.5, min(5.0, deadline
                                                                     - time.monotonic()))):
            pass
    except OSError as e:
        raise _fail(address, f"nothing answers on {host_port[0]}:{host_port[1]} "
                             f"({e.strerror or type(e).__name__})") from None
    box: dict[str, BaseException | None] = {}

    def ask() -> None:
        try:
            from ray._raylet import GcsClient

            client = GcsClient(address=f"{host_port[0]}:{host_port[1]}")
            client.internal_kv_get(b"session_name", b"session", timeout=5)
            box["error"] = None
        except BaseException as e:  # reported to the caller
            box["error"] = e

    # A daemon thread: a GCS that accepts and never answers leaves it hanging, not the caller.
    t = threading.Thread(target=ask, name="pf-gcs-probe", daemon=True)
    t.start()
    t.join(max(0.0, deadline - time.monotonic()))
    if "error" not in box:
        raise _fail(address, f"{host_port[0]}:{host_port[1]} accepts connections but does "
                             f"not answer as a Ray GCS within the time allowed")
    err = box["error"]
    if err is not None:
        first = (str(err).splitlines() or [""])[0][:200]
        raise _fail(address, f"{type(err).__name__}: {first}")


def connect_cluster(address: str, *, timeout_s: float | None = None,
                    debug: bool = False, **init_kwargs: Any) -> None:
    """Join the running Ray cluster at ``address``, or raise within about ``timeout_s``.

    Args:
        address: ``HOST:PORT`` of the head's GCS, ``auto`` (the cluster Ray's current-cluster
            file names: asked for, so allowed) or a Ray Client ``ray://`` address.
        timeout_s: How long the address may take to answer as a Ray GCS (default
            :data:`CONNECT_TIMEOUT_S`, 30 s).
        debug: Ray's logs to the terminal at DEBUG level.
        **init_kwargs: More ``ray.init`` arguments.

    Raises:
        PlacementError: nothing answers there, it is not a Ray GCS, or it refuses this
            process (token auth); one line naming the address and the fix.

    Example:
        >>> connect_cluster("127.0.0.1:1", timeout_s=5)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        paretoforge.exceptions.PlacementError: could not connect to the Ray cluster at '127.0.0.1:1': nothing answers on 127.0.0.1:1 ...
    """  # noqa: E501
    import ray

    deadline = time.monotonic() + (CONNECT_TIMEOUT_S if timeout_s is None else timeout_s)
    target = address
    if address == "auto":
        from ray._private import services

        try:
            target = services.canonicalize_bootstrap_address_or_die(address)
        except Exception as e:
            raise _fail(address, f"{type(e).__name__}: "
                                 f"{(str(e).splitlines() or [''])[0][:200]}") from None
    if not target.startswith("ray://"):
        hp = _host_port(target)
        if hp is None:
            raise _fail(address, "not a HOST:PORT address")
        _answers_as_gcs(address, hp, deadline)
    try:
        ray.init(address=target, logging_level=logging.DEBUG if debug else logging.WARNING,
                 log_to_driver=debug, **init_kwargs)
    except Exception as e:
        raise _fail(address, f"{type(e).__name__}: "
                             f"{(str(e).splitlines() or [''])[0][:200]}") from None
