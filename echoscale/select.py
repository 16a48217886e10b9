"""``fit-law`` and ``select``: fit the laws of a sweep, then choose a network size.

``fit-law`` reads ``RUN/sweep.csv`` and writes ``RUN/law.json`` (every fit, interval and
backtest, and the SHA-256 of the table it used), ``RUN/law.csv`` and ``RUN/law.png``.
``select`` ranks the sizes by their predicted loss at the target dataset size and picks
the compute-optimal one: the smallest network whose predicted loss is within a
tolerance of the best, or the best one whose training fits a FLOPs budget.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from echoscale import laws, rundir
from echoscale.dataset import load_dataset, sha256_file
from echoscale.errors import InputError
from echoscale.sweep import BASE_COLUMNS, train_command
from echoscale.train import RUN_SETTINGS, TrainConfig

log = logging.getLogger(__name__)

# the sweep table's numeric columns that the fits and the choice read
_NUMERIC = tuple(
    c
    for c in BASE_COLUMNS
    if c not in ("key", "status", "val_loss", "test_loss", "dice_error")
)


def read_points(run: str | Path, metric: str = "test_loss") -> list[dict[str, Any]]:
    """The finished models of ``RUN/sweep.csv`` as numbers, one dict per model."""
    path = Path(run) / rundir.SWEEP
    if not path.is_file():
        raise InputError("no sweep table; run 'echoscale sweep' first", path)
    points = []
    for row in rundir.read_csv(path):
        if row.get("status") != "done":
            continue
        if metric not in row:
            raise InputError(f"has no column {metric!r}", path)
        try:
            point = {k: float(row[k]) for k in (*_NUMERIC, metric)}
        except ValueError as err:
            raise InputError(f"row {row.get('key')}: {err}", path) from None
        points.append({**row, **point})
    if not points:
        raise InputError("lists no finished model", path)
    return points


def fit_run(
    run: str | Path,
    *,
    metric: str = "test_loss",
    data_unit: str = "patients",
    n_boot: int = 1000,
    seed: int = 0,
    target_D: float | None = None,
    transfer_from: str | Path | None = None,
    plot: bool = True,
) -> dict[str, Any]:
    """Fit the laws of a run's sweep and write ``law.json``, ``law.csv``, ``law.png``.

    ``target_D`` defaults to the whole training set of the prepared dataset.
    """
    run = Path(run)
    points = read_points(run, metric)
    if target_D is None:
        target_D = full_data_size(run, data_unit)
    source = None
    if transfer_from is not None:
        try:
            source = rundir.read_json(transfer_from)
        except (OSError, ValueError) as err:
            raise InputError(
                f"cannot read the law to transfer: {err}", transfer_from
            ) from err
    law = laws.fit_laws(
        points,
        metric=metric,
        data_unit=data_unit,
        n_boot=n_boot,
        seed=seed,
        target_D=target_D,
        transfer_from=source,
    )
    law["sweep_sha256"] = sha256_file(run / rundir.SWEEP)
    law["transfer_from"] = None if transfer_from is None else str(transfer_from)
    rundir.write_json(run / rundir.LAW, law)
    rows = laws.predict_grid(law)
    rundir.write_csv(run / rundir.LAW_CSV, rows, list(rows[0]) if rows else ["size"])
    if plot:
        try:
            laws.plot_law(law, points, run / rundir.LAW_PNG)
        except ImportError as err:
            log.warning("no law.png: %s", err)
    return law


def full_data_size(run: str | Path, data_unit: str = "patients") -> float:
    """The prepared dataset's whole training set, in patients or images."""
    data = load_dataset(run)
    if data_unit == "images":
        return float(len(data.indices("train")))
    return float(len(data.manifest["train_order"]))


def load_law(run: str | Path) -> dict[str, Any]:
    """Read ``RUN/law.json``, refusing one fitted to an older ``sweep.csv``."""
    run = Path(run)
    path = run / rundir.LAW
    if not path.is_file():
        raise InputError("no law.json; run 'echoscale fit-law' first", run)
    law = rundir.read_json(path)
    table = run / rundir.SWEEP
    if table.is_file() and law.get("sweep_sha256") != sha256_file(table):
        raise InputError(
            "is stale: sweep.csv changed after it was fitted; run 'echoscale fit-law' "
            "again",
            path,
        )
    return law


