"""``paretoforge report RUN``: pareto.png and a self-contained report.html for a run directory.

The figure has one panel per hardware profile (quality against median latency there: every
completed candidate, the front in that projection, the base model), the hypervolume after each
completed trial (reference point: the worst observed value of each objective, stated on the
panel), and the failed trials by reason. The HTML page inlines that PNG (base64) and holds the
tables: the run (with one line per latency predictor: its data and held-out error), the front,
the failures and every trial; it loads nothing from anywhere. The front's quality is given
twice, labelled: on validation (the split every search decision used; the figure plots it)
and on test (never seen by the search, scored once per member after it: the one to quote).
Latency on a profile served by prediction (``prediction.profiles``) is labelled predicted
wherever it appears.

Example:
    >>> html_path, png_path = write_report("runs/quickstart")  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Any

from paretoforge._io import atomic_write_bytes, atomic_write_text
from paretoforge.names import TrialAttr
from paretoforge.orchestrator.results import Run, load_run, non_dominated
from paretoforge.tasks import TASKS

__all__ = ["render_figure", "render_html", "write_report"]


def write_report(run_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None
                 ) -> tuple[Path, Path]:
    """Write ``report.html`` and ``pareto.png`` into ``out_dir`` (default: the run directory)."""
    run = load_run(run_dir)
    out = Path(out_dir) if out_dir is not None else run.dir
    out.mkdir(parents=True, exist_ok=True)
    png = render_figure(run)
    atomic_write_bytes(out / "pareto.png", png)
    atomic_write_text(out / "report.html", render_html(run, png))
    return out / "report.html", out / "pareto.png"


def _quality_metric(run: Run) -> str:
    """The task's quality metric (the report plots it against each latency)."""
    return run.spec.task.quality_metric


