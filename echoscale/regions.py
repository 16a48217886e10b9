"""Six myocardial segments of an apical view, from the myocardial mask alone.

The myocardium of an apical view is a horseshoe: two walls that meet at the apex and
end at the mitral plane. :func:`segment_myocardium` traces its midline, finds the
apex and the two basal ends, cuts each wall in thirds of the midline's arc length
from the apex to the base, and splits the pixels by rays from the centre of the
ventricle through the cut points::

    1 basal, 2 mid, 3 apical   on the first wall (septal in A4C, inferior in A2C)
    4 apical, 5 mid, 6 basal   on the other wall (lateral in A4C, anterior in A2C)

which is the layout of the phantom's ``segments`` files
(:func:`echoscale.phantom_ceus.segment_map`). Positions are in millimetres, so
non-square pixels are handled.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from echoscale.phantom_ceus import SEGMENT_NAMES

log = logging.getLogger(__name__)

NEUTRAL_NAMES = (
    "wall1_basal", "wall1_mid", "wall1_apical",
    "wall2_apical", "wall2_mid", "wall2_basal",
)  # fmt: skip
SIDES = ("left", "right")
MIN_PIXELS = 30  # fewer myocardial pixels than this give no segments
_BIN_DEG = 2.0  # angular width of the bins of the first, rough midline
_FULL_BIN = 0.6  # of the median bin count: bins that a basal end cuts hold fewer
_SLICE_MM = 1.5  # length along the wall of the slices whose centroids are the midline
_SMOOTH = 7  # midline points in the moving average that smooths it
_CAP = 0.6  # of the long axis: the first guess of the apical cap's extent
_STEPS = 2  # tangent steps that take a pixel's position to its foot on the line


@dataclass(frozen=True)
class Horseshoe:
    """The geometry that the segments are cut from; positions in mm (row, col).

    Attributes
    ----------
    midline : ndarray, shape (N, 2)
        The midwall from one basal end to the other.
    apex : int
        Index of the apex on ``midline``: the point farthest from the basal chord.
    centre : ndarray, shape (2,)
        The centre of the ventricle, on the long axis (apex to the middle of the
        basal chord): the centre of the ellipse fitted to the apical cap.
    """

    midline: np.ndarray
    apex: int
    centre: np.ndarray


def segment_names(view: str | None) -> tuple[str, ...]:
    """Return the names of segments 1-6 for a view; neutral names when unknown.

    ``A4C`` and ``A2C`` may also be written ``4CH``, ``2CH`` (CAMUS) or ``4C``.

    >>> segment_names("4CH")[0], segment_names(None)[0]
    ('basal_septal', 'wall1_basal')
    """
    match = re.fullmatch(r"A?([24])CH?", str(view or "").strip().upper())
    key = f"A{match.group(1)}C" if match else ""
    return tuple(SEGMENT_NAMES.get(key, NEUTRAL_NAMES))


def find_horseshoe(
    mask: np.ndarray, spacing: Sequence[float] = (1.0, 1.0)
) -> Horseshoe | None:
    """Trace the midline of a myocardial horseshoe; find its apex and centre.

    Parameters
    ----------
    mask : ndarray, shape (H, W)
        Myocardium (non-zero). It need not be connected: the midline is traced by
        position around the ventricle, so a gap in a wall is bridged.
    spacing : sequence of two float
        ``(row_mm, col_mm)``.

    Returns
    -------
    Horseshoe or None
        None when the mask holds fewer than :data:`MIN_PIXELS` pixels or no
        horseshoe can be traced.

    Notes
    -----
    A rough midline joins the centroids of angular bins around the pixels'
    centroid (which lies inside a horseshoe), in order from the widest empty gap
    (the mitral opening). Its ends bend where the bins meet the basal ends at a
    slant, so only its part a wall's thickness (area / length) from either end is
    kept. The pixels are then projected on it, past its ends along the end
    tangents, and binned by position along it: those bins are slices square to
    the wall, and their centroids, smoothed, are the midline, which is finally
    extended along its end tangents to the edge of the mask.
    """
    mask = np.asarray(mask) != 0
    rows, cols = np.nonzero(mask)
    return _trace(mask, rows, cols, np.asarray(spacing, float))


def _trace(
    mask: np.ndarray, rows: np.ndarray, cols: np.ndarray, scale: np.ndarray
) -> Horseshoe | None:
    """:func:`find_horseshoe` on the mask's pixels ``rows``, ``cols``."""
    if rows.size < MIN_PIXELS:
        return None
    points = np.column_stack([rows * scale[0], cols * scale[1]])
    traced = _angular_midline(points[:, 0], points[:, 1])
    if traced is None:
        return None
    rough, rough_angle, angle = traced
    arc = _arc(rough)
    thickness = rows.size * scale[0] * scale[1] / max(arc[-1], 1e-12)
    inner = (arc >= thickness) & (arc <= arc[-1] - thickness)
    if inner.sum() < 2 * _SMOOTH:
        return None
    position = _position_along(points, angle, rough[inner], rough_angle[inner])
    midline = _sliced_midline(rows, cols, scale, position)
    if midline is None:
        return None
    return _place_centre(_extend_ends(midline, mask, scale))


