"""Model surgery: family adapters, importance scores, pruning, distillation, checkpoints.

Importing this package is cheap; torch and transformers load on first use of a name.

Example:
    >>> from paretoforge.models import compute_importance, plan_from_importance, prune
    >>> imp = compute_importance(model, task.x_train, task.y_train)  # doctest: +SKIP
    >>> plan = plan_from_importance(imp, layers_kept=3, heads_kept=2, ffn_kept=0.5)
    ... # doctest: +SKIP
    >>> small = prune(model, plan)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from paretoforge.models.adapters import (
        ADAPTERS,
        BertAdapter,
        DeiTAdapter,
        DistilBertAdapter,
        FamilyAdapter,
        GPT2Adapter,
        RobertaAdapter,
        ViTAdapter,
        adapter_for,
    )
    from paretoforge.models.distill import default_layer_map, distill
    from paretoforge.models.importance import Importance, compute_importance
    from paretoforge.models.io import load_pretrained, save_pretrained
    from paretoforge.models.surgery import (
        PrunePlan,
        identity_plan,
        plan_from_importance,
        prune,
    )
    from paretoforge.models.vit import (
        DEFAULT_DIGITS_RECIPE,
        ViTRecipe,
        build_vit,
        get_base_model,
        train_base,
    )

# name -> submodule that defines it
_EXPORTS = {
    "ADAPTERS": "adapters",
    "BertAdapter": "adapters",
    "DeiTAdapter": "adapters",
    "DistilBertAdapter": "adapters",
    "FamilyAdapter": "adapters",
    "GPT2Adapter": "adapters",
    "RobertaAdapter": "adapters",
    "ViTAdapter": "adapters",
    "adapter_for": "adapters",
    "Importance": "importance",
    "compute_importance": "importance",
    "PrunePlan": "surgery",
    "identity_plan": "surgery",
    "plan_from_importance": "surgery",
    "prune": "surgery",
    "distill": "distill",
    "default_layer_map": "distill",
    "load_pretrained": "io",
    "save_pretrained": "io",
    "DEFAULT_DIGITS_RECIPE": "vit",
    "ViTRecipe": "vit",
    "build_vit": "vit",
    "get_base_model": "vit",
    "train_base": "vit",
}

__all__ = [
    "ADAPTERS",
    "DEFAULT_DIGITS_RECIPE",
    "BertAdapter",
    "DeiTAdapter",
    "DistilBertAdapter",
    "FamilyAdapter",
    "GPT2Adapter",
    "Importance",
    "PrunePlan",
    "RobertaAdapter",
    "ViTAdapter",
    "ViTRecipe",
    "adapter_for",
    "build_vit",
    "compute_importance",
    "default_layer_map",
    "distill",
    "get_base_model",
    "identity_plan",
    "load_pretrained",
    "plan_from_importance",
    "prune",
    "save_pretrained",
    "train_base",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'paretoforge.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"paretoforge.models.{module}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
