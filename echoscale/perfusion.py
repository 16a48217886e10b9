"""Myocardial perfusion from a contrast loop: the pieces that ``perfuse`` chains.

* :func:`linearise`: log-compressed pixel values to relative linear power,
  ``P = 10 ** (v * DR / (10 * v_max))`` (DESIGN.md, "Perfusion");
* :func:`detect_flashes`: the destructive flashes (a brief bright burst, then a
  drop of the mean intensity);
* :func:`saturation_ceiling`: the top value that the video clips at, found from
  the pile-up of pixels there;
* :func:`cardiac_phases` and :func:`select_phase`: end-diastole and end-systole
  per cycle from the mask-area curve, and the frames near one of them;
* :func:`time_intensity`: the mean linear intensity of each region per frame;
* :func:`fit_replenishment`: ``y(t) = A (1 - exp(-beta t)) + C`` (Wei et al.
  1998), a :class:`ReplenishmentFit` that fails with a reason instead of raising.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize, signal

PHASES = ("all", "ed", "es")
PHASE_WINDOW = 0.1  # frames within this fraction of a cycle of ED (ES) are kept
MIN_POINTS = 5  # fewest frames a curve is fitted on (3 parameters, 2 left over)
BETA_MIN = 1e-6  # 1/s: the lower bound that keeps beta > 0
_BETA_STARTS = (0.25, 1.0, 4.0)  # start values of beta, times the data's 1 / t63
_FLASH_MAX_S = 1.0  # a bright run longer than this is no flash
_FLASH_SIGMAS = 8.0  # a flash frame lies this many robust sds above the median
_FLASH_RISE = 0.15  # and at least this fraction of the median above it
_FLASH_DROP = 0.1  # after a flash the mean lies this fraction below the level before
_FLASH_LOOK = 3  # frames before and after a burst that give the levels compared
_PILE_RATIO = 3.0  # the ceiling value holds this many times the pixels of the next
_PILE_MIN = 1e-5  # and at least this fraction of all pixels (and 20 pixels)
_CYCLE_S = (0.3, 2.0)  # cardiac cycles that are looked for (200 to 30 bpm)


# --- linearisation and saturation ----------------------------------------------


def linearise(
    values: np.ndarray, dynamic_range_db: float, v_max: float = 255.0
) -> np.ndarray:
    """Return the relative linear power of log-compressed pixel values.

    Parameters
    ----------
    values : ndarray
        Display values, 0 to ``v_max``.
    dynamic_range_db : float
        Dynamic range DR (dB) that the display spans.
    v_max : float
        The display value of the top of the range (255 for 8-bit video).

    Returns
    -------
    ndarray of float32, the shape of ``values``
        ``10 ** (v * DR / (10 * v_max))``: 1 at v = 0, ``10 ** (DR / 10)`` at
        ``v_max``.
    """
    if not (math.isfinite(dynamic_range_db) and dynamic_range_db > 0):
        raise ValueError(f"dynamic_range_db must be positive, got {dynamic_range_db}")
    if not (math.isfinite(v_max) and v_max > 0):
        raise ValueError(f"v_max must be positive, got {v_max}")
    values = np.asarray(values)
    gain = dynamic_range_db / (10.0 * v_max)
    if values.dtype.kind in "ub" and values.dtype.itemsize <= 2:
        # a table of every stored value: one lookup per pixel
        table = 10.0 ** (np.arange(np.iinfo(values.dtype).max + 1) * gain)
        return table.astype(np.float32)[values]
    return (10.0 ** (values.astype(np.float64) * gain)).astype(np.float32)


def saturation_ceiling(cine: np.ndarray) -> float | None:
    """Return the value that a video clips at, or None when it shows no pile-up.

    Parameters
    ----------
    cine : ndarray, shape (T, H, W)
        Display values.

    Returns
    -------
    float or None
        The largest value in the video when it holds at least :data:`_PILE_RATIO`
        times as many pixels as the next value below it (and at least 20 pixels
        and a :data:`_PILE_MIN` fraction of all): a tail of speckle thins out
        towards the top, a clipped one piles up at its top. The 8-bit limit
        (255) counts too, when the video reaches it.
    """
    cine = np.asarray(cine)
    if cine.size == 0:
        return None
    top = cine.max()
    n_top = int(np.count_nonzero(cine == top))
    if cine.dtype.kind in "ui" or np.all(np.mod(cine, 1) == 0):
        n_next = int(np.count_nonzero(cine == top - 1))
    else:
        below = np.where(cine < top, cine, -np.inf).max()
        n_next = int(np.count_nonzero(cine == below))
    if n_top >= max(20, _PILE_MIN * cine.size) and n_top >= _PILE_RATIO * n_next:
        return float(top)
    return None


# --- flashes -----------------------------------------------------------------------


def group_flashes(frames: Sequence[int]) -> list[list[int]]:
    """Group flash frame numbers into flashes: runs of consecutive frames.

    >>> group_flashes([40, 41, 42, 243, 244])
    [[40, 41, 42], [243, 244]]
    """
    runs: list[list[int]] = []
    for frame in sorted({int(f) for f in frames}):
        if runs and frame == runs[-1][-1] + 1:
            runs[-1].append(frame)
        else:
            runs.append([frame])
    return runs


def detect_flashes(
    frame_means: np.ndarray, frame_times: np.ndarray | None = None
) -> list[list[int]]:
    """Find the destructive flashes in a loop from its mean intensity per frame.

    Parameters
    ----------
    frame_means : ndarray, shape (T,)
        Mean display value of each frame.
    frame_times : ndarray, shape (T,), optional
        Seconds; a bright run longer than 1 s is no flash. Without times, runs of
        up to 30 frames count.

    Returns
    -------
    list of list of int
        The frames of each flash, in order; empty when there is none.

    Notes
    -----
    A flash frame lies at least :data:`_FLASH_SIGMAS` robust standard deviations
    of the frame-to-frame noise (1.4826 MAD of the successive differences over
    sqrt 2) and :data:`_FLASH_RISE` of the median above the loop's median; a
    run of such frames is a flash when the median of the 3 frames after it lies
    at least :data:`_FLASH_DROP` below that of the 3 frames before it (the median
    of the loop for a run at its start): bubbles were destroyed. A bright run
    without that drop (tissue brightening, a gain change) is not a flash.
    """
    m = np.asarray(frame_means, np.float64)
    if m.ndim != 1 or m.size < 3 or not np.all(np.isfinite(m)):
        return []
    base = float(np.median(m))
    # frame-to-frame noise: the refilling after a flash does not widen it
    steps = np.diff(m)
    spread = 1.4826 * float(np.median(np.abs(steps - np.median(steps)))) / math.sqrt(2)
    spread = max(spread, 1e-3 * abs(base), 1e-12)
    bright = (m - base > _FLASH_SIGMAS * spread) & (m - base > _FLASH_RISE * abs(base))
    flashes = []
    for run in group_flashes(np.flatnonzero(bright)):
        start, stop = run[0], run[-1]
        if frame_times is not None:
            if frame_times[stop] - frame_times[start] > _FLASH_MAX_S:
                continue
        elif len(run) > 30:
            continue
        after = m[stop + 1 : stop + 1 + _FLASH_LOOK]
        before = m[max(0, start - _FLASH_LOOK) : start]
        level = float(np.median(before)) if before.size else base
        if after.size and float(np.median(after)) < level - _FLASH_DROP * abs(level):
            flashes.append(run)
    return flashes


# --- cardiac phase -----------------------------------------------------------------


@dataclass(frozen=True)
class Phases:
    """End-diastolic and end-systolic frames found in a mask-area curve.

    Attributes
    ----------
    ed, es : list of int
        One frame per cycle: the largest and the smallest area.
    cycle_s : float or None
        The cardiac cycle (s) from the curve's autocorrelation; None when the
        curve shows no cycle.
    """

    ed: list[int]
    es: list[int]
    cycle_s: float | None


def cardiac_phases(area: np.ndarray, frame_times: np.ndarray) -> Phases:
    """Find end-diastole and end-systole per cardiac cycle from an area curve.

    Parameters
    ----------
    area : ndarray, shape (T,)
        LV cavity area per frame (mm^2), nan where a frame has no mask. Pass the
        cavity (or the area that the myocardium encloses), not the myocardium:
        the myocardial area peaks at end-systole.
    frame_times : ndarray, shape (T,)
        Seconds.

    Returns
    -------
    Phases

    Notes
    -----
    The curve is interpolated onto an even grid at the median frame interval and
    its linear trend removed; the cycle is the first autocorrelation peak between
    0.3 and 2 s that reaches 0.8 of the highest there and 0.3 overall. ED (ES)
    frames are the peaks (troughs) of the area at least 0.6 cycles apart whose
    prominence is at least a third of the curve's 5-95% range.
    """
    area = np.asarray(area, np.float64)
    times = np.asarray(frame_times, np.float64)
    known = np.flatnonzero(np.isfinite(area))
    if known.size < 6:
        return Phases([], [], None)
    t, a = times[known], area[known]
    dt = float(np.median(np.diff(t)))
    if not dt > 0:
        return Phases([], [], None)
    cycle = _cycle(t, a, dt)
    if cycle is None:
        return Phases([], [], None)

    spacing = max(1, int(0.6 * cycle / dt))
    prominence = (np.percentile(a, 95) - np.percentile(a, 5)) / 3
    ed, _ = signal.find_peaks(a, distance=spacing, prominence=prominence)
    es, _ = signal.find_peaks(-a, distance=spacing, prominence=prominence)
    return Phases(known[ed].tolist(), known[es].tolist(), cycle)


def _cycle(t: np.ndarray, a: np.ndarray, dt: float) -> float | None:
    """The cardiac cycle (s) from the autocorrelation of an area curve, or None."""
    grid = np.arange(t[0], t[-1] + dt / 2, dt)
    y = np.interp(grid, t, a)
    y = y - np.polyval(np.polyfit(grid, y, 1), grid)
    if not np.any(y):
        return None
    n = len(y)
    spectrum = np.fft.rfft(y, 2 * n)
    acf = np.fft.irfft(spectrum * np.conj(spectrum))[:n]
    acf = acf / acf[0]
    lo, hi = int(np.ceil(_CYCLE_S[0] / dt)), min(int(_CYCLE_S[1] / dt), n - 2)
    if hi <= lo:
        return None
    peaks, _ = signal.find_peaks(acf[: hi + 1])
    peaks = peaks[peaks >= lo]
    if peaks.size == 0 or acf[peaks].max() < 0.3:
        return None
    first = peaks[acf[peaks] >= 0.8 * acf[peaks].max()][0]
    return float(first * dt)


def select_phase(
    area: np.ndarray,
    frame_times: np.ndarray,
    phase: str,
    window: float = PHASE_WINDOW,
) -> np.ndarray:
    """Return which frames to use: those with a mask, near the chosen phase.

    Parameters
    ----------
    area : ndarray, shape (T,)
        As for :func:`cardiac_phases`; nan marks a frame without a mask.
    frame_times : ndarray, shape (T,)
    phase : {"all", "ed", "es"}
        ``all`` keeps every frame with a mask; ``ed`` and ``es`` those within
        ``window`` cycles of an end-diastolic (end-systolic) frame.
    window : float
        Half-width of the kept interval, as a fraction of the cycle.

    Returns
    -------
    ndarray, shape (T,), bool

    Raises
    ------
    ValueError
        An unknown phase, or ``ed``/``es`` when the curve shows no cardiac cycle.
    """
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {', '.join(PHASES)}, got {phase!r}")
    area = np.asarray(area, np.float64)
    keep = np.isfinite(area)
    if phase == "all":
        return keep
    found = cardiac_phases(area, frame_times)
    frames = found.ed if phase == "ed" else found.es
    if found.cycle_s is None or not frames:
        raise ValueError(
            "the mask-area curve shows no cardiac cycle, so no frames can be "
            f"chosen by phase {phase!r}; use phase 'all'"
        )
    times = np.asarray(frame_times, np.float64)
    near = np.abs(times[:, None] - times[frames][None]).min(axis=1)
    return keep & (near <= window * found.cycle_s + 1e-9)


# --- time-intensity curves ---------------------------------------------------------


@dataclass
class Curves:
    """Mean linear intensity per region and frame.

    Attributes
    ----------
    mean : ndarray, shape (N, R)
        The region's mean linear intensity in each frame; nan where the region
        has no pixel, or only clipped ones.
    pixels, clipped : ndarray, shape (N, R), int
        Pixels in the region, and those of them at the saturation ceiling.
    """

    mean: np.ndarray
    pixels: np.ndarray
    clipped: np.ndarray


def time_intensity(
    power: np.ndarray,
    labels: np.ndarray,
    n_regions: int,
    clipped: np.ndarray | None = None,
    ceiling_power: float | None = None,
    exclude_saturated: bool = False,
) -> Curves:
    """Average the linear power of each region in each frame.

    Parameters
    ----------
    power : ndarray, shape (N, H, W)
        Linear power of the frames used.
    labels : ndarray, shape (N, H, W), int
        Regions 1..R per frame (0 outside them).
    n_regions : int
        R.
    clipped : ndarray, shape (N, H, W) of bool, optional
        Pixels at the saturation ceiling.
    ceiling_power : float, optional
        The linear power of the ceiling.
    exclude_saturated : bool
        Average only the pixels below the ceiling.

    Returns
    -------
    Curves

    Notes
    -----
    Speckle (unit-mean exponential ``s`` times the local power ``P``) clipped at
    a ceiling ``c`` is right-censored, and the plain mean of its clipped pixels
    estimates ``P (1 - exp(-c / P))``, low. The maximum-likelihood estimate of an
    exponential mean from right-censored data is the sum of all values (the
    clipped ones counted at ``c``) over the number of unclipped ones; that is
    what is returned by default, and it is the plain mean when nothing is
    clipped. ``exclude_saturated`` returns the mean of the unclipped pixels
    instead: it leaves out pixels that are bright for other reasons than speckle
    (blood pool inside a mask), at the price of a low bias for speckle.
    """
    n_frames = len(power)
    shape = (n_frames, n_regions)
    labels = np.asarray(labels).reshape(n_frames, -1)
    frame, pixel = np.nonzero(labels)  # only the regions' pixels are visited
    index = frame * n_regions + labels[frame, pixel].astype(np.intp) - 1
    size = n_frames * n_regions
    values = np.asarray(power).reshape(n_frames, -1)[frame, pixel]
    sums = np.bincount(index, values.astype(np.float64), size).reshape(shape)
    pixels = np.bincount(index, minlength=size).reshape(shape)
    hits = np.zeros(shape, np.int64)
    if clipped is not None:
        at_top = np.asarray(clipped).reshape(n_frames, -1)[frame, pixel]
        hits = np.bincount(index[at_top], minlength=size).reshape(shape)

    unclipped = pixels - hits
    with np.errstate(invalid="ignore", divide="ignore"):
        if clipped is None or ceiling_power is None:
            mean = sums / pixels
        elif exclude_saturated:
            mean = (sums - hits * ceiling_power) / unclipped
        else:
            mean = sums / unclipped
    mean[unclipped == 0] = np.nan
    return Curves(mean, pixels, hits)


# --- the replenishment fit ---------------------------------------------------------


@dataclass
class ReplenishmentFit:
    """The outcome of fitting ``y(t) = A (1 - exp(-beta t)) + C``; falsy on failure.

    Attributes
    ----------
    A : float
        Plateau above ``C`` (relative linear power): proportional to the
        microvascular blood volume.
    beta : float
        Replenishment rate (1/s): proportional to the microbubble velocity.
    A_beta : float
        ``A * beta``: proportional to myocardial blood flow.
    C : float
        The intensity at t = 0, right after the flash.
    se_A, se_beta, se_A_beta, se_C : float
        Standard errors from the ``curve_fit`` covariance (scaled by the residual
        variance); ``se_A_beta`` by the delta method. nan when not estimable.
    r2, rmse : float
        Coefficient of determination and root-mean-square residual, both of the
        unweighted residuals in intensity units.
    n_frames : int
        Points fitted.
    success : bool
        False when the curve cannot be fitted; ``message`` says why.
    message : str
    """

    A: float = math.nan
    beta: float = math.nan
    A_beta: float = math.nan
    C: float = math.nan
    se_A: float = math.nan
    se_beta: float = math.nan
    se_A_beta: float = math.nan
    se_C: float = math.nan
    r2: float = math.nan
    rmse: float = math.nan
    n_frames: int = 0
    success: bool = False
    message: str = ""

    def __bool__(self) -> bool:
        return self.success

    def predict(self, t: Any) -> np.ndarray:
        """Return the fitted curve at times ``t`` (s); nan when the fit failed."""
        t = np.asarray(t, np.float64)
        if not self.success:
            return np.full(t.shape, np.nan)
        return replenishment(t, self.A, self.beta, self.C)

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a dict of plain Python values (nan kept)."""
        return dataclasses.asdict(self)