def render_figure(run: Run) -> bytes:
    """The PNG: front per profile, hypervolume by trial, failures by reason."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    predicted = set(run.spec.predicted_profiles)
    profiles = list(dict.fromkeys([*run.spec.profiles, *run.spec.predicted_profiles]))
    n = len(profiles) + 2
    cols = 2
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(11, 4.2 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    done = run.trials()
    quality = _quality_metric(run)
    qdir = TASKS.get(run.spec.task.name).direction(quality)
    base = run.base_trial()
    feasible = {t.number for t in done if _feasible(t)}
    for ax, p in zip(flat, profiles, strict=False):
        lat = f"latency_p50_ms@{p}"
        measured = [(t, t.user_attrs.get(TrialAttr.METRICS) or {}) for t in done]
        pts = [(m[lat], m[quality], t.number) for t, m in measured if lat in m]
        if not pts:
            ax.text(0.5, 0.5, "no completed trial", ha="center", transform=ax.transAxes)
        else:
            ok = [q for q in pts if q[2] in feasible] or pts
            idx = non_dominated([(x, y) for x, y, _ in ok], ["minimize", qdir])
            front = sorted({(ok[i][0], ok[i][1]) for i in idx})
            ax.scatter([x for x, _, _ in pts], [y for _, y, _ in pts], s=18, c="#9aa5b1",
                       label="completed", zorder=2)
            bad = [q for q in pts if q[2] not in feasible]
            if bad and len(bad) < len(pts):
                ax.scatter([x for x, _, _ in bad], [y for _, y, _ in bad], s=30,
                           facecolors="none", edgecolors="#d97706", label="infeasible", zorder=3)
            ax.plot([x for x, _ in front], [y for _, y in front], "-o", c="#c0392b", ms=5,
                    label="front", zorder=4)
            if base is not None and lat in base.user_attrs.get(TrialAttr.METRICS, {}):
                bm = base.user_attrs[TrialAttr.METRICS]
                ax.scatter([bm[lat]], [bm[quality]], marker="*", s=180, c="#1f6feb",
                           label="base model", zorder=5)
            ax.legend(loc="lower right", fontsize=8)
        how = "predicted" if p in predicted else "median"
        ax.set_xlabel(f"{how} latency on {p} (ms)")
        ax.set_ylabel(quality)
        ax.set_title(f"Front on profile {p}" + (" (latency predicted)" if p in predicted else ""))
        ax.grid(alpha=0.3)

    ax = flat[len(profiles)]
    history, ref = run.hypervolume_history()
    if history:
        ax.step([n for n, _ in history], [h for _, h in history], where="post", c="#2f855a")
        ax.plot([n for n, _ in history], [h for _, h in history], "o", c="#2f855a", ms=3)
    ref_text = ", ".join(f"{k}={v:.4g}" for k, v in ref.items())
    ax.set_title("Hypervolume after each completed trial")
    ax.set_xlabel(f"trial number\nreference point: worst observed {ref_text}", fontsize=9)
    ax.set_ylabel("hypervolume")
    ax.grid(alpha=0.3)

    ax = flat[len(profiles) + 1]
    fails = run.failures()
    if fails:
        kinds = sorted(fails, key=lambda k: -fails[k])
        ax.barh(kinds, [fails[k] for k in kinds], color="#c05621")
        ax.invert_yaxis()
        ax.set_xlabel("failed trials")
    else:
        ax.text(0.5, 0.5, "no failed trials", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_title("Failures by reason")
    for extra in flat[n:]:
        extra.axis("off")
    fig.suptitle(f"paretoforge run {run.spec.name!r}: {len(done)} completed trials")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _provenance(run: Run) -> str:
    if not run.spec.predicted_profiles:
        return "Every number below was measured; latency is the median on each profile."
    return ("Every number below was measured, except latency on "
            + ", ".join(run.spec.predicted_profiles) + ": predicted by a latency predictor "
            "fitted on measurements taken on that hardware (labelled predicted); latency is "
            "the median on each profile.")


def _quality_note(quality: str) -> str:
    return (f"{quality} (validation): on the validation split, which every search decision "
            "used (the study's values, constraints, pre-screening, the choice of this front), "
            f"so it is an optimistic estimate. {quality} (test): on the test split, which no "
            "decision saw, scored once per member after the search. Quote the test number.")


def _feasible(t: Any) -> bool:
    return all(c <= 0 for c in (t.user_attrs.get(TrialAttr.CONSTRAINTS) or []))


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _table(rows: list[dict[str, Any]], columns: list[str], *, cls: str = "") -> str:
    if not rows:
        return "<p class='muted'>none</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for r in rows:
        tr_cls = " class='front'" if r.get("on_front") else ""
        cells = "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in columns)
        body.append(f"<tr{tr_cls}>{cells}</tr>")
    return (f"<table class='{cls}'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#1a202c}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid
#e2e8f0;padding-bottom:4px} .muted{color:#718096} img{max-width:100%;border:1px solid #e2e8f0}
table{border-collapse:collapse;font-size:12px;margin:4px 0} th,td{border:1px solid #e2e8f0;
padding:3px 7px;text-align:right} th{background:#f7fafc} td:first-child,th:first-child{
text-align:left} tr.front td{background:#fff5f5} dl{display:grid;grid-template-columns:max-content
auto;gap:2px 14px;font-size:13px} dt{color:#4a5568}
"""


