"""Test support: stand-in workers and Ray clusters for tests and benchmarks (as optuna.testing).

Only ``tests/`` and ``benchmarks/`` import this package; nothing else in paretoforge does.

* :class:`FakeWorker` runs under the real driver, Ray and Optuna in place of
  :class:`~paretoforge.orchestrator.worker.Worker` (same constructor: the
  :class:`~paretoforge.orchestrator.protocol.CandidateWorker` protocol), making metrics up;
  its artifacts never pass for real ones (:func:`verify_fake_artifact` accepts them).
* :func:`local_ray` and :func:`multi_node_cluster` start the Ray clusters tests run on.
* :func:`tiny_spec` is the tiny search (2-layer ViT on digits) tests and benchmarks run.

Example:
    >>> from paretoforge.testing import FakeWorker, local_ray
    >>> from paretoforge.orchestrator.driver import run_search  # doctest: +SKIP
    >>> with local_ray(num_cpus=2):  # doctest: +SKIP
    ...     run_search(spec, "runs/x", worker_cls=FakeWorker, worker_kwargs={"sleep_s": 0.1})
"""

from __future__ import annotations

from paretoforge.testing.cluster import LocalCluster, local_ray, multi_node_cluster
from paretoforge.testing.fakes import FAKE_FORMAT, FakeWorker, fake_metrics, verify_fake_artifact
from paretoforge.testing.specs import TINY_SPEC, tiny_spec, tiny_spec_dict

__all__ = [
    "FAKE_FORMAT",
    "FakeWorker",
    "LocalCluster",
    "TINY_SPEC",
    "fake_metrics",
    "local_ray",
    "multi_node_cluster",
    "tiny_spec",
    "tiny_spec_dict",
    "verify_fake_artifact",
]
