"""Contrast-echo loops with known perfusion: the ``OUT/ceus`` cases of the phantom.

Each case is an apical loop (A4C or A2C) of several heart beats with one or two
destructive flashes, written in the ``prepare ceus`` layout (:mod:`echoscale.ceus`)::

    caseNN/cine.tif | cine.nii.gz          uint8 (T, H, W), log-compressed
    caseNN/masks.tif | masks.nii.gz        uint8 (T, H, W), 1 = myocardium; an
                                           all-zero frame is unlabelled
    caseNN/segments.tif | segments.nii.gz  uint8 (T, H, W), segments 1-6, every frame
    caseNN/case.json                       fps, frame times, flashes, dynamic range,
                                           v_max, septum side, view, saturation
    caseNN/ground_truth.json               every parameter of the model below

The model, in relative linear power P (the inverse of the display mapping of
DESIGN.md, ``P = 10 ** (v * DR / (10 * v_max))``): after a flash, the myocardium of
segment k holds ``y_k(t) = A_k (1 - exp(-beta_k t)) + C_k``, t in seconds from the
first frame after the flash's last frame (Wei et al. 1998); before the first flash it
holds its plateau ``A_k + C_k``. Every myocardial pixel of segment k has power
``y_k(t) s``, with ``s`` unit-mean exponential speckle, so the mean of the linearised
pixels over a segment's mask estimates ``y_k(t)`` (up to 8-bit quantisation and, in a
saturated case, the clipped pixels).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from echoscale import images, rundir
from echoscale.phantom import (
    DEFAULT_CEUS_SIZE,
    QUALITY_SHARES,
    HeartShape,
    Sector,
    blur_pair,
    fitted_sector,
    heart_outline,
    heart_regions,
    pixel_grid,
    right_heart,
    smooth_field,
)

V_MAX = 255
SEGMENT_NAMES = {
    "A4C": ("basal_septal", "mid_septal", "apical_septal",
            "apical_lateral", "mid_lateral", "basal_lateral"),
    "A2C": ("basal_inferior", "mid_inferior", "apical_inferior",
            "apical_anterior", "mid_anterior", "basal_anterior"),
}  # fmt: skip
SPECKLE_SIGMA_PX = (0.5, 0.8)  # (row, col) of the complex field's Gaussian filter
LABELLINGS = ("all", "every_third", "first_part")
_CHUNK = 48  # frames rendered at once: bounds the memory of the float temporaries
_LEVELS = 64  # contraction levels whose geometry is computed; a frame takes the nearest
_POOL = 8  # independent speckle fields that the frames' speckle is cropped from


@dataclass
class PhantomLoop:
    """One contrast-loop case, rendered and ready to write.

    Attributes
    ----------
    name : str
    cine, masks, segments : ndarray, shape (T, H, W), uint8
        The log-compressed loop; the myocardium (1) on labelled frames, all zero on
        the others; the segment labels 1-6 on every frame.
    spacing : tuple of float
        ``(row_mm, col_mm)``.
    frame_times : ndarray, shape (T,)
        Seconds from the first frame.
    settings : dict
        The contents of ``case.json``.
    truth : dict
        The contents of ``ground_truth.json``.
    """

    name: str
    cine: np.ndarray
    masks: np.ndarray
    segments: np.ndarray
    spacing: tuple[float, float]
    frame_times: np.ndarray
    settings: dict[str, Any]
    truth: dict[str, Any]


def replenishment(t: np.ndarray, A: float, beta: float, C: float) -> np.ndarray:
    """Return ``A (1 - exp(-beta t)) + C``: the power ``t`` seconds after a flash."""
    return A * (1 - np.exp(-beta * np.asarray(t, np.float64))) + C


def time_since_flash(frame_times: np.ndarray, flashes: list[list[int]]) -> np.ndarray:
    """Return each frame's time (s) from the first frame after the latest flash.

    Frames before the first flash, and flash frames themselves, get ``inf`` and
    ``nan``: the plateau, and no replenishment value.
    """
    since = np.full(len(frame_times), np.inf)
    for frames in flashes:
        start = frames[-1] + 1
        since[start:] = frame_times[start:] - frame_times[start]
        since[frames] = np.nan
    return since


def contraction(times: np.ndarray, cycle: float, phase: float) -> np.ndarray:
    """Return the systolic contraction (0 at end-diastole, 1 at end-systole).

    The heart contracts over the first 30% of each cycle, holds to 35% and relaxes by
    55%, each move eased by ``(1 - cos(pi x)) / 2``.
    """
    p = np.mod(np.asarray(times) / cycle + phase, 1.0)

    def ease(x):
        return (1 - np.cos(np.pi * np.clip(x, 0, 1))) / 2

    return ease(p / 0.3) * (1 - ease((p - 0.35) / 0.2))


def segment_map(
    regions: dict[str, np.ndarray], shapes: dict[str, np.ndarray], first_side: float
) -> np.ndarray:
    """Split the myocardium into six segments along its midwall.

    Parameters
    ----------
    regions : dict
        From :func:`echoscale.phantom.heart_regions`, arrays (T, H, W).
    shapes : dict
        The per-frame :class:`HeartShape` fields, arrays (T, 1, 1).
    first_side : float
        -1 when the first wall (septal in A4C, inferior in A2C) lies on the image
        left, +1 on the right.

    Returns
    -------
    ndarray, shape (T, H, W), uint8
        1 basal, 2 mid, 3 apical on the first wall; 4 apical, 5 mid, 6 basal on the
        other; 0 outside the myocardium.

    Notes
    -----
    A myocardial pixel sits at the elliptical angle ``phi`` of the midwall curve
    (``phi = 0`` at the apex, ``phi_b`` at the mitral plane); each wall is cut in
    thirds of the midwall's arc length from the apex to the base.
    """
    a, b, wall = shapes["a"][:, 0, 0], shapes["b"][:, 0, 0], shapes["wall"][:, 0, 0]
    apical_length = a + shapes["apex_wall"][:, 0, 0] / 2
    basal_length = a * shapes["fullness"][:, 0, 0] + wall / 2
    width = b + wall / 2
    phi_base = np.arccos(-a * shapes["base_cut"][:, 0, 0] / basal_length)

    # arc length of the midwall from the apex, tabulated per frame
    phi = phi_base[:, None] * np.linspace(0, 1, 257)[None]
    length = np.where(phi < np.pi / 2, apical_length[:, None], basal_length[:, None])
    speed = np.hypot(length * np.sin(phi), width[:, None] * np.cos(phi))
    arc = np.concatenate(
        [np.zeros((len(a), 1)), np.cumsum((speed[:, 1:] + speed[:, :-1]) / 2, 1)], 1
    ) * (phi[:, 1:2] - phi[:, :1])
    cuts = [
        np.array([np.interp(f * s[-1], s, p) for s, p in zip(arc, phi, strict=True)])
        for f in (1 / 3, 2 / 3)
    ]

    t, r, c = np.nonzero(regions["myo"])
    q = regions["u"][t, r, c] - a[t]
    v = regions["v"][t, r, c]
    along = np.where(q < 0, apical_length[t], basal_length[t])
    angle = np.arctan2(np.abs(v) / width[t], -q / along)
    third = (angle >= cuts[0][t]).astype(np.uint8) + (angle >= cuts[1][t])
    labels = np.where(v * first_side > 0, 3 - third, 4 + third).astype(np.uint8)
    out = np.zeros(regions["myo"].shape, np.uint8)
    out[t, r, c] = labels
    return out


def _draw_shape(
    rng: np.random.Generator, sector: Sector, depth: float, size: tuple[int, int]
) -> HeartShape:
    """Draw an end-diastolic heart whose whole epicardium lies in the fan.

    A heart that does not fit is narrowed, straightened and moved down until it does
    (a square image has a narrow fan).
    """
    apex_z = rng.uniform(22, 32)
    length = min(rng.uniform(70, 90), depth - apex_z - 15)
    cut = rng.uniform(0.3, 0.5)
    shape = HeartShape(
        apex_z=apex_z,
        apex_x=rng.uniform(-5, 5),
        tilt=math.radians(rng.uniform(-8, 8)),
        a=length / (1 + cut),
        b=length / 2 / rng.uniform(1.45, 1.9),
        base_cut=cut,
        fullness=rng.uniform(1.0, 1.4),
        wall=rng.uniform(8, 12),
        apex_wall=rng.uniform(6, 9),
        la_length=rng.uniform(35, 50),
        la_cut=rng.uniform(0.45, 0.65),
    )
    for _ in range(60):
        z, x, _ = heart_outline(shape)
        if sector.contains(z, x, 1.5):
            return shape
        shape = dataclasses.replace(
            shape,
            b=shape.b * 0.96,
            tilt=shape.tilt * 0.8,
            apex_x=shape.apex_x * 0.8,
            apex_z=min(shape.apex_z + 0.5, depth - shape.base - 15),
        )
    opening = math.degrees(2 * sector.half_angle)
    raise ValueError(f"size {size}: no heart fits its fan of {opening:.0f} degrees")


def make_ceus_case(
    rng: np.random.Generator,
    name: str,
    size: tuple[int, int] = DEFAULT_CEUS_SIZE,
    *,
    frame_jitter: float = 0.0,
    saturate: bool | None = None,
    labelling: str | None = None,
) -> PhantomLoop:
    """Draw and render one contrast loop.

    Parameters
    ----------
    rng : numpy.random.Generator
        The case's own generator; every draw comes from it.
    name : str
        ``caseNN``.
    size : tuple of int
        (H, W) of the frames.
    frame_jitter : float
        Frame-time jitter, uniform within +-``frame_jitter`` of the frame interval
        (below 0.5; TIFF keeps uneven times, NIfTI needs 0).
    saturate : bool, optional
        Clip the pixels at a ceiling of 205-235; drawn (one case in three) if None.
    labelling : {"all", "every_third", "first_part"}, optional
        Which frames carry a mask: all, every third from frame 0, or frames 0 to
        40-60% of the loop; drawn (1/2, 1/4, 1/4) if None.

    Returns
    -------
    PhantomLoop

    Notes
    -----
    Drawn per case: view A4C or A2C, the first wall (septal in A4C, inferior in
    A2C; ``septum_side`` in case.json) on the left in 70%, quality, field of view
    120-160 mm deep, dynamic range 40-60 dB, the timing (:func:`_draw_timing`), the
    perfusion (:func:`_draw_perfusion`) and the wall motion: 8-15% long-axis
    shortening, 15-30% narrowing and 30-50% thickening at end-systole. Tissue is
    displayed at 15-40 with a 3 dB texture, flash frames at 232-248. Speckle is
    ``s = |f|^2 / 2``, with ``f`` complex white Gaussian noise filtered by a
    unit-energy Gaussian (sigma 0.5 x 0.8 px): exponential of mean 1, correlated
    over about 2.5 pixels.
    """
    if not 0 <= frame_jitter < 0.5:
        raise ValueError(f"frame_jitter must be in [0, 0.5), got {frame_jitter}")
    if labelling is not None and labelling not in LABELLINGS:
        raise ValueError(f"labelling must be one of {LABELLINGS}, got {labelling!r}")
    h, w = size
    view = "A4C" if rng.random() < 0.5 else "A2C"
    first_side = -1.0 if rng.random() < 0.7 else 1.0
    quality = str(rng.choice(list(QUALITY_SHARES), p=list(QUALITY_SHARES.values())))
    depth = rng.uniform(120, 160)
    spacing = (round(depth / h, 4), round(depth / h * rng.uniform(0.97, 1.03), 4))
    sector = fitted_sector(size, spacing, rng.uniform(0, 1.5))
    ed = _draw_shape(rng, sector, depth, size)
    dynamic_range = round(float(rng.uniform(40, 60)), 1)

    def power(v: float) -> float:
        # the linear power shown as pixel value v
        return float(10 ** (v * dynamic_range / (10 * V_MAX)))

    timing = _draw_timing(rng, frame_jitter)
    frame_times, flashes = timing["frame_times"], timing["flashes"]
    segments, blood = _draw_perfusion(rng, view, quality, power)
    if saturate is None:
        saturate = rng.random() < 1 / 3
    ceiling = int(rng.integers(205, 236)) if saturate else None
    if labelling is None:
        labelling = str(rng.choice(LABELLINGS, p=[0.5, 0.25, 0.25]))
    n_frames = len(frame_times)
    labelled = _labelled_frames(rng, labelling, n_frames)
    motion = {
        "shortening": rng.uniform(0.08, 0.15),
        "narrowing": rng.uniform(0.7, 0.85),
        "thickening": rng.uniform(1.3, 1.5),
    }
    levels = {
        "tissue": power(rng.uniform(15, 40)),
        "flash": power(rng.uniform(232, 248)),
        "attenuation_db_cm": rng.uniform(0.2, 0.6),
    }

    squeeze = contraction(frame_times, timing["cycle"], rng.uniform(0, 1))
    level = np.rint(squeeze * (_LEVELS - 1)).astype(int)
    classes = _class_maps(size, spacing, ed, motion, view, first_side)
    segs = np.where(classes[level] <= 6, classes[level], 0).astype(np.uint8)
    coef = _frame_powers(frame_times, flashes, segments, blood)
    cine = _render(
        rng, classes, level, coef, spacing, sector, levels, dynamic_range, ceiling
    )
    masks = np.zeros_like(segs)
    masks[labelled] = segs[labelled] > 0

    flash_frames = [f for frames in flashes for f in frames]
    settings = {
        "fps": timing["fps"],
        "frame_times": frame_times.tolist(),
        "flash_frames": flash_frames,
        "dynamic_range_db": dynamic_range,
        "v_max": V_MAX,
        "septum_side": "left" if first_side < 0 else "right",
        "view": view,
        "saturation_level": ceiling,
        "quality": quality,
    }
    truth = {
        **{k: settings[k] for k in settings if k not in ("frame_times", "quality")},
        "description": (
            "Synthetic contrast loop. After each flash the mean linear power of "
            "myocardial segment k is A (1 - exp(-beta t)) + C, t from the first "
            "frame after the flash's last frame; before the first flash A + C. "
            "Pixel v = round(v_max * 10 log10(P s) / DR), clipped to [0, v_max] "
            "and to saturation_level, with s unit-mean exponential speckle. "
            "septum_side is the side of the first wall (segments 1-3): the septum "
            "in A4C, the inferior wall in A2C."
        ),
        "units": {
            "A": "relative linear power, P = 10 ** (v * DR / (10 * v_max))",
            "C": "relative linear power",
            "beta": "1/s",
            "A_beta": "relative linear power per second",
            "t0_s": "s from the first frame",
            "cardiac_cycle_s": "s",
            "heart_rate_bpm": "1/min",
        },
        "segments": segments,
        "blood": blood,
        "flashes": [
            {"frames": f, "t0_frame": f[-1] + 1, "t0_s": float(frame_times[f[-1] + 1])}
            for f in flashes
        ],
        "n_frames": n_frames,
        "heart_rate_bpm": round(60 / timing["cycle"], 2),
        "cardiac_cycle_s": timing["cycle"],
        "saturation_power": None if ceiling is None else power(ceiling),
        "tissue_power": _round(levels["tissue"]),
        "flash_power": _round(levels["flash"]),
        "speckle": {
            "distribution": "exponential, mean 1",
            "sigma_px": SPECKLE_SIGMA_PX,
        },
        "labelling": labelling,
        "labelled_frames": labelled,
        "spacing_mm": list(spacing),
        "quality": quality,
    }
    return PhantomLoop(name, cine, masks, segs, spacing, frame_times, settings, truth)


def _draw_timing(rng: np.random.Generator, frame_jitter: float) -> dict[str, Any]:
    """Draw the frame times and flashes of a loop.

    15-30 fps for 8-20 s, a cardiac cycle of 60-90 bpm, a flash of 1-3 frames 1-2.5
    s in and, in loops of 14 s and more, a second one 45-60% of the way from the
    first to the end.
    """
    fps = round(float(rng.uniform(15, 30)), 1)
    n_frames = int(round(rng.uniform(8, 20) * fps))
    steps = 1 + rng.uniform(-frame_jitter, frame_jitter, n_frames - 1)
    frame_times = np.concatenate([[0.0], np.cumsum(steps)]) / fps
    cycle = round(60 / rng.uniform(60, 90), 4)
    first = int(round(rng.uniform(1.0, 2.5) * fps))
    flashes = [list(range(first, first + int(rng.integers(1, 4))))]
    after = flashes[0][-1] + 1
    if frame_times[-1] >= 14:
        second = after + int(round(rng.uniform(0.45, 0.6) * (n_frames - after)))
        flashes.append(list(range(second, second + int(rng.integers(1, 4)))))
    return {"fps": fps, "frame_times": frame_times, "cycle": cycle, "flashes": flashes}


def _draw_perfusion(
    rng: np.random.Generator, view: str, quality: str, power
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Draw the replenishment parameters of the six segments and of the blood.

    The myocardial plateau ``A + C`` shows at v = 130-160 (Good), 115-145 (Medium)
    or 100-130 (Poor) and ``C`` at 20-50, each segment's ``A`` and ``C`` varying by
    0.7-1.15 and 0.8-1.25. ``beta`` is a case level of 0.35-1.0 1/s times a lognormal
    factor (sigma 0.25), clipped to 0.2-2; in 70% of cases one segment has a
    perfusion defect (``beta`` and ``A`` scaled by 0.3-0.5 and 0.5-0.75). Blood
    shows at 175-210, drops to 40-70 at a flash and refills within about 1 s
    (``beta`` 3-6 1/s). Values are rounded before use, so that the pixels follow
    exactly the values written.
    """
    plateau_v = {"Good": (130, 160), "Medium": (115, 145), "Poor": (100, 130)}
    plateau = power(rng.uniform(*plateau_v[quality]))
    background = power(rng.uniform(20, 50))
    beta_base = rng.uniform(0.35, 1.0)
    segments = []
    for label, seg_name in enumerate(SEGMENT_NAMES[view], start=1):
        A = (plateau - background) * rng.uniform(0.7, 1.15)
        beta = float(np.clip(beta_base * rng.lognormal(0, 0.25), 0.2, 2.0))
        C = background * rng.uniform(0.8, 1.25)
        segments.append(
            {"label": label, "name": seg_name, "A": A, "beta": beta, "C": C}
        )
    if rng.random() < 0.7:
        defect = segments[int(rng.integers(0, 6))]
        defect["beta"] = max(0.2, defect["beta"] * rng.uniform(0.3, 0.5))
        defect["A"] *= rng.uniform(0.5, 0.75)
    for seg in segments:
        seg.update(A=_round(seg["A"]), beta=round(seg["beta"], 4), C=_round(seg["C"]))
        seg["A_beta"] = _round(seg["A"] * seg["beta"])
    destroyed = power(rng.uniform(40, 70))
    blood = {
        "A": _round(power(rng.uniform(175, 210)) - destroyed),
        "beta": round(float(rng.uniform(3, 6)), 3),
        "C": _round(destroyed),
    }
    return segments, blood


