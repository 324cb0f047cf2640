"""The sampler registry: every registered sampler is checked, without a test naming it."""

from __future__ import annotations

import pytest

from paretoforge.exceptions import UnknownComponentError
from paretoforge.samplers import SAMPLERS, make_sampler
from paretoforge.spec import SearchConfig


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_every_registered_sampler_is_a_seeded_optuna_sampler(name: str) -> None:
    import optuna

    search = SearchConfig(sampler=name, seed=3, trials=6, population_size=4)
    sampler = make_sampler(search)
    assert isinstance(sampler, optuna.samplers.BaseSampler)

    def first_params(s: optuna.samplers.BaseSampler) -> list[dict]:
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=s)
        out = []
        for _ in range(3):
            t = study.ask()
            out.append({"x": t.suggest_int("x", 0, 9), "y": t.suggest_categorical("y", [0, 1])})
            study.tell(t, [t.params["x"], t.params["y"]])
        return out

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    assert first_params(sampler) == first_params(make_sampler(search))  # same seed, same run


def test_the_spec_accepts_the_registered_names_only() -> None:
    assert SearchConfig().sampler in SAMPLERS
    with pytest.raises(ValueError, match="Unknown sampler 'tpee'.*Did you mean 'tpe'"):
        SearchConfig(sampler="tpee")
    fields = SearchConfig.model_fields["sampler"]
    assert all(n in (fields.description or "") for n in SAMPLERS.names())


def test_make_sampler_of_an_unregistered_name_raises() -> None:
    class Settings:
        sampler, seed, trials, population_size = "cmaes", 0, 4, 4

    with pytest.raises(UnknownComponentError, match="Available: " + ", ".join(SAMPLERS.names())):
        make_sampler(Settings())
