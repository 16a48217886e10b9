"""``segment``: label images and cine loops with a trained network, in their geometry.

Each frame is resized to the network's input size as ``prepare`` resized the training
images (bilinear, antialiased, rounded to 0-255), predicted in batches, and the softmax
probabilities are brought back to the frame's own size before the argmax, so masks
keep the input's shape, pixel spacing and frame times. Per input, ``OUT/<name>/``
receives::

    masks.tif | masks.nii.gz   uint8 label values, (H, W) or (T, H, W)
    areas.csv                  frame, time_s, area_mm2_<class> per structure
    segment.json               input, model, classes, geometry, ED and ES frames

ED and ES are the frames of largest and smallest LV cavity area, or, when the network
segments only the myocardium, of largest and smallest area that the myocardium encloses
(its convex hull less itself; the myocardial area itself peaks at end-systole, as the
wall thickens). In a contrast loop, the flashes (found as ``perfuse`` finds them) and
the second after each, when the destroyed myocardium is darkest and the masks least
reliable, are left out of that search. Probabilities are held for one batch at a
time, so a long loop needs memory for its labels, not for its probabilities.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from echoscale import __version__, camus, images, perfusion, rundir
from echoscale.errors import InputError
from echoscale.train import _autocast, load_model, resolve_device, resolve_precision
from echoscale.unet import UNet

log = logging.getLogger(__name__)

FORMATS = ("tif", "nii.gz")
AREAS = "areas.csv"
SUMMARY = "segment.json"
# What a model saved before its config recorded classes and labels is taken to
# segment, by its number of output channels.
FALLBACK_CLASSES = {
    4: ("background", "lv", "myo", "la"),
    2: ("background", "myo"),
}
PHASE_RULES = {
    "lv": "largest and smallest LV cavity area",
    "enclosed": "largest and smallest area enclosed by the myocardium",
}
_CONNECTIVITY = np.ones((3, 3), bool)  # 8-connected: a thin wall touching diagonally
AFTER_FLASH_S = 1.0  # after a flash, frames this long are no candidates for ED/ES
_AFTER_FLASH_FRAMES = 20  # the same without frame times


@dataclass(frozen=True)
class _Input:
    """An input checked before any output is written."""

    path: Path
    name: str


def masks_name(fmt: str) -> str:
    """File name of the masks in ``OUT/<name>/`` for ``fmt`` (``tif`` or ``nii.gz``)."""
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return f"masks.{fmt}"


output_name = rundir.case_name  # OUT/<name>/ of an input


def model_classes(model: UNet, config: Mapping[str, Any]) -> tuple[list, dict]:
    """Class names in output-channel order and the label value of each.

    Models trained before their config recorded ``classes`` and ``labels`` are read
    by their output channel count (4: the CAMUS classes, 2: background and
    myocardium), with a logged warning.

    Returns
    -------
    classes : list of str
        E.g. ``["background", "lv", "myo", "la"]``.
    labels : dict of str to int
        Label value written in masks for each class, e.g. ``{"background": 0, ...}``.

    Raises
    ------
    ValueError
        When the config's classes do not match the network's outputs, or an old
        model has a channel count that says nothing about its classes.
    """
    channels = model.out_channels
    if "classes" in config and "labels" in config:
        classes, labels = list(config["classes"]), dict(config["labels"])
        values = [labels.get(c) for c in classes]
        if len(classes) != channels or not all(
            isinstance(v, int) and 0 <= v <= 255 for v in values
        ):
            raise ValueError(
                f"the config's classes {classes} and labels {labels} do not describe "
                f"the network's {channels} output channels"
            )
        return classes, dict(zip(classes, values, strict=True))
    if channels not in FALLBACK_CLASSES:
        raise ValueError(
            f"the config names no classes and {channels} output channels match "
            "neither CAMUS (4) nor myocardium only (2); retrain with this version"
        )
    classes = list(FALLBACK_CLASSES[channels])
    log.warning(
        "the model's config names no classes; taking its %d output channels as %s",
        channels,
        ", ".join(classes),
    )
    return classes, {c: i for i, c in enumerate(classes)}


def network_size(config: Mapping[str, Any]) -> tuple[int, int]:
    """The network's input size (H, W) from a run's config; ValueError if absent."""
    try:
        height, width = (int(s) for s in config["size"])
    except (KeyError, TypeError, ValueError):
        raise ValueError("the config records no input size [H, W]") from None
    return height, width


def _memory_format(device: torch.device) -> torch.memory_format:
    # training runs channels_last; for inference on the CPU it measured ~10% slower
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def _network_input(
    batch: np.ndarray, size: tuple[int, int], device: torch.device
) -> torch.Tensor:
    """Frames (B, H, W) of 0-255 as the network saw its training images.

    Resized as :func:`echoscale.prepare.resize_image` resized them and rounded to
    whole grey levels, then scaled to 0-1 as training scaled them.
    """
    x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))[:, None]
    x = x.to(device)
    if tuple(x.shape[-2:]) != size:
        x = F.interpolate(
            x, size=size, mode="bilinear", align_corners=False, antialias=True
        )
    x = x.round_().clamp_(0, 255).div_(255)
    return x.contiguous(memory_format=_memory_format(device))


def _to_input_geometry(probs: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Class probabilities (B, K, h, w) resampled bilinearly to (B, K, H, W)."""
    if tuple(probs.shape[-2:]) == shape:
        return probs
    return F.interpolate(
        probs, size=shape, mode="bilinear", align_corners=False, antialias=True
    )