def _arc(line: np.ndarray) -> np.ndarray:
    """Cumulative arc length (mm) along a polyline, 0 at its first point."""
    return np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(line, axis=0).T))])


def _angular_midline(
    y: np.ndarray, x: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Centroids of angular bins around the pixels' centroid, gap to gap.

    Returns the line, the angle of each of its points and that of each pixel
    (degrees around the centroid, from the end of the gap), or None.
    """
    cy, cx = y.mean(), x.mean()
    angle = np.degrees(np.arctan2(x - cx, cy - y)) % 360.0
    n_bins = int(round(360 / _BIN_DEG))
    index = np.minimum((angle / _BIN_DEG).astype(int), n_bins - 1)
    counts = np.bincount(index, minlength=n_bins)
    # Start after the widest run of empty bins (the mitral opening); a closed
    # ring has none, and is opened at its emptiest bin.
    empty = counts == 0
    start = _widest_run_end(empty) if empty.any() else int(np.argmin(counts))
    order = (np.arange(n_bins) + start) % n_bins
    order = order[counts[order] > 0]
    full = np.flatnonzero(counts[order] >= _FULL_BIN * np.median(counts[order]))
    if full.size < 2 * _SMOOTH:
        return None
    order = order[full[0] : full[-1] + 1]
    sums = np.column_stack(
        [np.bincount(index, weights=v, minlength=n_bins) for v in (y, x)]
    )
    line = _smooth(sums[order] / counts[order, None])
    origin = start * _BIN_DEG
    along = (np.degrees(np.arctan2(line[:, 1] - cx, cy - line[:, 0])) - origin) % 360
    return line, np.maximum.accumulate(along), (angle - origin) % 360


def _widest_run_end(empty: np.ndarray) -> int:
    """Index just past the longest circular run of True in ``empty``."""
    shift = int(np.argmin(empty))  # a False: no run wraps past it
    rolled = np.roll(empty, -shift).astype(np.int8)
    edges = np.diff(np.concatenate([[0], rolled, [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    longest = int(np.argmax(stops - starts))
    return (int(stops[longest]) + shift) % empty.size


def _smooth(line: np.ndarray) -> np.ndarray:
    """Moving average over ``_SMOOTH`` points, symmetric (narrower at the ends)."""
    n = len(line)
    cumulative = np.concatenate([np.zeros((1, 2)), np.cumsum(line, axis=0)])
    i = np.arange(n)
    reach = np.minimum(np.minimum(i, n - 1 - i), _SMOOTH // 2)
    lo, hi = i - reach, i + reach + 1
    return (cumulative[hi] - cumulative[lo]) / (hi - lo)[:, None]


def _position_along(
    points: np.ndarray, angle: np.ndarray, line: np.ndarray, line_angle: np.ndarray
) -> np.ndarray:
    """Arc position (mm) of each point's projection on a polyline.

    The first guess is the line's position at the point's angle (the line was
    traced by angle); steps along the line's tangent there then move it to the
    foot of the perpendicular, and carry it on past 0 and past the line's length
    for points beyond its ends.
    """
    arc = _arc(line)
    tangent = np.gradient(line, axis=0)
    tangent /= np.maximum(np.hypot(*tangent.T), 1e-12)[:, None]
    table = np.hstack([line, tangent])
    position = _lookup(angle, line_angle, arc[:, None])[:, 0]
    for _ in range(_STEPS):
        foot, along = np.hsplit(_lookup(position, arc, table), 2)
        along /= np.maximum(np.hypot(*along.T), 1e-12)[:, None]
        position = np.clip(position, 0, arc[-1]) + np.einsum(
            "ij,ij->i", points - foot, along
        )
    return position


def _lookup(x: np.ndarray, xp: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Rows of ``table`` interpolated at ``x`` (clamped at the ends), like np.interp
    on every column at once."""
    i = np.clip(np.searchsorted(xp, x) - 1, 0, len(xp) - 2)
    width = np.maximum(xp[i + 1] - xp[i], 1e-12)
    w = np.clip((x - xp[i]) / width, 0.0, 1.0)[:, None]
    return table[i] * (1 - w) + table[i + 1] * w


def _sliced_midline(
    rows: np.ndarray, cols: np.ndarray, scale: np.ndarray, position: np.ndarray
) -> np.ndarray | None:
    """Centroids of slices of the wall, in order of ``position`` along it.

    Slices that a basal end cuts obliquely hold part of the wall's width and are
    dropped, as in :func:`_angular_midline`.
    """
    width = max(_SLICE_MM, 1.5 * float(scale.max()))
    index = np.floor((position - position.min()) / width).astype(int)
    counts = np.bincount(index)
    order = np.flatnonzero(counts > 0)
    full = np.flatnonzero(counts[order] >= _FULL_BIN * np.median(counts[order]))
    if full.size < 2 * _SMOOTH:
        return None
    order = order[full[0] : full[-1] + 1]
    sums = np.column_stack(
        [
            np.bincount(index, weights=v * s)
            for v, s in zip((rows, cols), scale, strict=True)
        ]
    )
    return _smooth(sums[order] / counts[order, None])


def _extend_ends(
    midline: np.ndarray, mask: np.ndarray, scale: np.ndarray
) -> np.ndarray:
    """Extend both ends of the midline along their tangents to the mask's edge."""
    steps = np.arange(1, 121)[:, None] * (0.25 * float(scale.min()))
    limit = np.asarray(mask.shape) - 1
    n = len(midline)
    ends = []
    for end, inner in ((midline[0], midline[min(3, n - 1)]),
                       (midline[-1], midline[max(-4, -n)])):  # fmt: skip
        tangent = end - inner
        tangent = tangent / max(float(np.hypot(*tangent)), 1e-12)
        probes = end + steps * tangent
        pixels = np.rint(probes / scale).astype(int)
        inside = np.all((pixels >= 0) & (pixels <= limit), axis=1)
        inside[inside] = mask[pixels[inside, 0], pixels[inside, 1]]
        run = len(inside) if inside.all() else int(np.argmin(inside))
        ends.append(probes[run - 1] if run > 0 else end)
    return np.vstack([ends[0], midline, ends[1]])


def _place_centre(midline: np.ndarray) -> Horseshoe | None:
    """Find the apex and the centre of the ventricle on a midline.

    The long axis runs from the apex to the middle of the basal chord. The centre
    is that of the ellipse, through the apex and symmetric about the axis, that
    fits the apical cap of the midline: with ``u`` along the axis from the apex
    and ``v`` across it, ``v**2 = alpha u + gamma u**2`` is linear in (alpha,
    gamma), and the centre lies at ``u = -alpha / (2 gamma)``. The cap is the
    midline up to that level, found in a few rounds from ``_CAP`` of the axis.
    """
    base0, base1 = midline[0], midline[-1]
    chord = base1 - base0
    length = float(np.hypot(*chord))
    if length == 0:
        return None
    normal = np.array([-chord[1], chord[0]]) / length
    apex = int(np.argmax(np.abs((midline - base0) @ normal)))
    axis = (base0 + base1) / 2 - midline[apex]
    axis_length = float(np.hypot(*axis))
    if apex in (0, len(midline) - 1) or axis_length == 0:
        return None
    axis = axis / axis_length
    rel = midline - midline[apex]
    u, v = rel @ axis, rel @ np.array([-axis[1], axis[0]])
    level = _CAP * axis_length
    for _ in range(3):
        cap = (u > 0) & (u <= level)
        if cap.sum() < 3:
            break
        # least squares through the normal equations of the 2 x 2 system
        x, y = u[cap], v[cap] ** 2
        s2, s3, s4 = x @ x, x @ x**2, x**2 @ x**2
        det = s2 * s4 - s3 * s3
        if det <= 0:
            break
        alpha = (s4 * (x @ y) - s3 * (x**2 @ y)) / det
        gamma = (s2 * (x**2 @ y) - s3 * (x @ y)) / det
        if not (alpha > 0 and gamma < 0):
            break  # no elliptical cap: keep the last level
        level = min(-alpha / (2 * gamma), axis_length)
    return Horseshoe(midline, apex, midline[apex] + level * axis)


def segment_myocardium(
    mask: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0),
    septum_side: str = "left",
) -> np.ndarray:
    """Label the myocardium of one apical frame with segments 1-6.

    Parameters
    ----------
    mask : ndarray, shape (H, W)
        Myocardium (non-zero); see :func:`find_horseshoe`.
    spacing : sequence of two float
        ``(row_mm, col_mm)``.
    septum_side : {"left", "right"}
        The image side of the first wall (segments 1-3): the wall whose basal end
        has the smaller (left) or the larger (right) column.

    Returns
    -------
    ndarray, shape (H, W), uint8
        Segment labels 1-6 on the myocardium, 0 elsewhere; all 0 when no
        horseshoe is found.

    Notes
    -----
    Each wall's midline is cut in thirds of its arc length from the apex to its
    basal end; a pixel belongs to the wall on its side of the long axis, and to
    the third whose rays from the centre enclose it.
    """
    if septum_side not in SIDES:
        raise ValueError(f"septum_side must be 'left' or 'right', got {septum_side!r}")
    mask = np.asarray(mask) != 0
    labels = np.zeros(mask.shape, np.uint8)
    if not mask.any():
        return labels
    # work on the mask's bounding box: the geometry does not depend on the origin
    rows, cols = np.nonzero(mask)
    r0, c0 = rows.min(), cols.min()
    box = mask[r0 : rows.max() + 1, c0 : cols.max() + 1]
    rows, cols = rows - r0, cols - c0
    scale = np.asarray(spacing, float)
    shoe = _trace(box, rows, cols, scale)
    if shoe is None:
        return labels

    up = shoe.midline[shoe.apex] - shoe.centre
    up = up / max(float(np.hypot(*up)), 1e-12)
    angle, side = _angles(np.column_stack([rows, cols]) * scale - shoe.centre, up)
    walls = (shoe.midline[: shoe.apex + 1][::-1], shoe.midline[shoe.apex :])
    left_end = 0 if walls[0][-1][1] < walls[1][-1][1] else 1
    first = left_end if septum_side == "left" else 1 - left_end
    for k, wall in enumerate(walls):
        cuts, _ = _angles(_arc_points(wall, (1 / 3, 2 / 3)) - shoe.centre, up)
        on_wall = side == _angles((wall[-1] - shoe.centre)[None], up)[1][0]
        third = np.searchsorted(np.sort(cuts), angle[on_wall])  # 0 apical, 2 basal
        labels[rows[on_wall] + r0, cols[on_wall] + c0] = (
            3 - third if k == first else 4 + third
        )
    return labels


