"""KV-cache export of decoders: one graph for prefill and decode, equal to PyTorch.

Random-initialised Llama (grouped-query attention, 4 query heads per KV head), Qwen2 (q/k/v
biases) and GPT-2 (fused Conv1D qkv), in shapes unlike the other tests' (3 layers, head_dim 6
or 10, odd vocabularies), unpruned and pruned so that the kept layers differ in heads / KV
groups and FFN width. The reference is PyTorch recomputing the whole sequence without a
cache, so a wrong cache or mask in the graph cannot agree with it by construction.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import transformers

from paretoforge.exceptions import BuildError, MeasurementError
from paretoforge.kernels import apply_precision
from paretoforge.kernels.decoder_export import (
    CacheLayout,
    cache_layout,
    decode_step_feeds,
    export_decoder_onnx,
    greedy_decode,
    prefill_feeds,
)
from paretoforge.models.families import ADAPTERS
from paretoforge.models.io import save_pretrained
from paretoforge.models.surgery import PrunePlan, identity_plan, prune

# name: (config class, model class, config arguments, plan: KV groups / heads per kept layer)
CONFIGS = {
    "llama-gqa4": ("LlamaConfig", "LlamaForCausalLM", dict(
        hidden_size=48, num_hidden_layers=3, num_attention_heads=8, num_key_value_heads=2,
        head_dim=6, intermediate_size=56, vocab_size=83, max_position_embeddings=96,
        tie_word_embeddings=False), ((0, 1), (1,))),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(
        hidden_size=40, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=44, vocab_size=89, max_position_embeddings=96,
        tie_word_embeddings=False), ((1,), (0, 1))),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", dict(
        n_embd=36, n_layer=3, n_head=6, n_inner=52, vocab_size=79, n_positions=96,
        bos_token_id=0, eos_token_id=0), ((0, 2, 5), (1,))),
}
TOL = 1e-4
DECODE_STEPS = 8


def _model(name: str) -> torch.nn.Module:
    config_cls, arch, args, _ = CONFIGS[name]
    # A wider init than the default 0.02, so that attention is far from uniform and a wrong
    # mask or cache slot shows in the logits.
    config = getattr(transformers, config_cls)(
        **args, initializer_range=0.15, attn_implementation="eager", use_cache=False)
    torch.manual_seed(0)
    return getattr(transformers, arch)(config).eval()


def _width(model: torch.nn.Module) -> int:
    config = model.config
    return config.n_inner if config.model_type == "gpt2" else config.intermediate_size


def _plan(name: str, model: torch.nn.Module) -> PrunePlan:
    """Drop layer 1; the kept layers keep different heads / KV groups and FFN widths."""
    width = _width(model)
    return PrunePlan(layers=(0, 2), heads=CONFIGS[name][3],
                     neurons=(tuple(range(0, width, 2)), tuple(range(width - 7))))


def _torch_logits(model: torch.nn.Module, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=torch.as_tensor(ids), use_cache=False).logits.numpy()


def _session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _run_cached(session: ort.InferenceSession, prompt: np.ndarray,
                steps: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Prefill ``prompt`` (batch, T), then ``steps`` greedy decode steps feeding the cache
    back; the logits of every call and the whole token sequence."""
    layout = CacheLayout.from_session(session)
    names = [o.name for o in session.get_outputs()]
    feeds = prefill_feeds(layout, prompt)
    ids = np.asarray(prompt, dtype=np.int64)
    logits = []
    for step in range(steps + 1):
        out = dict(zip(names, session.run(names, feeds), strict=True))
        logits.append(out["logits"])
        assert out["present.0.key"].shape[2] == ids.shape[1]  # the cache grew by the call
        if step == steps:
            break
        nxt = out["logits"][:, -1].argmax(-1)[:, None].astype(np.int64)  # (B, 1)
        ids = np.concatenate([ids, nxt], axis=1)
        feeds = {"input_ids": nxt,
                 "attention_mask": np.ones_like(ids),
                 "position_ids": np.full_like(nxt, ids.shape[1] - 1)}
        feeds.update({f"past_key_values.{n[len('present.'):]}": out[n] for n in out
                      if n.startswith("present.")})
    return logits, ids


