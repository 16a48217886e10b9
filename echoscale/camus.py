"""Reading the CAMUS dataset, in either public release, and checking it before any work.

CAMUS (Leclerc et al., IEEE TMI 2019) holds apical two- and four-chamber views of 500
patients, each with end-diastolic (ED) and end-systolic (ES) images, expert masks of the
LV cavity (1), myocardium (2) and left atrium (3), and the half cycle between ED and ES.
Two releases exist:

* 2019, MetaImage: ``patientNNNN_2CH_ED.mhd`` + ``.raw``, ``..._ED_gt.mhd``,
  ``..._2CH_sequence.mhd``, and ``Info_2CH.cfg`` with ``LVedv``, ``LVesv``, ``LVef``;
* 2023, NIfTI: ``patientNNNN_2CH_ED.nii.gz``, ``..._ED_gt.nii.gz``,
  ``..._2CH_half_sequence.nii.gz`` with ``..._half_sequence_gt.nii.gz`` per-frame masks,
  ``Info_2CH.cfg`` with ``EF`` and ``FrameRate``, and ``database_split/subgroup_*.txt``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from echoscale import images
from echoscale.errors import InputError

log = logging.getLogger(__name__)

VIEWS = ("2CH", "4CH")
PHASES = ("ED", "ES")
LABELS = {"background": 0, "lv": 1, "myo": 2, "la": 3}
QUALITIES = ("Good", "Medium", "Poor")

_PATIENT_RE = re.compile(r"^patient\d{4}$")
_SUFFIXES = {"nifti": (".nii.gz", ".nii"), "mhd": (".mhd",)}
_SEQUENCE_NAME = {"nifti": "half_sequence", "mhd": "sequence"}
# Keys of the 2019 release mapped onto the 2023 names.
_INFO_ALIASES = {"LVef": "EF", "LVedv": "EDV", "LVesv": "ESV"}


class IncompletePatientError(InputError):
    """A patient folder lacks files that every patient must have."""

    def __init__(self, message: str, path: Path, missing: list[str]) -> None:
        super().__init__(message, path)
        self.missing = missing


@dataclass(frozen=True)
class ViewInfo:
    """The contents of one ``Info_<view>.cfg``.

    ``ed`` and ``es`` are 1-based frame numbers into the (half) sequence, as in the
    file; ED may come after ES.
    """

    ed: int
    es: int
    n_frames: int
    quality: str
    sex: str = ""
    age: float | None = None
    ef: float | None = None
    edv: float | None = None
    esv: float | None = None
    frame_rate: float | None = None


@dataclass
class CamusView:
    """The files of one view of one patient."""

    view: str
    info: ViewInfo
    images: dict[str, Path]
    masks: dict[str, Path]
    sequence: Path | None = None
    sequence_masks: Path | None = None


@dataclass
class CamusPatient:
    """One ``patientNNNN`` folder, scanned but not yet read."""

    name: str
    root: Path
    release: str
    views: dict[str, CamusView] = field(default_factory=dict)

    @property
    def quality(self) -> str:
        """The poorer of the two views' image qualities (Good, Medium or Poor)."""
        ranks = [QUALITIES.index(v.info.quality) for v in self.views.values()]
        return QUALITIES[max(ranks)]


