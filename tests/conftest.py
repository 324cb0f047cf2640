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
    from paretoforge.testing import local_ray

    with local_ray(num_cpus=2, object_store_mb=128) as ray:
        yield ray
