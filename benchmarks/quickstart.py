"""The quickstart, end to end, against the walking skeleton's "done when" list.

Runs ``paretoforge search examples/quickstart.yaml`` in a fresh run directory (and, unless
``--cached``, a fresh base-model cache, so base training is timed too), then checks:

- wall time of the whole command (Ray start, base training, search, measurement);
- the front has >= 4 members;
- a member within 1 accuracy point of the base model at <= half its cpu-1t p50 latency;
- that member, exported, run by onnxruntime alone on the held-out digits (rebuilt from
  sklearn with the manifest's indices and preprocessing), reproduces its manifest accuracy.

Usage:
    .venv/bin/python benchmarks/quickstart.py [--cached] [--out benchmarks/results/quickstart.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from paretoforge.names import TrialAttr

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cached", action="store_true", help="reuse the user's base-model cache")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/quickstart.json"))
    args = ap.parse_args()

    import onnxruntime as ort
    from sklearn.datasets import load_digits

    import paretoforge
    from paretoforge.orchestrator.results import export_trial

    work = Path(tempfile.mkdtemp(prefix="pf-quickstart-"))
    env = dict(os.environ)
    if not args.cached:
        env["PARETOFORGE_CACHE"] = str(work / "cache")
    run_dir = work / "run"
    exe = Path(sys.executable).parent / "paretoforge"
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.run([str(exe), "search", str(ROOT / "examples/quickstart.yaml"),
                           "--run-dir", str(run_dir)], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
        return 1

    run = paretoforge.load_run(run_dir)
    base = run.base_trial()
    bm = base.user_attrs[TrialAttr.METRICS]
    front = run.front()
    lat = "latency_p50_ms@cpu-1t"
    good = [m for m in front if m.metrics["accuracy"] >= bm["accuracy"] - 0.01
            and m.metrics[lat] <= 0.5 * bm[lat]]
    best = min(good, key=lambda m: m.metrics[lat]) if good else None

    reproduced = None
    if best is not None:
        out = work / "export"
        export_trial(run, best.trial, out)
        manifest = json.loads((out / "manifest.json").read_text())
        split = manifest["task"]["heldout_split"]  # metrics are on validation: held out - test
        idx = np.setdiff1d(split["heldout_indices"], split.get("test_indices", []))
        d = load_digits()
        x = (d.images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)[idx]
        sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
        # one example per call, as the manifest's quality_batch_size says
        logits = np.concatenate([sess.run(None, {"pixel_values": x[i : i + 1]})[0]
                                 for i in range(len(x))])
        acc = float((logits.argmax(1) == d.target[idx]).mean())
        reproduced = {"onnxruntime_only_accuracy": acc,
                      "manifest_accuracy": manifest["metrics"]["accuracy"],
                      "equal": abs(acc - manifest["metrics"]["accuracy"]) < 1e-9}

    info = json.loads((run_dir / "run.json").read_text())
    result = {
        "command": "paretoforge search examples/quickstart.yaml --run-dir RUN"
                   + ("" if args.cached else " (fresh base-model cache)"),
        "wall_s": round(wall, 1),
        "base_training_s": info["base_model"].get("train_seconds"),
        "base_cached": bool(args.cached),
        "completed": len(run.trials()),
        "failed": len(run.trials(states=("FAIL",))),
        "base": {"accuracy": bm["accuracy"], lat: bm[lat]},
        "front": [{"trial": m.trial, "config": m.config, "accuracy": m.metrics["accuracy"],
                   lat: m.metrics[lat], "speedup": m.relative.get(f"speedup_{lat}")}
                  for m in front],
        "front_size": len(front),
        "within_1pt_at_half_latency": None if best is None else {
            "trial": best.trial, "config": best.config, "accuracy": best.metrics["accuracy"],
            lat: best.metrics[lat], "latency_ratio": best.metrics[lat] / bm[lat]},
        "export_reproduces_accuracy": reproduced,
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(),
                    "loadavg_before": [round(x, 2) for x in load_before]},
        "versions": info["versions"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    ok = (len(front) >= 4 and best is not None and reproduced and reproduced["equal"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