@torch.no_grad()
def predict_labels(
    model: UNet,
    config: Mapping[str, Any],
    frames: np.ndarray,
    *,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
) -> np.ndarray:
    """Label every frame with the network, in the frames' own size.

    Parameters
    ----------
    model : UNet
        In eval mode, on ``device`` (as :func:`echoscale.train.load_model` gives it).
    config : mapping
        The run's config: ``size`` [H, W] of the network's input, and ``classes``
        and ``labels`` (see :func:`model_classes`).
    frames : ndarray, shape (N, H, W)
        Grey levels 0-255, any dtype and any size.
    batch_size : int
        Frames per forward pass; the result does not depend on it.
    device : str or torch.device
        Where the frames are sent: the model's device.
    precision : {"fp32", "bf16"}
        bf16 runs the network under autocast; probabilities are float32.

    Returns
    -------
    ndarray, shape (N, H, W), uint8
        The label value of the most probable class at each pixel.

    Notes
    -----
    The probabilities of one batch, (batch_size, K, H, W) float32, are the largest
    temporary: a loop of any length needs no more.
    """
    frames = np.asarray(frames)
    if frames.ndim != 3:
        raise ValueError(f"frames must be (N, H, W); got shape {frames.shape}")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
    device = torch.device(device)
    size = network_size(config)
    classes, labels = model_classes(model, config)
    lut = torch.tensor([labels[c] for c in classes], dtype=torch.uint8, device=device)

    out = np.empty(frames.shape, np.uint8)
    for start in range(0, len(frames), batch_size):
        batch = frames[start : start + batch_size]
        with _autocast(device, precision):
            logits = model(_network_input(batch, size, device))
        probs = _to_input_geometry(logits.float().softmax(dim=1), frames.shape[1:])
        # classes last: the CPU's argmax over the channel axis measured 6x slower
        best = probs.permute(0, 2, 3, 1).contiguous().argmax(dim=-1)
        out[start : start + len(batch)] = lut[best].cpu().numpy()
    return out


def keep_largest_components(labels: np.ndarray) -> np.ndarray:
    """Keep, per label value and per frame, only the largest connected component.

    Parameters
    ----------
    labels : ndarray, shape (H, W) or (T, H, W)
        A label map; 0 is background.

    Returns
    -------
    ndarray
        A copy in which the smaller pieces of every structure became background.
        Components are 8-connected within a frame; of equal largest ones the first
        in row-major order is kept.
    """
    out = np.array(labels, copy=True)
    frames = out if out.ndim == 3 else out[None]
    for frame in frames:
        for value in np.unique(frame):
            if value == 0:
                continue
            pieces, count = ndimage.label(frame == value, structure=_CONNECTIVITY)
            if count < 2:
                continue
            largest = np.bincount(pieces.ravel())[1:].argmax() + 1
            frame[(pieces > 0) & (pieces != largest)] = 0
    return out


def label_areas(
    labels: np.ndarray, values: Mapping[str, int], spacing: Sequence[float]
) -> dict[str, np.ndarray]:
    """Area in mm^2 of each named structure in each frame.

    Parameters
    ----------
    labels : ndarray, shape (T, H, W)
    values : mapping of str to int
        Structure name to label value (background left out by the caller).
    spacing : (row_mm, col_mm)

    Returns
    -------
    dict of str to ndarray, shape (T,)
        Pixel count times ``row_mm * col_mm``.
    """
    pixel_mm2 = float(spacing[0]) * float(spacing[1])
    return {
        name: (labels == value).sum(axis=(1, 2)) * pixel_mm2
        for name, value in values.items()
    }


