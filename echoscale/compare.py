"""``compare``: automatic results against a reference reader, in a journal's numbers.

Two kinds of input, told apart by what the paths hold (or named with ``kind``):

* **masks**: two mask files or folders, matched by name
  (:mod:`echoscale.compare_masks`): Dice, Hausdorff, HD95 and mean contour distance in
  mm per case, structure and phase, a CAMUS-style summary, and LV volumes and EF by
  the biplane method of disks where a patient has both views at ED and ES;
* **perfusion**: two sets of ``perfusion.csv`` tables (``echoscale perfuse``),
  matched by (case, region, flash): agreement of A, beta and A*beta per region group
  (:mod:`echoscale.stats`).

Items found on one side only are listed, never dropped in silence. ``OUT`` receives::

    metrics.csv                one row per case, frame and structure (masks) or per
                               matched region and flash (perfusion)
    volumes.csv                EDV, ESV, EF per patient and length rule (masks)
    summary.json               everything below, and what was unmatched or skipped
    bland_altman_<param>.png   with matplotlib: limits and their intervals
    scatter_<param>.png        with the identity line
    dice_boxplot.png           Dice per structure and phase (masks)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from echoscale import __version__, rundir, stats
from echoscale import compare_masks as cm
from echoscale.errors import InputError

log = logging.getLogger(__name__)

KINDS = ("masks", "perfusion")
METRICS = "metrics.csv"
VOLUMES = "volumes.csv"
SUMMARY = "summary.json"
PERFUSION_TABLE = "perfusion.csv"
KEY = ("case", "region", "flash")
PARAMETERS = ("A", "beta", "A_beta")
LEVELS = ("basal", "mid", "apical")
MASK_COLUMNS = (
    "name", "case", "view", "phase", "frame", "structure", "status", "dice",
    "hd_mm", "hd95_mm", "masd_mm", "area_auto_mm2", "area_reference_mm2",
    "row_mm", "col_mm", "auto", "reference",
)  # fmt: skip
VOLUME_COLUMNS = (
    "case", "rule", "auto_edv", "auto_esv", "auto_ef", "reference_edv",
    "reference_esv", "reference_ef", "cfg_ef", "reason",
)  # fmt: skip
_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no", ""}


# --- what the inputs are ------------------------------------------------------------


def _holds_tables(path: Path) -> bool:
    if path.is_file():
        return path.suffix.lower() == ".csv"
    return path.is_dir() and next(path.rglob(PERFUSION_TABLE), None) is not None


def detect_kind(auto: Path, reference: Path) -> str:
    """``"perfusion"`` when both inputs are or hold perfusion tables, else ``"masks"``.

    Raises
    ------
    InputError
        A path does not exist, or one input holds tables and the other does not.
    """
    for path in (auto, reference):
        if not path.exists():
            raise InputError("no such file or folder", path)
    tables = [_holds_tables(auto), _holds_tables(reference)]
    if tables[0] != tables[1]:
        with_tables = auto if tables[0] else reference
        raise InputError(
            f"holds perfusion tables but {reference if tables[0] else auto} does "
            "not; give kind='masks' or 'perfusion' (--kind)",
            with_tables,
        )
    return "perfusion" if tables[0] else "masks"


def _check_settings(
    kind: str | None, margin: float | str | Mapping | None, alpha: float
) -> None:
    if kind is not None and kind not in KINDS:
        raise ValueError(
            f"kind must be one of {', '.join(KINDS)} or None; got {kind!r}"
        )
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must lie between 0 and 0.5; got {alpha}")
    if isinstance(margin, Mapping):
        unknown = sorted(set(margin) - set(PARAMETERS))
        if unknown:
            raise ValueError(
                f"margins are for {', '.join(PARAMETERS)}; got {', '.join(unknown)}"
            )
    margins = margin.values() if isinstance(margin, Mapping) else [margin]
    for value in margins:
        if value is not None:
            stats.resolve_margin(value, [1.0])  # raises on a malformed margin


# --- perfusion tables ---------------------------------------------------------------


def find_tables(root: Path) -> list[Path]:
    """``root`` itself (a CSV file) or the ``perfusion.csv`` files under it, sorted."""
    if root.is_file():
        return [root]
    found = sorted(
        p
        for p in root.rglob(PERFUSION_TABLE)
        if not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not found:
        raise InputError(f"no {PERFUSION_TABLE} found under this folder", root)
    return found


def _success(value: str, path: Path) -> bool:
    text = str(value).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise InputError(f"success must be true or false; got {value!r}", path)


def _number(value: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def read_tables(paths: Sequence[Path]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Rows of the tables keyed by (case, region, flash), values parsed.

    Raises
    ------
    InputError
        A table that cannot be read, lacks a column, or repeats a key (within one
        table or across two).
    """
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    origin: dict[tuple[str, str, str], Path] = {}
    needed = (*KEY, *PARAMETERS, "success")
    for path in paths:
        try:
            table = rundir.read_csv(path)
        except (OSError, UnicodeDecodeError) as err:
            raise InputError(f"cannot read the table: {err}", path) from err
        columns = set(table[0]) if table else set()
        missing = [c for c in needed if c not in columns]
        if missing:
            raise InputError(
                f"no column {', '.join(missing)}; a perfusion table needs "
                f"{', '.join(needed)}",
                path,
            )
        for row in table:
            key = tuple(row[c].strip() for c in KEY)
            if key in rows:
                raise InputError(
                    f"case {key[0]}, region {key[1]}, flash {key[2]} is given twice "
                    f"(also in {origin[key]})",
                    path,
                )
            origin[key] = path
            rows[key] = {
                "success": _success(row["success"], path),
                **{p: _number(row[p]) for p in PARAMETERS},
            }
    return rows


