"""The one registry of Optuna samplers a spec may name (``search.sampler``), and seed checks.

Each entry is a small factory ``(search) -> optuna sampler``, where ``search`` has the fields of
:class:`~paretoforge.spec.SearchConfig` the samplers read (``seed``, ``trials``,
``population_size``). The spec validates ``search.sampler`` against :data:`SAMPLERS`, the CLI
lists its names; adding a sampler is one registered factory here.

Constraints reach every sampler the same way: the driver records them on each trial with
``Trial.set_constraint`` (a value <= 0 is satisfied), and Optuna's samplers read them from there.

Example:
    >>> from paretoforge.spec import SearchConfig
    >>> SAMPLERS.names()
    ['gp', 'nsga2', 'nsga3', 'random', 'tpe']
    >>> type(make_sampler(SearchConfig(sampler="random"))).__name__
    'RandomSampler'
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Protocol

from paretoforge.exceptions import SpecError
from paretoforge.registry import Registry

__all__ = ["SAMPLERS", "SamplerSettings", "check_seed_configs", "make_sampler"]


class SamplerSettings(Protocol):
    """What a sampler factory reads (a :class:`~paretoforge.spec.SearchConfig` has it all)."""

    @property
    def sampler(self) -> str: ...
    @property
    def seed(self) -> int: ...
    @property
    def trials(self) -> int: ...
    @property
    def population_size(self) -> int: ...


SamplerFactory = Callable[[SamplerSettings], Any]
SAMPLERS: Registry[SamplerFactory] = Registry("sampler")


def _startup(s: SamplerSettings) -> int:
    """Random trials before a model-based sampler fits its model."""
    return min(10, max(2, s.trials // 3))


@SAMPLERS.register("gp")
def _gp(s: SamplerSettings) -> Any:
    """Gaussian process (the default: best hypervolume per evaluation in
    benchmarks/search_efficiency.py)."""
    import optuna

    return optuna.samplers.GPSampler(seed=s.seed, n_startup_trials=_startup(s))


@SAMPLERS.register("nsga2")
def _nsga2(s: SamplerSettings) -> Any:
    """NSGA-II, ``population_size`` per generation."""
    import optuna

    return optuna.samplers.NSGAIISampler(population_size=s.population_size, seed=s.seed)


@SAMPLERS.register("nsga3")
def _nsga3(s: SamplerSettings) -> Any:
    """NSGA-III (for three or more objectives), ``population_size`` per generation."""
    import optuna

    with warnings.catch_warnings():  # "experimental" since Optuna 3.2; chosen knowingly
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.NSGAIIISampler(population_size=s.population_size, seed=s.seed)


@SAMPLERS.register("tpe")
def _tpe(s: SamplerSettings) -> Any:
    """Tree-structured Parzen estimator, multivariate (the one-shot default).

    Multivariate: one split of the trials into good and bad per ask, not one per parameter --
    a per-layer space has a dozen parameters -- so an ask at 1,000 trials takes about a third
    of the independent estimator's time (benchmarks/ask_time.py), and the parameters of a
    layer are modelled together.
    """
    import optuna

    with warnings.catch_warnings():  # "experimental" since Optuna 2.x; chosen knowingly
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=_startup(s),
                                          multivariate=True, group=True)


@SAMPLERS.register("random")
def _random(s: SamplerSettings) -> Any:
    """Uniform random sampling."""
    import optuna

    return optuna.samplers.RandomSampler(seed=s.seed)


def make_sampler(search: SamplerSettings) -> Any:
    """An Optuna sampler for ``search.sampler``, seeded with ``search.seed``.

    Raises:
        UnknownComponentError: ``search.sampler`` is not registered in :data:`SAMPLERS`.
    """
    return SAMPLERS.get(search.sampler)(search)


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
