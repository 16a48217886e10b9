"""Synthetic echocardiograms with known truth: CAMUS-layout B-mode and contrast loops.

:func:`make_phantom` writes ``OUT/camus``, patient folders in the layout of the 2023
CAMUS NIfTI release (what :mod:`echoscale.camus` reads), and ``OUT/ceus``, contrast-loop
case folders in the ``prepare ceus`` layout (drawn by :mod:`echoscale.phantom_ceus`).
Every image is rendered from an analytic heart, so masks, volumes, ejection fraction
and perfusion parameters are known exactly.

Geometry. Arrays are (row, col) = (depth, lateral) with the probe at the top centre.
Positions are in millimetres: depth ``z`` from the probe and lateral ``x`` from the
image centre. The heart lives in a frame along the LV long axis: ``u`` from the
endocardial apex towards the base and ``v`` across (towards the image right when the
axis is vertical). The LV cavity is a bullet: half an ellipse of half-length ``a`` and
half-width ``b`` at the apex and a fuller one at the base, centred at ``u = a`` and cut
at the mitral plane ``u = a (1 + base_cut)``; the epicardium is the same shape grown
by the wall thickness and cut at the same plane, so the myocardium is a horseshoe open
at the base; the left atrium is an ellipse below the mitral plane spanning the annulus.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from scipy import ndimage

from echoscale import images, rundir
from echoscale.errors import InputError
from echoscale.volumes import (
    biplane_volume,
    disk_widths,  # noqa: F401  re-exported: the measurement behind the cfg EF
    ejection_fraction,
)

log = logging.getLogger(__name__)

# marks the folders the phantom owns, so that it replaces only its own output
MARKER = ".echoscale-phantom"

VIEWS = ("2CH", "4CH")
QUALITY_SHARES = {"Good": 0.50, "Medium": 0.35, "Poor": 0.15}
DEFAULT_SIZE = (224, 272)
DEFAULT_CEUS_SIZE = (160, 192)
MIN_SIZE = 64

# Per image quality: (low, high) ranges in dB relative to the myocardial echo, the
# number of myocardial dropouts and their depth, and the lateral resolution (mm).
_QUALITY = {
    "Good": {"cavity": (-19, -13), "clutter": (-22, -15), "noise": (-34, -28),
             "dropouts": (0, 1), "dropout_db": (4, 8), "lateral_mm": 0.9},
    "Medium": {"cavity": (-15, -11), "clutter": (-15, -9), "noise": (-27, -21),
               "dropouts": (1, 1), "dropout_db": (7, 13), "lateral_mm": 1.1},
    "Poor": {"cavity": (-12, -8), "clutter": (-10, -5), "noise": (-21, -15),
             "dropouts": (1, 2), "dropout_db": (9, 15), "lateral_mm": 1.3},
}  # fmt: skip


@dataclass
class PhantomReport:
    """What :func:`make_phantom` wrote.

    Attributes
    ----------
    out : Path
        The output folder.
    camus, ceus : Path
        ``OUT/camus`` (patient folders) and ``OUT/ceus`` (contrast-loop cases).
    patients : list of str
        ``patient0001`` ... in order.
    cases : list of str
        ``case01`` ... in order.
    """

    out: Path
    camus: Path
    ceus: Path
    patients: list[str]
    cases: list[str]


@dataclass(frozen=True)
class Sector:
    """The imaging fan: apex (probe) at row 0 of the centre column.

    Attributes
    ----------
    half_angle : float
        Half the opening angle, radians.
    radius : float
        Depth reached along the centre line, mm.
    """

    half_angle: float
    radius: float

    def mask(self, z: np.ndarray, x: np.ndarray) -> np.ndarray:
        """True inside the fan, at depths ``z`` and lateral positions ``x`` (mm)."""
        return (np.hypot(z, x) <= self.radius) & (
            np.abs(np.arctan2(x, z)) <= self.half_angle
        )

    def contains(self, z: np.ndarray, x: np.ndarray, margin_deg: float) -> bool:
        """True when every point lies inside the fan, ``margin_deg`` from its sides."""
        angle = np.abs(np.arctan2(x, z))
        inside = angle <= self.half_angle - math.radians(margin_deg)
        return bool(np.all(inside & (z > 0) & (np.hypot(z, x) < self.radius)))


@dataclass(frozen=True)
class HeartShape:
    """The LV, myocardium and left atrium of one frame (mm and radians).

    ``apex_z``, ``apex_x`` place the endocardial apex; ``tilt`` turns the long axis
    from vertical (positive: base towards the image right). The cavity is an ellipse
    of half-length ``a`` and half-width ``b`` on the apical side of its centre and of
    half-length ``a * fullness`` on the basal side (1 is an ellipse, more is a fuller,
    bullet-like base), cut at ``u = a (1 + base_cut)``. ``wall`` and ``apex_wall``
    are the myocardial thickness at the sides and at the apex. The atrium has length
    ``la_length`` below the mitral plane, which cuts its ellipse at ``la_cut`` of its
    half-length from the centre.
    """

    apex_z: float
    apex_x: float
    tilt: float
    a: float
    b: float
    base_cut: float
    fullness: float
    wall: float
    apex_wall: float
    la_length: float
    la_cut: float

    @property
    def base(self) -> float:
        """Distance from the apex to the mitral plane along the long axis, mm."""
        return self.a * (1 + self.base_cut)


def blend_shapes(
    start: HeartShape, end: HeartShape, weights: np.ndarray
) -> dict[str, np.ndarray]:
    """Interpolate two shapes, one frame per weight.

    Parameters
    ----------
    start, end : HeartShape
        The shapes at weight 0 and 1.
    weights : ndarray, shape (T,)

    Returns
    -------
    dict of str to ndarray
        One float32 array per :class:`HeartShape` field, of shape (T, 1, 1), or a
        float32 scalar where both shapes agree (the pose, usually), which spares
        :func:`heart_regions` work per frame.
    """
    w = np.asarray(weights, np.float64).reshape(-1, 1, 1)
    out = {}
    for f in fields(HeartShape):
        lo, hi = getattr(start, f.name), getattr(end, f.name)
        out[f.name] = (
            np.float32(lo) if lo == hi else (lo + (hi - lo) * w).astype(np.float32)
        )
    return out


def pixel_grid(
    size: tuple[int, int], spacing: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Return the depth ``z`` (H, 1) and lateral ``x`` (1, W) of pixel centres, mm.

    Row 0 is at the probe (z = 0); x = 0 is the image's centre line.
    """
    h, w = size
    z = (np.arange(h, dtype=np.float32) * np.float32(spacing[0]))[:, None]
    x = ((np.arange(w, dtype=np.float32) - (w - 1) / 2) * np.float32(spacing[1]))[None]
    return z, x


