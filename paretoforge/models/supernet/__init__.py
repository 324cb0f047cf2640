"""One-shot NAS: a weight-sharing supernet of the base model, trained once, sliced per candidate.

The pieces, in the order a search uses them:

* :func:`rewire` (DynaBERT, Hou et al. 2020): each layer's attention heads and FFN neurons are
  reordered by importance, most important first, so that "keep the ``k`` most important"
  becomes "keep the first ``k``": every sub-network is a prefix slice of each layer.
* :class:`SubnetSpace`: the sub-networks a search may pick (how many layers, and per layer
  how many heads and which FFN fraction, as in HAT), as :class:`~paretoforge.models.surgery.
  PrunePlan` s in the supernet's indices.
* :func:`masked`: runs the full supernet as one of its sub-networks (hooks zero what the plan
  drops), which is how it trains; :func:`~paretoforge.models.surgery.prune` of the same plan
  cuts the same function as smaller dense tensors, which is how a candidate is built.
* :class:`SupernetTrainer`: the sandwich rule (Yu & Huang 2019; BigNAS): each step trains the
  largest, the smallest and ``n_random`` random sub-networks, gradients accumulated, each
  distilled in place from the frozen unpruned teacher, one epoch at a time, resumable.
* :class:`Supernet`: the trained weights with their rewired importance and space, saved as
  safetensors with a JSON sidecar, named by :func:`supernet_key`.

Example:
    >>> sn_model, sn_imp = rewire(base, importance)  # doctest: +SKIP
    >>> space = SubnetSpace(sn_imp, heads=(2, 4), ffn=(0.5, 1.0))  # doctest: +SKIP
    >>> trainer = SupernetTrainer(sn_model, base, space, x, y,  # doctest: +SKIP
    ...                           options=SupernetOptions(epochs=2))
    >>> for epoch in range(2):  # doctest: +SKIP
    ...     trainer.train_epoch(epoch)
    >>> small = prune(sn_model, space.smallest())  # doctest: +SKIP
"""

from __future__ import annotations

from paretoforge.models.supernet._rewire import masked, rewire
from paretoforge.models.supernet._space import SubnetSpace
from paretoforge.models.supernet._store import (
    SIDECAR_NAME,
    Supernet,
    data_fingerprint,
    supernet_key,
)
from paretoforge.models.supernet._train import (
    TRAINER_STATE_NAME,
    AllReduceMean,
    SupernetOptions,
    SupernetTrainer,
)

__all__ = [
    "SIDECAR_NAME",
    "TRAINER_STATE_NAME",
    "AllReduceMean",
    "SubnetSpace",
    "Supernet",
    "SupernetOptions",
    "SupernetTrainer",
    "data_fingerprint",
    "masked",
    "rewire",
    "supernet_key",
]
