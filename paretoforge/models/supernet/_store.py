"""A trained supernet on disk (safetensors + JSON sidecar) and its content key."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from paretoforge._io import atomic_write_json
from paretoforge.exceptions import BuildError
from paretoforge.models.importance import Importance
from paretoforge.models.supernet._space import SubnetSpace
from paretoforge.models.surgery import PrunePlan, prune

__all__ = ["SIDECAR_NAME", "Supernet", "data_fingerprint", "supernet_key"]

#: The JSON sidecar of a saved supernet (next to ``model.safetensors`` and ``config.json``).
SIDECAR_NAME = "supernet.json"
_FORMAT = 1


# -- the trained supernet, on disk --------------------------------------------------------


def supernet_key(base_key: str, data_fingerprint: str, recipe: dict[str, Any]) -> str:
    """Content key of a supernet: sha256[:16] of its base weights' key, its training data's
    fingerprint (:func:`data_fingerprint`) and its recipe (options, losses), canonical JSON.

    Example:
        >>> supernet_key("b4se", "d4ta", {"epochs": 2}) == supernet_key("b4se", "d4ta",
        ...                                                             {"epochs": 2})
        True
        >>> len(supernet_key("b4se", "d4ta", {"epochs": 2}))
        16
    """
    blob = json.dumps({"base": base_key, "data": data_fingerprint, "recipe": recipe},
                      sort_keys=True, separators=(",", ":"), default=str)  # fmt: skip
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def data_fingerprint(x: Any, y: Any = None) -> str:
    """sha256[:16] of training data: each input's name, dtype, shape and bytes, and labels.

    Example:
        >>> data_fingerprint(np.zeros((2, 3))) == data_fingerprint(np.zeros((2, 3)))
        True
        >>> data_fingerprint(np.zeros((2, 3))) == data_fingerprint(np.ones((2, 3)))
        False
    """
    h = hashlib.sha256()
    named = {str(k): x[k] for k in x.keys()} if hasattr(x, "keys") else {"": x}
    if y is not None:
        named["\0labels"] = y
    for name in sorted(named):
        a = np.ascontiguousarray(torch.as_tensor(named[name]).cpu().numpy())
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


@dataclass
class Supernet:
    """A (trained) supernet: rewired weights, the importance they are ordered by, the space.

    Attributes:
        model: The rewired model (shared weights of every sub-network).
        importance: Its rewired importance (heads and neurons in descending order).
        space: The sub-networks it was trained for.
        key: Content key (:func:`supernet_key`), or "".
        epochs_done: Epochs of sandwich training in these weights.
        options: The :class:`SupernetOptions` dict it was trained with, and any extra recipe.
        history: One dict per epoch trained (:meth:`SupernetTrainer.train_epoch`).

    Example:
        >>> sn = Supernet.load("~/.cache/paretoforge/supernets/3fa2c1d0e9b8a7f6")
        ... # doctest: +SKIP
        >>> candidate = sn.cut(sn.space.plan(3, heads=[2, 4, 4, 1], ffn=0.5))  # doctest: +SKIP
    """

    model: nn.Module
    importance: Importance
    space: SubnetSpace
    key: str = ""
    epochs_done: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    def cut(self, plan: PrunePlan) -> nn.Module:
        """The sub-network ``plan`` as a smaller dense model (real surgery, no masks)."""
        return prune(self.model, plan)

    def sidecar(self) -> dict[str, Any]:
        """The JSON sidecar: everything but the weights."""
        return {
            "format": _FORMAT,
            "key": self.key,
            "epochs_done": int(self.epochs_done),
            "options": self.options,
            "importance": self.importance.to_dict(),
            "layer_ranking": list(self.space.layer_ranking),
            "space": self.space.to_dict(),
            "history": self.history,
        }

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``model.safetensors``, ``config.json`` and ``supernet.json`` (last, so a
        directory with a sidecar is complete) into ``directory``; return it."""
        from paretoforge.models.io import save_pretrained

        directory = Path(directory)
        save_pretrained(self.model, directory)
        atomic_write_json(directory / SIDECAR_NAME, self.sidecar())
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Supernet:
        """Inverse of :meth:`save` (weights from safetensors only, nothing unpickled).

        Raises:
            BuildError: The directory holds no readable supernet.
        """
        from paretoforge.models.io import load_pretrained

        directory = Path(directory).expanduser()
        try:
            meta = json.loads((directory / SIDECAR_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BuildError(
                f"{str(directory)!r} holds no readable {SIDECAR_NAME} ({exc}); it is not a "
                "saved supernet."
            ) from exc
        if meta.get("format") != _FORMAT:
            raise BuildError(
                f"{str(directory / SIDECAR_NAME)!r} has format {meta.get('format')!r}, this "
                f"version reads {_FORMAT}; delete the directory to retrain."
            )
        imp = Importance.from_dict(meta["importance"])
        return cls(model=load_pretrained(directory), importance=imp,
                   space=SubnetSpace.from_dict(meta["space"], imp), key=meta["key"],
                   epochs_done=int(meta["epochs_done"]), options=meta["options"],
                   history=list(meta["history"]))  # fmt: skip
