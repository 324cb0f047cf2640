"""Hidden-state distillation: per-layer mapping of kept layers to teacher layers, text inputs."""

from __future__ import annotations

import pytest
import torch
import transformers

from paretoforge.exceptions import BuildError
from paretoforge.models.distill import _masked_mse, default_layer_map, distill, trim_padding
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


def test_padding_columns_change_nothing(encoder, texts):
    """Padding every example to 40 instead of 16 tokens gives the same student: the columns
    that are padding in a whole batch are trimmed, and masked positions never mattered."""
    wide = {k: torch.nn.functional.pad(v, (0, 24)) for k, v in texts.items()}  # (N, 40)
    trimmed, kept = trim_padding(wide)
    assert kept == 16 and trimmed["input_ids"].shape == (96, 16)
    assert trim_padding(texts)[1] is None  # some example uses every column: nothing to trim

    def run(x):
        s = distill(prune(encoder, PLAN), encoder, x, epochs=1, lr=1e-3, batch_size=16,
                    hidden_weight=1.0, pooled_weight=1.0, pooling=_mean_pool)  # fmt: skip
        return torch.cat([p.detach().flatten() for p in s.parameters()])

    torch.testing.assert_close(run(wide), run(texts), atol=1e-5, rtol=1e-4)


def test_teacher_pass_in_length_order_gives_the_same_outputs(encoder, texts):
    from paretoforge.models.distill import _teacher_outputs

    plain = _teacher_outputs(encoder, texts, [0, 2], _mean_pool, batch=16)
    trimmed = _teacher_outputs(encoder, texts, [0, 2], _mean_pool, batch=16, trim=True)
    mask = texts["attention_mask"][:, None, :, None]  # (N, 1, T, 1): padding never counts
    torch.testing.assert_close(trimmed[1] * mask, plain[1] * mask, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(trimmed[2], plain[2], atol=1e-5, rtol=1e-5)


def test_length_grouped_batches_cover_each_example_once_with_similar_lengths():
    from paretoforge.models.distill import length_grouped_batches

    lengths = torch.randint(1, 100, (640,), generator=torch.Generator().manual_seed(1))
    batches = length_grouped_batches(lengths, 32, torch.Generator().manual_seed(0))
    assert sorted(torch.cat(batches).tolist()) == list(range(640))
    spread = [int(lengths[b].max() - lengths[b].min()) for b in batches]
    assert max(spread) < 50  # a random batch of 32 spans nearly the whole 1..99
    again = length_grouped_batches(lengths, 32, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))


def test_a_teacher_cache_runs_the_teacher_over_the_data_once(encoder, texts):
    """A worker's second recovery of the same base reads the teacher's outputs from its cache
    and trains the very student it would have trained without one; other data (or other
    losses) computes its own entry."""
    from paretoforge.models.distill import TeacherCache

    seen: list[int] = []

    def count(module, args, kwargs, out):  # a pruned copy carries the hook too: skip it
        if module is encoder:
            seen.append(int(kwargs["input_ids"].shape[0]))

    hook = encoder.register_forward_hook(count, with_kwargs=True)

    def run(x, cache):
        seen.clear()
        s = distill(prune(encoder, PLAN), encoder, x, epochs=1, lr=1e-3, batch_size=16,
                    hidden_weight=1.0, pooled_weight=1.0, pooling=_mean_pool,
                    teacher_cache=cache)  # fmt: skip
        return torch.cat([p.detach().flatten() for p in s.parameters()]), sum(seen)

    try:
        cache = TeacherCache()
        plain, n_plain = run(texts, None)
        first, n_first = run(texts, cache)
        second, n_second = run(texts, cache)
        assert n_plain == n_first == 1 + 96  # the 1-example probe, then the whole split
        assert n_second == 1  # the probe only: the split's outputs came from the cache
        torch.testing.assert_close(first, plain, atol=0, rtol=0)
        torch.testing.assert_close(second, plain, atol=0, rtol=0)
        half = {k: v[:48] for k, v in texts.items()}
        assert run(half, cache)[1] == 1 + 48 and len(cache) == 2
        distill(prune(encoder, PLAN), encoder, texts, epochs=1, lr=1e-3, batch_size=16,
                pooled_weight=1.0, pooling=_mean_pool, teacher_cache=cache)  # no hidden term
        assert len(cache) == 2  # a third entry: the oldest is dropped
    finally:
        hook.remove()