def find_patient_dirs(root: str | Path) -> list[Path]:
    """Return the ``patientNNNN`` folders under ``root``, sorted by name.

    The folders may sit in ``root`` itself or one or two levels below it (the releases
    put them in ``database_nifti/``, ``training/`` or ``testing/``).

    Raises
    ------
    InputError
        When ``root`` is not a folder or holds no patient folders.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError("not a folder", root)
    found: dict[str, Path] = {}
    for pattern in ("patient*", "*/patient*", "*/*/patient*"):
        for path in sorted(root.glob(pattern)):
            if path.is_dir() and _PATIENT_RE.match(path.name):
                if path.name in found:
                    raise InputError(
                        f"{path.name} appears twice: {found[path.name]} and {path}",
                        root,
                    )
                found[path.name] = path
    if not found:
        raise InputError("no patientNNNN folders found (looked two levels deep)", root)
    return [found[k] for k in sorted(found)]


def find_split_lists(root: str | Path) -> dict[str, Path] | None:
    """Find the 2023 release's ``database_split`` lists near ``root``.

    Returns a mapping ``{"train": path, "val": path, "test": path}``, or None when no
    ``database_split`` folder with all three ``subgroup_*.txt`` lists is found in
    ``root``, its parent, or its grandparent.
    """
    root = Path(root).resolve()
    names = {
        "train": "subgroup_training.txt",
        "val": "subgroup_validation.txt",
        "test": "subgroup_testing.txt",
    }
    for base in (root, root.parent, root.parent.parent):
        folder = base / "database_split"
        paths = {k: folder / v for k, v in names.items()}
        present = [p.is_file() for p in paths.values()]
        if all(present):
            return paths
        if any(present):
            missing = [
                p.name for p, ok in zip(paths.values(), present, strict=True) if not ok
            ]
            raise InputError(
                f"incomplete split lists: {', '.join(missing)} missing", folder
            )
    return None


def read_info(path: str | Path) -> ViewInfo:
    """Parse an ``Info_<view>.cfg`` file of either release.

    Raises
    ------
    InputError
        When the file is unreadable, a line is not ``key: value``, or ``ED``, ``ES``,
        ``NbFrame`` or ``ImageQuality`` is missing or malformed.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig", errors="strict")
    except OSError as err:
        raise InputError(f"cannot read: {err.strerror}", path) from err
    except UnicodeDecodeError:
        raise InputError("not a text file", path) from None
    if not text.strip():
        raise InputError("is empty", path)
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise InputError(
                f"line {number} is not 'key: value': {line.strip()!r}", path
            )
        key = _INFO_ALIASES.get(key.strip(), key.strip())
        if key in values:
            raise InputError(f"line {number}: {key} is given twice", path)
        values[key] = value.strip()

    def number(key: str, kind: type = float, required: bool = False):
        if key not in values:
            if required:
                raise InputError(f"{key} is missing", path)
            return None
        try:
            x = float(values[key])
        except ValueError:
            raise InputError(f"{key} is not a number: {values[key]!r}", path) from None
        if kind is int:
            if x != int(x) or x < 1:
                raise InputError(
                    f"{key} must be a positive whole number, got {values[key]}", path
                )
            return int(x)
        return x

    quality = values.get("ImageQuality")
    if quality is None:
        raise InputError("ImageQuality is missing", path)
    if quality.capitalize() not in QUALITIES:
        raise InputError(
            f"ImageQuality must be one of {', '.join(QUALITIES)}, got {quality!r}", path
        )
    info = ViewInfo(
        ed=number("ED", int, True),
        es=number("ES", int, True),
        n_frames=number("NbFrame", int, True),
        quality=quality.capitalize(),
        sex=values.get("Sex", ""),
        age=number("Age"),
        ef=number("EF"),
        edv=number("EDV"),
        esv=number("ESV"),
        frame_rate=number("FrameRate"),
    )
    for key, frame in (("ED", info.ed), ("ES", info.es)):
        if frame > info.n_frames:
            raise InputError(
                f"{key} is frame {frame} but NbFrame is {info.n_frames}", path
            )
    if info.ed == info.es:
        raise InputError(f"ED and ES are the same frame ({info.ed})", path)
    return info


def _release_of(folder: Path) -> str:
    try:
        names = [p.name for p in folder.iterdir()]
    except OSError as err:
        raise InputError(f"cannot list the folder: {err.strerror}", folder) from err
    if any(n.endswith(".mhd") for n in names):
        return "mhd"
    return "nifti"


def _find(folder: Path, stem: str, release: str) -> Path:
    """The file of ``stem`` in the release's format (NIfTI: ``.nii.gz`` or ``.nii``)."""
    for suffix in _SUFFIXES[release]:
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    return folder / f"{stem}{_SUFFIXES[release][0]}"


