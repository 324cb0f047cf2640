"""Check the gpu-fp16 profile on a CUDA machine; prints one JSON object.

On a machine with CUDA (onnxruntime's CUDAExecutionProvider and a visible GPU) it:

1. exports the quickstart ViT (random weights: timing and numerics do not need training) to
   fp32 ONNX and converts it to fp16 (``onnxruntime.transformers.float16``, inputs and outputs
   kept fp32 so the task's inputs feed it unchanged);
2. compares the logits of fp16 and fp32 on the GPU against fp32 on the CPU (relative error:
   max |difference| / max |reference|) on real digits;
3. times both through the profile's runtime -- IO binding, inputs and outputs resident on the
   device, each call synchronised -- with the latency protocol (p50), and once more with a
   CUDA graph, and the PyTorch model with CUDA events;
4. reports where each node ran (:func:`placement_report`): nodes that fell back to the CPU and
   host-device copies are why a GPU model is slower than it should be.

Without CUDA it prints ``no CUDA: skipped`` and exits 0. ``--cpu-dry-run`` runs every step
that does not need a GPU on the CPU provider instead (conversion, numerics, timing code), so
the script itself is tested on machines without one.

Usage:
    python benchmarks/gpu_check.py                # on a CUDA machine
    python benchmarks/gpu_check.py --cpu-dry-run  # anywhere
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FP16_REL_TOL = 2e-2  # fp16 logits of a small ViT stay within ~1e-3 of fp32; 2e-2 is a bug


def cuda_status() -> dict[str, Any]:
    import onnxruntime as ort

    status: dict[str, Any] = {"onnxruntime": ort.__version__,
                              "ort_providers": ort.get_available_providers()}
    try:
        import torch

        status["torch_cuda"] = bool(torch.cuda.is_available())
        if status["torch_cuda"]:
            status["gpu"] = torch.cuda.get_device_name(0)
    except Exception as err:  # torch is optional for the check itself
        status["torch_cuda"] = f"error: {err}"
    smi = shutil.which("nvidia-smi")
    if smi:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10)
        status["nvidia_smi"] = out.stdout.strip().splitlines()
    status["cuda"] = "CUDAExecutionProvider" in status["ort_providers"] and bool(
        status.get("nvidia_smi") or status["torch_cuda"] is True)
    return status


def to_fp16(src: Path, dst: Path) -> Path:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))
    return dst


def rel_err(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(out.astype(np.float64) - ref).max() / np.abs(ref).max())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-dry-run", action="store_true",
                    help="run the steps that need no GPU on the CPU provider")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    args = ap.parse_args()

    status = cuda_status()
    if not status["cuda"] and not args.cpu_dry_run:
        why = ("onnxruntime lacks CUDAExecutionProvider (pip install onnxruntime-gpu)"
               if "CUDAExecutionProvider" not in status["ort_providers"] else "no GPU visible")
        print(f"no CUDA: skipped ({why})", file=sys.stderr)
        print(json.dumps({"status": "skipped", "reason": f"no CUDA: {why}", **status}))
        return 0

    import torch

    from paretoforge.evaluators.latency import measure_latency
    from paretoforge.hw_profiles import HardwareProfile, get_profile
    from paretoforge.kernels.export import export_onnx
    from paretoforge.kernels.runtime import load_runtime, placement_report
    from paretoforge.models.vit import DEFAULT_DIGITS_RECIPE, build_vit
    from paretoforge.tasks import load_task

    gpu = get_profile("gpu-fp16")
    if args.cpu_dry_run:  # the same steps on the CPU provider: checks the script, not a GPU
        gpu = HardwareProfile(name="gpu-fp16-dry-run", device="cpu", intra_op_threads=1,
                              io_binding=True, precisions=("fp16", "fp32"), resource=None)
    cpu = get_profile("cpu-1t")
    task = load_task("digits")
    x = task.x_heldout[:64]
    torch.manual_seed(0)
    model = build_vit(DEFAULT_DIGITS_RECIPE).eval()
    protocol = {"warmup": 50, "min_runs": 200, "max_runs": 5000, "max_seconds": 5.0}
    report: dict[str, Any] = {"status": "ok", "dry_run": args.cpu_dry_run, **status,
                              "profile": gpu.model_dump(mode="json"), "rows": []}
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="pf-gpu-") as d:
        fp32 = export_onnx(model, {"pixel_values": torch.from_numpy(x[:1])},
                           Path(d) / "fp32.onnx", output_names=("logits",))
        fp16 = to_fp16(fp32, Path(d) / "fp16.onnx")
        with load_runtime(fp32, cpu) as rt:
            ref = rt.run({"pixel_values": x})[0].astype(np.float64)
        for name, path in (("fp32", fp32), ("fp16", fp16)):
            with load_runtime(path, gpu) as rt:
                report[f"rel_err_{name}_vs_cpu_fp32"] = rel_err(rt.run({"pixel_values": x})[0],
                                                                ref)
            pr = placement_report(path, gpu, {"pixel_values": x})
            report[f"placement_{name}"] = {k: pr[k] for k in (
                "nodes_after", "nodes_by_provider", "fallback_ops", "memcpy_nodes",
                "unfused_qdq", "on_requested_provider")}
            for bs in args.batch:
                variants = [("io_binding", gpu.model_copy(update={"batch_size": bs}))]
                if gpu.device == "cuda":
                    variants.append(("cuda_graph", gpu.model_copy(
                        update={"batch_size": bs, "cuda_graph": True})))
                for label, prof in variants:
                    try:
                        m = measure_latency(path, prof, {"pixel_values": x}, **protocol)
                        report["rows"].append({
                            "precision": name, "batch": bs, "mode": label,
                            "p50_ms": m.p50_ms, "p90_ms": m.p90_ms, "ci95_rel": m.ci95_rel,
                            "runs": m.runs, "timer": m.env["timer"],
                            "provider": m.env["provider"]})
                    except Exception as err:  # report, keep checking the rest
                        report["rows"].append({"precision": name, "batch": bs, "mode": label,
                                               "error": f"{type(err).__name__}: {err}"})
        if gpu.device == "cuda" or args.cpu_dry_run:
            eager = HardwareProfile(name="torch-eager-check", device=gpu.device,
                                    runtime="torch-eager", intra_op_threads=1, resource=None)
            for bs in args.batch:
                m = measure_latency(model, eager.model_copy(update={"batch_size": bs}),
                                    {"pixel_values": x}, **protocol)
                report["rows"].append({"precision": "fp32", "batch": bs, "mode": "torch-eager",
                                       "p50_ms": m.p50_ms, "p90_ms": m.p90_ms,
                                       "ci95_rel": m.ci95_rel, "runs": m.runs,
                                       "timer": m.env["timer"], "provider": m.env["provider"]})
    report["wall_s"] = round(time.time() - t0, 1)
    problems = []
    if report["rel_err_fp16_vs_cpu_fp32"] > FP16_REL_TOL:
        problems.append(f"fp16 relative error {report['rel_err_fp16_vs_cpu_fp32']:.3g} > "
                        f"{FP16_REL_TOL}")
    if any("error" in r for r in report["rows"]):
        problems.append("a timing variant failed (see rows)")
    if problems:
        report["status"] = "failed"
        report["problems"] = problems
    print(json.dumps(report, indent=1))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
