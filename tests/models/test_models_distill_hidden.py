"""Hidden-state distillation: per-layer mapping of kept layers to teacher layers, text inputs."""

from __future__ import annotations

import pytest
import torch
import transformers

from paretoforge.exceptions import BuildError
from paretoforge.models.distill import _masked_mse, default_layer_map, distill
from paretoforge.models.surgery import PrunePlan, prune

PLAN = PrunePlan(layers=(0, 2), heads=((0, 1), (2, 3)), neurons=(tuple(range(16)),) * 2)


@pytest.fixture(scope="module")
def encoder():
    """A tiny bare BERT encoder (no head: it has hidden states, not logits)."""
    torch.manual_seed(0)
    config = transformers.BertConfig(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
        vocab_size=99, max_position_embeddings=40, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, initializer_range=0.2, attn_implementation="eager",
    )  # fmt: skip
    return transformers.BertModel(config).eval()


@pytest.fixture(scope="module")
def texts():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 99, (96, 16), generator=g)
    lengths = torch.randint(4, 17, (96,), generator=g)
    mask = (torch.arange(16)[None] < lengths[:, None]).long()  # (N, T)
    return {"input_ids": ids.masked_fill(mask == 0, 0), "attention_mask": mask}


def _last_hidden_mse(student, teacher, x) -> float:
    with torch.no_grad():
        s = student.eval()(**x).last_hidden_state
        t = teacher.eval()(**x).last_hidden_state
    return float(_masked_mse(s, t, x["attention_mask"]))


def test_default_layer_map(encoder):
    assert default_layer_map(prune(encoder, PLAN), 3) == [0, 2]
    first_two = PrunePlan(layers=(0, 1), heads=((0,), (0,)), neurons=((0,), (0,)))
    # The last student layer always learns the teacher's last layer.
    assert default_layer_map(prune(encoder, first_two), 3) == [0, 2]
    assert default_layer_map(prune(encoder, PLAN), 6) == [0, 5]  # sources 0, 2 -> last is 5
    unrecorded = prune(encoder, first_two)
    del unrecorded.config.paretoforge_source_layers
    assert default_layer_map(unrecorded, 6) == [2, 5]  # spread uniformly


def test_hidden_state_distillation_moves_a_bare_encoder_to_its_teacher(encoder, texts):
    student = prune(encoder, PLAN)
    before = _last_hidden_mse(student, encoder, texts)
    distill(student, encoder, texts, epochs=6, lr=3e-3, batch_size=16, hidden_weight=1.0)
    after = _last_hidden_mse(student, encoder, texts)
    assert after < 0.7 * before, (before, after)


def test_bare_encoder_without_hidden_weight_has_nothing_to_learn(encoder, texts):
    with pytest.raises(BuildError, match="no logits"):
        distill(prune(encoder, PLAN), encoder, texts, epochs=1, lr=1e-3)


def test_bad_layer_map_raises(encoder, texts):
    with pytest.raises(BuildError, match="layer_map"):
        distill(prune(encoder, PLAN), encoder, texts, epochs=1, lr=1e-3, hidden_weight=1.0,
                layer_map=[0, 3])  # fmt: skip


def test_text_classifier_distils_with_labels(texts):
    torch.manual_seed(0)
    config = transformers.DistilBertConfig(
        dim=32, n_layers=2, n_heads=4, hidden_dim=64, vocab_size=99, max_position_embeddings=40,
        attn_implementation="eager",
    )  # fmt: skip
    teacher = transformers.DistilBertForSequenceClassification(config).eval()
    plan = PrunePlan(layers=(1,), heads=((0, 3),), neurons=(tuple(range(32)),))
    y = torch.arange(96) % 2
    student = distill(prune(teacher, plan), teacher, texts, y, epochs=1, lr=1e-3,
                      hidden_weight=0.5)  # fmt: skip
    assert not student.training


def _mean_pool(hidden, mask):
    m = mask[..., None].to(hidden.dtype)  # (B, T, 1)
    return (hidden * m).sum(1) / m.sum(1)


def _pooled_cosine(student, teacher, x) -> float:
    with torch.no_grad():
        s = _mean_pool(student.eval()(**x).last_hidden_state, x["attention_mask"])
        t = _mean_pool(teacher.eval()(**x).last_hidden_state, x["attention_mask"])
    return float(torch.nn.functional.cosine_similarity(s, t, dim=-1).mean())


def test_pooled_cosine_term_raises_embedding_fidelity(encoder, texts):
    student = prune(encoder, PLAN)
    before = _pooled_cosine(student, encoder, texts)
    distill(student, encoder, texts, epochs=6, lr=3e-3, batch_size=16, pooled_weight=1.0,
            pooling=_mean_pool)  # fmt: skip
    after = _pooled_cosine(student, encoder, texts)
    assert after > before and 1 - after < 0.5 * (1 - before), (before, after)
    with pytest.raises(BuildError, match="needs pooling"):
        distill(prune(encoder, PLAN), encoder, texts, epochs=1, lr=1e-3, pooled_weight=1.0)
