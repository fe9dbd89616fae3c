"""Evaluation report: metrics.json, matplotlib plots, a TP/FP/FN map and report.html.

Everything is written to one folder and works offline: plots are PNG files, the
folium map inlines the vendored Leaflet (:mod:`geoscreen.offline_map`) and loads
no basemap, and report.html refers only to files beside it. Images without
georeference are mapped in pixel coordinates (Leaflet's flat ``Simple`` CRS,
rows upward-negated so the image is upright).
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import folium
import geopandas as gpd
import matplotlib
import numpy as np
import shapely

from geoscreen.evaluate.metrics import FN, FP, TP, Evaluation
from geoscreen.fileio import atomic_write
from geoscreen.offline_map import ScreeningMap, base_map, pixel_map

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLOURS = {TP: "#2ca02c", FP: "#d62728", FN: "#ff7f0e"}
FILES = {
    "metrics": "metrics.json",
    "pr_curve": "pr_curve.png",
    "histogram": "score_histogram.png",
    "groups": "groups.png",
    "outcomes": "outcomes.png",
    "map": "map.html",
    "report": "report.html",
}


def json_safe(value: Any) -> Any:
    """NaN/inf as null, numpy scalars as Python numbers, recursively."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def plot_pr_curve(ev: Evaluation, path: str | os.PathLike[str]) -> None:
    """Object-level precision-recall curve (score ranking), AP in the title."""
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    recall, precision = ev.curve["recall"], ev.curve["precision"]
    if recall:
        ax.step([0.0, *recall], [precision[0], *precision], where="post", color="#1f77b4")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision")
    ap = ev.metrics["average_precision"]
    ax.set_title(f"PR curve, {ev.criterion} (AP {ap:.3f})", fontsize=9)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def plot_score_histograms(ev: Evaluation, path: str | os.PathLike[str]) -> None:
    """Scores of true and false positive sites."""
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    frame = ev.predicted
    bins = np.linspace(0, 1, 21).tolist()
    for kind in (TP, FP):
        values = frame.loc[frame["outcome"] == kind, "score"].to_numpy(np.float64)
        ax.hist(values, bins=bins, alpha=0.6, color=COLOURS[kind], label=f"{kind} ({values.size})")
    ax.set(xlabel="site score", ylabel="sites", title=f"scores of TP and FP sites, {ev.criterion}")
    ax.title.set_fontsize(9)
    ax.legend()
    save_figure(fig, path)


def plot_group_bars(ev: Evaluation, path: str | os.PathLike[str]) -> None:
    """Precision and recall per scene/region."""
    names = list(ev.groups)
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(names) + 2), 4), dpi=100)
    x = np.arange(len(names))
    for k, (key, colour) in enumerate((("precision", "#1f77b4"), ("recall", "#9467bd"))):
        values = [ev.groups[n][key] for n in names]
        ax.bar(x + (k - 0.5) * 0.4, np.nan_to_num(values), width=0.4, color=colour, label=key)
    ax.set_xticks(x, [n[:16] for n in names], rotation=30, ha="right", fontsize=8)
    ax.set(ylim=(0, 1.02), title=f"per group, {ev.criterion}")
    ax.title.set_fontsize(9)
    ax.legend()
    save_figure(fig, path)


def plot_outcomes(ev: Evaluation, path: str | os.PathLike[str]) -> None:
    """A static map of TP and FP sites and missed (FN) truth objects."""
    fig, ax = plt.subplots(figsize=(6, 6), dpi=100)
    layers = _layers(ev)
    for name, (frame, colour) in layers.items():
        points = frame.geom_type.isin(("Point", "MultiPoint"))
        if (~points).any():  # a point's boundary is empty (geopandas warns)
            frame[~points].boundary.plot(ax=ax, color=colour, linewidth=1.0, label=name)
        if points.any():
            label = None if (~points).any() else name
            frame[points].plot(ax=ax, color=colour, markersize=6, label=label)
    if ev.predicted.crs is None and ev.truth.crs is None:
        ax.invert_yaxis()
        ax.set(xlabel="column (px)", ylabel="row (px)")
    ax.set_aspect("equal")
    ax.set_title(f"sites and truth, {ev.criterion}", fontsize=9)
    ax.legend(loc="upper right", fontsize=7)
    save_figure(fig, path)


def outcome_map(ev: Evaluation) -> ScreeningMap:
    """An offline folium map: TP and FP sites, missed and found truth objects."""
    pixel = ev.predicted.crs is None and ev.truth.crs is None
    fmap = pixel_map() if pixel else base_map(None)
    bounds: list[np.ndarray] = []
    for name, (frame, colour) in _layers(ev).items():
        if not len(frame):
            continue
        shown = _flip(frame) if pixel else frame
        fields = [c for c in ("site_id", "score", "outcome", "similarity") if c in shown.columns]
        group = folium.FeatureGroup(name=name, show=name != "found truth")
        folium.GeoJson(
            shown[[*fields, "geometry"]].to_json(na="null"),
            style_function=_style(colour),
            tooltip=folium.GeoJsonTooltip(fields=fields) if fields else None,
        ).add_to(group)
        group.add_to(fmap)
        bounds.append(shown.total_bounds)
    if bounds:
        b = np.vstack(bounds)
        fmap.fit_bounds([[b[:, 1].min(), b[:, 0].min()], [b[:, 3].max(), b[:, 2].max()]])
    folium.LayerControl(collapsed=False).add_to(fmap)
    return ScreeningMap(fmap)