def scan_patient(folder: str | Path, sequences: bool = False) -> CamusPatient:
    """List a patient's files and read its cfg files, without reading any image.

    Parameters
    ----------
    folder : str or Path
        A ``patientNNNN`` folder of either release.
    sequences : bool
        Also look for the (half) sequences and their per-frame masks. They are optional:
        a view without them is recorded with ``sequence=None``.

    Raises
    ------
    IncompletePatientError
        Listing every required file that is missing.
    InputError
        When a cfg file is malformed.
    """
    folder = Path(folder)
    name = folder.name
    release = _release_of(folder)
    required: dict[str, Path] = {}
    for view in VIEWS:
        required[f"Info_{view}.cfg"] = folder / f"Info_{view}.cfg"
        for phase in PHASES:
            for tail in ("", "_gt"):
                found = _find(folder, f"{name}_{view}_{phase}{tail}", release)
                required[found.name] = found
    missing = [k for k, p in required.items() if not p.is_file()]
    if missing:
        present = len(required) - len(missing)
        raise IncompletePatientError(
            f"missing {', '.join(missing)} ({present} of the {len(required)} required "
            "files are present)",
            folder,
            missing,
        )

    patient = CamusPatient(name=name, root=folder, release=release)
    for view in VIEWS:
        info = read_info(required[f"Info_{view}.cfg"])
        cam = CamusView(
            view=view,
            info=info,
            images={ph: _find(folder, f"{name}_{view}_{ph}", release) for ph in PHASES},
            masks={
                ph: _find(folder, f"{name}_{view}_{ph}_gt", release) for ph in PHASES
            },
        )
        if sequences:
            stem = f"{name}_{view}_{_SEQUENCE_NAME[release]}"
            seq = _find(folder, stem, release)
            seq_gt = _find(folder, f"{stem}_gt", release)
            cam.sequence = seq if seq.is_file() else None
            cam.sequence_masks = seq_gt if seq_gt.is_file() else None
        patient.views[view] = cam
    return patient


def check_mask_values(mask: np.ndarray, path: Path) -> None:
    """Raise InputError when ``mask`` holds values other than the CAMUS labels 0-3."""
    values = np.unique(mask)
    stray = [v for v in values.tolist() if v not in (0, 1, 2, 3)]
    if not stray:
        return
    shown = ", ".join(f"{v:g}" for v in stray[:8]) + (" ..." if len(stray) > 8 else "")
    hint = ""
    if set(values.tolist()) <= {0, 255}:
        hint = "; it looks like a binary 0/255 mask, but CAMUS masks hold labels 0-3"
    raise InputError(f"mask values outside {{0,1,2,3}}: {shown}{hint}", path)


def check_image_values(array: np.ndarray, path: Path) -> None:
    """Raise InputError unless ``array`` holds finite grey levels within 0-255.

    A float image within 0-1 gets a hint: CAMUS images hold 0-255.
    """
    if not np.isfinite(array).all():
        raise InputError("image holds NaN or infinite values", path)
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 255:
        raise InputError(f"image values {low:g} to {high:g} lie outside 0-255", path)
    if array.dtype.kind == "f" and 0 < high <= 1:
        raise InputError(
            f"image values 0 to {high:g}: it looks scaled to 0-1, but CAMUS images "
            "hold 0-255",
            path,
        )


def _same_spacing(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return bool(np.allclose(a, b, rtol=1e-3))


def check_patient(patient: CamusPatient) -> None:
    """Check one scanned patient deeply, before any output is written.

    Reads the ED and ES images and masks whole (grey levels finite and within 0-255,
    labels 0-3, equal shapes and spacings, a valid spacing), and for the sequences
    reads the headers and verifies that their compressed data is complete, with
    ``NbFrame`` frames of the images' shape.

    Raises
    ------
    InputError
        Naming the file and the problem.
    """
    with images.spacing_required():
        for cam in patient.views.values():
            _check_view(cam)


def _check_view(cam: CamusView) -> None:
    for phase in PHASES:
        image = images.read_image(cam.images[phase])
        if image.array.ndim != 2:
            raise InputError(
                f"expected a 2D image, got shape {image.array.shape}", image.path
            )
        check_image_values(image.array, image.path)
        mask = images.read_image(cam.masks[phase])
        if mask.array.shape != image.array.shape:
            raise InputError(
                f"mask shape {mask.array.shape} differs from the image's "
                f"{image.array.shape} ({cam.images[phase].name})",
                cam.masks[phase],
            )
        if not _same_spacing(mask.spacing, image.spacing):
            raise InputError(
                f"mask spacing {mask.spacing} mm differs from the image's "
                f"{image.spacing} ({cam.images[phase].name})",
                cam.masks[phase],
            )
        check_mask_values(mask.array, cam.masks[phase])
    if cam.sequence is None or cam.sequence_masks is None:
        return
    seq = images.read_header(cam.sequence, verify=True)
    seq_gt = images.read_image(cam.sequence_masks)
    expected = (cam.info.n_frames, *image.array.shape)
    for path, shape in (
        (cam.sequence, seq.shape),
        (cam.sequence_masks, seq_gt.array.shape),
    ):
        if tuple(shape) != expected:
            raise InputError(
                f"shape {tuple(shape)} differs from (NbFrame, H, W) = {expected}", path
            )
    check_mask_values(seq_gt.array, cam.sequence_masks)