def _angles(d: np.ndarray, up: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Angle (rad, 0 to pi) of the vectors ``d`` from ``up``, and their side (+-1)."""
    cross = up[0] * d[:, 1] - up[1] * d[:, 0]
    return np.arctan2(np.abs(cross), d @ up), np.where(cross >= 0, 1, -1)


def _arc_points(line: np.ndarray, fractions: Sequence[float]) -> np.ndarray:
    """Points at the given fractions of a polyline's arc length from its start."""
    arc = _arc(line)
    targets = np.asarray(fractions) * arc[-1]
    return np.column_stack([np.interp(targets, arc, line[:, k]) for k in (0, 1)])


def segment_loop(
    myocardium: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0),
    septum_side: str = "left",
    frames: Sequence[int] | None = None,
) -> np.ndarray:
    """Label the frames of a loop with segments 1-6.

    Parameters
    ----------
    myocardium : ndarray, shape (T, H, W)
        Myocardium per frame (non-zero).
    spacing, septum_side
        As for :func:`segment_myocardium`.
    frames : sequence of int, optional
        The frames to label (the others stay 0); by default those with a
        non-empty mask.

    Returns
    -------
    ndarray, shape (T, H, W), uint8
    """
    myocardium = np.asarray(myocardium) != 0
    if frames is None:
        frames = np.flatnonzero(myocardium.reshape(len(myocardium), -1).any(axis=1))
    labels = np.zeros(myocardium.shape, np.uint8)
    failed = []
    done: dict[bytes, int] = {}  # masks repeat (a still heart, synthetic loops)
    for t in frames:
        key = np.packbits(myocardium[t]).tobytes()
        if key in done:
            labels[t] = labels[done[key]]
            continue
        done[key] = t
        labels[t] = segment_myocardium(myocardium[t], spacing, septum_side)
        if myocardium[t].any() and not labels[t].any():
            failed.append(int(t))
    if failed:
        log.warning(
            "%d of %d frames hold no traceable myocardial horseshoe (first: %d); "
            "they have no segments",
            len(failed),
            len(frames),
            failed[0],
        )
    return labels


