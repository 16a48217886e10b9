"""Masks against reference masks: matching by name, distances in mm, LV volumes and EF.

Names. A mask file is named by its stem without extensions (``.nii.gz`` is one), less
a trailing ``_gt``, ``_mask``, ``_masks`` or ``_seg``; the ``masks.tif`` or
``masks.nii.gz`` that ``echoscale segment`` writes into ``OUT/<name>/`` is named by its
folder. Folders are searched recursively. A file ``X`` beside ``X_gt`` (or another of
the tails) is the image that mask labels, so it is skipped: in a CAMUS tree only the
``_gt`` files are taken. CAMUS-style names give the patient, the view (2CH, 4CH) and
the phase (ED, ES): ``patient0001_2CH_ED``.

Scores. Per matched pair, per frame of a (T, H, W) loop (frames all zero in the
reference are unlabelled: skipped and counted) and per structure whose labels either
mask holds: Dice, Hausdorff distance, HD95 and mean absolute contour distance in mm at
the reference file's (row, col) spacing. Both masks empty: everything undefined (NaN).
One empty: Dice 0 and infinite distances. Masks that hold only 0 and 1 on both sides
are myocardium (the contrast-echo convention of :mod:`echoscale.ceus`).

Volumes. A patient with 2CH and 4CH masks at ED and ES on both sides gets EDV, ESV and
EF by the biplane method of disks (:mod:`echoscale.volumes`) under both length rules,
and the EF of the ``Info_<view>.cfg`` beside the reference masks where there is one.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from echoscale import camus, images, metrics, stats, volumes
from echoscale.errors import InputError

log = logging.getLogger(__name__)

MASK_SUFFIXES = (".nii.gz", ".nii", ".mhd", ".mha", ".tif", ".tiff")
# the masks of a case folder (segment's output, a contrast case): named by the folder
SEGMENT_MASKS = ("masks.tif", "masks.tiff", "masks.nii.gz", "masks.nii")
NAME_TAILS = ("_gt", "_mask", "_masks", "_seg")
DISTANCES = ("hd_mm", "hd95_mm", "masd_mm")
STATUSES = ("ok", "both_empty", "auto_empty", "reference_empty")
MYOCARDIUM = {"myo": (1,)}  # 0/1 masks: contrast-echo myocardium
_CAMUS_NAME = re.compile(
    r"^(?P<case>.+?)_(?P<view>[24]CH)(?:_(?P<phase>ED|ES))?(?:_.*)?$", re.IGNORECASE
)


@dataclass(frozen=True)
class MaskPair:
    """One reference mask file and the automatic mask of the same name."""

    name: str
    auto: Path
    reference: Path
    case: str
    view: str
    phase: str


@dataclass
class MaskScores:
    """What :func:`score_pairs` found: one row per frame and structure, and counts.

    ``scored`` counts the pairs scored; a pair with a file that is no label map is
    in ``skipped`` instead.

    ``labels`` keeps the 2-D label maps of the pairs with a view and a phase
    (``name -> (auto, reference, spacing)``), which the volumes need.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    scored: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    unlabelled_frames: int = 0
    warnings: list[str] = field(default_factory=list)
    labels: dict[str, tuple[np.ndarray, np.ndarray, tuple[float, float]]] = field(
        default_factory=dict
    )


# --- names and matching -----------------------------------------------------------


def _split_suffix(path: Path) -> tuple[str, str]:
    """(stem, suffix) with ``.nii.gz`` as one suffix; suffix '' when unsupported."""
    lower = path.name.lower()
    for suffix in MASK_SUFFIXES:
        if lower.endswith(suffix):
            return path.name[: -len(suffix)], suffix
    return path.name, ""


def _strip_tail(stem: str) -> str:
    for tail in NAME_TAILS:
        if stem.lower().endswith(tail) and len(stem) > len(tail):
            return stem[: -len(tail)]
    return stem


def mask_name(path: str | Path) -> str:
    """The name a mask file is matched by (see the module docstring)."""
    path = Path(path)
    if path.name.lower() in SEGMENT_MASKS:
        return path.resolve().parent.name
    return _strip_tail(_split_suffix(path)[0])


def parse_name(name: str) -> dict[str, str]:
    """``case``, ``view`` and ``phase`` of a CAMUS-style name ('' where absent)."""
    match = _CAMUS_NAME.match(name)
    if match is None:
        return {"case": name, "view": "", "phase": ""}
    return {
        "case": match["case"],
        "view": match["view"].upper(),
        "phase": (match["phase"] or "").upper(),
    }