def replenishment(t: np.ndarray, A: float, beta: float, C: float) -> np.ndarray:
    """Return ``A (1 - exp(-beta t)) + C``."""
    return A * -np.expm1(-beta * np.asarray(t, np.float64)) + C


def _jacobian(t: np.ndarray, A: float, beta: float, C: float) -> np.ndarray:
    decay = np.exp(-beta * t)
    return np.column_stack([1 - decay, A * t * decay, np.ones_like(t)])


def fit_replenishment(
    t: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    sigma: Sequence[float] | np.ndarray | None = None,
    proportional: bool = False,
) -> ReplenishmentFit:
    """Fit the replenishment model to one time-intensity curve.

    Parameters
    ----------
    t : array_like, shape (N,)
        Seconds from the first frame after the flash.
    y : array_like, shape (N,)
        Mean linear intensity.
    sigma : array_like, shape (N,), optional
        Relative standard deviations of the points (weights ``1 / sigma**2``);
        equal by default.
    proportional : bool
        The noise grows in proportion to the intensity (speckle: the mean of n
        exponential pixels has a standard deviation of ``y / sqrt(n)``): after a
        first fit, the curve is refitted with ``sigma`` times the fitted values.

    Returns
    -------
    ReplenishmentFit
        ``success=False`` with the reason for fewer than :data:`MIN_POINTS`
        points, non-finite values, a flat or falling curve, or a solver failure;
        never an exception.

    Notes
    -----
    Model ``y(t) = A (1 - exp(-beta t)) + C`` with bounds ``A >= 0`` and
    ``beta >= BETA_MIN`` (> 0), ``C`` free. Start values come from the data: C
    from the median of the first 3 points, A from the mean of the last quarter
    less C, and beta from the time at which the curve (running median of 5)
    first reaches 63% of the rise, ``1 / t63``. ``curve_fit`` (trust-region
    reflective, analytic Jacobian) starts from 0.25, 1 and 4 times that beta,
    and the lowest residual wins. A curve is flat when its rise is within 3
    standard errors of zero, its noise taken from successive differences (1.4826
    MAD / sqrt 2). Standard errors come from the covariance scaled by the
    residual variance.
    """
    t = np.asarray(t, np.float64).ravel()
    y = np.asarray(y, np.float64).ravel()
    n = t.size
    weights = None if sigma is None else np.asarray(sigma, np.float64).ravel()
    problem = _check_curve(t, y, weights)
    if problem:
        return ReplenishmentFit(n_frames=n, message=problem)

    order = np.argsort(t, kind="stable")
    t, y = t[order], y[order]
    weights = None if weights is None else weights[order]
    start = _start_values(t, y)
    if isinstance(start, str):
        return ReplenishmentFit(n_frames=n, message=start)
    A0, beta0, C0 = start
    starts = [(A0, max(beta0 * f, 2 * BETA_MIN), C0) for f in _BETA_STARTS]
    best = _best_fit(t, y, weights, starts)
    if isinstance(best, str):
        return ReplenishmentFit(n_frames=n, message=f"curve_fit failed: {best}")
    if proportional:
        fitted = replenishment(t, *best[0])
        floor = 1e-3 * float(np.max(np.abs(fitted)))
        scaled = np.maximum(np.abs(fitted), max(floor, 1e-300))
        refit = _best_fit(
            t, y, scaled if weights is None else weights * scaled, [tuple(best[0])]
        )
        best = best if isinstance(refit, str) else refit
    return _result(t, y, *best)