def rank_sizes(
    predicted: Mapping[str, Mapping[str, Any]],
    costs: Mapping[str, float],
    *,
    tolerance: float = 0.01,
    budget_flops: float | None = None,
    basis: str = "predicted",
) -> dict[str, Any]:
    """Rank sizes by predicted (or ``basis``) loss and choose one.

    Parameters
    ----------
    predicted : mapping
        Size key to ``{"N", "loss", "lower", "upper", "success"}`` at the target size.
    costs : mapping
        Size key to its estimated training FLOPs.
    tolerance : float
        Relative: a size is good enough when its loss is at most best * (1 + tolerance).
    budget_flops : float, optional
        Choose the best size whose training FLOPs fit within this instead.

    Returns
    -------
    dict
        ``ranking`` (best first), ``choice`` (a size key or None) and ``reason``.
    """
    usable = {k: v for k, v in predicted.items() if v.get("success") and v.get("loss")}
    if not usable:
        return {
            "ranking": [],
            "choice": None,
            "reason": "no size has a successful fit; see law.json for why",
        }
    largest = max(v["N"] for v in usable.values())
    ranking = sorted(
        (
            {
                "size": k,
                **v,
                "train_flops": costs.get(k),
                "parameter_ratio": v["N"] / largest,
            }
            for k, v in usable.items()
        ),
        key=lambda r: r["loss"],
    )
    best = ranking[0]["loss"]
    if budget_flops is not None:
        fits = [
            r
            for r in ranking
            if r["train_flops"] is not None and r["train_flops"] <= budget_flops
        ]
        if not fits:
            return {
                "ranking": ranking,
                "choice": None,
                "reason": f"no size trains within {budget_flops:.3g} FLOPs",
            }
        return {
            "ranking": ranking,
            "choice": fits[0]["size"],
            "reason": f"lowest {basis} loss within {budget_flops:.3g} FLOPs",
        }
    good = [r for r in ranking if r["loss"] <= best * (1 + tolerance)]
    choice = min(good, key=lambda r: r["N"])
    return {
        "ranking": ranking,
        "choice": choice["size"],
        "reason": f"smallest size within {tolerance:.1%} of the best {basis} "
        f"loss {best:.4g}",
    }


def select(
    run: str | Path,
    *,
    target_D: float | None = None,
    tolerance: float = 0.01,
    budget_flops: float | None = None,
    top: int | None = None,
    fallback: bool = False,
    transfer: bool = False,
) -> dict[str, Any]:
    """Choose the compute-optimal size for the target size; write ``selection.json``.

    With ``transfer``, the sizes are ranked by the laws that ``fit-law
    --transfer-from`` refitted with the source's exponents (``basis`` "transfer")
    instead of this run's own laws. With ``fallback``, when no size's law could be
    fitted the sizes are ranked by the mean loss measured at the largest D of the
    sweep instead (``basis`` "measured"), rather than choosing nothing.
    """
    run = Path(run)
    if tolerance < 0:
        raise ValueError(f"--tolerance must be 0 or more, got {tolerance}")
    law = load_law(run)
    unit = law["inputs"]["data_unit"]
    target = full_data_size(run, unit) if target_D is None else float(target_D)
    points = read_points(run, law["inputs"]["metric"])
    if transfer and not law.get("transfer"):
        raise InputError(
            "law.json has no transferred law; run 'echoscale fit-law RUN "
            "--transfer-from OTHER/law.json' first",
            run / rundir.LAW,
        )
    if abs(target - law["target_D"]) > 1e-9:
        log.info("refitting for the target size %g", target)
        source = rundir.read_json(law["transfer_from"]) if transfer else None
        law = laws.fit_laws(
            points,
            metric=law["inputs"]["metric"],
            data_unit=unit,
            n_boot=law["bootstrap"].get("n_boot", 1000),
            target_D=target,
            transfer_from=source,
        )
    predicted = laws.transferred(law) if transfer else law["predicted"]["sizes"]
    costs = _training_costs(points)
    basis = "transfer" if transfer else "law"
    result = rank_sizes(
        predicted,
        costs,
        tolerance=tolerance,
        budget_flops=budget_flops,
        basis="transferred" if transfer else "predicted",
    )
    result["basis"] = basis
    if fallback and not any(v.get("success") for v in predicted.values()):
        measured, at_D = measured_at_largest(points, law["inputs"]["metric"], unit)
        log.warning(
            "no law could be fitted: choosing on the losses measured at D = %g", at_D
        )
        result = rank_sizes(
            measured,
            costs,
            tolerance=tolerance,
            budget_flops=budget_flops,
            basis="measured",
        )
        result.update(basis="measured", measured_D=at_D)
        result["reason"] = f"no law could be fitted; {result['reason']} at D = {at_D:g}"
    if top is not None:
        result["ranking"] = result["ranking"][:top]
    result.update(
        target_D=target,
        data_unit=unit,
        tolerance=tolerance,
        budget_flops=budget_flops,
        metric=law["inputs"]["metric"],
    )
    result["command"] = result["config"] = result["key"] = None
    if result["choice"] is not None:
        config = _winner_config(run, points, result["choice"])
        result["command"] = train_command(run, config)
        result["key"] = config.key  # of the model that command trains
        result["config"] = {
            **{f: getattr(config, f) for f in ("width", "depth", *RUN_SETTINGS)},
            "size": None if config.size is None else list(config.size),
        }
    rundir.write_json(run / rundir.SELECTION, result)
    return result


