"""Test-wide setup: one thread for torch, so tests are fast and steady on 2-core machines."""

from __future__ import annotations

try:
    import torch
except ImportError:  # torch-free parts of the suite still run
    torch = None  # type: ignore[assignment]

if torch is not None:
    torch.set_num_threads(1)

import os
import tempfile

import pytest

# Trained base models are cached per test session, never in the user's ~/.cache.
os.environ.setdefault("PARETOFORGE_CACHE", tempfile.mkdtemp(prefix="pf-test-cache-"))


@pytest.fixture(scope="session")
def ray_cluster():
    """One real local Ray cluster for the whole session (2 CPUs, no dashboard)."""
    import logging

    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False,
                 object_store_memory=128 * 1024**2,
                 logging_level=logging.WARNING, log_to_driver=False)
    yield ray
    ray.shutdown()