def _labelled_image(path: Path, stems: set[str]) -> str | None:
    """The mask beside ``path`` that shows it is an image, or None."""
    stem, suffix = _split_suffix(path)
    for tail in NAME_TAILS:
        if f"{stem}{tail}".lower() in stems:
            return f"{stem}{tail}{suffix}"
    return None


def find_masks(root: str | Path) -> tuple[dict[str, Path], list[dict[str, str]]]:
    """Mask files under ``root`` (a file or a folder, searched recursively), by name.

    Returns
    -------
    masks : dict of str to Path
        Name to file, sorted by name.
    skipped : list of dict
        ``path`` and ``reason`` of every image file left out (an image beside its
        mask).

    Raises
    ------
    InputError
        ``root`` is missing or not a mask file, holds no mask files, or two files
        give the same name.
    """
    root = Path(root)
    if root.is_file():
        if not _split_suffix(root)[1]:
            raise InputError(
                f"not a mask file; expected one of {', '.join(MASK_SUFFIXES)}", root
            )
        return {mask_name(root): root}, []
    if not root.is_dir():
        raise InputError("no such file or folder", root)

    candidates = sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and _split_suffix(p)[1]
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    stems_by_folder: dict[Path, set[str]] = {}
    for p in candidates:
        stems_by_folder.setdefault(p.parent, set()).add(_split_suffix(p)[0].lower())

    case_folders = {p.parent for p in candidates if p.name.lower() in SEGMENT_MASKS}
    found: dict[str, Path] = {}
    skipped = []
    for path in candidates:
        if path.parent in case_folders and path.name.lower() not in SEGMENT_MASKS:
            reason = "beside the masks of a case folder (only those are compared)"
            skipped.append({"path": str(path), "reason": reason})
            continue
        mask = _labelled_image(path, stems_by_folder[path.parent])
        if mask is not None and path.name.lower() not in SEGMENT_MASKS:
            skipped.append({"path": str(path), "reason": f"image of the mask {mask}"})
            continue
        name = mask_name(path)
        if name in found:
            raise InputError(
                f"two files give the name {name!r}: {found[name]} and {path}", root
            )
        found[name] = path
    if not found:
        raise InputError(
            f"no mask files found (looked for {', '.join(MASK_SUFFIXES)})", root
        )
    return dict(sorted(found.items())), skipped


def match_masks(
    auto: Mapping[str, Path], reference: Mapping[str, Path], by_name: bool = True
) -> tuple[list[MaskPair], dict[str, list[str]]]:
    """Pair masks by name; list the names found on one side only.

    With ``by_name`` False (two files given), the single mask of each side is paired
    whatever the names, under the reference's name.
    """
    if not by_name and len(auto) == 1 and len(reference) == 1:
        (a_path,), (name, r_path) = auto.values(), *reference.items()
        pair = MaskPair(name, a_path, r_path, **parse_name(name))
        return [pair], {"auto": [], "reference": []}
    pairs = [
        MaskPair(name, auto[name], path, **parse_name(name))
        for name, path in reference.items()
        if name in auto
    ]
    unmatched = {
        "auto": sorted(set(auto) - set(reference)),
        "reference": sorted(set(reference) - set(auto)),
    }
    return pairs, unmatched


# --- scores -----------------------------------------------------------------------


def _read_labels(path: Path) -> tuple[np.ndarray, tuple[float, float]] | str:
    """Label map (uint8; a one-frame stack as (H, W)) and spacing, or why it is none."""
    image = images.read_image(path)
    array = image.array
    if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
        return "not a label map: values are not finite numbers"
    try:
        camus.check_mask_values(array, path)
    except InputError as err:
        return f"not a label map: {err.message}"
    array = array.astype(np.uint8)
    return (array[0] if array.ndim == 3 and len(array) == 1 else array), image.spacing


def structures_of(
    auto: np.ndarray, reference: np.ndarray
) -> dict[str, tuple[int, ...]]:
    """The structures to score for a pair: those whose labels the two masks hold.

    A structure needs all its labels (the epicardium needs cavity and myocardium)
    in either mask; masks of only 0 and 1 are myocardium.
    """
    present = set(np.unique(auto).tolist()) | set(np.unique(reference).tolist())
    if present <= {0, 1}:
        return dict(MYOCARDIUM)
    return {
        name: labels
        for name, labels in metrics.structure_labels(camus.LABELS).items()
        if set(labels) <= present
    }


