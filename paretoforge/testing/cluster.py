"""Ray clusters that tests and benchmarks start for themselves.

:func:`local_ray` is one small local cluster in this process (the test session's, a
benchmark's); :func:`multi_node_cluster` is a ``ray.cluster_utils.Cluster`` of several nodes
on this machine, with Ray's token auth provided (:func:`paretoforge._ray_auth.ensure_ray_auth`),
for what only several nodes show: placement by resource, a node lost mid-search. Ray allows one
cluster connection per process, so a test runs a multi-node cluster in a subprocess of its own.

Example:
    >>> with local_ray(num_cpus=2) as ray:  # doctest: +SKIP
    ...     ray.cluster_resources()["CPU"]
    2.0
    >>> with multi_node_cluster(nodes=[{"num_cpus": 1}] * 2) as c:  # doctest: +SKIP
    ...     c.remove_node(c.nodes[0])
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

__all__ = ["LocalCluster", "local_ray", "multi_node_cluster"]

_MiB = 1024**2


@contextlib.contextmanager
def local_ray(num_cpus: int = 2, *, object_store_mb: int = 128,
              debug: bool = False) -> Iterator[ModuleType]:
    """A local Ray cluster of ``num_cpus`` CPUs, no dashboard, for the ``with`` block.

    The cluster is a new one of this process (``address="local"``: never one that another
    process started on the machine) and is shut down at the end of the block. When Ray is
    already initialised in this process, that cluster is used and left running.

    Args:
        num_cpus: The CPUs the cluster offers (workers reserve ``cpus_per_worker`` each).
        object_store_mb: Object store size in MiB (small: the tests put one ``Prepared``).
        debug: Ray's logs to the terminal, at DEBUG level (default: warnings, kept in Ray's
            log files).

    Yields:
        The ``ray`` module, connected.
    """
    import ray

    from paretoforge._ray_auth import set_local_env

    started = not ray.is_initialized()
    if started:
        set_local_env()
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                 object_store_memory=object_store_mb * _MiB,
                 logging_level=logging.DEBUG if debug else logging.WARNING,
                 log_to_driver=debug)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


@dataclass
class LocalCluster:
    """A running :func:`multi_node_cluster`: the ``Cluster``, its head and its added nodes."""

    cluster: Any
    head: Any
    nodes: list[Any] = field(default_factory=list)

    @property
    def address(self) -> str:
        return str(self.cluster.address)

    def node(self, node_id: str) -> Any:
        """The node (head or added) whose Ray node id is ``node_id``."""
        for n in (self.head, *self.nodes):
            if n.node_id == node_id:
                return n
        raise KeyError(f"no node {node_id!r} in this cluster; it has "
                       f"{[n.node_id for n in (self.head, *self.nodes)]}")

    def remove_node(self, node: Any, *, graceful: bool = False) -> None:
        """Take a node away (by default as a crash does: its processes killed at once)."""
        self.cluster.remove_node(node, allow_graceful=graceful)
        self.nodes = [n for n in self.nodes if n is not node]


@contextlib.contextmanager
def multi_node_cluster(*, head: dict[str, Any] | None = None,
                       nodes: Sequence[dict[str, Any]] = (), object_store_mb: int = 80
                       ) -> Iterator[LocalCluster]:
    """A ``ray.cluster_utils.Cluster`` on this machine, connected, for the ``with`` block.

    Token auth is turned on with a private token unless ``RAY_AUTH_MODE=disabled``
    (:func:`~paretoforge._ray_auth.ensure_ray_auth`); the driver connects, every node is
    waited for, and at the end Ray is shut down and the cluster with it.

    Args:
        head: Arguments of the head node (``ray start --head``), over the defaults: no CPUs
            (the head holds the driver and the core gates), no dashboard.
        nodes: One argument dict per further node (``num_cpus``, ``resources``, ...).
        object_store_mb: Each node's object store in MiB, unless its arguments set one.

    Yields:
        The running cluster; ``nodes`` in the order given.
    """
    from paretoforge._ray_auth import ensure_ray_auth

    ensure_ray_auth()
    import ray
    from ray.cluster_utils import Cluster

    store = {"object_store_memory": object_store_mb * _MiB}
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, **store, **(head or {})})
    try:
        added = [cluster.add_node(**{**store, **n}) for n in nodes]
        ray.init(address=cluster.address, logging_level=logging.WARNING, log_to_driver=False)
        cluster.wait_for_nodes()
        yield LocalCluster(cluster=cluster, head=cluster.head_node, nodes=added)
    finally:
        ray.shutdown()
        cluster.shutdown()
