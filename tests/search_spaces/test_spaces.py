"""Search spaces: presets are data, configs are canonical, bad choices are clear errors."""

from __future__ import annotations

import optuna
import pytest

from paretoforge.exceptions import SpecError, UnknownComponentError
from paretoforge.search_spaces import SPACES, CandidateConfig, SearchSpace


def test_key_is_stable_and_canonical() -> None:
    a = CandidateConfig(layers_kept=2, heads_kept=3, ffn_kept=0.5, precision="int8")
    b = CandidateConfig(precision="int8", ffn_kept=0.5, heads_kept=3, layers_kept=2)
    c = CandidateConfig(layers_kept=2, heads_kept=3, ffn_kept=0.5, precision="fp32")
    assert a.key == b.key and a.key != c.key
    assert hash(a) == hash(b)


def test_suggest_stays_within_choices() -> None:
    space = SearchSpace.from_preset("vit-prune", {"layers_kept": [2, 4]})
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        t = study.ask()
        cfg = space.suggest(t)
        assert cfg.layers_kept in (2, 4)
        assert cfg.precision in ("fp32", "int8")
        study.tell(t, [0.0, 0.0])


def test_enqueued_base_is_asked_first() -> None:
    space = SearchSpace.from_preset("vit-prune")
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.enqueue_trial(space.base_params(4, 4))
    cfg = space.suggest(study.ask())
    assert cfg.is_unpruned(4, 4) and cfg.precision == "fp32"


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"layers": [1]}, "unknown dimension 'layers'"),
        ({"ffn_kept": [0.0, 1.0]}, "ffn_kept"),
        ({"precision": ["fp32", "int3"]}, "int3"),
        ({"heads_kept": []}, "at least one"),
        ({"heads_kept": [2, 2]}, "repeats"),
    ],
)
def test_bad_dimensions(overrides: dict, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        SearchSpace.from_preset("vit-prune", overrides)


def test_check_model_requires_base_and_bounds() -> None:
    space = SearchSpace.from_preset("vit-prune", {"layers_kept": [1, 2]})
    with pytest.raises(SpecError, match="base model's value 4"):
        space.check_model(4, 4)
    with pytest.raises(SpecError, match="exceed"):
        SearchSpace.from_preset("vit-prune").check_model(2, 4)


def test_unknown_preset() -> None:
    with pytest.raises(UnknownComponentError, match="vit-prune"):
        SPACES.get("vit-prun")


def test_a_space_declared_without_a_preset() -> None:
    dims = {"layers_kept": [1, 3], "heads_kept": [2, 4], "ffn_kept": [0.5, 1.0],
            "precision": ["fp32", "int8-static"]}
    space = SearchSpace.from_preset(None, dims)
    assert space.size() == 16 and space.dimensions["precision"] == ("fp32", "int8-static")
    space.check_model(3, 4)
    with pytest.raises(SpecError, match="must include the base model's value 2"):
        SearchSpace.from_preset(None, {**dims, "heads_kept": [1]}).check_model(3, 2)
    with pytest.raises(SpecError, match="missing \\['precision'\\]"):
        SearchSpace.from_preset(None, {k: v for k, v in dims.items() if k != "precision"})
    with pytest.raises(SpecError, match="must declare every dimension"):
        SearchSpace.from_preset(None, {})
    with pytest.raises(SpecError, match="bad choice 'int2'"):
        SearchSpace.from_preset(None, {**dims, "precision": ["fp32", "int2"]})


def test_encoder_prune_fits_the_checkpoint() -> None:
    space = SearchSpace.from_preset("encoder-prune")
    space.check_model(6, 12)  # MiniLM-L6: 6 layers, 12 heads
    assert space.dimensions["layers_kept"] == (1, 2, 3, 4, 6)
    assert space.dimensions["heads_kept"] == (2, 3, 4, 6, 8, 12)
    tiny = SearchSpace.from_preset("encoder-prune")
    tiny.check_model(2, 2)
    assert tiny.dimensions["layers_kept"] == (1, 2) and tiny.dimensions["heads_kept"] == (2,)
    # a choice the user gives explicitly is checked, not fitted
    with pytest.raises(SpecError, match="exceed the base model's 6"):
        SearchSpace.from_preset("encoder-prune", {"layers_kept": [3, 6, 12]}).check_model(6, 12)


def test_fusion_is_an_optional_dimension() -> None:
    kw = {"layers_kept": 1, "heads_kept": 1, "ffn_kept": 0.5, "precision": "fp32"}
    # keys of configs without fusion are those from before the dimension existed
    assert CandidateConfig(**kw).key == "674c21b8a85dc102"
    assert CandidateConfig(**kw, fusion=False).key == "674c21b8a85dc102"
    assert CandidateConfig(**kw, fusion=True).key != "674c21b8a85dc102"
    assert "fusion" not in SearchSpace.from_preset("vit-prune").dimensions
    space = SearchSpace.from_preset("vit-prune", {"fusion": [False, True]})
    assert space.dimensions["fusion"] == (False, True)
    assert space.base_params(4, 4)["fusion"] is False
    space.check_model(4, 4)
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(20):
        t = study.ask()
        seen.add(space.suggest(t).fusion)
        study.tell(t, [0.0, 0.0])
    assert seen == {False, True}
    declared = SearchSpace.from_preset(None, {**{k: [v] for k, v in kw.items()},
                                              "fusion": [True, False]})
    assert declared.size() == 2
    with pytest.raises(SpecError, match="must include the base model's value False"):
        SearchSpace.from_preset("vit-prune", {"fusion": [True]}).check_model(4, 4)


def test_int4_accuracy_level_is_a_searchable_dimension() -> None:
    from paretoforge.exceptions import SpecError

    dims = {"layers_kept": [1, 2], "heads_kept": [2], "ffn_kept": [1.0],
            "precision": ["fp32", "int4"], "int4_accuracy_level": [4, 0]}
    space = SearchSpace.from_preset(None, dims)
    assert space.param_choices()["int4_accuracy_level"] == (0, 4)
    assert space.size() == 2 * 2 * 2
    base = space.base_params(2, 2)
    assert space.config_from_params(base).key == CandidateConfig(
        layers_kept=2, heads_kept=2, ffn_kept=1.0, precision="fp32").key  # old keys kept
    a = space.config_from_params({**base, "precision": "int4", "int4_accuracy_level": 4})
    b = space.config_from_params({**base, "precision": "int4", "int4_accuracy_level": 0})
    assert a.int4_accuracy_level == 4 and a.key != b.key
    # a level changes nothing outside int4: one config, one key, one build
    c = space.config_from_params({**base, "int4_accuracy_level": 4})
    assert c.int4_accuracy_level == 0 and c.key == space.config_from_params(base).key
    with pytest.raises(SpecError, match=r"int4_accuracy_level: bad choice 5.*0, 1, 2, 3, 4"):
        SearchSpace.from_preset(None, {**dims, "int4_accuracy_level": [0, 5]})
    with pytest.raises(SpecError, match="has no 'int4'"):
        SearchSpace.from_preset(None, {**dims, "precision": ["fp32", "int8"]})
    # a preset takes it as an override
    assert SearchSpace.from_preset("decoder-prune", {"precision": ["fp32", "int4"],
                                                     "int4_accuracy_level": [0, 4]}).size()