def _prompt(vocab: int, batch: int = 2, tokens: int = 7, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(3, vocab, (batch, tokens)).astype(np.int64)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    """Each configuration pruned by its plan, and its KV-cache graph (exported once)."""
    out = {}
    for name in CONFIGS:
        small = prune(_model(name), _plan(name, _model(name)))
        path = tmp_path_factory.mktemp("decoders") / f"{name}.onnx"
        out[name] = (small, path, export_decoder_onnx(small, path))
    return out


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_pruning_nothing_changes_nothing(name: str) -> None:
    model = _model(name)
    same = prune(model, identity_plan(model))
    ids = _prompt(model.config.vocab_size)
    assert np.array_equal(_torch_logits(same, ids), _torch_logits(model, ids))
    assert cache_layout(same) == cache_layout(model)
    config = model.config
    kv = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    hd = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    assert cache_layout(model).keys == ((kv, hd),) * 3


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_pruned_decoder_matches_pytorch_on_prefill_and_decode_steps(name: str,
                                                                    exported) -> None:
    small, path, layout = exported[name]
    # each kept layer's past has its own key/value head count
    per_layer = [len(h) for h in CONFIGS[name][3]]
    assert [h for h, _ in layout.keys] == per_layer == [h for h, _ in layout.values]
    graph = onnx.load(str(path))
    assert [i.name for i in graph.graph.input] == list(layout.input_names)
    assert [o.name for o in graph.graph.output] == list(layout.output_names)

    prompt = _prompt(small.config.vocab_size)
    logits, ids = _run_cached(_session(path), prompt, DECODE_STEPS)
    want = _torch_logits(small, ids)  # the whole sequence, recomputed without a cache
    assert logits[0].shape == (2, prompt.shape[1], small.config.vocab_size)
    assert float(np.abs(logits[0] - want[:, : prompt.shape[1]]).max()) < TOL
    for step, got in enumerate(logits[1:], start=prompt.shape[1]):
        assert got.shape == (2, 1, small.config.vocab_size)
        assert float(np.abs(got[:, 0] - want[:, step]).max()) < TOL


@pytest.mark.parametrize("precision, op", [("int8", "MatMulInteger"), ("int4", "MatMulNBits"),
                                          ("fp16", "Cast")])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_pruned_decoder_quantizes_and_decodes(name: str, precision: str, op: str, exported,
                                              tmp_path: Path) -> None:
    small, path, layout = exported[name]
    dst = apply_precision(path, tmp_path / f"{name}.{precision}.onnx", precision)
    ops = [n.op_type for n in onnx.load(str(dst)).graph.node]
    assert op in ops
    session = _session(dst)
    assert CacheLayout.from_session(session) == layout  # same cache interface as fp32
    logits, ids = _run_cached(session, _prompt(small.config.vocab_size), DECODE_STEPS)
    assert ids.shape == (2, 7 + DECODE_STEPS)
    assert all(np.isfinite(x).all() for x in logits)
    # quantized, not broken: the logits still follow the fp32 model's
    want = _torch_logits(small, ids)[:, -1]
    corr = np.corrcoef(logits[-1][:, 0].ravel(), want.ravel())[0, 1]
    assert corr > 0.9


def test_int4_accuracy_levels_are_in_the_graph_and_both_run(exported, tmp_path: Path) -> None:
    from paretoforge.kernels import graph_summary

    small, path, layout = exported["llama-gqa4"]
    prompt = _prompt(small.config.vocab_size)
    runs = {}
    for level in (0, 4):
        dst = apply_precision(path, tmp_path / f"int4.acc{level}.onnx", "int4",
                              int4_accuracy_level=level)
        nodes = [n for n in onnx.load(str(dst)).graph.node if n.op_type == "MatMulNBits"]
        assert nodes
        levels = {next((a.i for a in n.attribute if a.name == "accuracy_level"), 0)
                  for n in nodes}
        assert levels == {level}  # every quantized matmul carries the level asked for
        assert graph_summary(dst)["matmulnbits_accuracy_levels"] == {str(level): len(nodes)}
        session = _session(dst)
        assert CacheLayout.from_session(session) == layout
        logits, ids = _run_cached(session, prompt, DECODE_STEPS)
        assert all(np.isfinite(x).all() for x in logits)
        want = _torch_logits(small, ids)[:, -1]
        assert np.corrcoef(logits[-1][:, 0].ravel(), want.ravel())[0, 1] > 0.9
        runs[level] = logits[0]
    # level 4 quantizes the activations to int8 as well: a different product, not a relabel
    assert not np.array_equal(runs[0], runs[4])
    with pytest.raises(Exception, match="accuracy_level 7"):
        apply_precision(path, tmp_path / "bad.onnx", "int4", int4_accuracy_level=7)


def test_pruned_member_greedy_decodes_the_same_32_tokens_as_pytorch(exported) -> None:
    small, path, _ = exported["llama-gqa4"]
    prompt = [5, 17, 42, 8, 61]
    got = greedy_decode(path, prompt, 32, session_options={"intra_op_num_threads": 1})
    with torch.no_grad():
        want = small.generate(torch.tensor([prompt]), max_new_tokens=32, min_new_tokens=32,
                              do_sample=False, use_cache=True, pad_token_id=0)
    assert got == want[0, len(prompt):].tolist()
    assert len(set(got)) > 3  # a varied continuation, not one token repeated
    assert greedy_decode(path, prompt, 5, eos_token_id=got[2]) == got[:3]  # stops at eos


def test_greedy_decode_runs_without_torch(exported) -> None:
    small, path, _ = exported["gpt2"]
    prompt = [3, 9, 27]
    want = greedy_decode(path, prompt, 12)
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any import of torch now fails
        from paretoforge.kernels.decoder_export import greedy_decode
        print(greedy_decode({str(path)!r}, {prompt!r}, 12))
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(want)


def test_uniformly_pruned_checkpoint_loads_with_auto_model_and_exports(tmp_path: Path) -> None:
    model = _model("llama-gqa4")
    plan = PrunePlan(layers=(0, 2), heads=((1,), (0,)),
                     neurons=(tuple(range(0, 56, 2)), tuple(range(1, 56, 2))))
    small = prune(model, plan)
    save_pretrained(small, tmp_path / "ckpt")
    loaded = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "ckpt", local_files_only=True, attn_implementation="eager").eval()
    assert (loaded.config.num_key_value_heads, loaded.config.num_attention_heads) == (1, 4)
    ids = _prompt(83, seed=3)
    assert float(np.abs(_torch_logits(loaded, ids) - _torch_logits(small, ids)).max()) < 1e-6
    layout = export_decoder_onnx(loaded, tmp_path / "loaded.onnx")
    assert layout.keys == ((1, 6), (1, 6))
    logits, ids = _run_cached(_session(tmp_path / "loaded.onnx"), ids, 2)
    assert float(np.abs(logits[-1][:, 0] - _torch_logits(small, ids)[:, -1]).max()) < TOL


