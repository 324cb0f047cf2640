"""The Optuna sampler a spec asks for, and the checks on user-given seed configs.

Constraints reach every sampler the same way: the driver records them on each trial with
``Trial.set_constraint`` (a value <= 0 is satisfied), and Optuna's samplers read them from there.

Example:
    >>> from paretoforge.spec import SearchConfig
    >>> type(make_sampler(SearchConfig(sampler="random"))).__name__
    'RandomSampler'
"""

from __future__ import annotations

import warnings
from typing import Any

from paretoforge.exceptions import SpecError
from paretoforge.spec import SAMPLERS, SearchConfig

__all__ = ["check_seed_configs", "make_sampler"]


def make_sampler(search: SearchConfig) -> Any:
    """An Optuna sampler for ``search.sampler``, seeded with ``search.seed``."""
    import optuna

    s = search
    startup = min(10, max(2, s.trials // 3))  # model-based samplers: random trials first
    if s.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=s.population_size, seed=s.seed)
    if s.sampler == "nsga3":
        with warnings.catch_warnings():  # "experimental" since Optuna 3.2; chosen knowingly
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.NSGAIIISampler(population_size=s.population_size,
                                                  seed=s.seed)
    if s.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=startup)
    if s.sampler == "gp":
        return optuna.samplers.GPSampler(seed=s.seed, n_startup_trials=startup)
    if s.sampler == "random":
        return optuna.samplers.RandomSampler(seed=s.seed)
    raise SpecError(f"search.sampler: unknown sampler {s.sampler!r}; use one of "
                    f"{', '.join(SAMPLERS)}")


def check_seed_configs(seeds: list[dict[str, Any]], dimensions: dict[str, tuple[Any, ...]]
                       ) -> None:
    """Raise SpecError unless every seed names known dimensions with one of their choices."""
    for i, seed in enumerate(seeds):
        where = f"search.seed_configs[{i}]"
        for name, value in seed.items():
            if name not in dimensions:
                raise SpecError(f"{where}: unknown dimension {name!r}; the dimensions are "
                                f"{sorted(dimensions)}")
            choices = dimensions[name]
            if value not in choices or type(value) is bool:
                raise SpecError(f"{where}.{name}: {value!r} is not one of its choices "
                                f"{list(choices)}; pick one of those or add it to "
                                f"space.dimensions.{name}")
