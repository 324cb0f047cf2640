"""The tiny search spec that tests and benchmarks run: a 2-layer ViT (hidden 32) on digits.

Its base model trains in seconds on one core and is cached by content key, so every test and
benchmark that starts from it shares one base model per cache.

Example:
    >>> spec = tiny_spec({"trials": 4, "sampler": "random"})
    >>> spec.search.trials, spec.cluster.workers
    (4, 2)
"""

from __future__ import annotations

import copy
from typing import Any

from paretoforge.spec import Spec

__all__ = ["TINY_SPEC", "tiny_spec", "tiny_spec_dict"]

TINY_SPEC: dict[str, Any] = {
    "name": "tiny",
    "model": {"recipe": "vit-digits",
              "overrides": {"hidden_size": 32, "num_layers": 2, "num_heads": 2,
                            "intermediate_size": 64, "epochs": 3}},
    "task": {"name": "digits"},
    "space": {"preset": "vit-prune",
              "dimensions": {"layers_kept": [1, 2], "heads_kept": [1, 2],
                             "ffn_kept": [0.5, 1.0], "precision": ["fp32", "int8"]}},
    "recovery": {"epochs": 1},
    "objectives": [{"metric": "accuracy", "direction": "maximize"},
                   {"metric": "latency_p50_ms@cpu-1t", "direction": "minimize"}],
    "profiles": ["cpu-1t"],
    "search": {"trials": 6, "population_size": 4, "seed": 0, "strategy": "per-candidate",
               "retime_rounds": 2},
    "cluster": {"workers": 2},
}


def tiny_spec_dict(search: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    """A fresh copy of :data:`TINY_SPEC`, its ``search`` fields updated, top-level keys replaced.

    Args:
        search: Fields of the ``search`` section to change (the others stay).
        **top: Top-level sections or fields to replace whole (``constraints=[...]``, ...).
    """
    d = copy.deepcopy(TINY_SPEC)
    d["search"].update(search or {})
    d.update(copy.deepcopy(top))
    return d


def tiny_spec(search: dict[str, Any] | None = None, **top: Any) -> Spec:
    """The validated :class:`~paretoforge.spec.Spec` of :func:`tiny_spec_dict`."""
    return Spec.from_dict(tiny_spec_dict(search, **top))