def enclosed_areas(
    labels: np.ndarray, value: int, spacing: Sequence[float]
) -> np.ndarray:
    """Per frame, the area (mm^2) the myocardium (``value``) encloses: the cavity."""
    from echoscale.regions import enclosed_area

    return np.array([enclosed_area(frame == value, spacing) for frame in labels])


def flash_frames(frames: np.ndarray, frame_times: np.ndarray | None) -> np.ndarray:
    """Frames of a loop to leave out of the ED/ES search: flashes and what follows.

    Parameters
    ----------
    frames : ndarray, shape (T, H, W)
    frame_times : ndarray, shape (T,), optional
        Seconds; without them :data:`_AFTER_FLASH_FRAMES` frames follow a flash.

    Returns
    -------
    ndarray, shape (T,), bool
        True on the frames of each flash (:func:`echoscale.perfusion.detect_flashes`)
        and on those up to :data:`AFTER_FLASH_S` after its last frame; all False in
        a loop without flashes.
    """
    means = frames.reshape(len(frames), -1).mean(axis=1)
    skip = np.zeros(len(frames), bool)
    index = np.arange(len(frames))
    for run in perfusion.detect_flashes(means, frame_times):
        if frame_times is None:
            end = index <= run[-1] + _AFTER_FLASH_FRAMES
        else:
            end = frame_times <= frame_times[run[-1]] + AFTER_FLASH_S
        skip |= (index >= run[0]) & end
    return skip


def find_ed_es(
    areas: Mapping[str, np.ndarray], skip: np.ndarray | None = None
) -> dict[str, Any]:
    """End-diastolic and end-systolic frames from the structure areas of a loop.

    ED is the frame of largest LV cavity area and ES of smallest; with no LV class,
    the same on the area the myocardium encloses (``enclosed``, from
    :func:`enclosed_areas`): the myocardial area itself peaks at ES, as the wall
    thickens. Ties go to the earliest frame. Frames where ``skip`` (shape (T,),
    bool) is True are no candidates (:func:`flash_frames`), unless it covers every
    frame.

    Returns
    -------
    dict
        ``ed_frame``, ``es_frame`` (0-based, or None) and ``phase_rule`` (the rule
        used, or None): None for a single frame, a loop without LV or myocardium,
        or an area that never changes (logged).
    """
    found = {"ed_frame": None, "es_frame": None, "phase_rule": None}
    structure = next((s for s in PHASE_RULES if s in areas), None)
    if structure is None:
        return found
    curve = np.asarray(areas[structure], np.float64)
    if skip is not None and not skip.all():
        curve = np.where(skip, np.nan, curve)
    if curve.size < 2:
        return found
    if np.nanmax(curve) == np.nanmin(curve):
        log.warning(
            "the %s area is %g mm^2 in every frame: no ED or ES frame",
            structure,
            np.nanmax(curve),
        )
        return found
    return {
        "ed_frame": int(np.nanargmax(curve)),
        "es_frame": int(np.nanargmin(curve)),
        "phase_rule": PHASE_RULES[structure],
    }


def _read(path: Path, fps: float | None) -> images.Image:
    """Read an input whose spacing the areas depend on (none assumed)."""
    with images.spacing_required():
        return images.read_image(path, fps=fps)


def _check_input(path: Path, fmt: str, fps: float | None) -> _Input:
    """Read one input whole and check it; raise InputError naming it."""
    image = _read(path, fps)
    if min(image.array.shape[-2:]) < 2 or image.array.shape[0] < 1:
        raise InputError(
            f"expected an image or frames of at least 2 x 2 pixels, got shape "
            f"{image.array.shape}",
            path,
        )
    if image.array.dtype.kind not in "uif":
        raise InputError(
            f"expected grey levels, got pixels of type {image.array.dtype}", path
        )
    camus.check_image_values(image.array, path)
    times = image.frame_times
    if fmt == "nii.gz" and times is not None and len(times) > 1:
        steps = np.diff(times)
        if not np.allclose(steps, steps[0], rtol=1e-4) or steps[0] <= 0:
            raise InputError(
                "the frame times are unevenly spaced and NIfTI stores one frame "
                "interval; use --format tif to keep them",
                path,
            )
    return _Input(path, output_name(path))