def render_html(run: Run, png: bytes) -> str:
    """The self-contained report page (the figure inlined as a base64 PNG)."""
    rows = run.trials_table()
    front = run.front() if run.trials() else []
    history, ref = run.hypervolume_history()
    objectives = run.objective_names
    from paretoforge.search_spaces import SearchSpace

    dims = list(SearchSpace.from_preset(run.spec.space.preset, run.spec.space.dimensions)
                .dimensions)
    counts = {s: sum(r["state"] == s for r in rows) for s in ("COMPLETE", "FAIL", "RUNNING")}
    cached = sum(r["cached_from"] is not None for r in rows)
    prescreened = sum(r["prescreen_reason"] is not None for r in rows)
    predicted_metrics = {o for o in objectives
                         if o.partition("@")[2] in run.spec.predicted_profiles}
    summary = {
        "run directory": str(run.dir.resolve()),
        "sampler": run.spec.search.sampler,
        "objectives": ", ".join(f"{o.direction} {o.metric}" for o in run.spec.objectives),
        "constraints": ", ".join(
            f"{c.metric} in [{'' if c.min is None else f'{c.min:g}'}, "
            f"{'' if c.max is None else f'{c.max:g}'}]" for c in run.spec.constraints) or "none",
        "profiles": ", ".join(run.spec.measured_profiles) + (
            "; predicted: " + ", ".join(run.spec.predicted_profiles)
            if run.spec.predicted_profiles else ""),
        "trials": f"{counts['COMPLETE']} complete ({cached} answered from the cache), "
                  f"{counts['FAIL']} failed, {counts['RUNNING']} running "
                  f"(target {run.spec.search.trials})"
                  + (f"; {prescreened} skipped before building (pre-screen)"
                     if prescreened else ""),
        "front": f"{len(front)} member(s)"
                 + ("" if not front or front[0].feasible else
                    " -- no trial is feasible: best effort, with what each misses"),
        "hypervolume": (f"{history[-1][1]:.4g} (reference: worst observed "
                        + ", ".join(f"{k}={v:.4g}" for k, v in ref.items()) + ")")
        if history else "-",
    }
    from paretoforge.orchestrator.prediction import predictor_lines

    for line in predictor_lines(run.predictors()):
        name, _, text = line.removeprefix("latency predictor ").partition(": ")
        summary[f"latency predictor {name}"] = text
    quality = _quality_metric(run)
    front_rows = []
    for m in front:
        r: dict[str, Any] = {"trial": m.trial, **{d: m.config.get(d) for d in dims}}
        for k, v in m.objectives.items():
            label = (f"{k} (predicted)" if k in predicted_metrics
                     else f"{k} (validation)" if k == quality else k)
            r[label] = v
            if k == quality:
                r[f"{k} (test)"] = m.test_metrics.get(quality)
        if quality not in m.objectives:
            r[f"{quality} (validation)"] = m.metrics.get(quality)
            r[f"{quality} (test)"] = m.test_metrics.get(quality)
        for k, v in m.relative.items():
            if k.startswith("speedup_latency_p50"):  # a decoder's: a prefill of one block
                r[k.replace("speedup_latency_p50_ms@", "speed-up@")] = v
            elif k.startswith("speedup_decode_ms_per_token"):  # a decoder's generation
                r[k.replace("speedup_decode_ms_per_token@", "decode speed-up@")] = v
        r["onnx KiB"] = m.metrics.get("onnx_bytes", 0) / 1024
        r["misses"] = "; ".join(f"{k} by {v:.4g}" for k, v in m.misses.items())
        front_rows.append(r)
    front_cols = list(dict.fromkeys(k for r in front_rows for k in r))
    fail_rows = [r for r in rows if r["state"] == "FAIL"]
    fail_cols = ["trial", *dims, "fail_kind", "attempts", "fail_reason"]
    trial_cols = ["trial", "state", *objectives, *dims, "feasible", "on_front", "cached_from",
                  "attempts", "fail_kind", "duration_s", "worker"]
    if prescreened:
        trial_cols.append("prescreen_reason")
    img = base64.b64encode(png).decode("ascii")
    info = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>"
                   for k, v in summary.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>paretoforge report: {html.escape(run.spec.name)}</title>
<style>{_CSS}</style></head><body>
<h1>paretoforge report: {html.escape(run.spec.name)}</h1>
<p class="muted">{html.escape(_provenance(run))}</p>
<dl>{info}</dl>
<h2>Pareto front</h2>
<p class="muted">{html.escape(_quality_note(quality))}</p>
{_table(front_rows, front_cols)}
<h2>Figures</h2>
<img alt="front per profile, hypervolume by trial, failures by reason"
 src="data:image/png;base64,{img}">
<h2>Failed trials ({len(fail_rows)})</h2>
{_table(fail_rows, fail_cols)}
<h2>All trials ({len(rows)})</h2>
{_table(rows, trial_cols)}
</body></html>
"""