def write_report(
    ev: Evaluation,
    out_dir: str | os.PathLike[str],
    *,
    title: str = "geoscreen evaluation",
    extra: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write metrics.json, the plots, map.html and report.html to ``out_dir``."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {key: folder / name for key, name in FILES.items()}
    summary = json_safe({**ev.to_dict(), **(extra or {})})
    text = json.dumps(summary, indent=2, allow_nan=False)
    atomic_write(paths["metrics"], lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    for key, plot in (("pr_curve", plot_pr_curve), ("histogram", plot_score_histograms),
                      ("groups", plot_group_bars), ("outcomes", plot_outcomes)):  # fmt: skip
        atomic_write(paths[key], partial(plot, ev))
    outcome_map(ev).save(paths["map"])
    page = render_html(ev, title, extra or {})
    atomic_write(paths["report"], lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    return paths


def render_html(ev: Evaluation, title: str, extra: dict[str, Any]) -> str:
    """The report page (refers to the PNGs and map.html beside it)."""
    m, ci = ev.metrics, ev.intervals
    esc = html.escape

    def num(key: str) -> str:
        value = m.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            text = "n/a"
        else:
            text = f"{value:.3f}" if isinstance(value, float) else str(value)
        if key in ci:
            text += f" <small>(95% CI {ci[key][0]:.3f}-{ci[key][1]:.3f})</small>"
        return text

    shown = ("predicted", "truth", "tp", "fp", "fn", "precision", "recall", "f1",
             "average_precision")  # fmt: skip
    rows = "".join(f"<tr><th>{esc(k.replace('_', ' '))}</th><td>{num(k)}</td></tr>" for k in shown)
    pk = "".join(
        f"<tr><th>precision@{esc(k)}</th><td>{v:.3f}</td></tr>"
        for k, v in m["precision_at_k"].items()
        if v == v
    )
    groups = "".join(
        f"<tr><td>{esc(g)}</td><td>{v['predicted']}</td><td>{v['truth']}</td><td>{v['tp']}</td>"
        f"<td>{v['fp']}</td><td>{v['fn']}</td><td>{_fmt(v['precision'])}</td>"
        f"<td>{_fmt(v['recall'])}</td></tr>"
        for g, v in ev.groups.items()
    )
    notes = "".join(f"<li>{esc(str(n))}</li>" for n in extra.get("notes", []))
    return f"""{page_head(title)}
<p>Sites are places whose imagery <b>matches a screening profile</b>; these numbers say how
well sites line up with labelled objects, not what any place is.</p>
<p>Matching: {esc(ev.criterion)}; {esc(m["matching"])}. Average precision:
{esc(m["average_precision_method"])}. Confidence intervals: bootstrap over matched pairs,
false positives and misses (ignores spatial correlation, so they are optimistic).</p>
<table>{rows}{pk}</table>
<h2>Per group</h2>
<table><tr><th>group</th><th>sites</th><th>truth</th><th>TP</th><th>FP</th><th>FN</th>
<th>precision</th><th>recall</th></tr>{groups}</table>
<h2>Plots</h2>
<img src="{FILES["pr_curve"]}" alt="PR curve"><img src="{FILES["histogram"]}" alt="scores">
<img src="{FILES["outcomes"]}" alt="TP/FP/FN"><img src="{FILES["groups"]}" alt="per group">
<p><a href="{FILES["map"]}">Interactive TP/FP/FN map</a> (offline; no basemap).</p>
<ul>{notes}</ul>
<p>Full numbers: <a href="{FILES["metrics"]}">{FILES["metrics"]}</a>.</p>
</body></html>
"""


def page_head(title: str) -> str:
    """A report page's head, its style and its title heading (the body follows)."""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font:14px sans-serif;max-width:1100px;margin:2em auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}
img{{max-width:48%;margin:4px}}</style></head><body>
<h1>{html.escape(title)}</h1>"""


def _style(colour: str) -> Callable[[Any], dict[str, Any]]:
    return lambda _feature: {"color": colour, "weight": 2, "fillOpacity": 0.1}


def _fmt(value: float) -> str:
    return "n/a" if value != value else f"{value:.3f}"


def _layers(ev: Evaluation) -> dict[str, tuple[gpd.GeoDataFrame, str]]:
    pred, truth = ev.predicted, ev.truth
    return {
        "true positive sites": (pred[pred["outcome"] == TP], COLOURS[TP]),
        "false positive sites": (pred[pred["outcome"] == FP], COLOURS[FP]),
        "missed truth (FN)": (truth[truth["outcome"] == FN], COLOURS[FN]),
        "found truth": (truth[truth["outcome"] == TP], "#17becf"),
    }


def _flip(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Pixel coordinates (col, row) to Leaflet Simple (x, -row)."""
    out = frame.copy()
    out.geometry = shapely.transform(frame.geometry.values, lambda xy: xy * (1.0, -1.0))
    return out


def save_figure(fig: Any, path: str | os.PathLike[str]) -> None:
    """Save a matplotlib figure as PNG and free it."""
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
