"""Contrast-echo loops with manual masks: reading case folders and ``prepare ceus``.

A source folder holds one folder per case::

    SRC/case01/cine.tif            the loop (TIFF, NIfTI or DICOM), (T, H, W)
    SRC/case01/masks.tif           per-frame masks (TIFF or NIfTI), or a folder
                                   masks/ of 2D files named by 0-based frame number
    SRC/case01/case.json           optional: fps or frame times, flash frames,
                                   dynamic range, septum side, view, quality

Masks may exist for only some frames: an all-zero frame counts as unlabelled, and only
labelled frames become samples. Masks of 0 and 1 are myocardium; masks with higher
values are read as CAMUS labels (1 LV, 2 myocardium, 3 LA).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from echoscale import camus, images
from echoscale.dataset import write_dataset
from echoscale.errors import InputError
from echoscale.prepare import (
    CAMUS_CLASSES,
    PrepareReport,
    check_destination,
    choose_split,
    label_table,
    make_report,
    order_splits,
    parse_classes,
    parse_size,
    resize_image,
    resize_mask,
    sample_row,
    skip_record,
)

log = logging.getLogger(__name__)

CASE_JSON = "case.json"
CINE_NAMES = ("cine.tif", "cine.tiff", "cine.nii.gz", "cine.nii", "cine.dcm")
MASK_NAMES = ("masks.tif", "masks.tiff", "masks.nii.gz", "masks.nii")
MASK_DIR = "masks"
_FRAME_FILE = re.compile(r"(\d+)\.(tif|tiff|nii|nii\.gz)$", re.IGNORECASE)
_SETTING_TYPES = {
    "fps": (int, float),
    "frame_times": list,
    "flash_frames": list,
    "dynamic_range_db": (int, float),
    "septum_side": str,
    "view": str,
    "quality": str,
}


@dataclass
class CeusCase:
    """One case folder; the fields after ``settings`` are set by :func:`check_case`."""

    name: str
    root: Path
    cine: Path
    masks: Path
    settings: dict[str, Any] = field(default_factory=dict)
    n_frames: int = 0
    shape: tuple[int, int] = (0, 0)
    spacing: tuple[float, float] = (1.0, 1.0)
    frame_times: np.ndarray | None = None
    labelled: list[int] = field(default_factory=list)
    labels: set[int] = field(default_factory=set)

    @property
    def binary(self) -> bool:
        """True when the masks hold only 0 and 1 (myocardium)."""
        return self.labels <= {0, 1}


def find_case_dirs(src: str | Path) -> list[Path]:
    """Return the case folders in ``src``, sorted by name (hidden folders ignored).

    ``database_split`` (split lists, as in CAMUS) is not a case.
    """
    src = Path(src)
    if not src.is_dir():
        raise InputError("not a folder", src)
    dirs = [
        p
        for p in sorted(src.iterdir())
        if p.is_dir() and not p.name.startswith(".") and p.name != "database_split"
    ]
    if not dirs:
        raise InputError("holds no case folders", src)
    return dirs


def read_case_settings(path: str | Path) -> dict[str, Any]:
    """Read and check a ``case.json``; unknown keys are kept as they are.

    Raises
    ------
    InputError
        Not JSON, not an object, or a known key of the wrong type or value.
    """
    path = Path(path)
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"cannot read: {err}", path) from err
    if not isinstance(settings, dict):
        raise InputError("must hold a JSON object", path)
    for key, kind in _SETTING_TYPES.items():
        value = settings.get(key)
        if value is not None and (
            not isinstance(value, kind) or isinstance(value, bool)
        ):
            raise InputError(f"{key} has the wrong type: {value!r}", path)
    for key in ("fps", "dynamic_range_db"):
        if settings.get(key) is not None and not 0 < settings[key] < float("inf"):
            raise InputError(f"{key} must be positive, got {settings[key]}", path)
    if settings.get("septum_side") not in (None, "left", "right"):
        raise InputError(
            f"septum_side must be 'left' or 'right', got {settings['septum_side']!r}",
            path,
        )
    for key in ("frame_times", "flash_frames"):
        values = settings.get(key)
        if values is not None and not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in values
        ):
            raise InputError(f"{key} must be a list of numbers", path)
    if settings.get("flash_frames") is not None and not all(
        float(v).is_integer() and v >= 0 for v in settings["flash_frames"]
    ):
        raise InputError("flash_frames must be 0-based frame numbers", path)
    quality = settings.get("quality")
    if quality is not None and quality.capitalize() not in camus.QUALITIES:
        raise InputError(
            f"quality must be one of {', '.join(camus.QUALITIES)}, got {quality!r}",
            path,
        )
    return settings


def _first_existing(folder: Path, names: Sequence[str]) -> list[Path]:
    return [folder / n for n in names if (folder / n).is_file()]


def scan_case(folder: str | Path) -> CeusCase:
    """Find a case's cine, masks and settings, without reading any image.

    Raises
    ------
    InputError
        When the cine or the masks are missing or ambiguous, or ``case.json`` is bad.
    """
    folder = Path(folder)
    cines = _first_existing(folder, CINE_NAMES)
    if not cines:
        raise InputError(
            f"missing cine: expected one of {', '.join(CINE_NAMES)}", folder
        )
    if len(cines) > 1:
        names = ", ".join(p.name for p in cines)
        raise InputError(f"more than one cine ({names}); keep one", folder)
    masks = _first_existing(folder, MASK_NAMES)
    if (folder / MASK_DIR).is_dir():
        masks.append(folder / MASK_DIR)
    if not masks:
        raise InputError(
            f"missing masks: expected one of {', '.join(MASK_NAMES)} or a folder "
            f"{MASK_DIR}/ of per-frame files",
            folder,
        )
    if len(masks) > 1:
        names = ", ".join(p.name for p in masks)
        raise InputError(f"more than one set of masks ({names}); keep one", folder)
    settings_path = folder / CASE_JSON
    settings = read_case_settings(settings_path) if settings_path.is_file() else {}
    return CeusCase(folder.name, folder, cines[0], masks[0], settings)


def read_masks(case: CeusCase) -> np.ndarray:
    """Read a case's masks as uint8 (T, H, W), all-zero where a frame has no mask.

    ``check_case`` must have set the cine's frame count and shape.
    """
    expected = (case.n_frames, *case.shape)
    if case.masks.is_file():
        array = images.read_image(case.masks).array
        if array.ndim == 2:
            array = array[None]
        if array.shape != expected:
            raise InputError(
                f"masks of shape {array.shape} do not match the cine's (T, H, W) = "
                f"{expected} ({case.cine.name})",
                case.masks,
            )
        return _as_labels(array, case.masks)
    stack = np.zeros(expected, np.uint8)
    found: dict[int, Path] = {}
    for path in sorted(case.masks.iterdir()):
        match = _FRAME_FILE.search(path.name)
        if not match or not path.is_file():
            continue
        frame = int(match.group(1))
        if frame in found:
            raise InputError(
                f"frame {frame} has two masks: {found[frame].name}, {path.name}",
                case.masks,
            )
        if frame >= case.n_frames:
            raise InputError(
                f"is a mask for frame {frame}, but the cine has {case.n_frames} frames "
                "(frames are numbered from 0)",
                path,
            )
        array = images.read_image(path).array
        if array.shape != case.shape:
            raise InputError(
                f"mask of shape {array.shape} does not match the cine's frames "
                f"{case.shape}",
                path,
            )
        stack[frame] = _as_labels(array, path)
        found[frame] = path
    if not found:
        raise InputError("holds no per-frame mask files (e.g. 0012.tif)", case.masks)
    return stack


def _as_labels(array: np.ndarray, path: Path) -> np.ndarray:
    camus.check_mask_values(array, path)
    return array.astype(np.uint8)


def settings_times(settings: dict[str, Any], n: int, where: Path) -> np.ndarray | None:
    """Frame times from case.json: ``frame_times`` (checked, from 0), else ``fps``.

    None when it gives neither; ``where`` is the case.json named in errors.
    """
    if settings.get("frame_times") is not None:
        times = np.asarray(settings["frame_times"], np.float64)
        if times.shape != (n,) or np.any(np.diff(times) <= 0):
            raise InputError(
                f"frame_times must hold {n} increasing times (one per frame), got "
                f"{times.size}",
                where,
            )
        return times - times[0]
    if settings.get("fps") is not None:
        return np.arange(n) / float(settings["fps"])
    return None


def _frame_times(case: CeusCase, image: images.Image, fps: float | None) -> np.ndarray:
    """Choose the frame times: case.json, then the file, then ``fps``."""
    settings, n = case.settings, image.n_frames
    where = case.root / CASE_JSON
    times = settings_times(settings, n, where)
    if times is not None and settings.get("frame_times") is None:
        if image.frame_times is not None and not np.allclose(
            times, image.frame_times, rtol=0.01, atol=1e-3
        ):
            log.warning("%s: fps in case.json overrides the cine's frame times", where)
    if times is not None:
        return times
    if image.frame_times is not None:
        return np.asarray(image.frame_times, float)
    if n == 1:
        return np.zeros(1)
    if fps is not None:
        return np.arange(n) / fps
    raise InputError(
        "no frame times: the cine holds none and case.json gives neither fps nor "
        "frame_times; pass --fps",
        case.cine,
    )


def check_case(case: CeusCase, fps: float | None = None) -> None:
    """Read a case once and check it; fill its geometry, times and labelled frames.

    Raises
    ------
    InputError
        Unreadable cine or masks, shapes that disagree, no frame times, flash frames
        out of range, stray labels, or no labelled frame.
    """
    image = images.read_image(case.cine)
    array = image.array if image.is_cine else image.array[None]
    case.n_frames, case.shape, case.spacing = len(array), array.shape[1:], image.spacing
    case.frame_times = _frame_times(case, image, fps)
    flashes = case.settings.get("flash_frames") or []
    late = [int(f) for f in flashes if f >= case.n_frames]
    if late:
        raise InputError(
            f"flash_frames {late} lie past the last frame ({case.n_frames - 1})",
            case.root / CASE_JSON,
        )
    masks = read_masks(case)
    case.labelled = [t for t in range(case.n_frames) if masks[t].any()]
    if not case.labelled:
        raise InputError("every mask frame is empty: no labelled frame", case.masks)
    case.labels = set(np.unique(masks[case.labelled]).tolist())


def _choose_classes(
    cases: Sequence[CeusCase], classes: str | Sequence[str]
) -> tuple[tuple[str, ...], np.ndarray]:
    """Decide the stored classes and the label table for all cases together."""
    binary = [c.name for c in cases if c.binary]
    labelled = [c.name for c in cases if not c.binary]
    if binary and labelled:
        raise InputError(
            f"masks disagree: {binary[0]} holds only 0 and 1 (myocardium) but "
            f"{labelled[0]} holds CAMUS labels 0-3; use one labelling for all cases"
        )
    if binary:
        if classes not in ("auto", ("myo",), "myo"):
            raise ValueError("binary (0/1) myocardium masks allow only --classes myo")
        lut = np.zeros(256, np.uint8)
        lut[1] = 1
        return ("myo",), lut
    if classes == "auto":
        present = set().union(*(c.labels for c in cases))
        classes = [n for n in CAMUS_CLASSES if camus.LABELS[n] in present]
    kept = parse_classes(classes)
    return kept, label_table(kept)


def prepare_ceus(
    src: str | Path,
    run: str | Path,
    *,
    size: tuple[int, int] = (256, 256),
    classes: str | Sequence[str] = "auto",
    split: str = "auto",
    fold: int | None = None,
    fold_lists: str | Path | None = None,
    val: float = 0.1,
    test: float = 0.1,
    seed: int = 0,
    fps: float | None = None,
    skip_incomplete: bool = False,
) -> PrepareReport:
    """Prepare contrast-echo cases into ``RUN/dataset``: a sample per labelled frame.

    Parameters
    ----------
    src : str or Path
        Folder of case folders (see the module docstring and ``data/README.md``).
    run : str or Path
        Run directory; ``RUN/dataset`` is replaced only once the new one is complete.
    size : tuple of int
        (H, W) of the stored images and masks.
    classes : "auto" or sequence of str
        ``auto``: myocardium for 0/1 masks, else the CAMUS classes present.
    split, fold, fold_lists, val, test, seed
        As for :func:`echoscale.prepare.prepare_camus`; splits are by case, and
        ``official`` reads ``SRC/database_split/subgroup_*.txt`` lists of case names.
    fps : float, optional
        Frame rate for cines whose file and ``case.json`` give no frame times.
    skip_incomplete : bool
        Skip broken cases (reported) instead of stopping.

    Returns
    -------
    PrepareReport
        The case count is reported as patients.

    Raises
    ------
    InputError
        For a broken case or too few cases for the split, before anything is written.
    """
    src = Path(src)
    size = parse_size(size)
    check_destination(src, run)
    if fps is not None and not fps > 0:
        raise ValueError(f"--fps must be positive, got {fps}")

    cases, skipped = [], []
    for folder in find_case_dirs(src):
        try:
            case = scan_case(folder)
            check_case(case, fps)
        except InputError as err:
            if not skip_incomplete:
                raise InputError(
                    f"{err.message}; --skip-incomplete prepares the other cases",
                    err.path,
                ) from err
            skipped.append(skip_record(folder, src, err))
            continue
        cases.append(case)
    if not cases:
        raise InputError("no usable case left after skipping the broken ones", src)
    kept, lut = _choose_classes(cases, classes)
    qualities = {
        c.name: str(c.settings.get("quality") or "Unknown").capitalize() for c in cases
    }
    assignment, split_record = choose_split(
        qualities,
        split,
        lists=camus.find_split_lists(src),
        fold=fold,
        fold_lists=fold_lists,
        val=val,
        test=test,
        seed=seed,
    )
    by_split, train_order = order_splits(assignment, seed)

    with write_dataset(run, size, sum(len(c.labelled) for c in cases)) as writer:
        for number, case in enumerate(cases, start=1):
            cine = images.read_image(case.cine).array
            cine = cine if cine.ndim == 3 else cine[None]
            masks = read_masks(case)
            for t in case.labelled:
                row = sample_row(
                    id=f"{case.name}_t{t:03d}",
                    patient=case.name,
                    split=assignment[case.name],
                    shape=case.shape,
                    spacing=case.spacing,
                    size=size,
                    source=case.cine.name,
                    view=str(case.settings.get("view") or ""),
                    frame=t,
                    n_frames=case.n_frames,
                    time_s=float(case.frame_times[t]),
                    quality=qualities[case.name],
                )
                writer.add(
                    resize_image(cine[t], size), resize_mask(lut[masks[t]], size), row
                )
            log.info("prepared %s (%d/%d)", case.name, number, len(cases))
        manifest = writer.finish(
            {
                "source": str(src.resolve()),
                "dataset": "ceus",
                "classes": ["background", *kept],
                "labels": {"background": 0, **{c: i for i, c in enumerate(kept, 1)}},
                "source_labels": (
                    {"myo": 1}
                    if cases[0].binary
                    else {c: camus.LABELS[c] for c in kept}
                ),
                "split": split_record,
                "patients": by_split,
                "train_order": train_order,
                "n_patients": len(cases),
                "skipped": skipped,
                "cases": {c.name: _case_record(c, src) for c in cases},
            }
        )
    return make_report(run, manifest, by_split, skipped)


def _case_record(case: CeusCase, src: Path) -> dict[str, Any]:
    """What the manifest keeps of a case: files, timing and the user's settings."""
    times = case.frame_times if case.frame_times is not None else np.zeros(1)
    steps = np.diff(times)
    return {
        **case.settings,
        "folder": Path(os.path.relpath(case.root, src)).as_posix(),
        "cine": case.cine.name,
        "masks": case.masks.name,
        "n_frames": case.n_frames,
        "fps": float(1 / np.median(steps)) if steps.size else None,
        "frame_times": [round(float(t), 6) for t in times],
        "labelled_frames": case.labelled,
        "height": case.shape[0],
        "width": case.shape[1],
        "row_mm": case.spacing[0],
        "col_mm": case.spacing[1],
    }
