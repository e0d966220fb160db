"""The HTML page of a report: verdict, figures, run table, metrics, configuration.

Everything here formats small dicts (a run's attrs and metrics) and the PNG
files :mod:`tilesky.report` wrote; nothing reads the images' arrays.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["page"]


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(obj, Mapping):
        rows = []
        for k, v in obj.items():
            rows += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return rows
    return [(prefix, obj)]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if value is None:
        return "–"
    return str(value)


def _brief(value: Any) -> str:
    # The verdict's numbers: three significant digits read at a glance.
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.3g}"
    return _fmt(value)


def _table(rows: list[tuple[str, Any]], header: tuple[str, str]) -> str:
    body = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>"
        for k, v in rows
    )
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _scale_table(scale: Mapping[str, Any]) -> str:
    cols = [c for c in ("n_blocks", "rms", "perfect", "ideal", "ratio") if scale.get(c)]
    head = "<th>width</th>" + "".join(f"<th>{c}</th>" for c in cols)
    rows = []
    for k, w in enumerate(scale.get("widths", [])):
        cells = "".join(f"<td>{_fmt(scale[c][k])}</td>" for c in cols)
        rows.append(f"<tr><td>{w}</td>{cells}</tr>")
    return (
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _pm(mean, err) -> str:
    return f"{_fmt(mean)} ± {_fmt(err)}"


def _summary_rows(metrics: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The few numbers to look at first."""
    rows: list[tuple[str, Any]] = []
    truth = metrics.get("truth") or {}
    for part in ("all", "interior"):
        t = truth.get(part) or {}
        if t.get("n_pixels"):
            label = (
                "whole image" if part == "all" else f"interior (edge {t['edge']} px)"
            )
            rows.append(
                (
                    f"background - truth, {label}: rms / std / max / min",
                    f"{_fmt(t['rms'])} / {_fmt(t['std'])} / {_fmt(t['max'])} / "
                    f"{_fmt(t['min'])}",
                )
            )
    bias = metrics.get("bias") or {}
    if bias:
        rows.append(
            (
                "background under masked - unmasked pixels (per block)",
                f"{_pm(bias.get('difference'), bias.get('stderr'))}, "
                f"z = {_fmt(bias.get('z'))} over {bias.get('n_blocks')} blocks",
            )
        )
    scale = metrics.get("scale") or {}
    ratio = [r for r in scale.get("ratio") or [] if r is not None]
    if ratio:
        rows.append(
            (
                f"RMS of block means / {scale.get('reference')}: median (min, max)",
                f"{_fmt(float(np.median(ratio)))} "
                f"({_fmt(min(ratio))}, {_fmt(max(ratio))})",
            )
        )
    sources = metrics.get("sources") or {}
    for name, g in (sources.get("groups") or {}).items():
        rows.append(
            (
                f"{sources.get('quantity')} under {name} positions (n = {g.get('n')})",
                _pm(g.get("mean"), g.get("stderr")),
            )
        )
    return rows


_CSS = """
body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}
table{border-collapse:collapse;margin:0.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:2px 6px;text-align:left;font-size:90%}
figure{display:inline-block;margin:0.5em;vertical-align:top}
img{max-width:100%;border:1px solid #ddd}
.warn{background:#fde8e8;border-left:4px solid #c00;padding:0.5em}
.ok{background:#e8f6e8;border-left:4px solid #080;padding:0.5em}
"""


_STAGE_LABELS = {
    "ring_median": "ring median",
    "first_mask": "first source mask",
    "first_mesh": "first mesh background",
    "metrics": "quality metrics",
    "total": "whole run",
}


def _stage_label(key: str) -> str:
    if key.startswith("round") and key[5:].isdigit():
        return f"source masks and background, round {key[5:]}"
    return _STAGE_LABELS.get(key, key.replace("_", " "))


def _noise_label(key: str) -> str:
    if key == "first_mask":
        return "first source mask"
    if key.startswith("source_mask_round"):
        return f"source masks, round {key.removeprefix('source_mask_round')}"
    return key.replace("_", " ")