def _check_curve(t: np.ndarray, y: np.ndarray, sigma: np.ndarray | None) -> str:
    """The reason a curve cannot be fitted, or an empty string."""
    n = t.size
    if y.size != n:
        return f"t and y differ in length ({n} and {y.size})"
    if n < MIN_POINTS:
        return f"too few points: {n}, at least {MIN_POINTS} needed"
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(y))):
        return "non-finite times or values"
    if sigma is not None and (
        sigma.shape != (n,) or not np.all(np.isfinite(sigma)) or np.any(sigma <= 0)
    ):
        return "sigma must hold one positive finite value per point"
    return ""


def _best_fit(
    t: np.ndarray,
    y: np.ndarray,
    sigma: np.ndarray | None,
    starts: Sequence[tuple[float, float, float]],
) -> tuple[np.ndarray, np.ndarray] | str:
    """The ``curve_fit`` result of lowest residual over the starts, or a message."""
    best, best_cost, message = None, math.inf, ""
    lower, upper = [0.0, BETA_MIN, -np.inf], [np.inf, np.inf, np.inf]
    for p0 in starts:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optimize.OptimizeWarning)
                popt, pcov = optimize.curve_fit(
                    replenishment,
                    t,
                    y,
                    p0=p0,
                    sigma=sigma,
                    bounds=(lower, upper),
                    jac=_jacobian,
                    method="trf",
                    x_scale="jac",
                    max_nfev=2000,
                )
        except (RuntimeError, ValueError, np.linalg.LinAlgError) as err:
            message = str(err)
            continue
        residual = y - replenishment(t, *popt)
        if sigma is not None:
            residual = residual / sigma
        cost = float(residual @ residual)
        if cost < best_cost:
            best, best_cost = (popt, pcov), cost
    return message if best is None else best


