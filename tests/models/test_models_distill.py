"""Distillation recovery: the student moves toward the teacher, deterministically."""

from __future__ import annotations

import pytest
import torch

from paretoforge.exceptions import BuildError
from paretoforge.models.distill import distill
from paretoforge.models.surgery import PrunePlan, prune

PLAN = PrunePlan(layers=(1,), heads=((0, 3),), neurons=(tuple(range(16)),))


def _kl(teacher, student, x) -> float:
    with torch.no_grad():
        t = torch.log_softmax(teacher.eval()(x).logits, -1)
        s = torch.log_softmax(student.eval()(x).logits, -1)
    return float(torch.nn.functional.kl_div(s, t, log_target=True, reduction="batchmean"))


@pytest.fixture
def data(digits):
    return digits.x_train[:256], digits.y_train[:256]


def test_student_gets_closer_to_the_teacher(tiny_model, data):
    x = torch.as_tensor(data[0])
    student = prune(tiny_model, PLAN)
    before = _kl(tiny_model, student, x)
    out = distill(student, tiny_model, *data, epochs=4, lr=3e-3, alpha=1.0, batch_size=32)
    assert out is student and not student.training
    after = _kl(tiny_model, student, x)
    assert after < 0.5 * before, (before, after)
    assert not tiny_model.training


def test_teacher_is_not_modified(tiny_model, data):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    distill(prune(tiny_model, PLAN), tiny_model, *data, epochs=1, lr=1e-3, hidden_weight=1.0)
    for k, v in tiny_model.state_dict().items():
        torch.testing.assert_close(v, before[k], atol=0, rtol=0)


def test_same_seed_same_student(tiny_model, data):
    def run(seed):
        s = distill(prune(tiny_model, PLAN), tiny_model, *data, epochs=1, lr=1e-3, seed=seed)
        return torch.cat([p.detach().flatten() for p in s.parameters()])

    a, b, c = run(0), run(0), run(1)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert not torch.equal(a, c)


def test_zero_epochs_returns_the_student_unchanged(tiny_model, data):
    student = prune(tiny_model, PLAN)
    before = [p.clone() for p in student.parameters()]
    distill(student.train(), tiny_model, *data, epochs=0, lr=1e-3)
    assert not student.training
    assert all(torch.equal(p, q) for p, q in zip(student.parameters(), before, strict=True))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"alpha": 1.5}, "alpha=1.5"),
        ({"temperature": 0.0}, "temperature=0.0"),
        ({"lr": 0.0}, "lr=0.0"),
        ({"epochs": -1}, "epochs=-1"),
        ({"batch_size": 0}, "batch_size=0"),
    ],
)
def test_bad_hyperparameters_raise(tiny_model, data, kwargs, match):
    args = {"epochs": 1, "lr": 1e-3, **kwargs}
    with pytest.raises(BuildError, match=match):
        distill(prune(tiny_model, PLAN), tiny_model, *data, **args)
