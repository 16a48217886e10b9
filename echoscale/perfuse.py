"""The ``perfuse`` stage: from a contrast loop and its masks to A, beta, A*beta.

:func:`perfuse` reads a loop, its per-frame myocardial masks and the ``case.json``
beside the loop; linearises the video, finds the flashes and the saturation ceiling,
picks frames by cardiac phase, splits the myocardium into six segments, averages
each region's linear intensity per frame and fits the replenishment model to every
region after every flash (:mod:`echoscale.perfusion`, :mod:`echoscale.regions`).
It writes, into the output folder::

    tic.csv          frame, time_s, flash, t_s and one column per region
    perfusion.csv    one row per region per flash: A, beta, A_beta, C, errors, fit
    perfusion.json   the same rows and the settings that produced them
    perfusion.png    the curves and their fits (with matplotlib)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from echoscale import ceus, images, perfusion, regions, rundir
from echoscale.errors import InputError

log = logging.getLogger(__name__)

TIC = "tic.csv"
PERFUSION_CSV = "perfusion.csv"
PERFUSION_JSON = "perfusion.json"
PERFUSION_PNG = "perfusion.png"
MYOCARDIUM = "myocardium"
FIT_FIELDS = (
    "A", "beta", "A_beta", "C", "se_A", "se_beta", "se_A_beta", "se_C",
    "r2", "rmse", "n_frames", "success", "message",
)  # fmt: skip
COLUMNS = (
    "case", "region", "flash", "t0_frame", *FIT_FIELDS[:-2], "saturated",
    "clipped_fraction", "phase", "success", "message",
)  # fmt: skip
SATURATED_FRACTION = 1e-3  # a region is saturated when more of its pixels clip


def perfuse(
    loop: str | Path,
    masks: str | Path,
    out: str | Path,
    *,
    fps: float | None = None,
    dynamic_range_db: float | None = None,
    linear: bool = False,
    flash: str | Sequence[int] = "auto",
    phase: str = "all",
    segments: int | None = 6,
    septum_side: str | None = None,
    view: str | None = None,
    exclude_saturated: bool = False,
    erode_mm: float = 0.0,
    figure: bool = True,
) -> dict[str, Any]:
    """Measure myocardial perfusion per region and flash in one contrast loop.

    Parameters
    ----------
    loop : str or Path
        The cine, (T, H, W), in any format :func:`echoscale.images.read_image`
        reads. A ``case.json`` in its folder (:func:`echoscale.ceus.
        read_case_settings`) supplies ``fps``/``frame_times``,
        ``dynamic_range_db``, ``v_max``, ``flash_frames``, ``septum_side`` and
        ``view`` where the arguments leave them open.
    masks : str or Path
        Per-frame masks: a (T, H, W) file matching the loop (an all-zero frame is
        unlabelled), a folder holding ``masks.tif``/``masks.nii.gz`` (what
        ``segment`` writes, also in a subfolder named after the case), or a
        folder of per-frame files named by 0-based frame number. Masks of 0/1 are
        myocardium; others are CAMUS labels (2 myocardium, 1 LV cavity).
    out : str or Path
        Output folder, created if needed.
    fps : float, optional
        Frame rate; wins over case.json and the file's own frame times.
    dynamic_range_db : float, optional
        Dynamic range of the log compression; wins over case.json.
    linear : bool
        Take the pixel values as linear intensity (no linearisation).
    flash : "auto" or sequence of int
        Flash frames (0-based; consecutive frames form one flash), or ``auto``:
        case.json's ``flash_frames`` when it has them, else detection.
    phase : {"all", "es", "ed"}
        Use every frame with a mask, or only those near end-systole or
        end-diastole (:func:`echoscale.perfusion.select_phase`).
    segments : 6 or None
        Six segments besides the whole myocardium, or the myocardium alone.
    septum_side : {"left", "right"}, optional
        Image side of the first wall (septal in A4C, inferior in A2C); from
        case.json, else left.
    view : str, optional
        ``A4C`` or ``A2C`` names the segments; from case.json, else neutral names.
    exclude_saturated : bool
        Leave pixels at the saturation ceiling out of the means.
    erode_mm : float
        Erode each region's mask by this much before averaging (guards against
        blood pool at the endocardium of predicted masks).
    figure : bool
        Draw ``perfusion.png`` (1 to 2 s with matplotlib on two CPU cores).

    Returns
    -------
    dict
        Summary: ``case``, ``n_frames``, ``frames_used``, ``flashes`` (frames and
        ``t0_frame`` of each), ``flash_source``, ``regions``, ``n_rows``,
        ``n_failed``, ``saturation_ceiling`` (pixel value or None),
        ``saturated_regions``, ``septum_side`` and its ``septum_side_source``,
        ``view``, ``phase``, ``paths``.

    Raises
    ------
    InputError
        Unreadable or mismatched inputs, no frame times (pass ``--fps``), no
        dynamic range (pass ``--dynamic-range`` or ``--linear``), flash frames out
        of range, no frame with a mask, or phase selection without a cycle.

    Notes
    -----
    Each curve runs from the first frame after a flash's last frame (t = 0) to
    the frame before the next flash; without a flash, from the first frame.
    Flash frames and frames without a mask are never used. The region means are
    censored-exponential estimates when the video has a saturation ceiling
    (:func:`echoscale.perfusion.time_intensity`), and each fit weights its
    points as speckle dictates: a standard deviation of ``y / sqrt(n)`` for the
    mean of n pixels (``proportional=True`` in
    :func:`echoscale.perfusion.fit_replenishment`). A region is ``saturated``
    when more than 0.1% of its pixels in the curve's frames sit at the ceiling.
    With only the myocardium in the masks, the cardiac phase comes from the
    area the myocardium encloses (:func:`echoscale.regions.enclosed_area`).
    """
    _check_options(fps, phase, segments, septum_side, erode_mm, flash)
    loop, masks, out = Path(loop), Path(masks), Path(out)
    image = images.read_image(loop)
    if not image.is_cine or image.n_frames < 2:
        raise InputError("is a still image; perfuse needs a cine loop (T, H, W)", loop)
    cine = image.array
    if cine.dtype.kind == "f" and not np.all(np.isfinite(cine)):
        raise InputError("the loop holds NaN or infinite values", loop)
    settings = _case_settings(loop)
    times = _frame_times(loop, image, settings, fps)
    gain = _display_gain(loop, cine, settings, dynamic_range_db, linear)
    labels = _read_masks(loop, masks, cine.shape)
    side, side_source = _setting(septum_side, settings, "septum_side", "left")
    view = _setting(view, settings, "view", None)[0]
    case = case_name(loop)
    if side_source == "default" and segments:
        log.warning(
            "%s: septum side unknown; the first wall is taken on the left", case
        )

    myo = labels == (1 if labels.max() <= 1 else 2)
    has_mask = myo.reshape(len(myo), -1).any(axis=1)
    if not has_mask.any():
        raise InputError("no frame has a myocardial mask", masks)
    flashes, flash_source = _flashes(loop, cine, times, settings, flash)
    ceiling = perfusion.saturation_ceiling(cine)
    try:
        use = perfusion.select_phase(
            _phase_area(labels, myo, has_mask, image.spacing), times, phase
        )
    except ValueError as err:
        raise InputError(str(err), masks) from err
    use[[f for frames in flashes for f in frames]] = False
    frames = np.flatnonzero(use)
    if frames.size == 0:
        raise InputError("no frame with a mask lies outside the flashes", masks)

    names, curves = _region_curves(
        cine[frames], myo[frames], image.spacing, gain, ceiling,
        segments=segments, view=view, side=side,
        exclude_saturated=exclude_saturated, erode_mm=erode_mm,
    )  # fmt: skip
    measured = Measured(case, names, frames, times, curves, _spans(flashes, len(cine)))
    rows = _fit_rows(measured, phase)

    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "tic": out / TIC,
        "perfusion_csv": out / PERFUSION_CSV,
        "perfusion_json": out / PERFUSION_JSON,
        "figure": out / PERFUSION_PNG if figure else None,
    }
    _write_tic(paths["tic"], measured)
    rundir.write_csv(paths["perfusion_csv"], [_csv_row(r) for r in rows], COLUMNS)
    if figure:
        paths["figure"] = _plot(paths["figure"], measured, rows)
    summary = {
        "case": case,
        "n_frames": int(len(cine)),
        "frames_used": int(frames.size),
        "flashes": [
            {"flash": k, "frames": f, "t0_frame": span[0]}
            for k, (f, span) in enumerate(
                zip(flashes or [[]], measured.spans, strict=True), start=1
            )
        ],
        "flash_source": flash_source,
        "regions": names,
        "n_rows": len(rows),
        "n_failed": sum(not r["success"] for r in rows),
        "saturation_ceiling": ceiling,
        "saturated_regions": sorted({r["region"] for r in rows if r["saturated"]}),
        "septum_side": side,
        "septum_side_source": side_source,
        "view": view,
        "phase": phase,
        "linear": bool(linear),
        "exclude_saturated": bool(exclude_saturated),
        "erode_mm": float(erode_mm),
        "paths": {k: None if v is None else str(v) for k, v in paths.items()},
    }
    rundir.write_json(paths["perfusion_json"], {**summary, "rows": _jsonable(rows)})
    return summary


@dataclass
class Measured:
    """The time-intensity curves of one loop, ready to fit and write.

    Attributes
    ----------
    case : str
    names : list of str
        The regions: ``myocardium``, then the segments.
    frames : ndarray, shape (N,)
        The frames used (0-based), the rows of ``curves``.
    times : ndarray, shape (T,)
        Seconds from the first frame, for every frame of the loop.
    curves : Curves
        Mean linear intensity per used frame and region.
    spans : list of (int, int)
        Per flash, its curve's first frame (t = 0) and the frame it stops before
        (the next flash, or the loop's end). Without a flash, one span from 0.
    """

    case: str
    names: list[str]
    frames: np.ndarray
    times: np.ndarray
    curves: perfusion.Curves
    spans: list[tuple[int, int]]

    def curve(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows of ``curves`` in span ``k`` (0-based), and their t (s) from t = 0."""
        t0, stop = self.spans[k]
        inside = (self.frames >= t0) & (self.frames < stop)
        return inside, self.times[self.frames[inside]] - self.times[t0]


case_name = rundir.case_name  # the case of a loop, as segment names its output


# --- inputs ------------------------------------------------------------------------


def _check_options(fps, phase, segments, septum_side, erode_mm, flash) -> None:
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise InputError(f"--fps must be a positive frame rate, got {fps}")
    if phase not in perfusion.PHASES:
        raise InputError(f"--phase must be one of all, es, ed; got {phase!r}")
    if segments not in (6, None):
        raise InputError(f"--segments must be 6 or none, got {segments!r}")
    if septum_side not in (None, *regions.SIDES):
        raise InputError(f"--septum-side must be left or right, got {septum_side!r}")
    if not (math.isfinite(erode_mm) and erode_mm >= 0):
        raise InputError(f"--erode must be 0 or more, got {erode_mm}")
    if isinstance(flash, str) and flash != "auto":
        raise InputError(f"--flash must be auto or frame numbers, got {flash!r}")
    if not isinstance(flash, str):
        try:
            bad = any(int(f) != f or f < 0 for f in flash)
        except (TypeError, ValueError):
            bad = True
        if bad:
            raise InputError(
                f"--flash frames must be 0-based frame numbers, got {flash}"
            )


def _case_settings(loop: Path) -> dict[str, Any]:
    path = loop.parent / ceus.CASE_JSON
    if not path.is_file():
        return {}
    settings = ceus.read_case_settings(path)
    v_max = settings.get("v_max")
    if v_max is not None and (
        isinstance(v_max, bool)
        or not isinstance(v_max, int | float)
        or not 0 < v_max < math.inf
    ):
        raise InputError(f"v_max must be a positive number, got {v_max!r}", path)
    return settings


def _frame_times(
    loop: Path, image: images.Image, settings: dict[str, Any], fps: float | None
) -> np.ndarray:
    """The argument's fps, then case.json (frame_times, fps), then the file's own."""
    n = image.n_frames
    if fps is not None:
        return np.arange(n) / float(fps)
    times = ceus.settings_times(settings, n, loop.parent / ceus.CASE_JSON)
    if times is not None:
        return times
    if image.frame_times is not None and np.all(np.diff(image.frame_times) > 0):
        return np.asarray(image.frame_times, np.float64)
    raise InputError(
        "no frame times: the file holds none and no case.json beside it gives fps "
        "or frame_times; pass --fps",
        loop,
    )


def _display_gain(
    loop: Path,
    cine: np.ndarray,
    settings: dict[str, Any],
    dynamic_range_db: float | None,
    linear: bool,
) -> float | None:
    """``DR / (10 v_max)`` of the log compression, or None for linear data."""
    if linear:
        return None
    if dynamic_range_db is None:
        dynamic_range_db = settings.get("dynamic_range_db")
    if dynamic_range_db is None:
        raise InputError(
            "no dynamic range: case.json beside the loop gives no dynamic_range_db; "
            "pass --dynamic-range DB, or --linear for linear intensity data",
            loop,
        )
    if not (math.isfinite(dynamic_range_db) and dynamic_range_db > 0):
        raise InputError(f"--dynamic-range must be positive, got {dynamic_range_db}")
    v_max = settings.get("v_max")
    if v_max is None:
        if cine.dtype != np.uint8 and not (
            cine.min() >= 0 and cine.max() <= 255 and np.all(np.mod(cine, 1) == 0)
        ):
            raise InputError(
                f"pixel values of type {cine.dtype} up to {cine.max():g}: set v_max "
                "(the display value of the top of the range) in case.json, or pass "
                "--linear",
                loop,
            )
        v_max = 255
    return float(dynamic_range_db) / (10.0 * float(v_max))


def _linear(values: np.ndarray, gain: float | None) -> np.ndarray:
    if gain is None:
        return np.asarray(values, np.float32)
    return perfusion.linearise(values, 10.0 * gain, 1.0)


def _read_masks(loop: Path, masks: Path, shape: tuple[int, ...]) -> np.ndarray:
    """Read the masks in any of the accepted layouts as uint8 (T, H, W)."""
    if not masks.exists():
        raise InputError("masks not found", masks)
    source = masks
    if masks.is_dir():
        found = [masks / n for n in ceus.MASK_NAMES if (masks / n).is_file()]
        own = masks / case_name(loop)
        if not found and own.is_dir():
            found = [own / n for n in ceus.MASK_NAMES if (own / n).is_file()]
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            raise InputError(
                f"holds more than one mask file ({names}); keep one", masks
            )
        source = found[0] if found else masks
    holder = ceus.CeusCase(case_name(loop), loop.parent, loop, source)
    holder.n_frames, holder.shape = shape[0], tuple(shape[1:])
    return ceus.read_masks(holder)


def _setting(value, settings: dict[str, Any], key: str, default):
    """The argument, else case.json, else the default; and which one it was."""
    if value is not None:
        return value, "argument"
    if settings.get(key) is not None:
        return settings[key], "case.json"
    return default, "default"


def _flashes(
    loop: Path,
    cine: np.ndarray,
    times: np.ndarray,
    settings: dict[str, Any],
    flash: str | Sequence[int],
) -> tuple[list[list[int]], str]:
    """The flashes, and where they came from (argument, case.json, detected)."""
    n = len(cine)
    means = cine.reshape(n, -1).mean(axis=1, dtype=np.float64)
    if isinstance(flash, str):
        detected = perfusion.detect_flashes(means, times)
        given = settings.get("flash_frames")
        if given is None:
            if not detected:
                log.warning(
                    "%s: no flash found; the curves start at the first frame", loop
                )
            return detected, "detected"
        flashes, source, where = (
            perfusion.group_flashes(given),
            "case.json",
            loop.parent,
        )
        if flashes != detected:
            log.warning(
                "%s: case.json gives flash frames %s, detection finds %s; using "
                "case.json",
                loop.parent / ceus.CASE_JSON,
                flashes,
                detected,
            )
    else:
        flashes, source, where = perfusion.group_flashes(flash), "argument", loop
    late = [f[-1] for f in flashes if f[-1] >= n - 1]
    if late:
        raise InputError(
            f"flash frame {late[0]} leaves no frame after it (the loop has {n} "
            "frames, numbered from 0)",
            where / ceus.CASE_JSON if source == "case.json" else where,
        )
    return flashes, source


def _phase_area(
    labels: np.ndarray, myo: np.ndarray, has_mask: np.ndarray, spacing
) -> np.ndarray:
    """The LV cavity area per frame (mm^2), nan where a frame has no mask.

    The cavity (label 1) when CAMUS-labelled masks hold it, else the area the
    myocardium encloses: the myocardial area itself peaks at end-systole.
    """
    area = np.full(len(labels), np.nan)
    cavity = (labels == 1).reshape(len(labels), -1).sum(axis=1)
    if labels.max() > 1 and cavity.any():
        area[has_mask] = cavity[has_mask] * float(spacing[0]) * float(spacing[1])
        return area
    for t in np.flatnonzero(has_mask):
        area[t] = regions.enclosed_area(myo[t], spacing)
    return area


def _region_curves(
    cine: np.ndarray,
    myo: np.ndarray,
    spacing: tuple[float, float],
    gain: float | None,
    ceiling: float | None,
    *,
    segments: int | None,
    view: str | None,
    side: str,
    exclude_saturated: bool,
    erode_mm: float,
) -> tuple[list[str], perfusion.Curves]:
    """The regions' names and their curves over the frames given (all used)."""
    # the heart's bounding box over the loop holds every pixel that is averaged
    rows = np.flatnonzero(myo.any(axis=(0, 2)))
    cols = np.flatnonzero(myo.any(axis=(0, 1)))
    box = (slice(None), slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    cine, myo = cine[box], myo[box]
    names = [MYOCARDIUM]
    maps = [(_eroded(myo.astype(np.uint8), spacing, erode_mm), 1)]
    if segments:
        names += list(regions.segment_names(view))
        labels = regions.segment_loop(myo, spacing, side)
        maps.append((_eroded(labels, spacing, erode_mm), 6))
    power = _linear(cine, gain)
    clipped = ceiling_power = None
    if ceiling is not None:
        clipped = cine >= ceiling
        ceiling_power = float(_linear(np.array([ceiling]), gain)[0])
    parts = [
        perfusion.time_intensity(power, m, n, clipped, ceiling_power, exclude_saturated)
        for m, n in maps
    ]
    fields = ("mean", "pixels", "clipped")
    joined = (np.hstack([getattr(p, f) for p in parts]) for f in fields)
    return names, perfusion.Curves(*joined)


def _eroded(maps: np.ndarray, spacing, distance_mm: float) -> np.ndarray:
    """Erode each label of each frame by ``distance_mm`` (a copy; 0: as it is)."""
    if distance_mm <= 0:
        return maps
    out = np.zeros_like(maps)
    for i, frame in enumerate(maps):
        for label in np.unique(frame[frame > 0]):
            out[i][regions.erode_mm(frame == label, spacing, distance_mm)] = label
    return out


def _spans(flashes: list[list[int]], n_frames: int) -> list[tuple[int, int]]:
    """(t0_frame, stop) of each curve: from a flash's next frame to the next flash.

    Without a flash, one curve spans the loop from its first frame.
    """
    if not flashes:
        return [(0, n_frames)]
    starts = [f[-1] + 1 for f in flashes]
    stops = [f[0] for f in flashes[1:]] + [n_frames]
    return list(zip(starts, stops, strict=True))


# --- fits and outputs --------------------------------------------------------------


def _fit_rows(measured: Measured, phase: str) -> list[dict[str, Any]]:
    """One row per region per flash: the fit, the saturation, the settings."""
    rows = []
    curves = measured.curves
    for k in range(len(measured.spans)):
        inside, t = measured.curve(k)
        for r, name in enumerate(measured.names):
            y = curves.mean[inside, r]
            good = np.isfinite(y)
            # speckle: the mean of n pixels has a standard deviation of y / sqrt(n)
            pixels = curves.pixels[inside, r]
            sigma = 1 / np.sqrt(np.maximum(pixels[good], 1))
            fit = perfusion.fit_replenishment(
                t[good], y[good], sigma, proportional=True
            )
            if not inside.any():  # say why rather than "too few points: 0"
                fit.message = (
                    "no frame of this flash's curve has a mask (the masks end "
                    "before it)"
                )
            total = int(pixels.sum())
            fraction = curves.clipped[inside, r].sum() / total if total else math.nan
            rows.append(
                {
                    "case": measured.case,
                    "region": name,
                    "flash": k + 1,
                    "t0_frame": int(measured.spans[k][0]),
                    **fit.to_dict(),
                    "saturated": bool(fraction > SATURATED_FRACTION),
                    "clipped_fraction": float(fraction),
                    "phase": phase,
                }
            )
    return rows


def _write_tic(path: Path, measured: Measured) -> None:
    """tic.csv: every frame, its curve and t, and each region's mean where used."""
    times = measured.times
    position = {int(f): i for i, f in enumerate(measured.frames)}
    rows = []
    for frame, time in enumerate(times):
        row = {"frame": frame, "time_s": f"{time:.6f}", "flash": "", "t_s": ""}
        for k, (t0, stop) in enumerate(measured.spans, start=1):
            if t0 <= frame < stop:
                row["flash"], row["t_s"] = k, f"{time - times[t0]:.6f}"
        i = position.get(frame)
        for r, name in enumerate(measured.names):
            row[name] = "" if i is None else _cell(measured.curves.mean[i, r])
        rows.append(row)
    rundir.write_csv(path, rows, ["frame", "time_s", "flash", "t_s", *measured.names])


def _cell(value: Any) -> Any:
    """A CSV cell: floats to 7 significant digits, nan and inf empty."""
    if isinstance(value, float | np.floating):
        return f"{value:.7g}" if math.isfinite(value) else ""
    return value


def _csv_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: _cell(v) for k, v in row.items()}


def _jsonable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with nan and inf as None (JSON null)."""
    return [
        {
            k: None if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in row.items()
        }
        for row in rows
    ]


def _plot(path: Path, measured: Measured, rows: list[dict[str, Any]]) -> Path | None:
    """Draw each region's curves and fits; None (and a warning) without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        log.warning("matplotlib is not installed: %s is not drawn", path.name)
        return None
    names = measured.names
    n_cols = min(4, len(names))
    n_rows = math.ceil(len(names) / n_cols)
    fig = Figure(figsize=(3.2 * n_cols, 2.6 * n_rows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    fits = {(row["region"], row["flash"]): row for row in rows}
    for r, name in enumerate(names):
        ax = axes[r]
        for k in range(len(measured.spans)):
            inside, t = measured.curve(k)
            colour = f"C{k}"
            ax.plot(
                t, measured.curves.mean[inside, r], ".", ms=2, color=colour, alpha=0.5
            )
            fit = fits[(name, k + 1)]
            label = f"flash {k + 1}: no fit"
            if fit["success"]:
                grid = np.linspace(0, float(t.max()), 200)
                model = perfusion.replenishment(grid, fit["A"], fit["beta"], fit["C"])
                ax.plot(grid, model, "-", color=colour, lw=1.2)
                label = f"flash {k + 1}: A {fit['A']:.4g}, beta {fit['beta']:.3g}/s"
            ax.plot([], [], "-", color=colour, label=label)
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=6, loc="lower right")
        ax.tick_params(labelsize=7)
        ax.set_xlabel("t after flash (s)", fontsize=7)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    fig.suptitle(
        f"{measured.case}: linear intensity and replenishment fits", fontsize=10
    )
    # constrained layout would take seconds here; fixed margins do
    fig.subplots_adjust(
        left=0.07, right=0.98, bottom=0.1, top=0.9, hspace=0.5, wspace=0.3
    )
    with rundir.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path
