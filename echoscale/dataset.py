"""The prepared dataset: ``RUN/dataset/``, its image and mask stacks, table, manifest.

``prepare`` writes it through :class:`DatasetWriter`, which streams samples to disk one
at a time into a temporary folder and swaps the folder in only when everything is
written, so a failed prepare never leaves half a dataset. Later stages read it with
:func:`load_dataset`, which memory-maps the stacks instead of loading them.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from echoscale import __version__, rundir
from echoscale.errors import InputError

log = logging.getLogger(__name__)

SAMPLE_COLUMNS = (
    "index",
    "id",
    "patient",
    "view",
    "phase",
    "frame",
    "n_frames",
    "time_s",
    "split",
    "quality",
    "orig_height",
    "orig_width",
    "orig_row_mm",
    "orig_col_mm",
    "row_mm",
    "col_mm",
    "source",
)
SPLITS = ("train", "val", "test")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Return the hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class DatasetWriter:
    """Append samples to the image and mask stacks of a dataset folder being written.

    Made by :func:`write_dataset`, which owns the folder; use :meth:`add` per sample and
    :meth:`finish` once.
    """

    def __init__(self, folder: Path, size: tuple[int, int], n_samples: int) -> None:
        self.folder = folder
        self.size = (int(size[0]), int(size[1]))
        self.rows: list[dict[str, Any]] = []
        self.finished = False
        bigtiff = n_samples * self.size[0] * self.size[1] > 2**31 - 2**24
        self._writers = {
            key: tifffile.TiffWriter(folder / name, bigtiff=bigtiff)
            for key, name in (("images", rundir.IMAGES), ("masks", rundir.MASKS))
        }

    def add(self, image: np.ndarray, mask: np.ndarray, row: Mapping[str, Any]) -> None:
        """Append one sample: uint8 image and mask of the stored size, and its row."""
        if image.shape != self.size or mask.shape != self.size:
            raise ValueError(
                f"sample {row.get('id')}: image {image.shape} and mask {mask.shape} "
                f"must both be {self.size}"
            )
        if image.dtype != np.uint8 or mask.dtype != np.uint8:
            raise TypeError("images and masks are stored as uint8")
        for key, array in (("images", image), ("masks", mask)):
            # contiguous pages of one shape make the file one memory-mappable series
            self._writers[key].write(
                array, contiguous=True, photometric="minisblack", metadata=None
            )
        self.rows.append({**row, "index": len(self.rows)})

    def close(self) -> None:
        """Close the stacks; safe to call twice."""
        for writer in self._writers.values():
            writer.close()
        self._writers = {}

    def finish(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Close the stacks and write ``samples.csv`` and ``manifest.json``.

        Returns the manifest as written: ``manifest`` with the size, counts, checksums
        and echoscale version added.
        """
        self.close()
        rundir.write_csv(self.folder / rundir.SAMPLES, self.rows, SAMPLE_COLUMNS)
        full = {
            **manifest,
            "echoscale_version": __version__,
            "size": list(self.size),
            "n_samples": len(self.rows),
            "samples_per_split": {
                s: sum(r["split"] == s for r in self.rows) for s in SPLITS
            },
            "checksums": {
                name: sha256_file(self.folder / name)
                for name in (rundir.IMAGES, rundir.MASKS, rundir.SAMPLES)
            },
        }
        rundir.write_json(self.folder / rundir.MANIFEST, full)
        self.finished = True
        return full


@contextlib.contextmanager
def write_dataset(
    run: str | Path, size: tuple[int, int], n_samples: int
) -> Iterator[DatasetWriter]:
    """Write a new ``RUN/dataset`` through a :class:`DatasetWriter`.

    The samples stream into a temporary folder beside the destination, which replaces
    any existing dataset only after :meth:`DatasetWriter.finish` and a clean exit. On an
    exception, or without ``finish``, the destination is left as it was.

    Parameters
    ----------
    run : str or Path
        The run directory.
    size : tuple of int
        (H, W) of every stored image and mask.
    n_samples : int
        How many samples will be added; stacks past 2 GiB are written as BigTIFF.
    """
    with rundir.atomic_dir(rundir.dataset_dir(run)) as tmp:
        writer = DatasetWriter(tmp, size, n_samples)
        try:
            yield writer
        finally:
            writer.close()
        if not writer.finished:
            raise RuntimeError("the dataset was not finished; nothing was written")
        _check_replacement(Path(run), tmp)


