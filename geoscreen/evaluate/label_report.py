"""The report of a score raster measured at labelled places (:mod:`.at_labels`):
metrics.json, a precision-recall curve, the scores of positives and negatives, and
report.html beside them (offline, nothing from the internet)."""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

from geoscreen.evaluate.at_labels import LabelScores
from geoscreen.evaluate.metrics import pr_curve
from geoscreen.evaluate.report import FILES, json_safe, page_head, save_figure
from geoscreen.fileio import atomic_write

matplotlib.use("Agg")
import matplotlib.pyplot as plt

WRITTEN = ("metrics", "pr_curve", "histogram", "report")


def write_label_report(
    result: LabelScores,
    metrics: dict[str, Any],
    out_dir: str | os.PathLike[str],
    *,
    title: str,
    extra: dict[str, Any],
) -> dict[str, Path]:
    """Write the report's files to ``out_dir``; returns their paths."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {key: folder / FILES[key] for key in WRITTEN}
    text = json.dumps(json_safe({**metrics, **extra}), indent=2, allow_nan=False)
    atomic_write(paths["metrics"], lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    atomic_write(paths["pr_curve"], lambda tmp: _pr_plot(result, metrics, tmp))
    atomic_write(paths["histogram"], lambda tmp: _histogram(result, metrics, tmp))
    page = _html(metrics, title, extra)
    atomic_write(paths["report"], lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    return paths


def _pr_plot(result: LabelScores, metrics: dict[str, Any], path: str) -> None:
    curve = pr_curve(result.scores, result.positive, int(result.positive.sum()))
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    ax.step(np.r_[0.0, curve["recall"]], np.r_[curve["precision"][:1], curve["precision"]],
            where="post", color="#1f77b4", label="scores")  # fmt: skip
    rate = metrics["positive_rate"]
    ax.axhline(rate, color="#7f7f7f", linestyle="--", label=f"positive rate {rate:.3f}")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision")
    ax.set_title(f"labels ranked by score (AP {metrics['average_precision']:.3f})", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def _histogram(result: LabelScores, metrics: dict[str, Any], path: str) -> None:
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    bins = np.linspace(0, 1, 21).tolist()
    for flag, name, colour in ((True, "positive", "#2ca02c"), (False, "negative", "#d62728")):
        values = result.scores[result.positive == flag]
        ax.hist(values, bins=bins, alpha=0.6, color=colour, label=f"{name} ({values.size})")
    if metrics.get("threshold") is not None:
        ax.axvline(metrics["threshold"], color="black", linestyle=":", label="threshold")
    ax.set(xlabel="score at the label", ylabel="labels")
    ax.set_title("scores of positive and negative labels", fontsize=9)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def _html(metrics: dict[str, Any], title: str, extra: dict[str, Any]) -> str:
    esc = html.escape

    def fmt(value: Any) -> str:
        if value is None or (isinstance(value, float) and value != value):
            return "n/a"
        return f"{value:.3f}" if isinstance(value, float) else esc(str(value))

    interval = metrics["average_precision_interval"]
    ap = fmt(metrics["average_precision"]) + (
        f" <small>(95% CI {interval[0]:.3f}-{interval[1]:.3f})</small>" if interval else ""
    )
    keys = ("labels", "positives", "negatives", "positive_rate", "roc_auc", "threshold",
            "tp", "fp", "fn", "tn", "precision", "recall", "f1")  # fmt: skip
    rows = f"<tr><th>average precision</th><td>{ap}</td></tr>" + "".join(
        f"<tr><th>{esc(k.replace('_', ' '))}</th><td>{fmt(metrics[k])}</td></tr>"
        for k in keys
        if k in metrics
    )
    classes = "".join(
        f"<tr><td>{esc(name)}</td><td>{'positive' if c['positive'] else 'negative'}</td>"
        f"<td>{c['labels']}</td><td>{c['mean_score']:.3f}</td></tr>"
        for name, c in metrics["per_class"].items()
    )
    notes = "".join(f"<li>{esc(str(n))}</li>" for n in extra.get("notes", []))
    return f"""{page_head(title)}
<p>A score says how well a place <b>matches a screening profile</b>; these numbers say how
well the scores rank the labelled places, not what any place is. Average precision is
the area under the precision-recall curve of the labels ranked by their score; the
positive rate is its value for a random ranking. The interval resamples
{esc(metrics["interval_resamples"])}.</p>
<table>{rows}</table>
<h2>Per class</h2>
<table><tr><th>class</th><th>counted as</th><th>labels</th><th>mean score</th></tr>
{classes}</table>
<h2>Plots</h2>
<img src="{FILES["pr_curve"]}" alt="PR curve"><img src="{FILES["histogram"]}" alt="scores">
<ul>{notes}</ul>
<p>Full numbers: <a href="{FILES["metrics"]}">{FILES["metrics"]}</a>.</p>
</body></html>
"""
