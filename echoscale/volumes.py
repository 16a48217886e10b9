"""LV volumes and ejection fraction by the biplane method of disks (Simpson's rule).

The cavity (label 1) of an apical two- and four-chamber view at the same phase is cut
into disks perpendicular to its long axis, from the middle of the mitral annulus to the
apex; the volume is the sum of elliptical disks whose diameters are the two views'
widths. Which long axis sets the disks' thickness differs between conventions, and the
difference moves the ejection fraction by several points:

* ``"guideline"`` (ASE/EACVI, Lang et al. 2015): at each phase, the longer of the two
  views' long axes;
* ``"camus"`` (the CAMUS evaluation script, which produced the ``EF`` of the CAMUS
  ``Info_*.cfg`` files): the longest of the four long axes (both views, ED and ES),
  for both phases, so the end-systolic disks are as thick as the end-diastolic ones.

On the expert masks of the 12 complete real CAMUS patients in ``../shared/data``, the
``"camus"`` rule gives the cfg EF (a whole number) within 1.7 points, mean +0.2 and SD
0.9 of the differences; the ``"guideline"`` rule reads 4.9 to 13.8 points above it,
mean +8.4, because the shorter systolic long axis thins the systolic disks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

N_DISKS = 20
VIEWS = ("2CH", "4CH")
PHASES = ("ED", "ES")
LENGTH_RULES = ("guideline", "camus")


def disk_widths(
    mask: np.ndarray, spacing: tuple[float, float], n_disks: int = N_DISKS
) -> tuple[float, np.ndarray]:
    """Measure one apical view for the method of disks.

    Parameters
    ----------
    mask : ndarray, shape (H, W)
        CAMUS labels; the cavity (1) must touch the atrium (3) at the mitral plane.
    spacing : tuple of float
        ``(row_mm, col_mm)``.
    n_disks : int
        Number of disks.

    Returns
    -------
    length : float
        Long axis, mm: from the mid-point of the mitral annulus to the apex.
    widths : ndarray, shape (n_disks,)
        Mean cavity width (mm) in each slab perpendicular to the long axis, from
        the base to the apex.

    Raises
    ------
    ValueError
        When the mask has no cavity or the cavity does not touch the atrium.

    Notes
    -----
    The annulus is the set of cavity pixels 4-adjacent to atrium pixels; its end
    points are the extremes along its principal direction and their mid-point is the
    base of the long axis. The apex is the cavity pixel farthest from it. Lengths
    run between pixel edges (half a pixel beyond each centre). Each slab's width is
    its cavity area divided by its thickness ``L / n_disks``, which is exact for a
    shape whose width varies linearly within the slab.
    """
    cavity, atrium = mask == 1, mask == 3
    if not cavity.any():
        raise ValueError("mask has no LV cavity (label 1)")
    near = np.zeros_like(atrium)
    near[1:] |= atrium[:-1]
    near[:-1] |= atrium[1:]
    near[:, 1:] |= atrium[:, :-1]
    near[:, :-1] |= atrium[:, 1:]
    annulus = np.argwhere(cavity & near) * np.asarray(spacing)
    if len(annulus) < 2:
        raise ValueError(
            "the LV cavity (label 1) does not touch the atrium (label 3); "
            "the mitral plane cannot be found"
        )

    centred = annulus - annulus.mean(axis=0)
    direction = np.linalg.svd(centred, full_matrices=False)[2][0]
    along = centred @ direction
    mid = (annulus[along.argmin()] + annulus[along.argmax()]) / 2
    points = np.argwhere(cavity) * np.asarray(spacing)
    dist = np.hypot(*(points - mid).T)
    # A digital apex is blunt: its farthest pixel may sit at a corner of the tip and
    # tilt the axis, so the axis points at the mean of the pixels within a pixel of
    # the farthest distance.
    tip = points[dist >= dist.max() - max(spacing)].mean(axis=0)
    axis = (tip - mid) / np.hypot(*(tip - mid))
    half_pixel = 0.5 * (abs(axis[0]) * spacing[0] + abs(axis[1]) * spacing[1])
    along = (points - mid) @ axis
    length = float(along.max() + 2 * half_pixel)

    s = along + half_pixel
    slab = np.floor(s / (length / n_disks)).astype(int)
    counts = np.bincount(slab[(slab >= 0) & (slab < n_disks)], minlength=n_disks)
    widths = counts * (spacing[0] * spacing[1]) / (length / n_disks)
    return length, widths


def biplane_volume(
    mask_2ch: np.ndarray,
    spacing_2ch: tuple[float, float],
    mask_4ch: np.ndarray,
    spacing_4ch: tuple[float, float],
    n_disks: int = N_DISKS,
    length: float | None = None,
) -> float:
    """Return the LV volume (ml) by the biplane method of disks (Simpson's rule).

    Parameters
    ----------
    mask_2ch, mask_4ch : ndarray, shape (H, W)
        CAMUS label masks of the two apical views at the same phase.
    spacing_2ch, spacing_4ch : tuple of float
        ``(row_mm, col_mm)`` of each view.
    n_disks : int
        Number of disks (20 in the ASE/EACVI recommendation).
    length : float, optional
        Long axis (mm) that sets the disks' thickness; by default the longer of
        the two views' own (the guideline at one phase).

    Returns
    -------
    float
        Volume in millilitres.

    Notes
    -----
    V = pi/4 * sum_i a_i b_i * L / n_disks, with a_i and b_i the cavity widths of
    disk i in the two views (:func:`disk_widths`) and L the long axis. A truncated
    ellipsoid of known volume is recovered within about 1%.
    """
    length_2, widths_2 = disk_widths(mask_2ch, spacing_2ch, n_disks)
    length_4, widths_4 = disk_widths(mask_4ch, spacing_4ch, n_disks)
    if length is None:
        length = max(length_2, length_4)
    return _disk_volume(widths_2, widths_4, length)


def _disk_volume(widths_2: np.ndarray, widths_4: np.ndarray, length: float) -> float:
    """Sum of elliptical disks of diameters ``widths_2``, ``widths_4`` (mm), in ml."""
    return float(np.pi / 4 * np.sum(widths_2 * widths_4) * length / len(widths_2) / 1e3)


def ejection_fraction(edv: float, esv: float) -> float:
    """Return EF = (EDV - ESV) / EDV * 100, in percent."""
    if not edv > 0:
        raise ValueError(f"EDV must be positive, got {edv}")
    return (edv - esv) / edv * 100


@dataclass(frozen=True)
class LVVolumes:
    """End-diastolic and end-systolic volumes (ml), EF (%) and the long axes (mm).

    ``lengths`` maps ``"2CH_ED"`` ... to each view's long axis; ``rule`` is the
    length convention used (one of :data:`LENGTH_RULES`).
    """

    edv: float
    esv: float
    ef: float
    lengths: dict[str, float]
    rule: str


def lv_volumes(
    masks: Mapping[tuple[str, str], tuple[np.ndarray, tuple[float, float]]],
    rule: str = "guideline",
    n_disks: int = N_DISKS,
) -> LVVolumes:
    """EDV, ESV and EF of one patient from the four apical masks.

    Parameters
    ----------
    masks : mapping
        ``(view, phase) -> (mask (H, W), (row_mm, col_mm))`` for views 2CH and 4CH
        and phases ED and ES, CAMUS labels.
    rule : {"guideline", "camus"}
        Which long axis sets the disks' thickness (see the module docstring).
    n_disks : int
        Number of disks.

    Raises
    ------
    ValueError
        An unknown rule, a missing view or phase, or a mask whose cavity does not
        touch the atrium.
    """
    if rule not in LENGTH_RULES:
        raise ValueError(f"rule must be one of {', '.join(LENGTH_RULES)}; got {rule!r}")
    missing = [f"{v}_{p}" for v in VIEWS for p in PHASES if (v, p) not in masks]
    if missing:
        raise ValueError(f"the method of disks needs {', '.join(missing)}")

    measured = {
        f"{v}_{p}": disk_widths(*masks[(v, p)], n_disks) for v in VIEWS for p in PHASES
    }
    lengths = {key: length for key, (length, _) in measured.items()}
    volumes = {}
    for phase in PHASES:
        if rule == "camus":
            length = max(lengths.values())
        else:
            length = max(lengths[f"{v}_{phase}"] for v in VIEWS)
        volumes[phase] = _disk_volume(
            measured[f"2CH_{phase}"][1], measured[f"4CH_{phase}"][1], length
        )
    ef = ejection_fraction(volumes["ED"], volumes["ES"])
    return LVVolumes(volumes["ED"], volumes["ES"], ef, lengths, rule)