def fitted_sector(
    size: tuple[int, int], spacing: tuple[float, float], narrowing_deg: float = 0.0
) -> Sector:
    """Return the fan that fills the image, as CAMUS crops its images to the fan.

    The fan reaches the bottom row along the centre line and the side columns at its
    widest, with the opening held to 60-80 degrees and then narrowed by
    ``narrowing_deg``.
    """
    radius = size[0] * spacing[0]
    fit = math.asin(min(1.0, size[1] * spacing[1] / 2 / radius))
    half = min(max(fit, math.radians(30)), math.radians(40))
    return Sector(half - math.radians(narrowing_deg), radius)


def heart_regions(
    z: np.ndarray, x: np.ndarray, shape: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Rasterise the heart on a grid.

    Parameters
    ----------
    z, x : ndarray
        Depth and lateral positions (mm), e.g. from :func:`pixel_grid`.
    shape : mapping
        :class:`HeartShape` fields as arrays broadcastable with ``z`` and ``x``
        (e.g. from :func:`blend_shapes`, shape (T, 1, 1)).

    Returns
    -------
    dict
        ``cavity``, ``myo``, ``la`` (bool, disjoint); ``u``, ``v`` (mm, long-axis
        frame); ``epi``, the squared normalised epicardial radius (< 1 inside);
        ``base``, the mitral plane's ``u`` (mm), and ``la_width``, the atrium's
        half-width (mm).
    """
    dz, dx = z - shape["apex_z"], x - shape["apex_x"]
    cos, sin = np.cos(shape["tilt"]), np.sin(shape["tilt"])
    u = dz * cos + dx * sin
    v = dx * cos - dz * sin
    a, b, wall, cut = shape["a"], shape["b"], shape["wall"], shape["base_cut"]
    fullness = shape["fullness"]
    # Written with few full-size temporaries: this runs for every frame.
    q = u - a
    apical = q < 0
    q2, v2 = q * q, v * v
    base = a * (1 + cut)
    above = u < base
    inverse = np.where(apical, 1 / (a * a), 1 / (a * fullness) ** 2)
    cavity = (q2 * inverse + v2 / (b * b) < 1) & above
    inverse = np.where(
        apical, 1 / (a + shape["apex_wall"]) ** 2, 1 / (a * fullness + wall) ** 2
    )
    epi = q2 * inverse + v2 / (b + wall) ** 2
    myo = (epi < 1) & above & ~cavity

    # The atrium spans the annulus: half the wall wider than the cavity's base, so
    # no cavity pixel of the base touches the background.
    annulus = b * np.sqrt(1 - (cut / fullness) ** 2) + wall / 2
    la_width = annulus / np.sqrt(1 - shape["la_cut"] ** 2)
    below = u - base
    la_q = (below - shape["la_cut"] * shape["la_length"]) / shape["la_length"]
    la = (below >= 0) & (la_q**2 + (v / la_width) ** 2 < 1)
    return {
        "cavity": cavity, "myo": myo, "la": la,
        "u": u, "v": v, "epi": epi, "base": base, "la_width": la_width,
    }  # fmt: skip


def label_map(regions: Mapping[str, np.ndarray]) -> np.ndarray:
    """Return the CAMUS labels (uint8): 0 background, 1 cavity, 2 myocardium, 3 LA."""
    labels = regions["cavity"].astype(np.uint8)
    labels[regions["myo"]] = 2
    labels[regions["la"]] = 3
    return labels


def heart_outline(
    shape: HeartShape, epicardium: bool = True, n: int = 96
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return points on the epicardium (or endocardium) from base to base.

    Returns
    -------
    z, x : ndarray, shape (n,)
        Depth and lateral position, mm.
    u : ndarray, shape (n,)
        Position along the long axis from the endocardial apex, mm.
    """
    phi = np.linspace(-math.pi, math.pi, n)
    apical = np.cos(phi) > 0
    grow = (shape.apex_wall, shape.wall) if epicardium else (0.0, 0.0)
    length = np.where(apical, shape.a + grow[0], shape.a * shape.fullness + grow[1])
    u = np.minimum(shape.a - length * np.cos(phi), shape.base)
    v = (shape.b + grow[1]) * np.sin(phi)
    cos, sin = math.cos(shape.tilt), math.sin(shape.tilt)
    return shape.apex_z + u * cos - v * sin, shape.apex_x + u * sin + v * cos, u


def smooth_field(
    rng: np.random.Generator, size: tuple[int, int], sigma_px: float
) -> np.ndarray:
    """Return a smooth random field (H, W), float32, of zero mean and unit std."""
    white = rng.standard_normal(size, dtype=np.float32)
    field = ndimage.gaussian_filter(white, sigma_px, mode="reflect")
    return (field - field.mean()) / field.std()


def uniform_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Return white noise of zero mean and unit variance, uniform, float32.

    Random bytes are several times cheaper to draw than normal deviates; after a
    PSF spanning many pixels the filtered field is Gaussian all the same (central
    limit), which is what fully developed speckle needs.
    """
    raw = np.frombuffer(rng.bytes(math.prod(shape)), np.uint8).reshape(shape)
    noise = raw.astype(np.float32)
    noise -= np.float32(127.5)
    noise *= np.float32(1 / math.sqrt((256**2 - 1) / 12))
    return noise


def kernel_gain(sigma_px: float) -> float:
    """Return the sum of squared weights of the Gaussian kernel of :func:`blur_pair`.

    Filtering white noise of unit variance leaves variance equal to this sum; dividing
    by its square root restores unit variance.
    """
    delta = np.zeros(64, np.float64)
    delta[32] = 1.0
    kernel = ndimage.gaussian_filter1d(delta, sigma_px, truncate=3)
    return float(np.sum(kernel**2))


def blur_pair(
    re: np.ndarray, im: np.ndarray, sigma_px: tuple[float, float], mode: str
) -> tuple[np.ndarray, np.ndarray]:
    """Filter the real and imaginary parts of a field (…, H, W) with a Gaussian PSF.

    The kernel is normalised to unit energy, so white noise keeps unit variance.
    """
    gain = np.float32(
        1 / math.sqrt(kernel_gain(sigma_px[0]) * kernel_gain(sigma_px[1]))
    )
    out = []
    for part in (re, im):
        for axis, sigma in ((-2, sigma_px[0]), (-1, sigma_px[1])):
            part = ndimage.gaussian_filter1d(part, sigma, axis, mode=mode, truncate=3)
        part *= gain
        out.append(part)
    return out[0], out[1]


# --- CAMUS patients --------------------------------------------------------------


@dataclass
class PhantomView:
    """One rendered apical view of a phantom patient.

    ``frames`` and ``masks`` are uint8 (T, H, W) half sequences; ``ed`` and ``es`` are
    1-based frame numbers into them, as in ``Info_<view>.cfg``.
    """

    frames: np.ndarray
    masks: np.ndarray
    spacing: tuple[float, float]
    ed: int
    es: int
    quality: str


@dataclass
class PhantomPatient:
    """One phantom patient: both views, the cfg values and the volumes (ml)."""

    name: str
    sex: str
    age: int
    frame_rate: float
    views: dict[str, PhantomView]
    edv: float
    esv: float

    @property
    def ef(self) -> float:
        """Ejection fraction (%) of the biplane volumes."""
        return ejection_fraction(self.edv, self.esv)


def _view_shapes(
    rng: np.random.Generator, common: Mapping[str, float], view: str
) -> tuple[HeartShape, HeartShape]:
    """Draw the ED and ES shapes of one view from the patient's common values."""
    width = common["b"] * (
        rng.uniform(0.98, 1.1) if view == "2CH" else rng.uniform(0.92, 1.04)
    )
    length = common["length"] * rng.uniform(0.96, 1.04)
    cut = common["base_cut"]
    ed = HeartShape(
        apex_z=common["apex_z"] + rng.uniform(-2, 2),
        # the 4CH LV sits right of centre, its RV on the left
        apex_x=rng.uniform(-4, 4) + (4.0 if view == "4CH" else 0.0),
        tilt=math.radians(rng.uniform(-10, 10)),
        a=length / (1 + cut),
        b=width,
        base_cut=cut,
        fullness=common["fullness"],
        wall=common["wall"],
        apex_wall=common["wall"] * common["apex_ratio"],
        la_length=common["la_length"],
        la_cut=rng.uniform(0.45, 0.65),
    )
    # Systole: the base rises towards the fixed apex, the walls move in and thicken.
    es = HeartShape(
        apex_z=ed.apex_z,
        apex_x=ed.apex_x,
        tilt=ed.tilt,
        a=ed.a * (1 - common["shortening"]),
        b=ed.b * common["narrowing"],
        base_cut=cut,
        fullness=ed.fullness,
        wall=ed.wall * common["thickening"],
        apex_wall=ed.apex_wall * common["thickening"],
        la_length=ed.la_length * 1.12,
        la_cut=ed.la_cut,
    )
    return ed, es


def _fit_in_sector(
    rng: np.random.Generator, ed: HeartShape, es: HeartShape, sector: Sector
) -> tuple[HeartShape, HeartShape]:
    """Narrow and straighten the heart until its ED outline lies in the fan.

    The cavity must lie in the fan but for its apical fifth, and the epicardium
    from mid-cavity to the base; the apical myocardium may leave the fan, as in
    real CAMUS images, whose experts draw it beyond the sector.
    """
    for _ in range(40):
        z, x, u = heart_outline(ed, epicardium=False)
        endo = sector.contains(z[u > 0.2 * ed.a], x[u > 0.2 * ed.a], 1.0)
        z, x, u = heart_outline(ed)
        if endo and sector.contains(z[u > ed.a], x[u > ed.a], 0.0):
            return ed, es
        scale = rng.uniform(0.93, 0.98)
        ed = dataclasses.replace(
            ed, b=ed.b * scale, tilt=ed.tilt * 0.8, apex_x=ed.apex_x * 0.8
        )
        es = dataclasses.replace(es, b=es.b * scale, tilt=ed.tilt, apex_x=ed.apex_x)
    return ed, es


def right_heart(
    regions: Mapping[str, np.ndarray], shape: Mapping[str, np.ndarray], side: float
) -> np.ndarray:
    """Return the RV and RA cavities of a four-chamber view (bool; unlabelled).

    They lie on the septal ``side`` (-1 left, +1 right) of the LV and LA: the RV
    against the septum, shorter than the LV, and the RA beside the LA.
    """
    u, v, base = regions["u"], regions["v"], regions["base"]
    b, wall = shape["b"], shape["wall"]
    rv_length, rv_width = 0.42 * base, 0.8 * b
    rv_v = side * (b + wall + 0.7 * rv_width)
    rv = ((u - base + rv_length) / rv_length) ** 2 + ((v - rv_v) / rv_width) ** 2 < 1
    rv &= regions["epi"] >= 1
    ra_width = 0.9 * regions["la_width"]
    ra_v = side * (regions["la_width"] + 2.5 + ra_width)
    ra_u = base + 0.5 * shape["la_length"]
    ra = ((u - ra_u) / (0.5 * shape["la_length"])) ** 2 + ((v - ra_v) / ra_width) ** 2
    return rv | ((ra < 1) & ~regions["la"])


def _dropout_gain(
    rng: np.random.Generator, quality: str, position: np.ndarray, v: np.ndarray
) -> np.ndarray:
    """Return the amplitude gain (<= 1) of the myocardium along its walls.

    ``position`` runs from 0 at the apex to 1 at the base and ``v`` is the signed
    distance across the long axis, one value per myocardial pixel. The side walls
    run parallel to the beam and echo less than the apex and base: 1-4 dB less at
    mid-wall, ``sin^2(pi position)``. Dropouts, faded wall segments, fall mostly on
    the right-hand (lateral or anterior) wall.
    """
    table = _QUALITY[quality]
    along = np.sin(np.pi * np.clip(position, 0, 1)) ** 2
    gain_db = (-rng.uniform(1, 4) * along).astype(np.float32)
    for _ in range(rng.integers(table["dropouts"][0], table["dropouts"][1] + 1)):
        side = 1.0 if rng.random() < 0.8 else -1.0
        centre, half = rng.uniform(0.35, 0.9), rng.uniform(0.12, 0.25)
        depth = rng.uniform(*table["dropout_db"])
        bump = np.cos(np.clip((position - centre) / half, -1, 1) * (np.pi / 2)) ** 2
        gain_db -= depth * bump * (v * side > 0)
    return 10 ** (gain_db / 20)


def render_bmode(
    rng: np.random.Generator,
    view: str,
    shapes: Mapping[str, np.ndarray],
    size: tuple[int, int],
    spacing: tuple[float, float],
    sector: Sector,
    quality: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Render a B-mode half sequence and its masks.

    Parameters
    ----------
    rng : numpy.random.Generator
    view : {"2CH", "4CH"}
        The four-chamber view adds the right heart (left of the septum).
    shapes : mapping
        Per-frame shapes from :func:`blend_shapes`, arrays of shape (T, 1, 1).
    size, spacing
        (H, W) and (row_mm, col_mm).
    sector : Sector
    quality : {"Good", "Medium", "Poor"}

    Returns
    -------
    frames : ndarray, shape (T, H, W), uint8
    masks : ndarray, shape (T, H, W), uint8
        CAMUS labels.

    Notes
    -----
    The echo amplitude ``r``, in dB relative to the myocardium: myocardium 0 with a
    3.5 dB grain, side walls 1-4 dB fainter and dropouts (-4 to -15 dB by quality),
    cavity and atrium -19 to -8 dB by quality, tissue -6 to -1 dB with a smooth 4 dB
    texture, a pericardium +3 to +8 dB, a dark right heart in 4CH, and near-field
    clutter ``c exp(-z / z_c)`` added in power. It scatters fully developed speckle,
    ``e = PSF * (r n)``, with ``n`` white complex noise of unit variance and a
    Gaussian PSF (axial sigma 0.35 mm, lateral 0.9-1.3 mm by quality). The power
    ``P = |e|^2 g(z) + s(z) E`` adds to it the attenuation left after time-gain
    compensation, ``g`` (0.2-0.6 dB/cm, 0 dB at the LV's mid-depth), and electronic
    noise ``s`` rising 15 dB from the probe to the bottom (``E`` unit exponential).
    The display is ``v = 255 (10 log10 P - top + DR) / DR``, DR 50-60 dB, with
    ``top`` set so that the cavity's mean grey level is 50-100 (the myocardium's at
    most 155), rounded, clipped to 0-255 and set to 0 outside the fan.
    """
    table = _QUALITY[quality]
    z, x = pixel_grid(size, spacing)
    regions = heart_regions(z, x, shapes)
    shape = regions["cavity"].shape
    depth = size[0] * spacing[0]

    def level(lo_hi) -> np.float32:
        return np.float32(10 ** (rng.uniform(*lo_hi) / 20))

    texture = smooth_field(rng, size, 6.0 / spacing[0])
    amp = np.empty(shape, np.float32)
    amp[:] = 10 ** ((rng.uniform(-6, -1) + 4.0 * texture) / 20)
    # a bright pericardium 1.5-3 mm outside the epicardium
    thickness = rng.uniform(1.5, 3.0) / (shapes["b"] + shapes["wall"])
    peri = (regions["epi"] >= 1) & (regions["epi"] < (1 + thickness) ** 2)
    amp[peri & (regions["u"] < regions["base"])] = level((3, 8))
    cavity_db = rng.uniform(*table["cavity"])
    if view == "4CH":
        amp[right_heart(regions, shapes, -1.0)] = level((cavity_db - 3, cavity_db + 2))
    amp[regions["cavity"] | regions["la"]] = np.float32(10 ** (cavity_db / 20))
    myo = regions["myo"]
    position = np.broadcast_to(regions["u"] / regions["base"], shape)[myo]
    across = np.broadcast_to(regions["v"], shape)[myo]
    grain = 10 ** (3.5 * smooth_field(rng, size, 2.0 / spacing[0]) / 20)
    amp[myo] = np.broadcast_to(grain, shape)[myo]
    amp[myo] *= _dropout_gain(rng, quality, position, across)
    clutter = level(table["clutter"]) * np.exp(-z / np.float32(rng.uniform(15, 35)))
    amp = np.sqrt(amp**2 + clutter**2)

    noise = uniform_noise(rng, (2, *shape))
    noise *= amp
    sigma = (0.35 / spacing[0], table["lateral_mm"] / spacing[1])
    re, im = blur_pair(noise[0], noise[1], sigma, mode="reflect")
    # attenuation left after time-gain compensation, 0 dB at the LV's mid-depth
    centre = float(np.mean(shapes["apex_z"] + shapes["a"]))
    gain = 10 ** (-rng.uniform(0.2, 0.6) * ((z - centre) / 10) / 10)  # z in cm
    noise_power = 10 ** ((rng.uniform(*table["noise"]) - 15 * (1 - z / depth)) / 10)
    power = np.square(re, out=re)
    power += np.square(im, out=im)
    power *= gain / 2
    electronic = rng.standard_exponential(shape, dtype=np.float32)
    electronic *= noise_power
    power += electronic

    # The gain sets the cavity's mean grey level to 50-100 of 255 and the
    # myocardium's to at most 155, as in CAMUS; a log-compressed Rayleigh envelope
    # averages 2.5 dB below its mean power.
    dynamic_range = rng.uniform(50, 60)
    myo_level = min(rng.uniform(50, 100) - 255 * cavity_db / dynamic_range, 155)
    top = dynamic_range - 2.5 - myo_level * dynamic_range / 255
    scale = np.float32(255 / dynamic_range)
    power += np.float32(1e-12)
    values = np.log2(power, out=power)  # log2 is much faster than log10 in numpy
    values *= np.float32(10 * math.log10(2)) * scale
    values += np.float32((dynamic_range - top) * scale)
    frames = np.clip(np.rint(values, out=values), 0, 255, out=values).astype(np.uint8)
    frames *= sector.mask(z, x)
    return frames, label_map(regions)


def make_camus_patient(
    rng: np.random.Generator,
    name: str,
    size: tuple[int, int] = DEFAULT_SIZE,
    *,
    es_first_4ch: bool = False,
) -> PhantomPatient:
    """Draw and render one phantom patient, both views.

    Parameters
    ----------
    rng : numpy.random.Generator
        The patient's own generator; every draw comes from it.
    name : str
        ``patientNNNN``.
    size : tuple of int
        (H, W) of every image.
    es_first_4ch : bool
        Make the 4CH half sequence run ES to ED (ED is then its last frame), as in
        some real CAMUS patients.

    Returns
    -------
    PhantomPatient

    Notes
    -----
    Per patient: field of view 120-160 mm deep (``row_mm = depth / H``, ``col_mm``
    within 3% of it), ED long axis 68-100 mm, length-to-diameter ratio 1.35-1.85,
    wall 7-11 mm, apex 10-25 mm below the probe, quality Good/Medium/Poor with shares
    50/35/15% (one view may be a grade better), and a target EF of 35-70% met by
    10-22% long-axis shortening (apex fixed) and the matching narrowing, with the
    walls thickening; the EF in the cfg is measured on the masks
    (:func:`biplane_volume`). Per view: tilt within 10 degrees, width, atrium, and
    10-20 frames over a systole of 0.26-0.36 s at 35-55 Hz, eased in time by
    ``(1 - cos(pi f / (T - 1))) / 2``. Hearts too wide for the fan are narrowed.
    """
    h, w = size
    quality = str(rng.choice(list(QUALITY_SHARES), p=list(QUALITY_SHARES.values())))
    sex, age = str(rng.choice(["F", "M"])), int(rng.integers(20, 91))
    depth = rng.uniform(120, 160)
    spacing = (round(depth / h, 4), round(depth / h * rng.uniform(0.97, 1.03), 4))
    sector = fitted_sector(size, spacing, rng.uniform(0, 1.5))
    apex_z = rng.uniform(10, 25)
    length = min(rng.uniform(68, 100), depth - apex_z - 28)
    ef_target, shortening = rng.uniform(0.35, 0.70), rng.uniform(0.10, 0.22)
    common = {
        "apex_z": apex_z,
        "length": length,
        "b": length / 2 / rng.uniform(1.35, 1.85),
        "base_cut": rng.uniform(0.3, 0.55),
        "fullness": rng.uniform(1.0, 1.5),
        "wall": rng.uniform(7, 11),
        "apex_ratio": rng.uniform(0.75, 0.95),
        "la_length": rng.uniform(35, 50),
        "shortening": shortening,
        # V ~ L b^2, so this width ratio gives the target EF
        "narrowing": math.sqrt((1 - ef_target) / (1 - shortening)),
        "thickening": 1 + rng.uniform(0.15, 0.4) * ef_target / 0.6,
    }
    frame_rate = round(rng.uniform(35, 55), 1)
    systole = rng.uniform(0.26, 0.36)
    views = {}
    qualities = {v: quality for v in VIEWS}
    if quality != "Good" and rng.random() < 0.3:
        better = list(QUALITY_SHARES)[list(QUALITY_SHARES).index(quality) - 1]
        qualities[str(rng.choice(VIEWS))] = better
    for view in VIEWS:
        ed, es = _view_shapes(rng, common, view)
        ed, es = _fit_in_sector(rng, ed, es, sector)
        duration = systole * rng.uniform(0.95, 1.05)
        n_frames = int(np.clip(round(duration * frame_rate) + 1, 10, 20))
        ease = (1 - np.cos(np.pi * np.arange(n_frames) / (n_frames - 1))) / 2
        reverse = es_first_4ch and view == "4CH"
        shapes = blend_shapes(ed, es, ease[::-1] if reverse else ease)
        frames, masks = render_bmode(
            rng, view, shapes, size, spacing, sector, qualities[view]
        )
        ed_frame, es_frame = (n_frames, 1) if reverse else (1, n_frames)
        views[view] = PhantomView(
            frames, masks, spacing, ed_frame, es_frame, qualities[view]
        )

    two, four = views["2CH"], views["4CH"]
    edv, esv = (
        biplane_volume(two.masks[f2 - 1], spacing, four.masks[f4 - 1], spacing)
        for f2, f4 in ((two.ed, four.ed), (two.es, four.es))
    )
    return PhantomPatient(name, sex, age, frame_rate, views, edv, esv)


def write_camus_patient(folder: str | Path, patient: PhantomPatient) -> None:
    """Write a patient folder in the 2023 CAMUS NIfTI layout.

    Files, per view ``V`` in 2CH and 4CH: ``NAME_V_ED.nii.gz``, ``NAME_V_ES.nii.gz``,
    their ``_gt`` masks, ``NAME_V_half_sequence.nii.gz`` and
    ``NAME_V_half_sequence_gt.nii.gz`` (uint8, (T, H, W)), and ``Info_V.cfg``.
    The ED and ES images are the half sequence's ED and ES frames, bit for bit.
    """
    folder = Path(folder)
    name = patient.name
    for view, pv in patient.views.items():
        stem = folder / f"{name}_{view}"
        for phase, frame in (("ED", pv.ed), ("ES", pv.es)):
            images.write_nifti(
                f"{stem}_{phase}.nii.gz", pv.frames[frame - 1], pv.spacing
            )
            gt = pv.masks[frame - 1]
            images.write_nifti(f"{stem}_{phase}_gt.nii.gz", gt, pv.spacing)
        images.write_nifti(f"{stem}_half_sequence.nii.gz", pv.frames, pv.spacing)
        images.write_nifti(f"{stem}_half_sequence_gt.nii.gz", pv.masks, pv.spacing)
        rundir.write_text(
            folder / f"Info_{view}.cfg",
            f"ED: {pv.ed}\nES: {pv.es}\nNbFrame: {len(pv.frames)}\n"
            f"Sex: {patient.sex}\nAge: {patient.age}\nImageQuality: {pv.quality}\n"
            f"EF: {patient.ef:.1f}\nFrameRate: {patient.frame_rate:.1f}\n",
        )


# --- the whole phantom -----------------------------------------------------------


def _check_count(value: int, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be at least {low}, got {value}")
    return int(value)


def _check_size(size: tuple[int, int], name: str) -> tuple[int, int]:
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (H, W), got {size!r}") from None
    if (h, w) != tuple(size) or min(h, w) < MIN_SIZE:
        raise ValueError(
            f"{name} must be two whole numbers of at least {MIN_SIZE}, got {size!r}"
        )
    return h, w


def _write_patient(folder: Path, seed: int, k: int, size: tuple[int, int]) -> None:
    name = folder.name
    patient = make_camus_patient(
        np.random.default_rng([seed, k]), name, size, es_first_4ch=k % 5 == 2
    )
    write_camus_patient(folder, patient)
    log.info(
        "%s: EF %.1f%%, quality %s", name, patient.ef, patient.views["2CH"].quality
    )


def _write_case(folder: Path, seed: int, k: int, size: tuple[int, int]) -> None:
    from echoscale import phantom_ceus  # it builds on this module: import when used

    tiff = k % 2 == 1
    case = phantom_ceus.make_ceus_case(
        np.random.default_rng([seed, 1000 + k]),
        folder.name,
        size,
        frame_jitter=0.1 if tiff else 0.0,
    )
    phantom_ceus.write_ceus_case(folder, case, ".tif" if tiff else ".nii.gz")
    log.info("%s: %d frames, %s", folder.name, len(case.cine), case.settings["view"])


def _run_all(jobs: list[tuple], workers: int) -> None:
    """Run ``(function, *args)`` jobs on ``workers`` threads; re-raise the first error.

    The work is numpy, scipy and zlib, which release the GIL, so threads use the
    cores; each job draws from its own generator and writes its own files, so the
    output does not depend on the order in which the jobs run.
    """
    if workers == 1:
        for function, *args in jobs:
            function(*args)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(*job) for job in jobs]
        try:
            for future in as_completed(futures):
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def make_phantom(
    out: str | Path,
    *,
    patients: int = 40,
    ceus_cases: int = 6,
    seed: int = 0,
    size: tuple[int, int] = DEFAULT_SIZE,
    ceus_size: tuple[int, int] = DEFAULT_CEUS_SIZE,
    workers: int | None = None,
) -> PhantomReport:
    """Write a synthetic CAMUS dataset and contrast-loop cases with known truth.

    Parameters
    ----------
    out : str or Path
        Output folder; ``OUT/camus`` and ``OUT/ceus`` are replaced as wholes, only
        once both are complete.
    patients : int
        Number of CAMUS patients (``patient0001`` ...), at least 1.
    ceus_cases : int
        Number of contrast-loop cases (``case01`` ...), at least 0.
    seed : int
        Non-negative seed. Patient k and case k draw from
        ``default_rng([seed, k])`` and ``default_rng([seed, 1000 + k])``, so each is
        the same whatever the counts; equal arguments give byte-identical files.
    size, ceus_size : tuple of int
        (H, W) of the B-mode images and of the contrast loops, each at least 64.
    workers : int, optional
        Threads; by default one per CPU core, at most 4. The files do not depend
        on it.

    Returns
    -------
    PhantomReport

    Raises
    ------
    ValueError
        Naming the argument that is out of range.

    Notes
    -----
    ``OUT/camus/patientNNNN/`` holds the files of :func:`write_camus_patient`, and
    ``OUT/ceus/caseNN/`` those of :func:`echoscale.phantom_ceus.write_ceus_case`.
    Every fifth patient from patient0002 (0002, 0007, ...) has a 4CH half sequence
    that runs ES to ED. Odd cases are written as TIFF with slightly uneven frame
    times (jitter up to 10% of the interval), even cases as NIfTI with even ones.
    """
    patients = _check_count(patients, "patients", 1)
    ceus_cases = _check_count(ceus_cases, "ceus_cases", 0)
    seed = _check_count(seed, "seed", 0)
    size = _check_size(size, "size")
    ceus_size = _check_size(ceus_size, "ceus_size")
    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    workers = _check_count(workers, "workers", 1)

    out = Path(out)
    for part in ("camus", "ceus"):
        folder = out / part
        if (
            folder.exists()
            and any(folder.iterdir())
            and not (folder / MARKER).is_file()
        ):
            raise InputError(
                "exists and was not written by echoscale phantom; it is never "
                "replaced: choose another OUT",
                folder,
            )
    names = [f"patient{k:04d}" for k in range(1, patients + 1)]
    cases = [f"case{k:02d}" for k in range(1, ceus_cases + 1)]
    with rundir.atomic_dir(out / "camus") as camus_tmp:
        with rundir.atomic_dir(out / "ceus") as ceus_tmp:
            for tmp in (camus_tmp, ceus_tmp):
                rundir.write_text(tmp / MARKER, "written by echoscale phantom\n")
            # the contrast cases are the longest jobs: start them first
            jobs = [
                (_write_case, ceus_tmp / name, seed, k, ceus_size)
                for k, name in enumerate(cases, start=1)
            ] + [
                (_write_patient, camus_tmp / name, seed, k, size)
                for k, name in enumerate(names, start=1)
            ]
            _run_all(jobs, workers)
    return PhantomReport(out, out / "camus", out / "ceus", names, cases)