def _check_inputs(
    inputs: Sequence[str | Path], out: str | Path, fmt: str, fps: float | None = None
) -> list[_Input]:
    """Check every input, and that their output folders are distinct and free.

    Raises
    ------
    InputError
        Naming the first unreadable or unsuitable input, or listing every output
        name that two inputs share.
    """
    if not inputs:
        raise ValueError("give at least one input image or cine")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError("the output folder is a file", out)
    checked = [_check_input(Path(p), fmt, fps) for p in inputs]
    by_name: dict[str, list[str]] = {}
    for item in checked:
        by_name.setdefault(item.name, []).append(str(item.path))
    shared = {n: ps for n, ps in by_name.items() if len(ps) > 1}
    if shared:
        listed = "; ".join(f"{n}: {', '.join(ps)}" for n, ps in sorted(shared.items()))
        raise InputError(
            f"inputs would share output folders ({listed}); rename them or segment "
            "them into separate --out folders",
            out,
        )
    for item in checked:
        target = out / item.name
        if target.exists() and not target.is_dir():
            raise InputError(f"a file stands where {item.name}/ would go", target)
    return checked


def _area_rows(
    areas: Mapping[str, np.ndarray], times: np.ndarray | None, n_frames: int
) -> list[dict[str, Any]]:
    rows = []
    for t in range(n_frames):
        row: dict[str, Any] = {
            "frame": t,
            "time_s": "" if times is None else f"{times[t]:.6g}",
        }
        row.update({f"area_mm2_{n}": float(a[t]) for n, a in areas.items()})
        rows.append(row)
    return rows


def _frame_time(times: np.ndarray | None, frame: int | None) -> float | None:
    return None if times is None or frame is None else round(float(times[frame]), 6)


def _load(model_path: str | Path, device: str, precision: str):
    """The model ready to predict: (model, config, its file, device, precision)."""
    torch_device = resolve_device(device)
    precision = resolve_precision(precision, torch_device)
    model_file = Path(model_path)
    if model_file.is_dir():
        model_file = model_file / rundir.MODEL_FILES["model"]
    model, config = load_model(model_file, torch_device)
    try:
        network_size(config)
        model_classes(model, config)
    except ValueError as err:
        raise InputError(str(err), model_file) from err
    model = model.to(memory_format=_memory_format(torch_device))
    return model, config, model_file, torch_device, precision


def segment_inputs(
    model_path: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    fmt: str = "tif",
    keep_largest: bool = False,
    batch_size: int = 16,
    device: str = "auto",
    precision: str = "auto",
    fps: float | None = None,
) -> list[dict[str, Any]]:
    """Segment images and cine loops into ``OUT/<name>/`` in their own geometry.

    Parameters
    ----------
    model_path : str or Path
        A ``models/<key>/`` folder or its ``model.pt``.
    inputs : sequence of str or Path
        Stills (H, W) or cines (T, H, W) of grey levels 0-255 with a pixel spacing,
        in any format :func:`echoscale.images.read_image` reads.
    out : str or Path
        Output folder; each input writes ``OUT/<name>/`` (see :func:`output_name`).
    fmt : {"tif", "nii.gz"}
        Format of the masks.
    keep_largest : bool
        Keep only the largest connected component of each structure per frame.
    batch_size : int
        Frames per forward pass.
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``cuda:i``.
    precision : {"auto", "fp32", "bf16"}
        ``auto`` is bf16 where the hardware has it.
    fps : float, optional
        Frame rate for cines whose file holds no timing.

    Returns
    -------
    list of dict
        One record per input: ``name``, ``input``, ``masks``, ``areas``, ``summary``
        (paths), ``n_frames``, ``ed_frame`` and ``es_frame``.

    Raises
    ------
    InputError
        A damaged model, or an unreadable, unsuitable or clashing input, always
        before anything is written.
    """
    masks_file = masks_name(fmt)
    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"--precision must be auto, fp32 or bf16, got {precision!r}")
    model, config, model_file, torch_device, precision = _load(
        model_path, device, precision
    )
    size = network_size(config)
    classes, labels = model_classes(model, config)
    checked = _check_inputs(inputs, out, fmt, fps)

    structures = {c: labels[c] for c in classes if c != "background"}
    records = []
    for item in checked:
        image = _read(item.path, fps)
        frames = image.array if image.is_cine else image.array[None]
        masks = predict_labels(
            model,
            config,
            frames,
            batch_size=batch_size,
            device=torch_device,
            precision=precision,
        )
        if keep_largest:
            masks = keep_largest_components(masks)
        areas = label_areas(masks, structures, image.spacing)
        phases = find_ed_es({})
        skip = np.zeros(len(frames), bool)
        if image.is_cine:
            timing = dict(areas)
            if "lv" not in structures and "myo" in structures:
                timing["enclosed"] = enclosed_areas(
                    masks, structures["myo"], image.spacing
                )
            skip = flash_frames(frames, image.frame_times)
            phases = find_ed_es(timing, skip)
        folder = Path(out) / item.name
        paths = {
            "masks": folder / masks_file,
            "areas": folder / AREAS,
            "summary": folder / SUMMARY,
        }
        images.write_image(
            paths["masks"],
            masks if image.is_cine else masks[0],
            image.spacing,
            image.frame_times,
        )
        columns = ["frame", "time_s", *(f"area_mm2_{c}" for c in structures)]
        rows = _area_rows(areas, image.frame_times, len(masks))
        rundir.write_csv(paths["areas"], rows, columns)
        summary = {
            "input": str(item.path.resolve()),
            "model": str(model_file.resolve()),
            "model_key": config.get("key"),
            "network_size": list(size),
            "classes": classes,
            "labels": labels,
            "shape": list(image.array.shape),
            "spacing_mm": list(image.spacing),
            "n_frames": image.n_frames,
            "frame_times_known": image.frame_times is not None,
            **phases,
            "frames_not_searched_for_ed_es": int(skip.sum()),
            "ed_time_s": _frame_time(image.frame_times, phases["ed_frame"]),
            "es_time_s": _frame_time(image.frame_times, phases["es_frame"]),
            "keep_largest": keep_largest,
            "precision": precision,
            "masks": masks_file,
            "areas": AREAS,
            "echoscale_version": __version__,
        }
        rundir.write_json(paths["summary"], summary)
        log.info(
            "segmented %s: %d frames, ED %s, ES %s",
            item.name,
            image.n_frames,
            phases["ed_frame"],
            phases["es_frame"],
        )
        records.append(
            {
                "name": item.name,
                "input": item.path,
                **paths,
                "n_frames": image.n_frames,
                "ed_frame": phases["ed_frame"],
                "es_frame": phases["es_frame"],
            }
        )
    return records


