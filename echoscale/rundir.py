"""File names inside a run directory, and the atomic writers and readers for them.

Every stage finds its inputs and places its outputs through this module, so that no
stage builds a path by hand. Each writer writes to a temporary name in the destination
folder and renames it into place, so an interrupted stage leaves the old file or the new
one, never half of one.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DATASET = "dataset"
IMAGES = "images.tif"
MASKS = "masks.tif"
SAMPLES = "samples.csv"
MANIFEST = "manifest.json"
MODELS = "models"
SWEEP = "sweep.csv"
SWEEP_PLAN = "sweep_plan.json"  # the keys of the latest sweep's grid
LAW = "law.json"
LAW_CSV = "law.csv"
LAW_PNG = "law.png"
SELECTION = "selection.json"
MODEL_FILES = {
    "config": "config.json",
    "model": "model.pt",
    "checkpoint": "last.pt",
    "history": "history.csv",
    "metrics": "metrics.json",
    "log": "train.log",
}


def dataset_dir(run: str | Path) -> Path:
    """Return ``RUN/dataset``, where ``prepare`` writes and later stages read."""
    return Path(run) / DATASET


def dataset_paths(run: str | Path) -> dict[str, Path]:
    """Return the paths of a prepared dataset's files, keyed by role."""
    root = dataset_dir(run)
    return {
        "images": root / IMAGES,
        "masks": root / MASKS,
        "samples": root / SAMPLES,
        "manifest": root / MANIFEST,
    }


def model_dir(run: str | Path, key: str) -> Path:
    """Return ``RUN/models/<key>``, where ``train`` writes one model."""
    return Path(run) / MODELS / key


def model_paths(run: str | Path, key: str) -> dict[str, Path]:
    """Return the paths of one trained model's files, keyed by role."""
    root = model_dir(run, key)
    return {role: root / name for role, name in MODEL_FILES.items()}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove(path: Path) -> None:
    """Remove a file, a link or a folder tree; warn when it cannot be removed."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError as err:
        log.warning("could not remove %s: %s", path, err.strerror)


def _remove_stale(path: Path) -> None:
    """Remove temporaries left beside ``path`` by writers that were killed.

    Temporary names carry the writer's process id; those of live processes stay.
    """
    for stale in path.parent.glob(f".{path.name}.*.tmp*"):
        parts = stale.name[len(path.name) + 2 :].split(".")
        pid = int(parts[0]) if parts and parts[0].isdigit() else None
        if pid is None or pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            _remove(stale)
        except PermissionError:
            pass  # another user's live process


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    On an exception the temporary file is removed and ``path`` is left as it was.
    The file gets the permissions the umask gives a new file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path)
    # The temporary name keeps the suffix so that writers choosing a format by
    # extension (nibabel's .nii.gz) still choose the right one.
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}.",
        suffix=".tmp" + "".join(path.suffixes),
        dir=path.parent,
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; swap it in for ``path`` on success.

    Whatever exists at ``path`` is kept until the new folder is complete, and is
    restored if the swap itself fails. Temporaries of killed runs are cleared first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path)
    tmp = Path(
        tempfile.mkdtemp(
            prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent
        )
    )
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists() or path.is_symlink():
        old = path.with_name(f".{path.name}.{os.getpid()}.old.tmp")
        os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        if old is not None:
            os.replace(old, path)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        _remove(old)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON with sorted keys, atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file written by :func:`write_json`."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_csv(
    path: str | Path, rows: Iterable[Mapping[str, Any]], columns: Sequence[str]
) -> None:
    """Write ``rows`` (mappings) as CSV with a header of ``columns``, atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    write_text(path, buf.getvalue())


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """Read a CSV file into a list of dicts of strings."""
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def case_name(path: str | Path) -> str:
    """The name a loop or image goes by: its file name without the extension.

    ``.nii.gz`` counts as one extension. A file named ``cine.*`` (the contrast-case
    layout ``caseNN/cine.tif``) takes its folder's name. ``segment`` names its output
    folders so and ``perfuse`` its case, so that ``compare`` matches the two.
    """
    path = Path(path)
    name = path.name
    stem = name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else path.stem
    if stem.lower() == "cine" and path.resolve().parent.name:
        return path.resolve().parent.name
    return stem
