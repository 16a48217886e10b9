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
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

DATASET = "dataset"
IMAGES = "images.tif"
MASKS = "masks.tif"
SAMPLES = "samples.csv"
MANIFEST = "manifest.json"
MODELS = "models"
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


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name keeps the suffix so that writers choosing a format by
    # extension (nibabel's .nii.gz) still choose the right one.
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp" + "".join(path.suffixes), dir=path.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; swap it in for ``path`` on success.

    A folder that already exists at ``path`` is kept until the new one is complete,
    and is restored if the swap itself fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(
        tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    )
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        if old is not None:
            os.replace(old, path)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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
