"""The one-shot strategy's bundle: the prepared base plus the supernet its candidates are cut from.

:func:`attach_supernet` trains (or finds in the cache) the weight-sharing supernet of the base
for the search space's choices (:func:`~paretoforge.pipeline.supernet.train_supernet`, on Ray
Train) and returns the :class:`~paretoforge.pipeline.prepare.Prepared` bundle with its weights
and rewired importance attached, which every worker receives through Ray's object store: the
build pipeline then cuts a pruned candidate from the supernet (real surgery, smaller dense
tensors) instead of distilling it from the base (:attr:`BuildContext.one_shot
<paretoforge.pipeline.stages.BuildContext.one_shot>`).

Example:
    >>> prepared = attach_supernet(prepare_cached(spec), spec)  # doctest: +SKIP
    >>> prepared.supernet["key"]  # doctest: +SKIP
    '3f0c2a9d1e7b4c55'
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from paretoforge.pipeline.prepare import Prepared

__all__ = ["attach_supernet", "supernet_options"]


def _fit(values: Any, limit: int) -> tuple[int, ...]:
    """The integer choices the model can have, with its own count."""
    return tuple(sorted({int(v) for v in values if int(v) <= limit} | {limit}))


def supernet_options(spec: Any, space: Any, num_layers: int, num_heads: int) -> Any:
    """The :class:`~paretoforge.models.supernet.SupernetOptions` of ``spec.one_shot`` for the
    choices of ``space``: the supernet trains the sub-networks the search can pick."""
    from paretoforge.models.supernet import SupernetOptions

    o, r = spec.one_shot, spec.recovery
    dims = space.dimensions
    return SupernetOptions(
        epochs=o.supernet_epochs, lr=o.lr, batch_size=o.batch_size, n_random=o.random_subnets,
        temperature=r.temperature, alpha=r.alpha, hidden_weight=r.hidden_weight,
        pooled_weight=r.pooled_weight, seed=spec.search.seed,
        layers_kept=_fit(dims.get("layers_kept", (num_layers,)), num_layers),
        heads=_fit(dims.get("heads_kept", (num_heads,)), num_heads),
        ffn=tuple(sorted({float(v) for v in dims.get("ffn_kept", (1.0,))} | {1.0})),
    )


def attach_supernet(prepared: Prepared, spec: Any, *, space: Any | None = None,
                    log: Any = print) -> Prepared:
    """``prepared`` with the trained supernet of its base attached (see the module doc).

    Args:
        prepared: The driver's bundle.
        spec: The search spec (``one_shot``, ``recovery``, ``search.seed``, ``cluster``).
        space: The search space (default: the spec's).
        log: Where progress lines go.
    """
    from safetensors.torch import save as st_save

    from paretoforge.models.supernet import Supernet
    from paretoforge.pipeline.supernet import train_supernet
    from paretoforge.search_spaces import SearchSpace

    if space is None:
        space = SearchSpace.from_preset(spec.space.preset, spec.space.dimensions)
    options = supernet_options(spec, space, prepared.num_layers, prepared.num_heads)
    workers = spec.one_shot.trainers(spec.cluster.workers)
    t0 = time.perf_counter()
    path = train_supernet(prepared.for_workers(), options, workers=workers,
                          cpus_per_worker=max(1, int(spec.cluster.cpus_per_worker)), log=log)
    sn = Supernet.load(path)
    seconds = time.perf_counter() - t0
    state = {k: v.detach().contiguous() for k, v in sn.model.state_dict().items()}
    where = (f"on {workers} Ray Train worker(s)" if workers else
             "in this process (Ray Train's local mode)")
    log(f"supernet {sn.key}: {sn.epochs_done} epoch(s) {where}, ready in {seconds:.1f}s; "
        f"{sn.space.size():,} sub-networks")
    timings = dict(prepared.timings, supernet_s=seconds)
    return dataclasses.replace(prepared, timings=timings, supernet={
        "key": sn.key, "weights": st_save(state), "importance": sn.importance.to_dict(),
        "epochs": sn.epochs_done, "options": options.to_dict(), "path": str(path),
        "seconds": seconds,
    })