def _round(value: float) -> float:
    """Round to 6 significant digits."""
    return float(f"{value:.6g}")


def _labelled_frames(
    rng: np.random.Generator, labelling: str, n_frames: int
) -> list[int]:
    if labelling == "every_third":
        return list(range(0, n_frames, 3))
    if labelling == "first_part":
        return list(range(int(n_frames * rng.uniform(0.4, 0.6))))
    return list(range(n_frames))


def _class_maps(
    size: tuple[int, int],
    spacing: tuple[float, float],
    ed: HeartShape,
    motion: dict[str, float],
    view: str,
    first_side: float,
) -> np.ndarray:
    """Return the pixel classes at ``_LEVELS`` contraction levels from ED to ES.

    Returns
    -------
    ndarray, shape (_LEVELS, H, W), uint8
        0 tissue, 1-6 the myocardial segments (:func:`segment_map`), 7 blood (LV
        cavity, LA and, in A4C, the right heart).
    """
    c = np.linspace(0, 1, _LEVELS, dtype=np.float32).reshape(-1, 1, 1)
    thicken = 1 + (motion["thickening"] - 1) * c
    shapes = {
        "apex_z": ed.apex_z, "apex_x": ed.apex_x, "tilt": ed.tilt,
        "a": ed.a * (1 - motion["shortening"] * c),
        "b": ed.b * (1 - (1 - motion["narrowing"]) * c),
        "base_cut": ed.base_cut, "fullness": ed.fullness,
        "wall": ed.wall * thicken, "apex_wall": ed.apex_wall * thicken,
        "la_length": ed.la_length, "la_cut": ed.la_cut,
    }  # fmt: skip
    shapes = {k: np.broadcast_to(np.float32(v), c.shape) for k, v in shapes.items()}
    z, x = pixel_grid(size, spacing)
    regions = heart_regions(z, x, shapes)
    classes = segment_map(regions, shapes, first_side)
    blood = regions["cavity"] | regions["la"]
    if view == "A4C":
        blood |= right_heart(regions, shapes, first_side)
    classes[blood] = 7
    return classes