def _run_rows(ds) -> list[tuple[str, Any]]:
    """The run table, in words and units."""
    attrs = ds.attrs
    rows: list[tuple[str, Any]] = []
    for key, label in (
        ("tilesky_version", "tilesky version"),
        ("tilesky_status", "status"),
    ):
        if key in attrs:
            rows.append((label, attrs[key]))
    ny, nx = ds["background"].shape
    rows.append(("image size", f"{nx} x {ny} pixels"))
    source = (attrs.get("input") or {}).get("source")
    if source:
        rows.append(("input", source))
    for key, value in (attrs.get("noise") or {}).items():
        if isinstance(value, Mapping) and value.get("std") is not None:
            rows.append(
                (
                    f"noise for the thresholds, {_noise_label(key)}",
                    f"sigma {_fmt(value['std'])} from {value.get('count')} pixels",
                )
            )
    for key, value in (attrs.get("timings") or {}).items():
        if isinstance(value, int | float):
            rows.append((f"time, {_stage_label(key)}", f"{value:.2f} s"))
    return rows


def _verdict(ds, metrics) -> str:
    """The few sentences to read first: can the background be trusted?"""
    from tilesky._trust import trust_check

    trust = ds.attrs.get("trust") or trust_check(metrics)
    ok = trust.get("trusted", True)
    items = [
        f"<p class='{'ok' if ok else 'warn'}'><b>"
        f"{'No warning' if ok else 'Warning'}:</b> "
        f"{html.escape(str(trust.get('message', '')))}</p><ul>"
    ]
    bias = (metrics or {}).get("bias") or {}
    sigma = ((metrics or {}).get("scale") or {}).get("sigma")
    if bias.get("difference") is not None and sigma:
        items.append(
            "<li>Background under masked minus unmasked pixels: "
            f"{_brief(bias['difference'] / sigma)} sigma of the pixel noise "
            f"(z = {_brief(bias.get('z'))} over {bias.get('n_blocks')} blocks)</li>"
        )
    if trust.get("masked_fraction") is not None:
        items.append(
            f"<li>Masked: {100 * trust['masked_fraction']:.1f} % of the pixels</li>"
        )
    if trust.get("max_ratio") is not None:
        items.append(
            "<li>Largest RMS of block means over the pure-noise value at widths "
            f">= 10 px: {_brief(trust['max_ratio'])} (1 = noise only)</li>"
        )
    t = (((metrics or {}).get("truth") or {}).get("interior")) or {}
    if t.get("rms") is not None and sigma:
        items.append(
            f"<li>Background - truth (interior): RMS {_brief(t['rms'])} = "
            f"{_brief(t['rms'] / sigma)} sigma of the pixel noise</li>"
        )
    items.append("</ul>")
    return "".join(items)


def _figure_html(out: Path, name: str, caption: str, panel: str | None) -> str:
    shown = panel or name
    data = base64.b64encode((out / f"{shown}.png").read_bytes()).decode("ascii")
    links = f"<a href='{name}.png'>{name}.png</a>"
    if panel:
        links = f"<a href='{panel}.png'>{panel}.png</a>, map pixel for pixel: " + links
    return (
        f"<figure><a href='{shown}.png'><img alt='{name}' "
        f"src='data:image/png;base64,{data}'></a>"
        f"<figcaption>{html.escape(caption)} ({links})</figcaption></figure>"
    )


def page(ds, out: Path, figures, metrics) -> str:
    """The report's HTML text."""
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        "<title>tilesky report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>tilesky report</h1>",
        "<h2>Verdict</h2>",
        _verdict(ds, metrics),
    ]
    parts.append("<h2>Figures</h2>")
    parts += [_figure_html(out, *fig) for fig in figures]
    parts += ["<h2>Run</h2>", _table(_run_rows(ds), ("item", "value"))]
    parts.append("<h2>Metrics</h2>")
    if metrics:
        parts += ["<h3>Summary</h3>", _table(_summary_rows(metrics), ("", "value"))]
        scale = metrics.get("scale") or {}
        if scale.get("widths"):
            parts += ["<h3>RMS versus scale</h3>", _scale_table(scale)]
        other = {k: v for k, v in metrics.items() if k != "scale"}
        other["scale"] = {k: v for k, v in scale.items() if not isinstance(v, list)}
        parts.append("<details><summary>All metrics</summary>")
        parts.append(_table(_flatten(other), ("metric", "value")))
        parts.append(
            "<details><summary>metrics as JSON</summary><pre>"
            + html.escape(json.dumps(metrics, indent=1))
            + "</pre></details></details>"
        )
    else:
        parts.append(
            "<p>No metrics: pass <code>metrics=</code> or <code>scene=</code>.</p>"
        )
    parts.append("<h2>Configuration</h2>")
    config = ds.attrs.get("config")
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except ValueError:
            config = {"config": config}
    parts.append("<details><summary>All parameters</summary>")
    parts.append(_table(_flatten(config or {}), ("parameter", "value")))
    parts.append("</details></body></html>")
    return "\n".join(parts)
