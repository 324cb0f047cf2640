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


def test_a_preloaded_task_is_taken_once_by_the_next_load() -> None:
    # The driver loads the task while its cluster starts; prepare's load then takes it.
    import importlib

    prep = importlib.import_module("paretoforge.pipeline.prepare")  # the module, not prepare()

    spec = testing.tiny_spec({"seed": 12345})  # no bundle of this seed in the process yet
    prep.preload_task(spec)
    assert len(prep._PRELOADED) == 1
    (future,) = prep._PRELOADED.values()
    first = prep.load_spec_task(spec)
    assert first is future.result() and not prep._PRELOADED  # taken, once
    second = prep.load_spec_task(spec)
    assert second is not first  # loaded again
    np.testing.assert_array_equal(second.x_train, first.x_train)
    np.testing.assert_array_equal(second.y_train, first.y_train)