def _start_values(t: np.ndarray, y: np.ndarray) -> tuple[float, float, float] | str:
    """(A0, beta0, C0) from the data, or the reason the curve cannot be fitted."""
    n = t.size
    C0 = float(np.median(y[:3]))
    late = y[-max(2, n // 4) :]
    rise = float(late.mean()) - C0
    diffs = np.diff(y)
    noise = 1.4826 * float(np.median(np.abs(diffs - np.median(diffs)))) / math.sqrt(2)
    error = noise * math.sqrt(1 / 3 + 1 / late.size)
    scale = max(abs(C0), abs(float(late.mean())), 1e-300)
    if rise < -3 * error:
        return f"falling curve: the last quarter lies {-rise:.4g} below the start"
    if rise <= 3 * error or rise <= 1e-9 * scale:
        return f"flat curve: a rise of {rise:.4g} against noise {noise:.4g} per point"
    smooth = signal.medfilt(y, 5) if n >= 5 else y
    reached = np.flatnonzero(smooth >= C0 + (1 - math.exp(-1)) * rise)
    t63 = float(t[reached[0]]) if reached.size else float(t[-1])
    if t63 <= 0:
        t63 = float(t[1] - t[0]) if t[1] > t[0] else 1.0
    return rise, 1.0 / t63, C0


UNRESOLVED = 0.1  # beta * t_end below this: under 10% of the way to the plateau


def _result(
    t: np.ndarray, y: np.ndarray, popt: np.ndarray, pcov: np.ndarray
) -> ReplenishmentFit:
    """Package a converged fit: errors, goodness of fit and warnings."""
    A, beta, C = (float(v) for v in popt)
    fitted = replenishment(t, A, beta, C)
    sse = float(np.sum((y - fitted) ** 2))
    sst = float(np.sum((y - y.mean()) ** 2))
    cov = np.asarray(pcov, np.float64)
    if not np.all(np.isfinite(cov)):
        cov = np.full((3, 3), np.nan)
    se = np.sqrt(np.clip(np.diag(cov), 0, None))
    var_ab = beta**2 * cov[0, 0] + A**2 * cov[1, 1] + 2 * A * beta * cov[0, 1]
    message = "ok"
    success = True
    if A <= 0:
        success, message = False, "no rise: A is at its bound 0"
    elif not np.all(np.isfinite(se)):
        message = "fitted, but the covariance could not be estimated"
    elif beta * float(t[-1]) < UNRESOLVED:
        # the curve is a straight line A*beta*t there: A and beta cannot be told apart
        success = False
        message = (
            f"unresolved: the curve ends long before its plateau (beta * t_end = "
            f"{beta * float(t[-1]):.2g}), so A and beta cannot be separated"
        )
    elif beta * float(t[-1]) < 1.0:
        message = (
            f"fitted, but the curve ends before its plateau (beta * t_end = "
            f"{beta * float(t[-1]):.2f}): A and beta are poorly determined"
        )
    return ReplenishmentFit(
        A=A,
        beta=beta,
        A_beta=A * beta,
        C=C,
        se_A=float(se[0]),
        se_beta=float(se[1]),
        se_A_beta=float(math.sqrt(var_ab)) if var_ab >= 0 else math.nan,
        se_C=float(se[2]),
        r2=1 - sse / sst if sst > 0 else math.nan,
        rmse=math.sqrt(sse / t.size),
        n_frames=int(t.size),
        success=success,
        message=message,
    )