def _frame_powers(
    frame_times: np.ndarray,
    flashes: list[list[int]],
    segments: list[dict[str, Any]],
    blood: dict[str, float],
) -> np.ndarray:
    """Return the model power of each class per frame, shape (T, 8).

    Column 0 (tissue) is 1, a factor on the tissue map; columns 1-6 are the
    segments' ``y_k(t)``; column 7 is the blood's, a factor on the pool map. Flash
    frames are NaN: the renderer draws them from the flash map.
    """
    since = time_since_flash(frame_times, flashes)
    after = np.isfinite(since)
    coef = np.ones((len(frame_times), 8))
    for column, params in [(seg["label"], seg) for seg in segments] + [(7, blood)]:
        coef[:, column] = params["A"] + params["C"]
        coef[after, column] = replenishment(
            since[after], params["A"], params["beta"], params["C"]
        )
    coef[np.isnan(since)] = np.nan
    return coef


def _render(
    rng: np.random.Generator,
    classes: np.ndarray,
    level: np.ndarray,
    coef: np.ndarray,
    spacing: tuple[float, float],
    sector: Sector,
    levels: dict[str, float],
    dynamic_range: float,
    ceiling: int | None,
) -> np.ndarray:
    """Render the log-compressed loop, uint8 (T, H, W), ``_CHUNK`` frames at a time.

    Speckle frames are random crops of a pool of independent fields twice the image
    size, which keeps their statistics and costs one copy per frame.
    """
    size = h, w = classes.shape[1:]
    z, x = pixel_grid(size, spacing)
    fan = sector.mask(z, x)
    tissue = levels["tissue"] * 10 ** (0.3 * smooth_field(rng, size, 4 / spacing[0]))
    attenuation = 10 ** (-levels["attenuation_db_cm"] * (z / 10) / 10)
    pool = attenuation * 10 ** (0.2 * smooth_field(rng, size, 3 / spacing[0]))
    flash = levels["flash"] * 10 ** (0.15 * smooth_field(rng, size, 5 / spacing[0]))
    # per class: the tissue map, 1 for the segments, the blood pool map
    fields = np.where(classes == 0, tissue, np.where(classes == 7, pool, 1))
    fields = fields.astype(np.float32)
    noise = rng.standard_normal((2, _POOL, 2 * h, 2 * w), dtype=np.float32)
    re, im = blur_pair(noise[0], noise[1], SPECKLE_SIGMA_PX, mode="wrap")
    speckle = (re**2 + im**2) / 2

    n_frames = len(level)
    pick = rng.integers(0, _POOL, n_frames)
    rows, cols = rng.integers(0, h, n_frames), rng.integers(0, w, n_frames)
    scale = np.float32(10 * V_MAX / dynamic_range)
    top = V_MAX if ceiling is None else ceiling
    cine = np.empty((n_frames, h, w), np.uint8)
    for start in range(0, n_frames, _CHUNK):
        frames = np.arange(start, min(start + _CHUNK, n_frames))
        power = np.take_along_axis(
            coef[frames].astype(np.float32)[:, None, :],
            classes[level[frames]].reshape(len(frames), 1, -1).astype(np.intp),
            axis=2,
        ).reshape(len(frames), h, w)
        power *= fields[level[frames]]
        is_flash = np.isnan(coef[frames, 0])
        power[is_flash] = flash
        for i, f in enumerate(frames):
            power[i] *= speckle[pick[f], rows[f] : rows[f] + h, cols[f] : cols[f] + w]
        values = np.log2(power, out=power)  # much faster than log10 in numpy
        values *= np.float32(math.log10(2)) * scale
        values = np.clip(np.rint(values, out=values), 0, top, out=values)
        cine[frames] = values.astype(np.uint8) * fan
    return cine


def write_ceus_case(folder: str | Path, case: PhantomLoop, suffix: str) -> None:
    """Write a case folder: cine, masks, segments, case.json, ground_truth.json.

    Parameters
    ----------
    folder : str or Path
        The case folder, created if needed.
    case : PhantomLoop
    suffix : {".tif", ".nii.gz"}
        Format of the three image files. NIfTI stores one frame interval, so its
        cines need evenly spaced frame times.
    """
    if suffix not in (".tif", ".nii.gz"):
        raise ValueError(f"suffix must be '.tif' or '.nii.gz', got {suffix!r}")
    folder = Path(folder)
    for stem, array in (
        ("cine", case.cine), ("masks", case.masks), ("segments", case.segments)
    ):  # fmt: skip
        path = folder / f"{stem}{suffix}"
        images.write_image(path, array, case.spacing, case.frame_times)
    rundir.write_json(folder / "case.json", case.settings)
    rundir.write_json(folder / "ground_truth.json", case.truth)