def _check_replacement(run: Path, new: Path) -> None:
    """Refuse to change the data under a run's trained models.

    Preparing again with the same inputs and settings writes the same stacks (same
    checksums) and is allowed; anything else would leave the models, and the sweep
    and laws built on them, describing data the run no longer holds.
    """
    old = rundir.dataset_dir(run) / rundir.MANIFEST
    models = run / rundir.MODELS
    if not old.is_file() or not models.is_dir() or not any(models.iterdir()):
        return
    try:
        before = rundir.read_json(old).get("checksums")
    except ValueError:
        return  # a damaged manifest protects nothing; replace it
    if before != rundir.read_json(new / rundir.MANIFEST).get("checksums"):
        raise InputError(
            "holds models trained on a dataset prepared from other inputs or with "
            "other settings; preparing again would change the data under them: "
            "prepare into a new run directory, or remove its models/ first",
            run,
        )


@dataclass
class Dataset:
    """A prepared dataset, with its stacks memory-mapped.

    Attributes
    ----------
    images, masks : ndarray, shape (N, H, W), uint8
        Read-only memory maps of the stacks.
    samples : list of dict
        One row of ``samples.csv`` per sample, in stack order (values as text).
    manifest : dict
        The contents of ``manifest.json``.
    """

    root: Path
    images: np.ndarray = field(repr=False)
    masks: np.ndarray = field(repr=False)
    samples: list[dict[str, str]] = field(repr=False)
    manifest: dict[str, Any] = field(repr=False)

    def indices(self, split: str) -> np.ndarray:
        """Return the stack indices of one split's samples."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        return np.array(
            [i for i, r in enumerate(self.samples) if r["split"] == split], int
        )

    def patients(self, split: str) -> list[str]:
        """Return the sorted patient names of one split."""
        return sorted({self.samples[i]["patient"] for i in self.indices(split)})


def load_dataset(run: str | Path, *, verify: bool = False) -> Dataset:
    """Open ``RUN/dataset`` written by ``prepare``, memory-mapping its stacks.

    Parameters
    ----------
    run : str or Path
        The run directory.
    verify : bool
        Also check the stacks against the manifest's SHA-256 checksums (reads them
        whole). The sample table is always checked.

    Raises
    ------
    InputError
        When a file is missing or damaged, or the stacks, table and manifest disagree.
    """
    paths = rundir.dataset_paths(run)
    for path in paths.values():
        if not path.is_file():
            raise InputError(
                f"{path.name} is missing; run 'echoscale prepare' first", path.parent
            )
    try:
        manifest = rundir.read_json(paths["manifest"])
        sums = manifest["checksums"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise InputError(f"not a dataset manifest ({err})", paths["manifest"]) from err
    checked = [rundir.SAMPLES] + ([rundir.IMAGES, rundir.MASKS] if verify else [])
    for name in checked:
        if sha256_file(paths["manifest"].parent / name) != sums.get(name):
            raise InputError(
                "does not match the checksum in manifest.json: the dataset was changed "
                "after prepare; prepare it again",
                paths["manifest"].parent / name,
            )
    samples = rundir.read_csv(paths["samples"])
    stacks = {}
    for key in ("images", "masks"):
        try:
            stacks[key] = tifffile.memmap(paths[key], mode="r")
        except (ValueError, OSError) as err:
            raise InputError(f"cannot memory-map the stack: {err}", paths[key]) from err
        if stacks[key].ndim == 2:
            stacks[key] = stacks[key][None]
        expected = (len(samples), *manifest.get("size", stacks[key].shape[1:]))
        if stacks[key].shape != tuple(expected):
            raise InputError(
                f"holds a stack of shape {stacks[key].shape} but {rundir.SAMPLES} and "
                f"{rundir.MANIFEST} describe {tuple(expected)}; prepare it again",
                paths[key],
            )
    return Dataset(
        paths["images"].parent, stacks["images"], stacks["masks"], samples, manifest
    )


def source_folders(run: str | Path, split: str) -> list[Path]:
    """The source folders of one split's patients (CAMUS) or cases (contrast loops).

    Read from the manifest: a case's folder relative to the source, or a patient's
    folder found again under the source. Raises InputError when the source has moved.
    """
    data = load_dataset(run)
    source = Path(data.manifest["source"])
    names = data.patients(split)
    cases = data.manifest.get("cases")
    if cases is not None:
        folders = [source / cases[n].get("folder", n) for n in names]
    else:
        from echoscale.camus import find_patient_dirs

        found = (
            {p.name: p for p in find_patient_dirs(source)} if source.is_dir() else {}
        )
        folders = [found.get(n, source / n) for n in names]
    missing = [f for f in folders if not f.is_dir()]
    if missing:
        raise InputError(
            f"{len(missing)} of the {split} folders are gone from the source "
            f"(first: {missing[0]}); was it moved?",
            data.root / rundir.MANIFEST,
        )
    return folders