def selected_config(path: str | Path) -> TrainConfig:
    """The chosen size of a ``selection.json`` on all the data, as a train config."""
    path = Path(path)
    if path.is_dir():
        path = path / rundir.SELECTION
    if not path.is_file():
        raise InputError("no selection yet: run 'echoscale select' first", path)
    try:
        saved = rundir.read_json(path)
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(f"not a selection.json ({err})", path) from None
    saved = saved.get("config") if isinstance(saved, dict) else None
    if not saved:
        raise InputError(
            "holds no chosen size (no size was predicted well enough, or it was "
            "written by an older echoscale); rerun 'echoscale select'",
            path,
        )
    size = saved.pop("size", None)
    return TrainConfig(**saved, size=None if size is None else tuple(size))


def measured_at_largest(
    points: Sequence[Mapping[str, Any]], metric: str, unit: str
) -> tuple[dict[str, dict[str, Any]], float]:
    """Per size, the mean (and range) of ``metric`` at the sweep's largest D."""
    column = laws.DATA_UNITS[unit]
    at_D = max(p[column] for p in points)
    out: dict[str, dict[str, Any]] = {}
    for p in points:
        if p[column] == at_D and math.isfinite(p[metric]):
            out.setdefault(_size_key(p), {"N": p["parameters"], "values": []})
            out[_size_key(p)]["values"].append(p[metric])
    for v in out.values():
        values = v.pop("values")
        v.update(
            loss=sum(values) / len(values),
            lower=min(values),
            upper=max(values),
            success=True,
        )
    return out, at_D


def _size_key(point: Mapping[str, Any]) -> str:
    return f"w{int(point['width'])}-d{int(point['depth'])}"


def _training_costs(points: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Mean training FLOPs per size over its runs (steps do not scale with D)."""
    totals: dict[str, list[float]] = {}
    for p in points:
        totals.setdefault(_size_key(p), []).append(p["train_flops"])
    return {k: sum(v) / len(v) for k, v in totals.items()}


def _winner_config(
    run: Path, points: Sequence[Mapping[str, Any]], size: str
) -> TrainConfig:
    """The config that trains ``size`` on all the data, with the sweep's settings."""
    example = next(p for p in points if _size_key(p) == size)
    saved = rundir.read_json(rundir.model_paths(run, example["key"])["config"])
    keep = ("width", "depth", *RUN_SETTINGS)
    config = TrainConfig(**{f: saved[f] for f in keep if f in saved})
    h, w = saved.get("size", (0, 0))
    if example["key"].endswith(f"-{h}x{w}"):  # the sweep trained at a chosen size
        config.size = (h, w)
    return config
