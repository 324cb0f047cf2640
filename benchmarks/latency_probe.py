"""Latency probe: the default ViT for 8x8 digits, fp32 vs int8, on the built-in CPU profiles.

Answers three questions for choosing defaults:

* what int8 dynamic quantization buys at this size (fp32 vs int8 p50);
* whether per-layer compute or fixed per-call overhead dominates (p50 against the number of
  layers, fitted as ``p50 = overhead + per_layer * layers``, plus the floor of an empty graph);
* what ONNX Runtime's thread spinning buys on the multi-thread profile (``--spin``).

Weights are random (latency does not depend on their values); inputs are real digits images.

Usage:
    python benchmarks/latency_probe.py                    # layers 4 2 1, batch 1
    python benchmarks/latency_probe.py --layers 4 --batch 1 32 --spin
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paretoforge.evaluators import measure_latency
from paretoforge.hw_profiles import HardwareProfile, get_profile
from paretoforge.kernels import apply_precision, export_onnx, graph_summary

PROTOCOL: dict[str, Any] = {
    "warmup": 50,
    "min_runs": 200,
    "max_runs": 20_000,
    "max_seconds": 4.0,
    "target_rel_ci": 0.005,
}


def digits() -> np.ndarray:
    from sklearn.datasets import load_digits

    return (load_digits().images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8)


def build_vit(layers: int, hidden: int, ffn: int, heads: int, out: Path) -> Path:
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=8,
        patch_size=2,
        num_channels=1,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        num_labels=10,
    )
    model = transformers.ViTForImageClassification(config).eval()
    return export_onnx(model, {"pixel_values": torch.randn(1, 1, 8, 8)}, out)


def identity_graph(out: Path) -> Path:
    """The cheapest possible model: one Identity node. Its p50 is the per-call floor."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 1, 8, 8])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1, 8, 8])
    graph = helper.make_graph(
        [helper.make_node("Identity", ["pixel_values"], ["logits"])], "id", [x], [y]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(out))
    return out


def row(path: Path, profile: HardwareProfile, x: np.ndarray, **tags: Any) -> dict[str, Any]:
    m = measure_latency(path, profile, {"pixel_values": x}, **PROTOCOL)
    return {
        **tags,
        "profile": profile.name,
        "batch": profile.batch_size,
        "threads": m.env["intra_op_threads"],
        "spin": profile.allow_spinning,
        "p50_ms": round(m.p50_ms, 4),
        "p90_ms": round(m.p90_ms, 4),
        "p99_ms": round(m.p99_ms, 4),
        "ci95_rel": round(m.ci95_rel, 4),
        "runs": m.runs,
        "converged": m.converged,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, nargs="+", default=[4, 2, 1])
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--ffn", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--batch", type=int, nargs="+", default=[1])
    ap.add_argument("--profiles", nargs="+", default=["cpu-1t", "cpu"])
    ap.add_argument("--spin", action="store_true", help="also run with spinning off")
    args = ap.parse_args()

    x = digits()
    rows: list[dict[str, Any]] = []
    sizes: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        floor = identity_graph(Path(d) / "identity.onnx")
        for name in args.profiles:
            rows.append(row(floor, get_profile(name), x, model="identity", precision="fp32"))
        for layers in args.layers:
            fp32 = build_vit(
                layers, args.hidden, args.ffn, args.heads, Path(d) / f"L{layers}.onnx"
            )
            int8 = apply_precision(fp32, Path(d) / f"L{layers}.int8.onnx", "int8")
            for precision, path in (("fp32", fp32), ("int8", int8)):
                g = graph_summary(path)
                sizes[f"L{layers}-{precision}"] = {
                    "file_bytes": g["file_bytes"],
                    "initializer_bytes": g["initializer_bytes"],
                }
                for name in args.profiles:
                    for batch in args.batch:
                        spins = (True, False) if args.spin else (True,)
                        for spin in spins:
                            p = get_profile(name).model_copy(
                                update={"batch_size": batch, "allow_spinning": spin}
                            )
                            rows.append(
                                row(path, p, x, model=f"vit-L{layers}", precision=precision)
                            )
    fits = {}
    for name in args.profiles:
        for precision in ("fp32", "int8"):
            pts = [
                (int(r["model"][5:]), r["p50_ms"])
                for r in rows
                if r["profile"] == name
                and r["precision"] == precision
                and r["batch"] == 1
                and r["spin"]
                and r["model"].startswith("vit-")
            ]
            if len(pts) >= 2:
                slope, intercept = np.polyfit(*zip(*pts, strict=True), deg=1)
                fits[f"{name}/{precision}"] = {
                    "per_layer_ms": round(float(slope), 4),
                    "overhead_ms": round(float(intercept), 4),
                }
    print(
        json.dumps(
            {
                "cpu": platform.processor() or platform.machine(),
                "protocol": PROTOCOL,
                "model": {"hidden": args.hidden, "ffn": args.ffn, "heads": args.heads},
                "sizes": sizes,
                "rows": rows,
                "p50_vs_layers_fit_batch1": fits,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
