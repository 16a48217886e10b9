"""Figures of ``compare``: Bland-Altman plots, scatter plots and Dice box plots.

Importing this module needs matplotlib (``ImportError`` otherwise);
:func:`echoscale.compare.compare` skips the figures with a warning without it. The
Agg canvas is used directly, so no pyplot state or GUI backend is touched. Files are
written to a temporary name and renamed into place.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from echoscale import rundir, stats

log = logging.getLogger(__name__)

PARAMETER_LABELS = {
    "A": "A",
    "beta": "beta (1/s)",
    "A_beta": "A * beta",
    "ef": "EF (%)",
}


def _figure(size: tuple[float, float] = (5.5, 4.5)) -> Figure:
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> None:
    with rundir.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    log.info("wrote %s", path)


def _finite_pairs(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, ...]:
    a, b = np.asarray(a, float), np.asarray(b, float)
    keep = np.isfinite(a) & np.isfinite(b)
    return a[keep], b[keep]


def bland_altman_plot(
    a: Sequence[float],
    b: Sequence[float],
    result: Mapping[str, Any],
    path: str | Path,
    label: str,
) -> None:
    """Differences against means, with the bias, the limits and their intervals.

    Parameters
    ----------
    a, b : sequence of float
        The method under test and the reference.
    result : mapping
        :func:`echoscale.stats.bland_altman` of the same pairs (absolute scale).
    path : str or Path
        Output PNG.
    label : str
        The quantity and its unit, for the axes.
    """
    a, b = _finite_pairs(a, b)
    fig = _figure()
    ax = fig.add_subplot()
    ax.scatter((a + b) / 2, a - b, s=14, color="C0", alpha=0.8)
    for key, colour, style in (
        ("bias", "C3", "-"),
        ("lower", "C1", "--"),
        ("upper", "C1", "--"),
    ):
        value, ci = result[key], result[f"{key}_ci"]
        if math.isfinite(value):
            ax.axhline(
                value, color=colour, ls=style, lw=1.2, label=f"{key} {value:.3g}"
            )
        if all(math.isfinite(v) for v in ci):
            ax.axhspan(ci[0], ci[1], color=colour, alpha=0.12, lw=0)
    ax.axhline(0, color="0.6", lw=0.8, ls=":")
    ax.set_xlabel(f"mean of auto and reference, {label}")
    ax.set_ylabel(f"auto - reference, {label}")
    level = round(100 * result["confidence"])
    ax.set_title(
        f"Bland-Altman, n = {result['n']} (bands: {level}% intervals)",
        fontsize="medium",
    )
    if ax.get_legend_handles_labels()[0]:  # too few pairs draw no labelled lines
        ax.legend(fontsize="small", loc="best")
    _save(fig, Path(path))


def scatter_plot(
    a: Sequence[float],
    b: Sequence[float],
    path: str | Path,
    label: str,
    title: str = "",
) -> None:
    """Auto against reference with the identity line."""
    a, b = _finite_pairs(a, b)
    fig = _figure((4.8, 4.5))
    ax = fig.add_subplot()
    ax.scatter(b, a, s=14, color="C0", alpha=0.8)
    if a.size:
        lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
        pad = 0.05 * (hi - lo or 1.0)
        ax.plot(
            [lo - pad, hi + pad],
            [lo - pad, hi + pad],
            color="0.4",
            lw=1,
            ls="--",
            label="identity",
        )
        ax.legend(fontsize="small", loc="upper left")
    ax.set_xlabel(f"reference, {label}")
    ax.set_ylabel(f"auto, {label}")
    ax.set_title(title or f"n = {a.size}", fontsize="medium")
    _save(fig, Path(path))


def dice_boxplot(rows: Sequence[Mapping[str, Any]], path: str | Path) -> None:
    """Dice per structure, one box per phase (ED, ES; frames of loops apart).

    Undefined Dice (both masks empty) is left out of the boxes.
    """
    structures = list(dict.fromkeys(r["structure"] for r in rows))
    phases = sorted({r["phase"] for r in rows}, key=lambda p: (p == "", p))
    names = {p: p or ("frames" if len(phases) > 1 else "all") for p in phases}
    fig = _figure((2.0 + 1.2 * len(structures) * max(len(phases), 2) / 2, 4.2))
    ax = fig.add_subplot()
    width = 0.8 / len(phases)
    for j, phase in enumerate(phases):
        data, positions = [], []
        for i, structure in enumerate(structures):
            values = [
                r["dice"]
                for r in rows
                if r["structure"] == structure and r["phase"] == phase
            ]
            values = [v for v in values if math.isfinite(v)]
            if values:
                data.append(values)
                positions.append(i + (j - (len(phases) - 1) / 2) * width)
        if data:
            parts = ax.boxplot(
                data,
                positions=positions,
                widths=width * 0.9,
                patch_artist=True,
                manage_ticks=False,
            )
            for box in parts["boxes"]:
                box.set_facecolor(f"C{j}")
                box.set_alpha(0.5)
            ax.plot([], [], color=f"C{j}", lw=6, alpha=0.5, label=names[phase])
    ax.set_xticks(range(len(structures)), structures)
    ax.set_ylabel("Dice")
    ax.set_ylim(top=1.02)
    ax.legend(fontsize="small", loc="lower left")
    ax.set_title("Dice per structure", fontsize="medium")
    _save(fig, Path(path))


def plot_masks(
    rows: Sequence[Mapping[str, Any]],
    volume_rows: Sequence[Mapping[str, Any]],
    out: str | Path,
) -> dict[str, str]:
    """``dice_boxplot.png`` and, with two or more patients, the EF figures.

    The EF figures use the guideline length rule (:mod:`echoscale.volumes`).
    """
    out = Path(out)
    files = {}
    if rows:
        dice_boxplot(rows, out / "dice_boxplot.png")
        files["dice_boxplot"] = "dice_boxplot.png"
    mine = [r for r in volume_rows if r["rule"] == "guideline"]
    a, b = [r["auto_ef"] for r in mine], [r["reference_ef"] for r in mine]
    if len(_finite_pairs(a, b)[0]) >= 2:
        files.update(_agreement_figures("ef", a, b, out))
    return files


def _agreement_figures(
    name: str, a: Sequence[float], b: Sequence[float], out: Path
) -> dict[str, str]:
    label = PARAMETER_LABELS.get(name, name)
    result = stats.bland_altman(a, b)
    bland_altman_plot(a, b, result, out / f"bland_altman_{name}.png", label)
    ccc = stats.concordance(a, b)["ccc"]
    scatter_plot(
        a,
        b,
        out / f"scatter_{name}.png",
        label,
        f"n = {result['n']}, Lin's CCC {ccc:.3g}",
    )
    return {
        f"bland_altman_{name}": f"bland_altman_{name}.png",
        f"scatter_{name}": f"scatter_{name}.png",
    }


def plot_perfusion(
    rows: Sequence[Mapping[str, Any]], out: str | Path
) -> dict[str, str]:
    """Bland-Altman and scatter plots of A, beta and A*beta over all usable rows."""
    from echoscale.compare import PARAMETERS

    out = Path(out)
    used = [r for r in rows if r["status"] == "ok"]
    files = {}
    for p in PARAMETERS:
        a, b = [r[f"{p}_auto"] for r in used], [r[f"{p}_reference"] for r in used]
        if len(_finite_pairs(a, b)[0]) >= 2:
            files.update(_agreement_figures(p, a, b, out))
    return files