def region_groups(region: str) -> list[str]:
    """The groups a region counts in: itself, its level, ``segments``, ``overall``.

    A segment's level is the word of its name that is one of :data:`LEVELS`
    (``basal_septal``, ``wall1_basal``: basal); other regions (the whole myocardium)
    count only in themselves and ``overall``.
    """
    words = region.lower().split("_")
    levels = [w for w in words if w in LEVELS]
    if len(levels) == 1 and len(words) > 1:
        return [region, levels[0], "segments", "overall"]
    return [region, "overall"]


def compare_perfusion(
    auto: Path,
    reference: Path,
    *,
    margin: float | str | Mapping[str, float | str] | None = None,
    ratio: bool = False,
    alpha: float = 0.05,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Match two sets of perfusion tables and measure their agreement.

    Returns
    -------
    rows : list of dict
        One per matched (case, region, flash): both sides' A, beta, A*beta, their
        differences and ``status`` (``ok`` or which side failed).
    summary : dict
        ``matched``, ``excluded`` (failed on either side, with keys), ``unmatched``
        and ``groups``: per group and parameter, :func:`echoscale.stats.agreement`.
    """
    a_rows = read_tables(find_tables(auto))
    r_rows = read_tables(find_tables(reference))
    keys = sorted(set(a_rows) & set(r_rows))
    rows, excluded = [], []
    for key in keys:
        a, r = a_rows[key], r_rows[key]
        usable = {
            "auto": a["success"] and all(math.isfinite(a[p]) for p in PARAMETERS),
            "reference": r["success"] and all(math.isfinite(r[p]) for p in PARAMETERS),
        }
        failed = [side for side, ok in usable.items() if not ok]
        status = "ok" if not failed else "failed_" + "_".join(failed)
        row: dict[str, Any] = dict(zip(KEY, key, strict=True)) | {"status": status}
        for p in PARAMETERS:
            row[f"{p}_auto"], row[f"{p}_reference"] = a[p], r[p]
            row[f"{p}_diff"] = a[p] - r[p]
        rows.append(row)
        if failed:
            excluded.append(dict(zip(KEY, key, strict=True)) | {"failed": failed})

    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["status"] == "ok":
            for group in region_groups(row["region"]):
                groups.setdefault(group, []).append(row)
    margins = (
        margin if isinstance(margin, Mapping) else dict.fromkeys(PARAMETERS, margin)
    )
    agreement = {
        group: {
            p: stats.agreement(
                [r[f"{p}_auto"] for r in members],
                [r[f"{p}_reference"] for r in members],
                margin=margins.get(p),
                ratio=ratio,
                alpha=alpha,
            )
            for p in PARAMETERS
        }
        for group, members in sorted(groups.items())
    }
    unmatched = {
        side: [dict(zip(KEY, k, strict=True)) for k in sorted(set(mine) - set(other))]
        for side, mine, other in (
            ("auto", a_rows, r_rows),
            ("reference", r_rows, a_rows),
        )
    }
    summary = {
        "matched": len(keys),
        "used": len(keys) - len(excluded),
        "excluded": excluded,
        "n_excluded": len(excluded),
        "unmatched": unmatched,
        "groups": agreement,
    }
    return rows, summary


# --- masks --------------------------------------------------------------------------


def compare_mask_sets(
    auto: Path, reference: Path
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Match and score two sets of masks; returns mask rows, volume rows, summary."""
    a_masks, a_skipped = cm.find_masks(auto)
    r_masks, r_skipped = cm.find_masks(reference)
    two_files = auto.is_file() and reference.is_file()
    pairs, unmatched = cm.match_masks(a_masks, r_masks, by_name=not two_files)
    scores = cm.score_pairs(pairs)
    volume_rows = cm.patient_volumes(pairs, scores.labels)
    summary = {
        "matched": len(pairs),
        "scored": scores.scored,
        "unmatched": unmatched,
        "skipped": a_skipped + r_skipped + scores.skipped,
        "unlabelled_frames": scores.unlabelled_frames,
        "warnings": scores.warnings,
        "structures": cm.summarise_scores(scores.rows),
        "volumes": cm.summarise_volumes(volume_rows) if volume_rows else None,
    }
    return scores.rows, volume_rows, summary


# --- the stage ----------------------------------------------------------------------


def compare(
    auto: str | Path,
    reference: str | Path,
    out: str | Path,
    *,
    kind: str | None = None,
    margin: float | str | Mapping[str, float | str] | None = None,
    ratio: bool = False,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Compare automatic results with a reference and write the outputs to ``out``.

    Parameters
    ----------
    auto, reference : str or Path
        Mask files or folders, or perfusion tables or folders holding them.
    out : str or Path
        Output folder (created).
    kind : {"masks", "perfusion"}, optional
        What the inputs are; detected when None.
    margin : float, str or mapping, optional
        Equivalence margin for TOST (perfusion): absolute, ``"N%"`` of the
        reference mean of each group, or one of those per parameter
        (``{"beta": "20%"}``).
        Without one, TOST is reported as undefined.
    ratio : bool
        Also give Bland-Altman on the log scale, as percentages (perfusion).
    alpha : float
        1 - confidence of every interval; TOST's one-sided level.

    Returns
    -------
    dict
        The summary written to ``summary.json``.

    Raises
    ------
    InputError
        Missing or unreadable inputs, inputs of different kinds, masks of
        different shapes, damaged tables.
    ValueError
        An unknown ``kind``, a malformed ``margin`` or an ``alpha`` outside (0, 0.5).
    """
    auto, reference, out = Path(auto), Path(reference), Path(out)
    _check_settings(kind, margin, alpha)
    kind = kind or detect_kind(auto, reference)
    for path in (auto, reference):
        if not path.exists():
            raise InputError("no such file or folder", path)

    summary: dict[str, Any] = {
        "kind": kind,
        "auto": str(auto),
        "reference": str(reference),
        "settings": {"alpha": alpha, "margin": margin, "ratio": ratio},
        "version": __version__,
    }
    files = {"metrics": METRICS, "summary": SUMMARY}
    if kind == "masks":
        rows, volume_rows, result = compare_mask_sets(auto, reference)
        rundir.write_csv(out / METRICS, rows, MASK_COLUMNS)
        if volume_rows:
            rundir.write_csv(out / VOLUMES, volume_rows, VOLUME_COLUMNS)
            files["volumes"] = VOLUMES
    else:
        rows, result = compare_perfusion(
            auto, reference, margin=margin, ratio=ratio, alpha=alpha
        )
        volume_rows = []
        columns = [*KEY, "status"] + [
            f"{p}_{side}" for p in PARAMETERS for side in ("auto", "reference", "diff")
        ]
        rundir.write_csv(out / METRICS, rows, columns)
    summary.update(result)
    files.update(_plot(kind, rows, volume_rows, out))
    summary["files"] = files
    rundir.write_json(out / SUMMARY, summary)
    return summary


def _plot(
    kind: str,
    rows: list[dict[str, Any]],
    volume_rows: list[dict[str, Any]],
    out: Path,
) -> dict[str, str]:
    """Draw the figures when matplotlib is there; returns the files written."""
    try:
        from echoscale import compare_plot
    except ImportError:
        log.warning("matplotlib is not installed: no figures (pip install matplotlib)")
        return {}
    if kind == "masks":
        return compare_plot.plot_masks(rows, volume_rows, out)
    return compare_plot.plot_perfusion(rows, out)


# --- a report for the terminal ------------------------------------------------------


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}g}"
    return str(value)


def format_report(summary: Mapping[str, Any]) -> str:
    """The summary as a few lines of text: the agreement table and the decisions.

    Perfusion rows are the levels (basal, mid, apical), all segments, the regions
    that are no segment (the whole myocardium) and everything (``overall``).
    """
    lines = [f"{summary['kind']}: {summary['matched']} matched"]
    unmatched = summary["unmatched"]
    lines[0] += (
        f", unmatched {len(unmatched['auto'])} auto and "
        f"{len(unmatched['reference'])} reference"
    )
    if summary["kind"] == "masks":
        lines[0] += (
            f", {summary['matched'] - summary['scored']} not label maps, "
            f"{summary['unlabelled_frames']} unlabelled frames skipped"
        )
        lines.append(
            "structure phase     n  Dice mean (SD)   HD95 mm  MASD mm  undefined  "
            "one-empty"
        )
        for structure, phases in summary["structures"].items():
            for phase, s in phases.items():
                dice = f"{_fmt(s['dice']['mean'])} ({_fmt(s['dice']['sd'], 2)})"
                lines.append(
                    f"{structure:9} {phase:5} {s['n']:5}  {dice:15}  "
                    f"{_fmt(s['hd95_mm']['mean']):>7}  {_fmt(s['masd_mm']['mean']):>7}"
                    f"  {s['n_undefined']:9}  {s['n_one_empty']:9}"
                )
        for rule, v in (summary.get("volumes") or {}).items():
            if rule == "n_patients":
                continue
            for name, p in v.items():
                if p["n"]:
                    lines.append(
                        f"{rule} {name}: n {p['n']}, r {_fmt(p['r'])}, bias "
                        f"{_fmt(p['bias'])}, MAE {_fmt(p['mae'])}"
                    )
        return "\n".join(lines)

    lines[0] += f", {summary['n_excluded']} excluded (a failed fit)"
    # single segments stay in summary.json; the table shows levels and wholes
    shown = {g: v for g, v in summary["groups"].items() if len(region_groups(g)) != 4}
    wide = max([len(g) for g in shown] + [5])
    lines.append(
        f"{'group':{wide}} param    n      bias  95% limits of agreement  "
        "ICC(2,1) ICC(3,1)   CCC  TOST p  decision"
    )
    for group, params in shown.items():
        for p, s in params.items():
            ba, tost = s["bland_altman"], s["tost"]
            limits = f"[{_fmt(ba['lower'])}, {_fmt(ba['upper'])}]"
            lines.append(
                f"{group:{wide}} {p:6} {s['n']:4} {_fmt(ba['bias']):>9}  {limits:23}  "
                f"{_fmt(s['icc_agreement']['icc'], 2):>8} "
                f"{_fmt(s['icc_consistency']['icc'], 2):>8} "
                f"{_fmt(s['concordance']['ccc'], 2):>5}  {_fmt(tost.get('p'), 2):>6}  "
                f"{tost['decision']}"
            )
    return "\n".join(lines)