def test_decode_step_feeds_fit_the_graph(exported) -> None:
    small, path, layout = exported["qwen2"]
    session = _session(path)
    out = session.run(None, decode_step_feeds(layout, 64))
    assert out[0].shape == (1, 1, small.config.vocab_size)
    assert out[1].shape == (1, layout.keys[0][0], 65, layout.keys[0][1])


def test_a_model_without_a_kv_cache_is_refused_clearly(tmp_path: Path) -> None:
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                     intermediate_size=64, vocab_size=50)
    with pytest.raises(BuildError, match="no KV cache"):
        export_decoder_onnx(transformers.BertForMaskedLM(config), tmp_path / "bert.onnx")
    assert not (tmp_path / "bert.onnx").exists()


def test_a_graph_without_a_cache_is_not_decoded(vit_onnx: Path) -> None:
    with pytest.raises(MeasurementError, match="Not a KV-cache decoder graph"):
        greedy_decode(vit_onnx, [1, 2], 3)
    with pytest.raises(ValueError, match="at least one token"):
        greedy_decode(vit_onnx, [], 3)


@pytest.mark.parametrize("family", ["gpt2", "llama", "mistral", "qwen2", "qwen3"])
def test_every_causal_family_exports_with_a_kv_cache(family: str, tmp_path: Path) -> None:
    adapter = ADAPTERS.get(family)
    config = adapter.tiny_config()
    torch.manual_seed(1)
    model = adapter.build(config, adapter.architectures[0] if family != "gpt2"
                          else "GPT2LMHeadModel").eval()
    layout = export_decoder_onnx(model, tmp_path / "m.onnx")
    assert layout.num_layers == config.num_hidden_layers
    logits, ids = _run_cached(_session(tmp_path / "m.onnx"), _prompt(config.vocab_size), 3)
    want = _torch_logits(model, ids)
    assert float(np.abs(logits[-1][:, 0] - want[:, -1]).max()) < TOL


def test_left_padding_in_the_attention_mask_is_honoured(exported) -> None:
    small, path, layout = exported["llama-gqa4"]
    session = _session(path)
    short = _prompt(83, batch=1, tokens=4, seed=5)
    alone = session.run(["logits"], prefill_feeds(layout, short))[0]
    feeds = prefill_feeds(layout, np.concatenate(
        [_prompt(83, batch=1, tokens=7, seed=6), np.pad(short, ((0, 0), (3, 0)))]))
    feeds["attention_mask"][1, :3] = 0  # row 1: three pads, then the short prompt
    feeds["position_ids"][1] = np.maximum(np.cumsum(feeds["attention_mask"][1]) - 1, 0)
    padded = session.run(["logits"], feeds)[0]
    assert float(np.abs(padded[1, 3:] - alone[0]).max()) < TOL