def erode_mm(
    mask: np.ndarray, spacing: Sequence[float], distance_mm: float
) -> np.ndarray:
    """Erode a 2-D mask by ``distance_mm`` millimetres (an elliptical element).

    Parameters
    ----------
    mask : ndarray, shape (H, W)
    spacing : sequence of two float
        ``(row_mm, col_mm)``: the element reaches ``distance_mm / row_mm`` rows and
        ``distance_mm / col_mm`` columns either way.
    distance_mm : float
        0 returns the mask unchanged (as bool).

    Returns
    -------
    ndarray, shape (H, W), bool
    """
    mask = np.asarray(mask) != 0
    if distance_mm <= 0 or not mask.any():
        return mask
    reach = [distance_mm / float(s) for s in spacing]
    half = [int(math.floor(r)) for r in reach]
    dr, dc = np.mgrid[-half[0] : half[0] + 1, -half[1] : half[1] + 1]
    element = (dr / reach[0]) ** 2 + (dc / reach[1]) ** 2 <= 1
    return ndimage.binary_erosion(mask, element, border_value=0)


def enclosed_area(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Area (mm^2) that a myocardial horseshoe encloses: its convex hull less itself.

    A stand-in for the LV cavity when only the myocardium is segmented. It is
    largest at end-diastole, where the myocardial area itself is smallest, as the
    wall thickens in systole (over 60 frames of a phantom loop the two correlate
    at -0.9995). nan for fewer than 3 pixels or pixels on one line.
    """
    from scipy.spatial import ConvexHull, QhullError

    mask = np.asarray(mask) != 0
    rows, cols = np.nonzero(mask)  # row-major: each row's pixels in a run
    if rows.size < 3:
        return math.nan
    # The hull of the pixels (their corners) is that of each row's outer corners.
    starts = np.flatnonzero(np.r_[True, np.diff(rows) > 0])
    ends = np.r_[starts[1:], rows.size] - 1
    r = rows[starts].astype(np.float64)
    corners = np.concatenate(
        [
            np.column_stack([r + dr, c])
            for dr in (-0.5, 0.5)
            for c in (cols[starts] - 0.5, cols[ends] + 0.5)
        ]
    ) * np.asarray(spacing, float)
    try:
        hull = ConvexHull(corners)
    except QhullError:
        return math.nan
    return float(hull.volume - rows.size * spacing[0] * spacing[1])