def score_frame(
    auto: np.ndarray,
    reference: np.ndarray,
    structures: Mapping[str, tuple[int, ...]],
    spacing: tuple[float, float],
) -> dict[str, dict[str, Any]]:
    """Dice, distances (mm) and status of each structure on one (H, W) frame."""
    out = {}
    for name, labels in structures.items():
        a, r = np.isin(auto, labels), np.isin(reference, labels)
        status = ("ok", "auto_empty", "reference_empty", "both_empty")[
            (not a.any()) + 2 * (not r.any())
        ]
        out[name] = {
            "dice": metrics.dice(a, r),
            **metrics.contour_distances(a, r, spacing),
            "status": status,
            "area_auto_mm2": float(a.sum() * spacing[0] * spacing[1]),
            "area_reference_mm2": float(r.sum() * spacing[0] * spacing[1]),
        }
    return out


def _same_spacing(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return all(math.isclose(x, y, rel_tol=1e-3) for x, y in zip(a, b, strict=True))


def score_pairs(pairs: Iterable[MaskPair]) -> MaskScores:
    """Score every pair, frame and structure.

    Raises
    ------
    InputError
        A file cannot be read, or the two masks of a pair differ in shape.
    """
    scores = MaskScores()
    for pair in pairs:
        auto, ref = _read_labels(pair.auto), _read_labels(pair.reference)
        read = ((pair.auto, auto), (pair.reference, ref))
        not_labels = [(p, v) for p, v in read if isinstance(v, str)]
        if not_labels:
            scores.skipped.extend({"path": str(p), "reason": v} for p, v in not_labels)
            continue
        (a, a_spacing), (r, spacing) = auto, ref
        if a.shape != r.shape:
            raise InputError(
                f"shape {a.shape} differs from {r.shape} of {pair.reference}", pair.auto
            )
        if not _same_spacing(a_spacing, spacing):
            scores.warnings.append(
                f"{pair.name}: spacing {a_spacing} of {pair.auto} differs from "
                f"{spacing} of {pair.reference}; the reference's is used"
            )
        scores.scored += 1
        structures = structures_of(a, r)
        frames = (
            [(None, a, r)] if a.ndim == 2 else zip(range(len(a)), a, r, strict=True)
        )
        for frame, fa, fr in frames:
            if frame is not None and not fr.any():
                scores.unlabelled_frames += 1
                continue
            for structure, values in score_frame(fa, fr, structures, spacing).items():
                scores.rows.append(
                    {
                        "name": pair.name,
                        "case": pair.case,
                        "view": pair.view,
                        "phase": pair.phase,
                        "frame": "" if frame is None else frame,
                        "structure": structure,
                        **values,
                        "row_mm": spacing[0],
                        "col_mm": spacing[1],
                        "auto": str(pair.auto),
                        "reference": str(pair.reference),
                    }
                )
        if a.ndim == 2 and pair.view and pair.phase:
            scores.labels[pair.name] = (a, r, spacing)
    return scores


def summarise_scores(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean, SD and median per structure and phase (ED, ES and all), with counts.

    Dice's mean includes the zeros of one-sided empties and leaves out the undefined
    (both empty); the distances' means are over finite values, and ``n_infinite``
    counts the one-sided empties they leave out.
    """
    rows = list(rows)
    out: dict[str, Any] = {}
    for structure in dict.fromkeys(r["structure"] for r in rows):
        mine = [r for r in rows if r["structure"] == structure]
        phases = sorted({r["phase"] for r in mine if r["phase"]})
        out[structure] = {}
        for phase in [*phases, "all"]:
            sel = [r for r in mine if phase in ("all", r["phase"])]
            counts = {s: sum(r["status"] == s for r in sel) for s in STATUSES}
            out[structure][phase] = {
                "n": len(sel),
                "n_undefined": counts["both_empty"],
                "n_one_empty": counts["auto_empty"] + counts["reference_empty"],
                "counts": counts,
                **{
                    key: stats.describe([r[key] for r in sel])
                    for key in ("dice", *DISTANCES)
                },
            }
    return out


# --- volumes and ejection fraction -------------------------------------------------


def _cfg_ef(folder: Path) -> tuple[float | None, str | None]:
    """The mean EF of the ``Info_<view>.cfg`` files in ``folder``, or why not."""
    values = []
    for view in volumes.VIEWS:
        path = folder / f"Info_{view}.cfg"
        if not path.is_file():
            continue
        try:
            info = camus.read_info(path)
        except InputError as err:
            return None, str(err)
        if info.ef is not None:
            values.append(info.ef)
    if not values:
        return None, f"no Info_*.cfg with an EF in {folder}"
    return float(np.mean(values)), None


def patient_volumes(
    pairs: Iterable[MaskPair],
    labels: Mapping[str, tuple[np.ndarray, np.ndarray, tuple[float, float]]],
) -> list[dict[str, Any]]:
    """EDV, ESV and EF of auto and reference per patient and length rule.

    A patient needs both sides' 2CH and 4CH masks at ED and ES (two-dimensional);
    where the method of disks cannot measure a mask (no cavity, or a cavity that
    does not touch the atrium) the row's numbers are NaN and ``reason`` says why.
    """
    by_case: dict[str, dict[tuple[str, str], MaskPair]] = {}
    for pair in pairs:
        if pair.name in labels:
            by_case.setdefault(pair.case, {})[(pair.view, pair.phase)] = pair
    rows = []
    for case, views in sorted(by_case.items()):
        needed = [(v, p) for v in volumes.VIEWS for p in volumes.PHASES]
        if any(key not in views for key in needed):
            continue
        cfg_ef, cfg_reason = _cfg_ef(views[needed[0]].reference.parent)
        for rule in volumes.LENGTH_RULES:
            row: dict[str, Any] = {"case": case, "rule": rule, "cfg_ef": cfg_ef}
            reasons = [] if cfg_reason is None else [f"cfg: {cfg_reason}"]
            for side, index in (("auto", 0), ("reference", 1)):
                masks = {
                    key: (labels[views[key].name][index], labels[views[key].name][2])
                    for key in needed
                }
                try:
                    lv = volumes.lv_volumes(masks, rule)
                    found = (lv.edv, lv.esv, lv.ef)
                except ValueError as err:
                    found = (math.nan,) * 3
                    reasons.append(f"{side}: {err}")
                row.update(
                    zip(
                        (f"{side}_edv", f"{side}_esv", f"{side}_ef"), found, strict=True
                    )
                )
            row["reason"] = "; ".join(reasons)
            rows.append(row)
    return rows


def _paired_summary(a: list[float], b: list[float]) -> dict[str, Any]:
    """Bias (a - b), SD, 95% limits, mean absolute error and Pearson's r of pairs.

    Bias and MAE need one pair, SD and limits two, r three (its ``reason`` says
    what is missing).
    """
    a_, b_ = np.asarray(a, float), np.asarray(b, float)
    d = (a_ - b_)[np.isfinite(a_) & np.isfinite(b_)]
    r = stats.pearson(a, b)
    bias = float(d.mean()) if d.size else math.nan
    sd = float(d.std(ddof=1)) if d.size > 1 else math.nan
    z = 1.959963984540054  # the normal quantile of 95% limits
    return {
        "n": int(d.size),
        "bias": bias,
        "sd": sd,
        "limits": [bias - z * sd, bias + z * sd],
        "mae": float(np.abs(d).mean()) if d.size else math.nan,
        "r": r["r"],
        "r_ci": r["ci"],
        "reason": r["reason"],
    }


def summarise_volumes(rows: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Auto against reference (EF, EDV, ESV) and both against the cfg EF, per rule."""
    out: dict[str, Any] = {"n_patients": len({r["case"] for r in rows})}
    for rule in volumes.LENGTH_RULES:
        mine = [r for r in rows if r["rule"] == rule]
        cfg = [math.nan if r["cfg_ef"] is None else r["cfg_ef"] for r in mine]
        out[rule] = {
            **{
                f"{q}_auto_vs_reference": _paired_summary(
                    [r[f"auto_{q}"] for r in mine], [r[f"reference_{q}"] for r in mine]
                )
                for q in ("ef", "edv", "esv")
            },
            "ef_auto_vs_cfg": _paired_summary([r["auto_ef"] for r in mine], cfg),
            "ef_reference_vs_cfg": _paired_summary(
                [r["reference_ef"] for r in mine], cfg
            ),
        }
    return out
