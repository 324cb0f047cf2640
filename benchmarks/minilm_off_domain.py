"""Off-domain fidelity of a MiniLM front: do the members keep their cosine to the unpruned model
on English text unlike the text they were distilled on?

``examples/minilm-fidelity.yaml`` scores on sentences from Python's documentation
(``pydoc_data.topics``) and distils on those mixed with the docstrings of Python's standard
library (``task.params.extra_texts``; before 2026-12-07, on pydoc sentences alone). This
script takes a finished run of it and scores every front member
-- its exported ``model.onnx``, through onnxruntime alone -- against the run's unpruned base
(trial 0's fp32 ``model.onnx``) on two sets of English text that ship with the project's
dependencies and share little with Python's documentation:

* ``datasets``: the prose of scikit-learn's dataset descriptions (``sklearn/datasets/descr``:
  flowers, wine, housing, faces, newsgroups, ...);
* ``licences``: the licence texts of the installed packages (``*.dist-info/**/LICEN[CS]E*``):
  legal English.

Sentences are cut at sentence ends, kept when 6-40 words long and mostly letters, deduplicated
and sorted, so the sets are the same on every run of the same environment. Each member's mean
cosine on each set is reported beside its in-domain test cosine (the run's own test split),
and the drop between them. Nothing here is fed back into any search.

Usage:
    .venv/bin/python benchmarks/minilm_off_domain.py --run RUN \
        [--out benchmarks/results/minilm_off_domain.json] [--max-sentences 300]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import sysconfig
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import finished_run, machine, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def _sentences(text: str) -> list[str]:
    out = []
    for par in re.split(r"\n\s*\n", text):
        lines = [ln.strip() for ln in par.splitlines()]
        if any(ln.startswith(("..", ":", "=", "+", "|", ">>>")) for ln in lines):
            continue  # reST directives, fields, tables, code
        lines = [re.sub(r"^[-*]\s+", "", ln) for ln in lines]  # a list item is prose too
        flat = " ".join(ln for ln in lines if ln)
        for sent in _SENTENCE_END.split(flat):
            sent = sent.strip()
            words = sent.split()
            letters = sum(c.isalpha() for c in sent)
            if (6 <= len(words) <= 40 and letters >= 0.7 * len(sent) and sent[-1] in ".!?"
                    and not any(x in sent for x in ("`", "<", "@", "http", '"""'))):
                out.append(sent)
    return out


def corpora(max_sentences: int) -> dict[str, list[str]]:
    """The two off-domain sets, each deduplicated, sorted, and cut to ``max_sentences``."""
    import sklearn

    descr = Path(sklearn.__file__).parent / "datasets" / "descr"
    datasets = [s for f in sorted(descr.glob("*.rst")) for s in _sentences(f.read_text())]
    site = Path(sysconfig.get_paths()["purelib"])
    licence_files = sorted(p for p in site.glob("*.dist-info/**/*")
                           if p.is_file() and p.name.upper().startswith(("LICENSE", "LICENCE")))
    licences = []
    for f in licence_files:
        try:
            licences += _sentences(f.read_text(encoding="utf-8", errors="strict"))
        except UnicodeDecodeError:
            continue

    def pick(xs: list[str]) -> list[str]:
        uniq = sorted(set(xs))
        step = max(1, len(uniq) // max_sentences)  # spread over the whole set, not its head
        return uniq[::step][:max_sentences]

    return {"datasets": pick(datasets), "licences": pick(licences)}


def _embed(model: Path, feeds: dict[str, Any]) -> Any:
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    outs = []
    n = len(feeds["input_ids"])
    for i in range(0, n, 32):
        outs.append(sess.run(None, {k: feeds[k][i:i + 32] for k in names})[0])
    return np.concatenate(outs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a finished run of examples/minilm-fidelity.yaml")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/minilm_off_domain.json"))
    ap.add_argument("--max-sentences", type=int, default=300)
    args = ap.parse_args()
    run_dir = finished_run(args.run)
    if run_dir is None:
        return 2

    import numpy as np
    import yaml
    from transformers import AutoTokenizer

    from paretoforge.orchestrator.results import load_run
    from paretoforge.spec._sections import resolve_model_path
    from paretoforge.tasks.embedding import mean_cosine
    from paretoforge.tasks.text import tokenize

    spec = yaml.safe_load((run_dir / "spec.yaml").read_text())
    if spec.get("task", {}).get("metric") != "embedding_cosine":
        print(f"--run {run_dir}: not an embedding-fidelity run (task.metric is "
              f"{spec.get('task', {}).get('metric')!r})", file=sys.stderr)
        return 2
    max_length = int(spec["task"].get("params", {}).get("max_length", 128))
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model_path(spec["model"]["path"])))
    run = load_run(run_dir)
    base = run.base_trial()
    if base is None:
        print(f"--run {run_dir}: the run has no base trial", file=sys.stderr)
        return 2
    base_onnx = run.artifact_dir(base) / "model.onnx"
    sets = corpora(args.max_sentences)
    feeds = {name: tokenize(tokenizer, texts, max_length) for name, texts in sets.items()}
    reference = {name: _embed(base_onnx, f) for name, f in feeds.items()}
    members = []
    for m in run.front():
        t = run.trial(m.trial)
        onnx = run.artifact_dir(t) / "model.onnx"
        row: dict[str, Any] = {
            "trial": m.trial, "config": m.config, "test_cosine": m.quality["test"],
            "validation_cosine": m.quality["validation"],
            "speedup": m.relative.get(m.speedup_metric),
            "distilled": m.recovery_epochs is not None,
        }
        for name, f in feeds.items():
            cos = mean_cosine(_embed(onnx, f), reference[name])
            row[f"{name}_cosine"] = round(cos, 4)
            if m.quality["test"] is not None:
                row[f"{name}_drop"] = round(float(m.quality["test"]) - cos, 4)
        members.append(row)
        print(json.dumps({k: row[k] for k in row if k != "config"}), flush=True)
    result = {
        "command": f"python benchmarks/minilm_off_domain.py --run {run_dir}",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "run": str(run_dir), "max_length": max_length,
        "sets": {name: {"sentences": len(texts), "examples": texts[:3]}
                 for name, texts in sets.items()},
        "members": members,
        # over the members that were pruned and distilled (not the base at a precision)
        "mean_drop_distilled": {name: round(float(np.mean(drops)), 4) for name in sets if (
            drops := [r[f"{name}_drop"] for r in members if r["distilled"]
                      and f"{name}_drop" in r])},
        "machine": machine("onnxruntime", "transformers"),
    }
    write_result(Path(args.out), result)
    print(json.dumps({"sets": {k: v["sentences"] for k, v in result["sets"].items()},
                      "mean_drop_distilled": result["mean_drop_distilled"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
