"""The supernet: rewiring keeps the function, a masked sub-network is its cut, training works."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from paretoforge.exceptions import BuildError
from paretoforge.models.adapters import ADAPTERS, adapter_for
from paretoforge.models.importance import Importance
from paretoforge.models.supernet import (
    SubnetSpace,
    Supernet,
    SupernetOptions,
    SupernetTrainer,
    data_fingerprint,
    masked,
    rewire,
    supernet_key,
)
from paretoforge.models.surgery import PrunePlan, identity_plan, plan_from_importance, prune

# family -> architecture built from the adapter's tiny config (3 layers here, so one can go)
FAMILIES = {
    "bert": "BertForSequenceClassification",
    "bert-encoder": "BertModel",  # MiniLM-style bare encoder: compare every token's state
    "distilbert": "DistilBertForSequenceClassification",
    "roberta": "RobertaForSequenceClassification",
    "vit": "ViTForImageClassification",
    "deit": "DeiTForImageClassification",
}


def _model(family: str) -> torch.nn.Module:
    model_type = family.split("-")[0]
    adapter = ADAPTERS.get(model_type)
    config = adapter.tiny_config()
    config.num_hidden_layers = 3
    config.initializer_range = 0.3  # large weights: a wrong mask moves outputs far above 1e-5
    if hasattr(config, "hidden_dropout_prob"):
        config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return adapter.build(config, FAMILIES[family]).eval()


def _inputs(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    if adapter_for(model).input_names == ("pixel_values",):
        return {"pixel_values": torch.rand(3, 1, 8, 8, generator=g)}
    ids = torch.randint(3, 99, (3, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    mask[2, 3:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _out(model: torch.nn.Module, x: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        out = model(**x)
    logits = getattr(out, "logits", None)
    return logits if logits is not None else out.last_hidden_state


def _random_importance(model: torch.nn.Module, seed: int = 0) -> Importance:
    adapter = adapter_for(model)
    hd = adapter.head_dim(model)
    layers = adapter.layers(model)
    rng = np.random.default_rng(seed)
    return Importance(
        heads=rng.random((len(layers), max(adapter.num_heads(la, hd) for la in layers))),
        neurons=[rng.random(adapter.ffn_width(la)) for la in layers],
        layers=rng.random(len(layers)),
    )


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


@pytest.mark.parametrize("family", FAMILIES)
def test_rewire_keeps_the_function_and_orders_scores(family):
    model = _model(family)
    imp = _random_importance(model)
    x = _out(model, _inputs(model))
    sn, sn_imp = rewire(model, imp)
    assert sn is not model
    assert _max_diff(_out(sn, _inputs(model)), x) <= 1e-5
    assert _max_diff(_out(model, _inputs(model)), x) == 0  # the original is untouched
    for i in range(3):
        assert np.all(np.diff(sn_imp.head_scores(i)) <= 0)
        assert np.all(np.diff(sn_imp.neurons[i]) <= 0)
        assert sorted(sn_imp.head_scores(i)) == sorted(imp.head_scores(i))
    np.testing.assert_array_equal(sn_imp.layers, imp.layers)
    plan = plan_from_importance(sn_imp, layers_kept=2, heads_kept=3, ffn_kept=0.5)
    assert all(h == (0, 1, 2) for h in plan.heads)
    assert all(n == tuple(range(32)) for n in plan.neurons)
    # The top-k of the original scores, cut from the original, is the prefix cut of the rewired.
    orig = plan_from_importance(imp, layers_kept=2, heads_kept=3, ffn_kept=0.5)
    assert orig.layers == plan.layers
    assert _max_diff(_out(prune(model, orig), _inputs(model)),
                     _out(prune(sn, plan), _inputs(model))) <= 1e-5  # fmt: skip


def _plans(space: SubnetSpace) -> list[PrunePlan]:
    """Per-layer-different heads and FFN widths, dropped layers, and a non-prefix plan."""
    return [
        space.plan(2, heads=[1, 3, 2], ffn=[0.25, 1.0, 0.5]),
        space.plan(1, heads=2, ffn=0.75),
        space.plan(3, heads=[4, 1, 3], ffn=[1.0, 0.25, 0.5]),
        PrunePlan(layers=(0, 2), heads=((1, 3), (0, 2, 3)), neurons=((5, 9, 40), (0, 63))),
    ]


@pytest.mark.parametrize("skip_dropped", [False, True])
@pytest.mark.parametrize("family", FAMILIES)
def test_cut_equals_masked(family, skip_dropped):
    sn, sn_imp = rewire(_model(family), _random_importance(_model(family)))
    x = _inputs(sn)
    full = _out(sn, x)
    for plan in _plans(SubnetSpace(sn_imp)):
        cut = _out(prune(sn, plan), x)
        with masked(sn, plan, skip_dropped=skip_dropped):
            sub = _out(sn, x)
        assert _max_diff(sub, cut) <= 1e-5, plan
        assert _max_diff(sub, full) > 1e-3  # the sub-network is a different function
    assert _max_diff(_out(sn, x), full) == 0  # hooks and layers are back as they were
    assert len(adapter_for(sn).layers(sn)) == 3


@pytest.mark.parametrize("family", ["bert", "vit"])
def test_a_wrong_mask_is_caught(family):
    """One head or one neuron off, or a dropped layer kept, is far above the 1e-5 bound."""
    sn, sn_imp = rewire(_model(family), _random_importance(_model(family)))
    x = _inputs(sn)
    plan = PrunePlan(layers=(0, 2), heads=((0, 1), (0, 1, 2)), neurons=((0, 1, 2, 3),) * 2)
    cut = _out(prune(sn, plan), x)
    wrong = [
        PrunePlan(layers=(0, 2), heads=((0, 2), (0, 1, 2)), neurons=plan.neurons),
        PrunePlan(layers=(0, 2), heads=plan.heads, neurons=((0, 1, 2, 4), (0, 1, 2, 3))),
        PrunePlan(layers=(0, 1, 2), heads=(*plan.heads[:1], (0, 1, 2, 3), plan.heads[1]),
                  neurons=(plan.neurons[0], tuple(range(64)), plan.neurons[1])),
    ]
    for other in wrong:
        with masked(sn, other):
            assert _max_diff(_out(sn, x), cut) > 1e-4, other


def test_masked_checks_the_plan():
    sn = _model("vit")
    with pytest.raises(BuildError, match="layers"):
        with masked(sn, PrunePlan(layers=(5,), heads=((0,),), neurons=((0,),))):
            pass


def test_space_plans_are_prefixes_by_rank():
    imp = Importance(np.ones((4, 4)), [np.linspace(1, 0, 8)] * 4, np.array([0.1, 0.9, 0.5, 0.7]))
    space = SubnetSpace(imp, layers_kept=(2, 3, 4), heads=(1, 2, 4), ffn=(0.25, 1.0))
    assert space.layer_ranking == (1, 3, 2, 0)
    assert space.largest() == PrunePlan(layers=(0, 1, 2, 3), heads=((0, 1, 2, 3),) * 4,
                                        neurons=(tuple(range(8)),) * 4)  # fmt: skip
    assert space.smallest() == PrunePlan(layers=(1, 3), heads=((0,),) * 2, neurons=((0, 1),) * 2)
    per_layer = space.plan(3, heads=[4, 1, 2, 4], ffn=[1.0, 0.25, 1.0, 0.25])
    assert per_layer.layers == (1, 2, 3)
    assert per_layer.heads == ((0,), (0, 1), (0, 1, 2, 3))
    assert [len(n) for n in per_layer.neurons] == [2, 8, 2]
    a = [space.sample(np.random.default_rng(3)) for _ in range(2)]
    assert a[0] == a[1]  # the same generator state, the same sub-network
    rng = np.random.default_rng(0)
    drawn = {space.sample(rng) for _ in range(50)}
    assert len(drawn) > 20 and {len(p.layers) for p in drawn} == {2, 3, 4}
    assert any(len(set(map(len, p.heads))) > 1 for p in drawn)  # heads differ layer to layer
    assert space.size() == 6**2 + 6**3 + 6**4
    assert SubnetSpace.from_dict(space.to_dict(), imp).to_dict() == space.to_dict()


@pytest.mark.parametrize("kwargs, match", [
    ({"heads": (2, 1)}, "ascending"),
    ({"heads": (0, 2)}, "heads"),
    ({"ffn": (0.5, 1.5)}, "ffn"),
    ({"layers_kept": (9,)}, "layers_kept"),
])  # fmt: skip
def test_bad_space_choices_raise(kwargs, match):
    imp = Importance(np.ones((4, 4)), [np.ones(8)] * 4, np.ones(4))
    with pytest.raises(BuildError, match=match):
        SubnetSpace(imp, **kwargs)


def test_bad_options_raise():
    with pytest.raises(BuildError, match="alpha"):
        SupernetOptions(alpha=2.0)
    with pytest.raises(BuildError, match="n_random"):
        SupernetOptions(n_random=-1)
    with pytest.raises(BuildError, match="bogus"):
        SupernetOptions.from_dict({"bogus": 1})


# -- training -----------------------------------------------------------------------------


@pytest.fixture
def vit_supernet(tiny_model, digits):
    """A rewired tiny ViT (2 layers), its teacher, space and 256 digits."""
    from paretoforge.models.importance import compute_importance

    x, y = digits.x_train[:256], digits.y_train[:256]
    imp = compute_importance(tiny_model, x, y)
    sn, sn_imp = rewire(tiny_model, imp)
    space = SubnetSpace(sn_imp, layers_kept=(1, 2), heads=(1, 2, 4), ffn=(0.25, 1.0))
    return sn, tiny_model, space, x, y


def _kl(teacher, student, x) -> float:
    with torch.no_grad():
        t = torch.log_softmax(teacher.eval()(x).logits, -1)
        s = torch.log_softmax(student.eval()(x).logits, -1)
    return float(torch.nn.functional.kl_div(s, t, log_target=True, reduction="batchmean"))


def _flat(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_sandwich_training_brings_the_smallest_closer_to_the_teacher(vit_supernet):
    sn, teacher, space, x, y = vit_supernet
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    xt = torch.as_tensor(x)
    kl0 = _kl(teacher, prune(sn, space.smallest()), xt)
    trainer = SupernetTrainer(sn, teacher, space, x, y, options=SupernetOptions(
        epochs=3, lr=3e-3, alpha=1.0, batch_size=32, hidden_weight=0.5))
    history = [trainer.train_epoch(e) for e in range(3)]
    assert history[-1]["loss_smallest"] < history[0]["loss_smallest"]
    assert history[0]["steps"] == 8 and trainer.epochs_done == 3
    assert _kl(teacher, prune(sn, space.smallest()), xt) < 0.5 * kl0
    for k, v in teacher.state_dict().items():  # the teacher is frozen
        torch.testing.assert_close(v, before[k], atol=0, rtol=0)


def test_resumed_training_equals_uninterrupted(vit_supernet, tmp_path):
    sn, teacher, space, x, y = vit_supernet
    opts = SupernetOptions(epochs=2, batch_size=64, n_random=1, seed=5)
    a = rewire(sn, space.importance)[0]  # two copies of the same supernet
    b = rewire(sn, space.importance)[0]
    straight = SupernetTrainer(a, teacher, space, x, y, options=opts)
    straight.train_epoch(0)
    straight.train_epoch(1)

    first = SupernetTrainer(b, teacher, space, x, y, options=opts)
    first.train_epoch(0)
    Supernet(b, space.importance, space, epochs_done=1).save(tmp_path)
    first.save_state(tmp_path)
    loaded = Supernet.load(tmp_path)
    assert loaded.epochs_done == 1 and loaded.space.to_dict() == space.to_dict()
    resumed = SupernetTrainer(loaded.model, teacher, loaded.space, x, y, options=opts)
    resumed.load_state(tmp_path)
    assert resumed.epochs_done == 1 and resumed.step == first.step
    resumed.train_epoch(1)
    torch.testing.assert_close(_flat(loaded.model), _flat(a), atol=0, rtol=0)

    other = SupernetTrainer(rewire(sn, space.importance)[0], teacher, space, x, y,
                            options=dataclass_replace(opts, seed=6))
    other.train_epoch(0)
    assert not torch.equal(_flat(other.model), _flat(first.model))


def dataclass_replace(obj, **kw):
    import dataclasses

    return dataclasses.replace(obj, **kw)


def test_text_supernet_trains_with_pooled_loss():
    """A bare encoder (no logits) learns from the pooled cosine and hidden states."""
    from paretoforge.tasks.embedding import Pooling

    teacher = _model("bert-encoder")
    sn, sn_imp = rewire(teacher, _random_importance(teacher))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 99, (48, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[::3, 6:] = 0
    trainer = SupernetTrainer(sn, teacher, SubnetSpace(sn_imp), {"input_ids": ids,
                              "attention_mask": mask}, None, options=SupernetOptions(
                              epochs=2, batch_size=16, hidden_weight=0.1),
                              pooling=Pooling(), pooled_weight=1.0)  # fmt: skip
    h = [trainer.train_epoch(e) for e in range(2)]
    assert all(np.isfinite(v) for r in h for k, v in r.items() if k.startswith("loss"))
    with pytest.raises(BuildError, match="nothing|no logits"):
        SupernetTrainer(sn, teacher, SubnetSpace(sn_imp), {"input_ids": ids}, None,
                        options=SupernetOptions())


def test_saved_supernet_round_trips(vit_supernet, tmp_path):
    sn, _, space, x, _ = vit_supernet
    saved = Supernet(sn, space.importance, space, key="k" * 16, epochs_done=2,
                     options=SupernetOptions().to_dict(), history=[{"epoch": 0}])
    saved.save(tmp_path)
    loaded = Supernet.load(tmp_path)
    assert loaded.key == "k" * 16 and loaded.history == [{"epoch": 0}]
    xt = torch.as_tensor(x[:8])
    plan = space.smallest()
    torch.testing.assert_close(loaded.cut(plan)(xt).logits, saved.cut(plan)(xt).logits,
                               atol=0, rtol=0)  # fmt: skip
    assert loaded.cut(identity_plan(sn)) is not loaded.model
    (tmp_path / "supernet.json").write_text("{")
    with pytest.raises(BuildError, match="supernet.json"):
        Supernet.load(tmp_path)


def test_key_and_fingerprint_change_with_their_inputs():
    x = np.zeros((4, 2), np.float32)
    f = data_fingerprint(x, np.arange(4))
    assert f == data_fingerprint(x.copy(), np.arange(4))
    assert f != data_fingerprint(x, np.arange(1, 5))
    assert f != data_fingerprint({"input_ids": x}, np.arange(4))
    k = supernet_key("base", f, {"epochs": 2})
    assert len(k) == 16 and int(k, 16) >= 0
    assert k != supernet_key("base2", f, {"epochs": 2})
    assert k != supernet_key("base", f, {"epochs": 3})
