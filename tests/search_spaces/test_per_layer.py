"""Per-layer configs: canonical (equal entries collapse), validated, searched one parameter
per layer position, deterministically; presets' sizes count the distinct configs."""

from __future__ import annotations

import itertools

import optuna
import pydantic
import pytest

from paretoforge.exceptions import SpecError
from paretoforge.search_spaces import CandidateConfig, SearchSpace
from paretoforge.spec import Spec
from paretoforge.testing import tiny_spec_dict

KW = {"layers_kept": 1, "heads_kept": 1, "ffn_kept": 0.5, "precision": "fp32"}
OLD_KEY = "674c21b8a85dc102"  # the key of KW before per-layer configs and custom dimensions


def test_a_uniform_tuple_is_the_scalar_config_with_the_old_key() -> None:
    assert CandidateConfig(**KW).key == OLD_KEY
    assert CandidateConfig(**{**KW, "heads_kept": (1,), "ffn_kept": [0.5]}).key == OLD_KEY
    a = CandidateConfig(layers_kept=3, heads_kept=(2, 2, 2), ffn_kept=(1, 1, 1), precision="int8")
    b = CandidateConfig(layers_kept=3, heads_kept=2, ffn_kept=1.0, precision="int8")
    assert a == b and hash(a) == hash(b) and a.key == b.key
    assert a.heads_kept == 2 and a.ffn_kept == 1.0 and isinstance(a.ffn_kept, float)
    assert "custom" not in a.model_dump() and a.canonical_json() == b.canonical_json()


def test_per_layer_configs_are_distinct_hashable_and_round_trip() -> None:
    a = CandidateConfig(layers_kept=2, heads_kept=(1, 2), ffn_kept=(0.5, 1.0), precision="fp32")
    b = CandidateConfig(layers_kept=2, heads_kept=(2, 1), ffn_kept=(0.5, 1.0), precision="fp32")
    assert a.key != b.key and len({a, b}) == 2
    assert a.heads_per_layer() == (1, 2) and b.ffn_per_layer() == (0.5, 1.0)
    assert CandidateConfig.model_validate_json(a.model_dump_json()) == a
    assert CandidateConfig.model_validate(a.model_dump(mode="json")).key == a.key
    assert not a.is_unpruned(2, 2)
    assert CandidateConfig(layers_kept=2, heads_kept=(2, 2), ffn_kept=(1.0, 1.0),
                           precision="fp32").is_unpruned(2, 2)


@pytest.mark.parametrize(("kw", "match"), [
    ({"layers_kept": 3, "heads_kept": (1, 2)}, "2 entries for layers_kept=3"),
    ({"layers_kept": 2, "ffn_kept": (0.5, 1.5)}, "less than or equal to 1"),
    ({"layers_kept": 2, "heads_kept": (0, 2)}, "greater than or equal to 1"),
])
def test_bad_per_layer_configs(kw: dict, match: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=match):
        CandidateConfig(**{**KW, **kw})


def _space(**kw) -> SearchSpace:
    dims = {"layers_kept": (1, 2, 3), "heads_kept": (1, 2), "ffn_kept": (0.5, 1.0),
            "precision": ("fp32", "int8")}
    return SearchSpace(dims, per_layer=("heads_kept", "ffn_kept"), **kw)


def test_suggest_asks_a_fixed_set_of_parameters_and_is_deterministic() -> None:
    space = _space()
    names = list(space.param_choices())
    assert names == ["layers_kept", "heads_kept_0", "heads_kept_1", "heads_kept_2",
                     "ffn_kept_0", "ffn_kept_1", "ffn_kept_2", "precision"]

    def keys(seed: int) -> list[str]:
        study = optuna.create_study(directions=["maximize", "minimize"],
                                    sampler=optuna.samplers.TPESampler(seed=seed))
        out = []
        for _ in range(12):
            trial = study.ask()
            cfg = space.suggest(trial)
            assert list(trial.params) == names  # every trial: the same parameters
            assert len(cfg.heads_per_layer()) == cfg.layers_kept
            assert cfg.heads_per_layer() == tuple(
                trial.params[f"heads_kept_{i}"] for i in range(cfg.layers_kept))
            again = space.suggest(optuna.trial.FixedTrial(dict(trial.params)))
            assert again.key == cfg.key
            out.append(cfg.key)
            study.tell(trial, [float(cfg.layers_kept), float(sum(cfg.heads_per_layer()))])
        return out

    assert keys(3) == keys(3)
    assert len(set(keys(3))) > 1


def test_size_counts_distinct_configs() -> None:
    space = _space()
    params = space.param_choices()
    seen = {space.config_from_params(dict(zip(params, combo, strict=True))).key
            for combo in itertools.product(*params.values())}
    assert space.size() == len(seen) == 2 * sum(4 ** n for n in (1, 2, 3))
    uniform = SearchSpace(dict(space.dimensions))
    assert uniform.size() == 3 * 2 * 2 * 2


def test_presets_sizes_and_base_trial() -> None:
    vit = SearchSpace.from_preset("vit-per-layer")
    assert vit.per_layer == ("heads_kept", "ffn_kept")
    assert vit.size() == 2 * sum(16 ** n for n in range(1, 5))
    assert SearchSpace.from_preset("vit-prune").size() == 4 * 4 * 4 * 2
    enc = SearchSpace.from_preset("encoder-per-layer")
    enc.check_model(6, 12)  # MiniLM-L6: fitted as encoder-prune is
    assert enc.dimensions["layers_kept"] == (1, 2, 3, 4, 6)
    assert enc.size() == 3 * sum(24 ** n for n in (1, 2, 3, 4, 6))
    base = enc.base_params(6, 12)
    assert [base[f"heads_kept_{i}"] for i in range(6)] == [12] * 6
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.enqueue_trial(base)
    first = enc.suggest(study.ask())
    assert first.is_unpruned(6, 12) and first.precision == "fp32"
    assert first.key == CandidateConfig(layers_kept=6, heads_kept=12, ffn_kept=1.0,
                                        precision="fp32").key


def test_a_yaml_space_chooses_per_layer() -> None:
    d = tiny_spec_dict()
    d["space"]["per_layer"] = ["heads_kept"]
    space = Spec.from_dict(d).space.search_space()
    assert space.per_layer == ("heads_kept",)
    assert "heads_kept_1" in space.param_choices() and "ffn_kept_1" not in space.param_choices()
    d["space"] = {"preset": "vit-per-layer", "per_layer": []}
    assert Spec.from_dict(d).space.search_space().per_layer == ()
    d["space"] = {"preset": "vit-prune", "per_layer": ["precision"]}
    with pytest.raises(SpecError, match="space.per_layer: \\['precision'\\] cannot be chosen"):
        Spec.from_dict(d)
    d["space"] = {"preset": "vit-prune", "dimensions": {"heads_kept": [[1, 2]]}}
    with pytest.raises(SpecError, match="heads_kept"):
        Spec.from_dict(d)


def test_spaces_lists_per_layer_presets_with_their_sizes() -> None:
    from typer.testing import CliRunner

    from paretoforge.cli import app

    out = CliRunner().invoke(app, ["spaces"])
    assert out.exit_code == 0
    assert "vit-per-layer:" in out.output and "heads_kept: [1, 2, 3, 4] per layer" in out.output
    assert "size: 139,808 configurations" in out.output
    assert "size: 128 configurations" in out.output
