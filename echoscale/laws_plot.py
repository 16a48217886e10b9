"""Curves of a fitted law record: the rows of ``RUN/law.csv`` and ``RUN/law.png``.

Both read the record that :func:`echoscale.laws.fit_laws` returns (or its JSON file),
so a law can be redrawn without refitting. They are re-exported by
:mod:`echoscale.laws`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

GRID_COLUMNS = tuple(
    "model size width depth N E A alpha B beta D loss lower upper".split()
)


def _curves(law: Mapping[str, Any], n_grid: int) -> list[dict[str, Any]]:
    """One entry per successful law and size: D grid, loss, band (or None)."""
    from echoscale.laws import FitResult

    sizes = law["inputs"]["sizes"]
    boot = law.get("bootstrap") or {}
    d_min = min(min(s["D_values"]) for s in sizes.values())
    grid = np.geomspace(d_min, 2.0 * float(law["target_D"]), n_grid)
    stored = np.log(np.asarray(boot.get("grid_D") or [math.nan], dtype=float))

    def band(b: Mapping[str, Any] | None) -> tuple[Any, Any]:
        if not b or b.get("lower") is None or np.isnan(stored).any():
            return None, None
        # The bootstrap stored its band on its own grid: interpolate in log-log.
        out = []
        for side in (b["lower"], b["upper"]):
            y = np.log(np.array([math.nan if v is None else v for v in side], float))
            out.append(np.exp(np.interp(np.log(grid), stored, y, np.nan, np.nan)))
        return out[0], out[1]

    curves = []
    joint = FitResult.from_dict(law["joint"]) if law.get("joint") else None
    for key, info in sizes.items():
        fit = FitResult.from_dict(law["sizes"][key])
        entry = {"size": key, "info": info, "D": grid}
        if fit.success:
            lo, hi = band(boot.get("sizes", {}).get(key, {}).get("band"))
            curves.append(
                {
                    **entry,
                    "model": "data",
                    "params": fit.params,
                    "loss": fit.predict(grid),
                    "lower": lo,
                    "upper": hi,
                }
            )
        if joint is not None and joint.success:
            lo, hi = band(((boot.get("joint") or {}).get("band") or {}).get(key))
            loss = joint.predict(grid, info["N"])
            curves.append(
                {
                    **entry,
                    "model": "joint",
                    "params": joint.params,
                    "loss": loss,
                    "lower": lo,
                    "upper": hi,
                }
            )
    return curves


def predict_grid(law: Mapping[str, Any], n_grid: int = 50) -> list[dict[str, Any]]:
    """Tabulate every successful law of a record on a log grid of D.

    Parameters
    ----------
    law : dict
        A record from :func:`echoscale.laws.fit_laws`.
    n_grid : int
        Number of D values, log-spaced from the smallest measured D to twice
        ``target_D``.

    Returns
    -------
    list of dict
        Rows with the columns of :data:`GRID_COLUMNS`: ``model``
        ("data" or "joint"), ``size`` (``"w16-d4"``), ``width``, ``depth``, ``N``,
        the law's parameters (``A`` and ``alpha`` empty for the data law), ``D``,
        ``loss`` (predicted), and ``lower``/``upper`` (the 95% bootstrap band, empty
        where no bootstrap is available). Failed fits give no rows.
    """
    if n_grid < 2:
        raise ValueError(f"n_grid must be at least 2, got {n_grid}")
    rows = []
    for c in _curves(law, n_grid):
        info, p = c["info"], c["params"]
        for i, D in enumerate(c["D"]):
            row = dict.fromkeys(GRID_COLUMNS, "")  # the CSV's column order
            row.update(model=c["model"], size=c["size"], N=info["N"], D=float(D))
            row.update(width=info["width"], depth=info["depth"])
            row.update({k: v for k, v in p.items() if k in row})
            row["loss"] = float(c["loss"][i])
            if c["lower"] is not None and np.isfinite(c["lower"][i]):
                row["lower"], row["upper"] = float(c["lower"][i]), float(c["upper"][i])
            rows.append(row)
    return rows


def plot_law(
    law: Mapping[str, Any], points: Sequence[Mapping[str, Any]], path: str | Path
) -> None:
    """Draw the measured losses and the fitted laws, and write them to ``path``.

    Parameters
    ----------
    law : dict
        A record from :func:`echoscale.laws.fit_laws`.
    points : sequence of dict
        The sweep rows the record was fitted to.
    path : str or Path
        Output image; the format follows the suffix (PNG for ``law.png``). Written
        to a temporary name beside it and renamed into place.

    Raises
    ------
    ImportError
        When matplotlib is not installed.

    Notes
    -----
    One colour per size on log-log axes: the mean of each (size, D) cell with bars
    from its smallest to its largest seed, the data law (solid) with its 95%
    bootstrap band, the joint law (dashed), the extrapolation past the largest
    measured D, and the prediction at ``target_D`` with its interval.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import FuncFormatter, NullFormatter
    except ImportError as exc:
        raise ImportError(
            "plot_law needs matplotlib: pip install 'echoscale[plot]'"
        ) from exc
    from echoscale import rundir
    from echoscale.laws import _parse

    inputs = law["inputs"]
    P = _parse(points, inputs["metric"], inputs["data_unit"])
    target = float(law["target_D"])
    # The Agg canvas is used directly, so no pyplot state or GUI backend is touched.
    fig = Figure(figsize=(7.0, 5.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colours = {k: f"C{i % 10}" for i, k in enumerate(inputs["sizes"])}
    d_max = float(np.nanmax(P.D))

    for key, colour in colours.items():
        mine = (P.size == key) & np.isfinite(P.L)
        cells = [(d, P.L[mine & (P.D == d)]) for d in np.unique(P.D[mine])]
        if cells:
            D = np.array([d for d, _ in cells])
            mean = np.array([v.mean() for _, v in cells])
            err = [
                mean - [v.min() for _, v in cells],
                [v.max() for _, v in cells] - mean,
            ]
            N = inputs["sizes"][key]["N"]
            ax.errorbar(
                D,
                mean,
                yerr=err,
                fmt="o",
                color=colour,
                capsize=3,
                label=f"{key} (N = {N:,.0f})",
            )
    for c in _curves(law, 200):
        colour, inside = colours[c["size"]], c["D"] <= d_max
        if c["model"] == "joint":
            ax.plot(c["D"], c["loss"], "--", color=colour, lw=1.0, alpha=0.8)
            continue
        ax.plot(c["D"][inside], c["loss"][inside], "-", color=colour, lw=1.5)
        ax.plot(c["D"][~inside], c["loss"][~inside], ":", color=colour, lw=1.5)
        if c["lower"] is not None:
            ax.fill_between(
                c["D"], c["lower"], c["upper"], color=colour, alpha=0.15, lw=0
            )
    for key, pred in law.get("predicted", {}).get("sizes", {}).items():
        if pred.get("success") and pred.get("loss") is not None:
            lo, hi = pred.get("lower"), pred.get("upper")
            yerr = None if lo is None else [[pred["loss"] - lo], [hi - pred["loss"]]]
            ax.errorbar(
                [target],
                [pred["loss"]],
                yerr=yerr,
                fmt="*",
                ms=10,
                color=colours[key],
                capsize=4,
            )
    ax.axvline(target, color="0.5", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    # Ticks at the measured D and the target; plain numbers on both axes.
    ax.set_xticks(sorted({*np.unique(P.D[np.isfinite(P.D)]).tolist(), target}))
    ax.xaxis.set_minor_formatter(NullFormatter())
    plain = FuncFormatter(lambda v, _: f"{v:.3g}")
    ax.xaxis.set_major_formatter(plain)
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    unit = "patients" if inputs["data_unit"] == "patients" else "images"
    ax.set_xlabel(f"training {unit}, D")
    ax.set_ylabel(inputs["metric"])
    ax.set_title(
        f"data law (solid; dotted beyond the data), joint law (dashed); D = {target:g}"
    )
    ax.legend(fontsize="small")
    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    with rundir.atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=120)
    log.info("wrote %s", path)
