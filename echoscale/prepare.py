"""``prepare``: turn a source dataset into ``RUN/dataset`` (stacks, table, manifest).

Splits are always by patient. Every input is checked before the first sample is written,
and the dataset folder is swapped in only once complete, so a damaged input never leaves
a half-written dataset behind.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from echoscale import camus, images, rundir
from echoscale.dataset import SPLITS, write_dataset
from echoscale.errors import InputError

log = logging.getLogger(__name__)

CAMUS_CLASSES = ("lv", "myo", "la")
SPLIT_METHODS = ("auto", "official", "folds", "random")


@dataclass
class PrepareReport:
    """What ``prepare`` did: counts, skipped patients and the manifest written."""

    dataset: Path
    n_patients: int
    n_samples: int
    samples_per_split: dict[str, int]
    patients_per_split: dict[str, int]
    skipped: list[dict[str, str]] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)


def parse_size(text: str | int | Sequence[int]) -> tuple[int, int]:
    """Parse ``256``, ``"256"`` or ``"256x192"`` (H x W) into (H, W).

    Raises
    ------
    ValueError
        When the text is not one or two positive whole numbers of at least 16.
    """
    if isinstance(text, int):
        parts = [text]
    elif isinstance(text, str):
        if not re.fullmatch(r"\s*\d+\s*(x\s*\d+\s*)?", text):
            raise ValueError(
                f"size must be N or HxW (e.g. 256 or 256x192), got {text!r}"
            )
        parts = [int(p) for p in text.split("x")]
    else:
        parts = [int(p) for p in text]
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 16 or max(parts) > 4096:
        raise ValueError(f"size must be from 16 to 4096 pixels a side, got {text!r}")
    return parts[0], parts[1]


def parse_classes(
    text: str | Sequence[str], known: Sequence[str] = CAMUS_CLASSES
) -> tuple:
    """Parse ``"lv,myo,la"`` into a tuple of class names, in the order of ``known``."""
    names = [
        t.strip().lower() for t in (text.split(",") if isinstance(text, str) else text)
    ]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(
            f"classes must be a comma-separated subset of {','.join(known)}, "
            f"got {text!r}"
        )
    return tuple(n for n in known if n in names)


def label_table(classes: Sequence[str]) -> np.ndarray:
    """Return a lookup table from CAMUS labels to stored labels.

    Kept classes are numbered 1, 2, ... in CAMUS order; dropped ones become background.
    With all three kept the labels are unchanged.
    """
    lut = np.zeros(256, np.uint8)
    for new, name in enumerate(classes, start=1):
        lut[camus.LABELS[name]] = new
    return lut


def resize_image(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a 2D image to ``size`` (H, W) bilinearly and store it as uint8.

    Downsizing is antialiased so that speckle does not alias; values are rounded and
    clipped to 0-255.
    """
    x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(
            x, size=size, mode="bilinear", align_corners=False, antialias=True
        )
    return np.clip(np.rint(x[0, 0].numpy()), 0, 255).astype(np.uint8)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a label mask to ``size`` (H, W) by nearest neighbour: labels never blend.

    Each output pixel takes the input pixel under its centre.
    """
    h, w = mask.shape
    rows = np.minimum(((np.arange(size[0]) + 0.5) * h / size[0]).astype(int), h - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * w / size[1]).astype(int), w - 1)
    return np.ascontiguousarray(mask[rows][:, cols])


def assign_random(
    qualities: Mapping[str, str], val: float, test: float, seed: int
) -> dict[str, str]:
    """Split patients at random, stratified by image quality, reproducibly for a seed.

    Each quality stratum gives its share of validation and test patients; the rounding
    remainders go to the strata with the largest remainders, so the totals are
    ``round(val * N)`` and ``round(test * N)`` (at least one each when asked for).

    Parameters
    ----------
    qualities : mapping of str to str
        Patient name to image quality (Good, Medium, Poor).
    val, test : float
        Fractions of patients for validation and test, each in [0, 1).
    seed : int
        Seed of the shuffle within each stratum.
    """
    names = sorted(qualities)
    n = len(names)
    totals = {}
    for split, frac in (("val", val), ("test", test)):
        if not 0 <= frac < 1:
            raise ValueError(f"--{split} must be a fraction in [0, 1), got {frac}")
        if split == "test" and frac == 0:
            raise ValueError("--test must be above 0: the test set would be empty")
        totals[split] = max(1, round(frac * n)) if frac > 0 else 0
    if n - totals["val"] - totals["test"] < 1:
        raise InputError(
            f"too few patients for the split: {n} patients cannot give "
            f"{totals['val']} validation and {totals['test']} test patients and still "
            "leave one for training"
        )
    if seed < 0:
        raise ValueError(f"--seed must be 0 or more, got {seed}")
    rng = np.random.default_rng(seed)
    strata: dict[str, list[str]] = {}
    for name in names:
        strata.setdefault(qualities[name], []).append(name)
    order = {
        q: [members[i] for i in rng.permutation(len(members))]
        for q, members in sorted(strata.items())
    }
    assignment = {name: "train" for name in names}
    left = {q: list(m) for q, m in order.items()}
    for split in ("test", "val"):
        pool = sum(len(m) for m in left.values())
        if not totals[split]:
            continue
        shares = {q: totals[split] * len(m) / pool for q, m in left.items()}
        counts = {q: min(math.floor(s), len(left[q])) for q, s in shares.items()}
        spare = totals[split] - sum(counts.values())
        for q in sorted(shares, key=lambda q: (counts[q] - shares[q], q)):
            if spare <= 0:
                break
            if counts[q] < len(left[q]):
                counts[q] += 1
                spare -= 1
        for q, k in counts.items():
            for name in left[q][:k]:
                assignment[name] = split
            left[q] = left[q][k:]
    return assignment


def assign_from_lists(
    patients: Sequence[str], lists: Mapping[str, Sequence[str]], where: str
) -> dict[str, str]:
    """Split patients by given train / val / test lists.

    Names listed but absent are ignored (a partial download); a patient present but in
    no list, or in two lists, is an error.
    """
    seen: dict[str, str] = {}
    for split, names in lists.items():
        for name in names:
            if name in seen and seen[name] != split:
                raise InputError(
                    f"{name} is in both the {seen[name]} and {split} lists", where
                )
            seen[name] = split
    unlisted = [p for p in patients if p not in seen]
    if unlisted:
        raise InputError(
            f"{len(unlisted)} patients are in no split list (first: "
            f"{', '.join(unlisted[:5])}); use --split random or complete the lists",
            where,
        )
    return {p: seen[p] for p in patients}


def read_name_list(path: str | Path) -> list[str]:
    """Read a list of patient (or case) names, one per line; ``#`` starts a comment."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read the list: {err}", path) from err
    names = [line.split("#")[0].strip() for line in text.splitlines()]
    bad = [n for n in names if n and len(n.split()) > 1]
    if bad:
        raise InputError(f"one name per line expected, got {bad[0]!r}", path)
    return [n for n in names if n]


