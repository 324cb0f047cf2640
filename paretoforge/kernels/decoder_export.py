"""Export a causal language model to ONNX with a KV cache, and greedy-decode with the graph.

One graph serves prefill and decode. Its inputs are ``input_ids`` ``(batch, sequence)``,
``attention_mask`` ``(batch, past_sequence + sequence)``, ``position_ids`` ``(batch,
sequence)`` and, for each layer ``i``, ``past_key_values.{i}.key`` / ``.value`` ``(batch,
kv_heads_i, past_sequence, head_dim)``; its outputs are ``logits`` ``(batch, sequence, vocab)``
and ``present.{i}.key`` / ``.value`` ``(batch, kv_heads_i, past_sequence + sequence,
head_dim)``. Batch, sequence and past axes are symbolic, so prefill is a call with a past of
length 0 and each decode step feeds the previous call's ``present`` back as ``past``. The
names are the ones optimum and onnxruntime-genai use for decoder graphs.

The export (:func:`export_decoder_onnx`) works for any ``transformers`` causal LM whose layers
write a ``DynamicCache``: Llama, Qwen2/3 and Mistral (grouped-query attention: fewer key/value
heads than query heads) and GPT-2, pruned or not. The key/value shapes are read from a forward
pass, not from the config, so a pruned model whose layers keep different numbers of heads or
KV groups exports as it is (each layer's past has its own head count). The causal mask is
built inside the graph from ``attention_mask`` as a 4-D additive mask (full causal attention:
a sliding window is not applied, which is exact for contexts shorter than the window), and the
model runs its eager attention during the export, so the graph holds no shape baked in by the
tracer; :func:`export_decoder_onnx` checks this by comparing ONNX Runtime with PyTorch at a
shape other than the traced one.

:func:`greedy_decode` needs only numpy and onnxruntime: it is what a deployed member runs.

Example:
    >>> layout = export_decoder_onnx(model, "decoder.onnx")  # doctest: +SKIP
    >>> layout.input_names[:4]  # doctest: +SKIP
    ('input_ids', 'attention_mask', 'position_ids', 'past_key_values.0.key')
    >>> greedy_decode("decoder.onnx", [1, 5, 7], max_new_tokens=4)  # doctest: +SKIP
    [12, 9, 9, 40]
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paretoforge.exceptions import BuildError, MeasurementError
from paretoforge.kernels._quiet import quiet
from paretoforge.kernels.export import _commit_onnx

if TYPE_CHECKING:
    import numpy as np
    import onnxruntime
    import torch

__all__ = [
    "DECODER_INPUTS",
    "CacheLayout",
    "cache_layout",
    "complete_feeds",
    "decode_step_feeds",
    "decoder_layout",
    "export_decoder_onnx",
    "greedy_decode",
    "prefill_feeds",
]

#: The graph's non-cache inputs, in order.
DECODER_INPUTS: tuple[str, ...] = ("input_ids", "attention_mask", "position_ids")
_PAST = "past_key_values.{i}.{kind}"
_PRESENT = "present.{i}.{kind}"
_PAST_RE = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")
_KINDS = ("key", "value")


@dataclass(frozen=True)
class CacheLayout:
    """The KV-cache layout of a decoder graph: one ``(heads, head_dim)`` per layer for keys
    and for values, with the graph's input and output names.

    Example:
        >>> layout = CacheLayout(keys=((2, 8), (1, 8)), values=((2, 8), (1, 8)))
        >>> layout.num_layers, layout.input_names[3], layout.output_names[-1]
        (2, 'past_key_values.0.key', 'present.1.value')
        >>> layout.as_dict()["kv_heads"]
        [2, 1]
    """

    keys: tuple[tuple[int, int], ...]
    values: tuple[tuple[int, int], ...]
    dtype: str = "float32"

    @property
    def num_layers(self) -> int:
        """Layers (cache slots) of the model."""
        return len(self.keys)

    @property
    def past_names(self) -> tuple[str, ...]:
        """``past_key_values.{i}.key`` / ``.value``, layer by layer."""
        return tuple(_PAST.format(i=i, kind=k) for i in range(self.num_layers) for k in _KINDS)

    @property
    def present_names(self) -> tuple[str, ...]:
        """``present.{i}.key`` / ``.value``, layer by layer (same order as :attr:`past_names`)."""
        return tuple(_PRESENT.format(i=i, kind=k) for i in range(self.num_layers) for k in _KINDS)

    @property
    def input_names(self) -> tuple[str, ...]:
        """All graph inputs, in export order."""
        return (*DECODER_INPUTS, *self.past_names)

    @property
    def output_names(self) -> tuple[str, ...]:
        """All graph outputs: ``logits`` then :attr:`present_names`."""
        return ("logits", *self.present_names)

    def past_shape(self, name: str, batch: int, past: int) -> tuple[int, int, int, int]:
        """Shape of past input ``name`` for ``batch`` sequences with ``past`` cached tokens."""
        match = _PAST_RE.match(name)
        if match is None:
            raise KeyError(f"{name!r} is not a past_key_values input")
        i, kind = int(match.group(1)), match.group(2)
        heads, dim = (self.keys if kind == "key" else self.values)[i]
        return batch, heads, past, dim

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able description (for the manifest): names, per-layer heads, dims, dtype."""
        return {
            "inputs": list(self.input_names),
            "outputs": list(self.output_names),
            "past_layout": "(batch, kv_heads, past_sequence, head_dim)",
            "kv_heads": [h for h, _ in self.keys],
            "value_heads": [h for h, _ in self.values],
            "head_dim": [d for _, d in self.keys],
            "value_head_dim": [d for _, d in self.values],
            "dtype": self.dtype,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CacheLayout:
        """The layout :meth:`as_dict` described (e.g. read back from a manifest).

        Example:
            >>> layout = CacheLayout(keys=((2, 8),), values=((2, 4),))
            >>> CacheLayout.from_dict(layout.as_dict()) == layout
            True
        """
        return cls(keys=tuple(zip(d["kv_heads"], d["head_dim"], strict=True)),
                   values=tuple(zip(d["value_heads"], d["value_head_dim"], strict=True)),
                   dtype=str(d.get("dtype", "float32")))

    @classmethod
    def from_session(cls, session: onnxruntime.InferenceSession) -> CacheLayout:
        """The layout of an open decoder graph, read from its input shapes.

        Raises:
            MeasurementError: the graph is not a KV-cache decoder graph of this layout.
        """
        from paretoforge.kernels.ort import ORT_DTYPES

        found: dict[tuple[int, str], tuple[int, int]] = {}
        names = [i.name for i in session.get_inputs()]
        dtype = "float32"
        for arg in session.get_inputs():
            match = _PAST_RE.match(arg.name)
            if match is None:
                continue
            shape = list(arg.shape)
            if len(shape) != 4 or not all(isinstance(s, int) for s in (shape[1], shape[3])):
                raise MeasurementError(
                    f"Decoder input {arg.name!r} has shape {shape}; expected (batch, kv_heads, "
                    "past_sequence, head_dim) with fixed heads and head_dim")
            found[int(match.group(1)), match.group(2)] = (int(shape[1]), int(shape[3]))
            dtype = ORT_DTYPES.get(arg.type, dtype)
        n = len({i for i, _ in found})
        missing = [d for d in DECODER_INPUTS if d not in names]
        if missing or not n or any((i, k) not in found for i in range(n) for k in _KINDS):
            raise MeasurementError(
                f"Not a KV-cache decoder graph: inputs {names}; expected {list(DECODER_INPUTS)} "
                "and past_key_values.{i}.key/.value for every layer i (export it with "
                "paretoforge.kernels.decoder_export.export_decoder_onnx)")
        return cls(keys=tuple(found[i, "key"] for i in range(n)),
                   values=tuple(found[i, "value"] for i in range(n)), dtype=dtype)


# -- export ---------------------------------------------------------------------------------


def _cache_of(output: Any) -> Any:
    # transformers 5 names the returned cache ``cache`` (``past_key_values`` before 5.x).
    for attr in ("cache", "past_key_values"):
        cache = getattr(output, attr, None)
        if cache is not None:
            return cache
    raise BuildError(
        f"{type(output).__name__} returned no KV cache with use_cache=True; only causal "
        "language models that return a transformers Cache can be exported with a KV cache")


def _cache_tensors(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(key, value)`` per layer of a transformers ``Cache`` (or a legacy tuple of tuples)."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return [(kv[0], kv[1]) for kv in cache]


@contextlib.contextmanager
def _eager_attention(model: torch.nn.Module) -> Iterator[None]:
    # The graph takes the 4-D additive mask this module builds, which is what eager attention
    # adds to its scores; SDPA would read it as a boolean mask. Attention modules look the
    # implementation up in their (shared) config at call time, so setting it is enough.
    configs = [m.config for m in model.modules() if hasattr(m, "config")]
    configs = list({id(c): c for c in configs}.values())
    before = [getattr(c, "_attn_implementation", None) for c in configs]
    try:
        for c in configs:
            c._attn_implementation = "eager"
        yield
    finally:
        for c, b in zip(configs, before, strict=True):
            c._attn_implementation = b


def cache_layout(model: torch.nn.Module) -> CacheLayout:
    """The KV-cache layout ``model`` writes, read from a one-token forward pass.

    Reading the cache (not the config) gives each layer's own key/value head count, so a
    pruned model whose layers differ is described as it is.

    Raises:
        BuildError: the model returns no KV cache.
    """
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(input_ids=torch.zeros(1, 1, dtype=torch.long), use_cache=True)
    except Exception as err:
        raise BuildError(
            f"{type(model).__name__} cannot run one token with use_cache=True "
            f"({type(err).__name__}: {err}); a KV-cache export needs a causal language model "
            "(e.g. LlamaForCausalLM, GPT2LMHeadModel)") from err
    finally:
        model.train(was_training)
    pairs = _cache_tensors(_cache_of(out))
    if not pairs:
        raise BuildError(f"{type(model).__name__} wrote an empty KV cache; nothing to export")
    dtype = str(pairs[0][0].dtype).removeprefix("torch.")
    return CacheLayout(keys=tuple((int(k.shape[1]), int(k.shape[3])) for k, _ in pairs),
                       values=tuple((int(v.shape[1]), int(v.shape[3])) for _, v in pairs),
                       dtype=dtype)


def _cache_kwarg(model: torch.nn.Module) -> str:
    # transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name warns).
    return "cache" if "cache" in inspect.signature(model.forward).parameters else \
        "past_key_values"


def _decoder_wrapper(model: torch.nn.Module, num_layers: int) -> torch.nn.Module:
    import torch
    from transformers import DynamicCache

    cache_kwarg = _cache_kwarg(model)

    class _KVDecoder(torch.nn.Module):
        # Positional graph inputs re-keyed as keyword arguments: transformers 5 forwards grew
        # parameters, and the tracer feeds tensors positionally.
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    position_ids: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
            cache = DynamicCache(
                ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(num_layers)])
            # Slot of every key (0 .. P+T-1) and of every query (P .. P+T-1), from tensors
            # only, so that the traced graph keeps the sequence axes symbolic.
            k_slot = torch.cumsum(torch.ones_like(attention_mask), 1) - 1  # (B, S)
            q_ones = torch.cumsum(torch.ones_like(input_ids), 1)  # (B, T)
            q_slot = q_ones - q_ones[:, -1:] + k_slot[:, -1:]  # (B, T)
            allowed = (k_slot[:, None, None, :] <= q_slot[:, None, :, None]) & (
                attention_mask[:, None, None, :] > 0)  # (B, 1, T, S)
            dtype = past[0].dtype
            mask = torch.where(allowed, torch.zeros((), dtype=dtype),
                               torch.full((), torch.finfo(dtype).min, dtype=dtype))
            out = self.model(input_ids=input_ids, attention_mask=mask,
                             position_ids=position_ids, use_cache=True, **{cache_kwarg: cache})
            flat: list[torch.Tensor] = [out.logits]
            for k, v in _cache_tensors(_cache_of(out)):
                flat += [k, v]
            return tuple(flat)

    # Eval mode on the wrapper too: the exporter restores the wrapper's mode afterwards, and
    # a training-mode wrapper would put the model's dropout back on.
    return _KVDecoder().eval()


def _example(layout: CacheLayout, batch: int, past: int, tokens: int, vocab: int,
             seed: int) -> dict[str, torch.Tensor]:
    import torch

    g = torch.Generator().manual_seed(seed)
    dtype = getattr(torch, layout.dtype)
    feeds: dict[str, torch.Tensor] = {
        "input_ids": torch.randint(0, vocab, (batch, tokens), generator=g),
        "attention_mask": torch.ones(batch, past + tokens, dtype=torch.long),
        "position_ids": torch.arange(past, past + tokens).expand(batch, tokens).contiguous(),
    }
    for name in layout.past_names:
        feeds[name] = torch.randn(layout.past_shape(name, batch, past), generator=g).to(dtype)
    return feeds


def _dynamic_axes(layout: CacheLayout) -> dict[str, dict[int, str]]:
    axes = {"input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "total_sequence"},
            "position_ids": {0: "batch", 1: "sequence"},
            "logits": {0: "batch", 1: "sequence"}}
    axes.update({n: {0: "batch", 2: "past_sequence"} for n in layout.past_names})
    axes.update({n: {0: "batch", 2: "total_sequence"} for n in layout.present_names})
    return axes


def _check_against_torch(wrapper: torch.nn.Module, path: Path, layout: CacheLayout,
                         vocab: int, tol: float) -> None:
    """Run the graph at a shape other than the traced one (and at past 0) against PyTorch."""
    import numpy as np
    import onnxruntime as ort
    import torch

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    for past, tokens in ((0, 5), (6, 1)):
        feeds = _example(layout, 1, past, tokens, vocab, seed=past + 1)
        with torch.no_grad():
            want = [t.float().numpy() for t in wrapper(*feeds.values())]
        got = session.run(None, {k: v.numpy() for k, v in feeds.items()})
        for name, g, w in zip(layout.output_names, got, want, strict=True):
            err = float(np.abs(g - w).max()) if g.shape == w.shape else float("inf")
            if not err <= tol * max(1.0, float(np.abs(w).max())):
                raise BuildError(
                    f"KV-cache export of {str(path)!r} disagrees with PyTorch on {name!r} at "
                    f"past {past}, {tokens} token(s): shape {list(g.shape)} vs "
                    f"{list(w.shape)}, max |diff| {err:.3g}; the tracer may have fixed a shape "
                    "the model computes in Python")


def export_decoder_onnx(
    model: torch.nn.Module,
    path: str | os.PathLike[str],
    *,
    opset: int = 17,
    verify: bool = True,
    tolerance: float = 1e-3,
) -> CacheLayout:
    """Export causal LM ``model`` to a KV-cache decoder graph at ``path``, atomically.

    Traced (TorchScript exporter) on 2 sequences of 4 new tokens after 3 cached ones, through
    a thin module that passes the graph's inputs as keyword arguments and rebuilds a
    ``DynamicCache`` from the past tensors. The file is written under a temporary name and
    renamed once it passes ``onnx.checker`` and, with ``verify``, once ONNX Runtime agrees
    with PyTorch at two other shapes (a prefill from an empty past, and a one-token decode
    step), so ``path`` is either absent or a complete, checked graph.

    Args:
        model: A ``transformers`` causal LM (``...ForCausalLM`` / ``GPT2LMHeadModel``), pruned
            or not; put in eval mode for the export and restored after.
        path: Destination ``.onnx`` file.
        opset: ONNX opset version.
        verify: Check the graph against PyTorch (a few milliseconds on small models).
        tolerance: Largest allowed ``|onnx - torch|`` relative to the largest output value.

    Returns:
        The graph's :class:`CacheLayout` (names and per-layer key/value shapes).

    Raises:
        BuildError: the model returns no cache, or the export, the ONNX check or the
            comparison with PyTorch failed; the message carries the cause.

    Example:
        >>> import tempfile, transformers
        >>> config = transformers.LlamaConfig(hidden_size=32, num_hidden_layers=2,
        ...     num_attention_heads=4, num_key_value_heads=2, intermediate_size=48,
        ...     vocab_size=50)
        >>> layout = export_decoder_onnx(transformers.LlamaForCausalLM(config),
        ...                              f"{tempfile.mkdtemp()}/decoder.onnx")
        >>> layout.keys
        ((2, 8), (2, 8))
    """
    import onnx
    import torch

    path = Path(path)
    was_training = model.training
    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with _eager_attention(model):
            layout = cache_layout(model)
            vocab = int(model.get_output_embeddings().weight.shape[0])
            wrapper = _decoder_wrapper(model, layout.num_layers)
            example = _example(layout, batch=2, past=3, tokens=4, vocab=vocab, seed=0)
            try:
                with quiet("torch.onnx", "torch._dynamo", "torch.export"), torch.no_grad():
                    torch.onnx.export(
                        wrapper, tuple(example.values()), str(tmp),
                        input_names=list(layout.input_names),
                        output_names=list(layout.output_names),
                        dynamic_axes=_dynamic_axes(layout), opset_version=opset,
                        do_constant_folding=True, dynamo=False)
                onnx.checker.check_model(str(tmp))
            except Exception as err:
                raise BuildError(
                    f"KV-cache ONNX export of {type(model).__name__} to {str(path)!r} failed "
                    f"(opset {opset}): {type(err).__name__}: {err}") from err
            if verify:
                _check_against_torch(wrapper, tmp, layout, vocab, tolerance)
        _commit_onnx(tmp, path)
    finally:
        model.train(was_training)
        if tmp.exists():
            tmp.unlink()
    return layout


# -- running the graph (numpy and onnxruntime only) ---------------------------------------


def prefill_feeds(layout: CacheLayout, input_ids: np.ndarray) -> dict[str, np.ndarray]:
    """Feeds of a prefill call: ``input_ids`` ``(batch, T)`` after an empty past.

    Example:
        >>> import numpy as np
        >>> layout = CacheLayout(keys=((2, 8),), values=((2, 8),))
        >>> feeds = prefill_feeds(layout, np.array([[5, 6, 7]]))
        >>> feeds["position_ids"].tolist(), feeds["past_key_values.0.key"].shape
        ([[0, 1, 2]], (1, 2, 0, 8))
    """
    import numpy as np

    ids = np.asarray(input_ids, dtype=np.int64)
    batch, tokens = ids.shape
    feeds = {"input_ids": ids,
             "attention_mask": np.ones((batch, tokens), dtype=np.int64),
             "position_ids": np.tile(np.arange(tokens, dtype=np.int64), (batch, 1))}
    for name in layout.past_names:
        feeds[name] = np.zeros(layout.past_shape(name, batch, 0), dtype=layout.dtype)
    return feeds


def decode_step_feeds(layout: CacheLayout, past: int, *, batch: int = 1,
                      seed: int = 0) -> dict[str, np.ndarray]:
    """Feeds of one decode step (one new token per sequence) after ``past`` cached tokens,
    with random cache contents: what a per-token latency measurement times.

    Example:
        >>> layout = CacheLayout(keys=((2, 8),), values=((2, 8),))
        >>> feeds = decode_step_feeds(layout, 64)
        >>> feeds["attention_mask"].shape, feeds["past_key_values.0.value"].shape
        ((1, 65), (1, 2, 64, 8))
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    feeds = {"input_ids": rng.integers(0, 2, (batch, 1), dtype=np.int64),
             "attention_mask": np.ones((batch, past + 1), dtype=np.int64),
             "position_ids": np.full((batch, 1), past, dtype=np.int64)}
    for name in layout.past_names:
        feeds[name] = rng.standard_normal(layout.past_shape(name, batch, past)).astype(
            layout.dtype)
    return feeds


def decoder_layout(session: onnxruntime.InferenceSession) -> CacheLayout | None:
    """The :class:`CacheLayout` of a session's graph, or None when the graph takes no
    ``past_key_values`` input (any other graph: its inputs are fed as they are).

    Raises:
        MeasurementError: the graph takes past inputs but is not a decoder graph of this
            layout (see :meth:`CacheLayout.from_session`).
    """
    if not any(_PAST_RE.match(i.name) for i in session.get_inputs()):
        return None
    return CacheLayout.from_session(session)


def complete_feeds(layout: CacheLayout, feeds: Mapping[str, np.ndarray], *,
                   seed: int = 0) -> dict[str, np.ndarray]:
    """``feeds`` with the inputs a decoder graph of ``layout`` takes besides the tokens,
    where they are absent: ``attention_mask`` (all ones), ``position_ids`` (the positions
    after the past) and every ``past_key_values`` tensor.

    The past length is the width of ``attention_mask`` less that of ``input_ids``: equal
    widths are a prefill (empty pasts: what scoring a block runs), a mask one wider than one
    new token is a decode step after that many cached tokens. Past tensors of a non-empty past
    hold seeded random values: what a latency measurement needs is their shape, not their
    contents. Feeds given are kept as they are.

    Raises:
        MeasurementError: no ``input_ids``, or a mask narrower than ``input_ids``.

    Example:
        >>> import numpy as np
        >>> layout = CacheLayout(keys=((2, 8),), values=((2, 8),))
        >>> out = complete_feeds(layout, {"input_ids": np.array([[5]]),
        ...                               "attention_mask": np.ones((1, 9), dtype=np.int64)})
        >>> out["position_ids"].tolist(), out["past_key_values.0.key"].shape
        ([[8]], (1, 2, 8, 8))
    """
    import numpy as np

    if "input_ids" not in feeds:
        raise MeasurementError(
            f"A KV-cache decoder graph needs input_ids; got inputs {sorted(feeds)}")
    out = dict(feeds)
    batch, tokens = np.asarray(out["input_ids"]).shape
    mask = out.get("attention_mask")
    if mask is None:
        mask = out["attention_mask"] = np.ones((batch, tokens), dtype=np.int64)
    past = int(mask.shape[1]) - int(tokens)
    if past < 0:
        raise MeasurementError(
            f"attention_mask is {mask.shape[1]} wide, narrower than input_ids ({tokens}); a "
            "decoder's mask covers the past and the new tokens")
    if "position_ids" not in out:
        out["position_ids"] = np.tile(np.arange(past, past + tokens, dtype=np.int64),
                                      (batch, 1))
    rng = np.random.default_rng(seed)
    for name in layout.past_names:
        if name not in out:
            shape = layout.past_shape(name, batch, past)
            out[name] = (rng.standard_normal(shape) if past else np.zeros(shape)).astype(
                layout.dtype)
    return out


def greedy_decode(
    model: str | os.PathLike[str] | onnxruntime.InferenceSession,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    *,
    eos_token_id: int | None = None,
    session_options: Mapping[str, Any] | None = None,
) -> list[int]:
    """Greedy-decode up to ``max_new_tokens`` after ``prompt_ids`` with a KV-cache graph.

    Needs only numpy and onnxruntime (no torch): one prefill call over the prompt, then one
    call per new token with the previous call's ``present`` fed back as ``past``.

    Args:
        model: A graph written by :func:`export_decoder_onnx` (any precision), or a session.
        prompt_ids: The prompt's token ids (at least one).
        max_new_tokens: Tokens to generate (0 returns ``[]``).
        eos_token_id: Stop after generating this token (it is included).
        session_options: ``onnxruntime.SessionOptions`` attributes, e.g.
            ``{"intra_op_num_threads": 1}``, when ``model`` is a path.

    Returns:
        The generated token ids, without the prompt.

    Raises:
        ValueError: an empty prompt or a negative ``max_new_tokens``.
        MeasurementError: the graph is not a KV-cache decoder graph.

    Example:
        >>> greedy_decode("decoder.onnx", [1, 5, 7], max_new_tokens=4)  # doctest: +SKIP
        [12, 9, 9, 40]
    """
    import numpy as np
    import onnxruntime as ort

    prompt = [int(t) for t in prompt_ids]
    if not prompt:
        raise ValueError("greedy_decode needs a prompt of at least one token; got []")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0; got {max_new_tokens}")
    if isinstance(model, ort.InferenceSession):
        session = model
    else:
        so = ort.SessionOptions()
        for key, value in (session_options or {}).items():
            setattr(so, key, value)
        session = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    layout = CacheLayout.from_session(session)
    out_names = [o.name for o in session.get_outputs()]
    present_to_past = dict(zip(layout.present_names, layout.past_names, strict=True))
    feeds = prefill_feeds(layout, np.asarray([prompt]))
    generated: list[int] = []
    length = len(prompt)
    while len(generated) < max_new_tokens:
        outputs = dict(zip(out_names, session.run(out_names, feeds), strict=True))
        token = int(np.argmax(outputs["logits"][0, -1]))
        generated.append(token)
        if token == eos_token_id:
            break
        length += 1
        feeds = {"input_ids": np.array([[token]], dtype=np.int64),
                 "attention_mask": np.ones((1, length), dtype=np.int64),
                 "position_ids": np.array([[length - 1]], dtype=np.int64)}
        feeds.update({present_to_past[n]: outputs[n] for n in layout.present_names})
    return generated
