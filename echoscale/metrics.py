"""Segmentation metrics in millimetres: Dice and Hausdorff distances per structure.

Structures follow the CAMUS evaluation: LV endocardium (label 1), LV epicardium
(labels 1 and 2), myocardium (2) and left atrium (3), named from a dataset's labels so
that a dataset keeping a subset of the classes gets the structures it can score.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import ndimage, spatial

# structure -> the class names whose union it is
STRUCTURES = {
    "lv_endo": ("lv",),
    "lv_epi": ("lv", "myo"),
    "myo": ("myo",),
    "la": ("la",),
}


def structure_labels(labels: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
    """Map each structure the dataset can score to the label values it unites.

    Parameters
    ----------
    labels : mapping of str to int
        A dataset manifest's ``labels``, e.g. ``{"background": 0, "lv": 1, ...}``.
    """
    return {
        name: tuple(labels[c] for c in classes)
        for name, classes in STRUCTURES.items()
        if all(c in labels for c in classes)
    }


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice overlap of two boolean masks; NaN when both are empty (undefined)."""
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    total = pred.sum() + ref.sum()
    if total == 0:
        return float("nan")
    return float(2.0 * np.logical_and(pred, ref).sum() / total)


def _surface(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a mask: those with a 4-neighbour outside it (or the edge)."""
    eroded = ndimage.binary_erosion(
        mask, structure=ndimage.generate_binary_structure(2, 1), border_value=0
    )
    return mask & ~eroded


def _boundary(mask: np.ndarray) -> np.ndarray:
    """:func:`_surface` by array shifts: pixels outside the array count as outside."""
    padded = np.pad(mask, 1)
    interior = (
        padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    )
    return mask & ~interior


def surface_distances(
    a: np.ndarray, b: np.ndarray, spacing: tuple[float, float]
) -> np.ndarray:
    """Distances (mm) from each boundary pixel of ``a`` to the boundary of ``b``.

    Both masks must be non-empty; ``spacing`` is (row_mm, col_mm).
    """
    sa, sb = _surface(np.asarray(a, bool)), _surface(np.asarray(b, bool))
    to_b = ndimage.distance_transform_edt(~sb, sampling=spacing)
    return to_b[sa]


def hausdorff(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: tuple[float, float],
    percentile: float = 100,
) -> float:
    """Symmetric Hausdorff distance in mm, or its ``percentile`` version (95: HD95).

    NaN when both masks are empty, infinity when exactly one is.

    Notes
    -----
    HD95 is the larger of the two directed 95th percentiles of the boundary-to-boundary
    distances, as in the CAMUS and MedPy definitions.
    """
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    if not pred.any() and not ref.any():
        return float("nan")
    if not pred.any() or not ref.any():
        return float("inf")
    d_pr = surface_distances(pred, ref, spacing)
    d_rp = surface_distances(ref, pred, spacing)
    return float(max(np.percentile(d_pr, percentile), np.percentile(d_rp, percentile)))


def score_structures(
    pred: np.ndarray,
    ref: np.ndarray,
    structures: Mapping[str, tuple[int, ...]],
    spacing: tuple[float, float],
) -> dict[str, dict[str, float]]:
    """Dice and HD95 (mm) of every structure for one predicted and reference map."""
    out = {}
    for name, values in structures.items():
        p, r = np.isin(pred, values), np.isin(ref, values)
        out[name] = {"dice": dice(p, r), "hd95_mm": hausdorff(p, r, spacing, 95)}
    return out


def mean_contour_distance(
    pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, float]
) -> float:
    """Mean absolute contour distance in mm: the mean of the two directed means.

    NaN when both masks are empty, infinity when exactly one is.
    """
    return contour_distances(pred, ref, spacing)["masd_mm"]


def contour_distances(
    pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, float]
) -> dict[str, float]:
    """Hausdorff, HD95 and mean absolute contour distance (mm) of two masks at once.

    Parameters
    ----------
    pred, ref : ndarray, shape (H, W)
        Boolean masks of one structure.
    spacing : tuple of float
        ``(row_mm, col_mm)``.

    Returns
    -------
    dict
        ``hd_mm``, ``hd95_mm`` and ``masd_mm``: all NaN when both masks are empty,
        all infinite when exactly one is.

    Notes
    -----
    Boundaries are those of :func:`hausdorff`, and HD95 is defined as there. The
    mean distance is ``(mean(d_pr) + mean(d_rp)) / 2`` over the boundary pixels of
    each mask (MedPy's ``assd``). Distances are between boundary pixel centres in mm,
    found with a k-d tree: the same numbers as the distance transform of
    :func:`surface_distances`, at a fraction of its time on large images, where
    the masks are cropped to their joint bounding box first.
    """
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    if not pred.any() and not ref.any():
        return dict.fromkeys(("hd_mm", "hd95_mm", "masd_mm"), float("nan"))
    if not pred.any() or not ref.any():
        return dict.fromkeys(("hd_mm", "hd95_mm", "masd_mm"), float("inf"))

    union = pred | ref
    rows = np.flatnonzero(union.any(axis=1))
    cols = np.flatnonzero(union.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    scale = np.asarray(spacing, np.float64)
    points_p = np.argwhere(_boundary(pred[box])) * scale
    points_r = np.argwhere(_boundary(ref[box])) * scale
    d_pr = spatial.cKDTree(points_r).query(points_p)[0]
    d_rp = spatial.cKDTree(points_p).query(points_r)[0]
    return {
        "hd_mm": float(max(d_pr.max(), d_rp.max())),
        "hd95_mm": float(max(np.percentile(d_pr, 95), np.percentile(d_rp, 95))),
        "masd_mm": float((d_pr.mean() + d_rp.mean()) / 2),
    }
