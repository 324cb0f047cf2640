"""Importance is cached on disk by content key: a second prepare of the same base reuses it."""

from __future__ import annotations

import json

import numpy as np

from paretoforge import testing
from paretoforge.pipeline.prepare import cache_dir, prepare


def _flat(x) -> np.ndarray:
    return np.concatenate([_flat(v) for v in x]) if isinstance(x, list) and x and isinstance(
        x[0], list) else np.asarray(x, dtype=float)


def test_importance_is_cached_by_content_key_and_recomputed_when_unreadable(
        tmp_path, monkeypatch) -> None:
    # A cache of its own: the session's holds other tests' entries (other seeds among them).
    monkeypatch.setenv("PARETOFORGE_CACHE", str(tmp_path / "cache"))
    spec = testing.tiny_spec()
    first = prepare(spec, log=lambda _m: None)
    files = sorted((cache_dir() / "importance").glob("*.json"))
    assert len(files) == 1, "the importance scores were written to the cache"
    again = prepare(spec, log=lambda _m: None)
    assert again.importance == first.importance
    # another seed is another computation (another key)
    other = prepare(testing.tiny_spec({"seed": 1}), log=lambda _m: None)
    assert len(sorted((cache_dir() / "importance").glob("*.json"))) == len(files) + 1
    assert other.importance.keys() == first.importance.keys()
    # a corrupt entry is not trusted: recomputed, the same scores, and rewritten
    for f in files:
        f.write_text("{not json")
    third = prepare(spec, log=lambda _m: None)
    # the same up to the last bits: prepare runs on as many threads as cores are idle
    # (_system.idle_cores), and a reduction over another thread count rounds differently
    assert third.importance.keys() == first.importance.keys()
    for k, v in first.importance.items():
        np.testing.assert_allclose(_flat(third.importance[k]), _flat(v), rtol=1e-6, atol=1e-9)
    assert all(json.loads(f.read_text()) for f in files)