def read_fold_lists(folder: str | Path, fold: int) -> dict[str, list[str]]:
    """Read cross-validation folds: ``fold`` is the test set, the next one validation.

    ``folder`` holds one text file per fold (``fold1.txt`` ... ``foldK.txt``, any names
    ending in a fold number), listing patients one per line.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("the fold lists folder does not exist", folder)
    files = {}
    for path in folder.glob("*.txt"):
        match = re.search(r"(\d+)\.txt$", path.name)
        if match:
            files[int(match.group(1))] = path
    if len(files) < 3:
        raise InputError(
            f"needs at least 3 fold lists (foldN.txt), found {len(files)}", folder
        )
    numbers = sorted(files)
    if fold not in files:
        raise InputError(f"no list for fold {fold}; folds found: {numbers}", folder)
    val_fold = numbers[(numbers.index(fold) + 1) % len(numbers)]
    names: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for k in numbers:
        split = "test" if k == fold else "val" if k == val_fold else "train"
        names[split] += read_name_list(files[k])
    return names


def _check_split_sizes(assignment: Mapping[str, str], method: str) -> None:
    counts = {s: sum(v == s for v in assignment.values()) for s in SPLITS}
    empty = [s for s in ("train", "test") if counts[s] == 0]
    if empty:
        raise InputError(
            f"too few patients for the {method} split: the {' and '.join(empty)} set "
            f"would be empty ({counts['train']} train, {counts['val']} val, "
            f"{counts['test']} test)"
        )


def choose_split(
    qualities: Mapping[str, str],
    method: str,
    *,
    lists: Mapping[str, Path] | None,
    fold: int | None,
    fold_lists: str | Path | None,
    val: float,
    test: float,
    seed: int,
) -> tuple[dict[str, str], dict[str, Any]]:
    """Assign each patient to train, val or test; return the assignment and record.

    ``lists`` are the ``database_split`` lists found beside the source (or None), used
    by the ``official`` method and by ``auto`` when present.
    """
    patients = sorted(qualities)
    record: dict[str, Any] = {"method": method}
    if method not in SPLIT_METHODS:
        raise ValueError(
            f"split must be one of {', '.join(SPLIT_METHODS)}, got {method!r}"
        )
    if method in ("auto", "official"):
        if lists is None and method == "official":
            raise InputError(
                "no database_split/subgroup_*.txt lists found in the source folder or "
                "two folders up; use --split random or --split folds"
            )
        method = "official" if lists is not None else "random"
        record["method"] = method
        if lists is not None:
            names = {k: read_name_list(p) for k, p in lists.items()}
            assignment = assign_from_lists(patients, names, str(lists["train"].parent))
            record["lists"] = {k: str(p) for k, p in lists.items()}
    if method != "folds" and (fold is not None or fold_lists is not None):
        raise ValueError("--fold and --fold-lists need --split folds")
    if method == "folds":
        if fold is None or fold_lists is None:
            raise ValueError("--split folds needs --fold K and --fold-lists DIR")
        names = read_fold_lists(fold_lists, fold)
        assignment = assign_from_lists(patients, names, str(fold_lists))
        record.update(fold=fold, fold_lists=str(Path(fold_lists).resolve()))
    if method == "random":
        assignment = assign_random(qualities, val, test, seed)
        record.update(seed=seed, val=val, test=test, stratified_by="image quality")
    _check_split_sizes(assignment, method)
    return assignment, record


def order_splits(
    assignment: Mapping[str, str], seed: int
) -> tuple[dict[str, list[str]], list[str]]:
    """Return the sorted patients of each split and the fixed training-patient order.

    The order is one seeded shuffle of the training patients, owned by the dataset:
    every training fraction takes a prefix of it, so smaller subsets nest inside
    larger ones.
    """
    if seed < 0:
        raise ValueError(f"--seed must be 0 or more, got {seed}")
    by_split = {s: sorted(p for p, v in assignment.items() if v == s) for s in SPLITS}
    shuffle = np.random.default_rng(seed).permutation(len(by_split["train"]))
    return by_split, [by_split["train"][i] for i in shuffle]


def sample_row(
    *,
    id: str,
    patient: str,
    split: str,
    shape: tuple[int, int],
    spacing: tuple[float, float],
    size: tuple[int, int],
    source: str,
    view: str = "",
    phase: str = "",
    frame: int | str = "",
    n_frames: int | str = "",
    time_s: float | None = None,
    quality: str = "",
) -> dict[str, Any]:
    """Return one ``samples.csv`` row, with the spacing after resizing to ``size``."""
    h, w = shape
    return {
        "id": id,
        "patient": patient,
        "view": view,
        "phase": phase,
        "frame": frame,
        "n_frames": n_frames,
        "time_s": "" if time_s is None else f"{time_s:.6g}",
        "split": split,
        "quality": quality,
        "orig_height": h,
        "orig_width": w,
        "orig_row_mm": f"{spacing[0]:.6g}",
        "orig_col_mm": f"{spacing[1]:.6g}",
        "row_mm": f"{spacing[0] * h / size[0]:.6g}",
        "col_mm": f"{spacing[1] * w / size[1]:.6g}",
        "source": source,
    }


def make_report(
    run: str | Path,
    manifest: Mapping[str, Any],
    by_split: Mapping[str, Sequence[str]],
    skipped: list[dict[str, str]],
) -> PrepareReport:
    """Package what a prepare wrote into a :class:`PrepareReport`."""
    return PrepareReport(
        dataset=rundir.dataset_dir(run),
        n_patients=sum(len(v) for v in by_split.values()),
        n_samples=manifest["n_samples"],
        samples_per_split=manifest["samples_per_split"],
        patients_per_split={s: len(v) for s, v in by_split.items()},
        skipped=skipped,
        manifest=dict(manifest),
    )


def _scan_all(
    src: Path, sequences: bool, skip_incomplete: bool
) -> tuple[list[camus.CamusPatient], list[dict[str, str]]]:
    """Scan and deeply check every patient; collect or raise the problems."""
    kept, skipped = [], []
    for folder in camus.find_patient_dirs(src):
        try:
            patient = camus.scan_patient(folder, sequences=sequences)
            camus.check_patient(patient)
        except InputError as err:
            if not skip_incomplete:
                raise InputError(
                    f"{err.message}; --skip-incomplete prepares the other patients",
                    err.path,
                ) from err
            skipped.append(skip_record(folder, src, err))
            continue
        kept.append(patient)
    if not kept:
        raise InputError("no usable patient left after skipping the damaged ones", src)
    if sequences:
        lacking = [
            f"{p.name} {v.view}"
            for p in kept
            for v in p.views.values()
            if v.sequence is None or v.sequence_masks is None
        ]
        if lacking:
            log.warning(
                "%d of %d views have no sequence images or masks to add (first: %s)",
                len(lacking),
                2 * len(kept),
                lacking[0],
            )
    return kept, skipped


def skip_record(folder: Path, src: Path, err: InputError) -> dict[str, str]:
    """Log a skipped patient or case; return its manifest entry.

    The reason names files relative to the source, so the manifest does not depend
    on how the source path was typed.
    """
    where = Path(os.path.abspath(err.path or folder))
    try:
        where = where.relative_to(os.path.abspath(src))
    except ValueError:
        pass
    log.warning("skipping %s: %s: %s", folder.name, where, err.message)
    return {"patient": folder.name, "reason": f"{where}: {err.message}"}


def check_destination(src: Path, run: Path) -> None:
    """Refuse a run directory inside the source: prepare never writes into its input."""
    src, run = src.resolve(), Path(run).resolve()
    if run == src or src in run.parents:
        raise InputError(
            f"the run directory {run} lies inside the source folder; choose one "
            "outside it, so that the source data is never written to",
            src,
        )


def _view_samples(cam: camus.CamusView, sequences: bool):
    """Yield (id suffix, phase, frame, image, mask, spacing, source) for one view.

    ``frame`` is the 0-based index into the view's (half) sequence.
    """
    info = cam.info
    for phase in camus.PHASES:
        frame = info.ed - 1 if phase == "ED" else info.es - 1
        image = images.read_image(cam.images[phase])
        mask = images.read_image(cam.masks[phase]).array
        yield (
            phase,
            phase,
            frame,
            image.array,
            mask,
            image.spacing,
            cam.images[phase].name,
        )
    if not sequences or cam.sequence is None or cam.sequence_masks is None:
        return
    cine = images.read_image(cam.sequence)
    camus.check_image_values(cine.array, cam.sequence)
    cine_masks = images.read_image(cam.sequence_masks).array
    for t in range(len(cine.array)):
        # ED and ES are samples already (bit-identical images); empty masks: unlabelled
        if t in (info.ed - 1, info.es - 1) or not cine_masks[t].any():
            continue
        yield (
            f"t{t:02d}",
            "",
            t,
            cine.array[t],
            cine_masks[t],
            cine.spacing,
            cam.sequence.name,
        )


def prepare_camus(
    src: str | Path,
    run: str | Path,
    *,
    size: tuple[int, int] = (256, 256),
    classes: Sequence[str] = CAMUS_CLASSES,
    sequences: bool = False,
    split: str = "auto",
    fold: int | None = None,
    fold_lists: str | Path | None = None,
    val: float = 0.1,
    test: float = 0.1,
    seed: int = 0,
    skip_incomplete: bool = False,
) -> PrepareReport:
    """Prepare a CAMUS download (either release) into ``RUN/dataset``.

    Parameters
    ----------
    src : str or Path
        Folder holding ``patientNNNN/`` folders (directly or up to two levels down).
    run : str or Path
        Run directory; ``RUN/dataset`` is replaced only once the new one is complete.
    size : tuple of int
        (H, W) of the stored images: bilinear (antialiased) for images, nearest for
        masks.
    classes : sequence of str
        Classes kept, a subset of ``lv``, ``myo``, ``la``; the others become background.
    sequences : bool
        Also add the (half) sequence frames that have masks (other than ED and ES).
    split : {"auto", "official", "folds", "random"}
        ``auto`` uses the release's ``database_split`` lists when present, else random.
    fold, fold_lists
        For ``split="folds"``: the test fold, and the folder of ``foldN.txt`` lists.
    val, test : float
        For ``split="random"``: fractions of patients, stratified by image quality.
    seed : int
        Seed of the random split and of the training-patient order.
    skip_incomplete : bool
        Skip incomplete or damaged patients (reported) instead of stopping.

    Returns
    -------
    PrepareReport

    Raises
    ------
    InputError
        For missing, damaged or inconsistent input, or too few patients for the split,
        always before anything is written.
    """
    src = Path(src)
    size = parse_size(size)
    classes = parse_classes(classes)
    check_destination(src, run)

    patients, skipped = _scan_all(src, sequences, skip_incomplete)
    qualities = {p.name: p.quality for p in patients}
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
    lut = label_table(classes)
    upper_bound = sum(
        2 + (cam.info.n_frames if cam.sequence is not None else 0)
        for p in patients
        for cam in p.views.values()
    )

    with write_dataset(run, size, upper_bound) as writer:
        for number, patient in enumerate(patients, start=1):
            for view, cam in patient.views.items():
                for item in _view_samples(cam, sequences):
                    suffix, phase, frame, image, mask, spacing, source = item
                    rate = cam.info.frame_rate
                    row = sample_row(
                        id=f"{patient.name}_{view}_{suffix}",
                        patient=patient.name,
                        split=assignment[patient.name],
                        shape=image.shape,
                        spacing=spacing,
                        size=size,
                        source=source,
                        view=view,
                        phase=phase,
                        frame=frame,
                        n_frames=cam.info.n_frames,
                        time_s=frame / rate if rate else None,
                        quality=cam.info.quality,
                    )
                    writer.add(
                        resize_image(image, size),
                        resize_mask(lut[mask.astype(np.uint8)], size),
                        row,
                    )
            log.info("prepared %s (%d/%d)", patient.name, number, len(patients))
        release = {"nifti": "camus-2023-nifti", "mhd": "camus-2019-mhd"}
        manifest = writer.finish(
            {
                "source": str(src.resolve()),
                "dataset": "camus",
                "release": sorted({release[p.release] for p in patients}),
                "classes": ["background", *classes],
                "labels": {"background": 0, **{c: i for i, c in enumerate(classes, 1)}},
                "source_labels": {c: camus.LABELS[c] for c in classes},
                "sequences": sequences,
                "split": split_record,
                "patients": by_split,
                "train_order": train_order,
                "n_patients": len(patients),
                "skipped": skipped,
            }
        )

    return make_report(run, manifest, by_split, skipped)