def _camus_values(classes: Sequence[str]) -> np.ndarray:
    """Lookup from class index to the label written for comparison.

    CAMUS values (1 LV, 2 myocardium, 3 LA) whatever subset the dataset kept, so that
    compare reads the structures right; a myocardium-only dataset keeps 0/1.
    """
    if list(classes) == ["background", "myo"]:
        return np.array([0, 1], np.uint8)
    return np.array([camus.LABELS.get(c, 0) for c in classes], np.uint8)


def segment_dataset(
    model_path: str | Path,
    run: str | Path,
    out: str | Path,
    *,
    split: str = "test",
    batch_size: int = 16,
    device: str = "auto",
    precision: str = "auto",
) -> tuple[Path, Path]:
    """Predict one split of ``RUN/dataset`` and write it beside its reference masks.

    Writes ``OUT/predictions/<id>.tif`` and ``OUT/reference/<id>_gt.tif``, one file per
    sample at the dataset's resolution with the sample's pixel spacing, ready for
    :func:`echoscale.compare.compare`; returns the two folders.
    """
    from echoscale.dataset import load_dataset

    data = load_dataset(run)
    indices = data.indices(split)
    if not len(indices):
        raise InputError(f"the dataset has no {split} samples", data.root)
    model, config, model_file, torch_device, precision = _load(
        model_path, device, precision
    )
    classes = list(data.manifest["classes"])
    model_names, model_labels = model_classes(model, config)
    if list(model_names) != classes:
        raise InputError(
            f"the model segments {model_names} but the dataset holds {classes}",
            model_file,
        )
    predicted = predict_labels(
        model,
        config,
        np.asarray(data.images[indices]),
        batch_size=batch_size,
        device=torch_device,
        precision=precision,
    )
    stored = {v: k for k, v in model_labels.items()}
    to_index = np.zeros(256, np.uint8)
    for value, name in stored.items():
        to_index[value] = classes.index(name)
    lut = _camus_values(classes)
    folders = Path(out) / "predictions", Path(out) / "reference"
    # whole folders are swapped in, so no file of an earlier split or model lingers
    with rundir.atomic_dir(folders[0]) as pred_dir:
        with rundir.atomic_dir(folders[1]) as ref_dir:
            for k, i in enumerate(indices):
                row = data.samples[i]
                spacing = (float(row["row_mm"]), float(row["col_mm"]))
                pred = lut[to_index[predicted[k]]]
                images.write_image(pred_dir / f"{row['id']}.tif", pred, spacing)
                ref = lut[np.asarray(data.masks[i])]
                images.write_image(ref_dir / f"{row['id']}_gt.tif", ref, spacing)
    return folders
