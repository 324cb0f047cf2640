"""Search spaces: dimensions and presets, and the CandidateConfig a trial turns into.

A preset is data (a name, a description, each dimension's choices); a spec may replace a
dimension's choices, or declare every dimension itself without a preset (``preset: null``).
A preset may mark dimensions as ``fit_to_model``: choices the base model cannot have (more
layers or heads than it owns) are dropped and its own count is added, so one generic preset
(``encoder-prune``) fits any encoder checkpoint. It may mark ``heads_kept`` and ``ffn_kept``
as ``per_layer``: each kept layer then has its own count (``vit-per-layer``,
``encoder-per-layer``). ``SearchSpace.suggest(trial)`` asks Optuna for one value per
parameter and returns a canonical, hashable :class:`CandidateConfig`.

A dimension of your own is a :class:`Dimension` (name, choices, default, the pipeline stage
it acts at, and the function that acts) registered with :func:`register_dimension` from a
module the spec names under ``space.modules``.

Example:
    >>> import optuna
    >>> space = SearchSpace.from_preset("vit-prune")
    >>> study = optuna.create_study(directions=["maximize", "minimize"])
    >>> cfg = space.suggest(study.ask())
    >>> len(cfg.key)
    16
"""

from __future__ import annotations

from paretoforge.search_spaces._config import (
    _OPTIONAL_DIMENSIONS,
    INT4_ACCURACY_LEVELS,
    CandidateConfig,
)
from paretoforge.search_spaces._dimensions import (
    DIMENSIONS,
    STAGES,
    Dimension,
    load_dimension_modules,
    register_dimension,
)
from paretoforge.search_spaces._space import (
    PER_LAYER_DIMENSIONS,
    SPACES,
    SearchSpace,
    SpacePreset,
)

__all__ = ["DIMENSIONS", "INT4_ACCURACY_LEVELS", "PER_LAYER_DIMENSIONS", "SPACES", "STAGES",
           "CandidateConfig",
           "Dimension", "SearchSpace", "SpacePreset", "_OPTIONAL_DIMENSIONS",
           "load_dimension_modules", "register_dimension"]
