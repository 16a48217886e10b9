"""Read and write echocardiogram images: NIfTI, MetaImage, TIFF and DICOM.

Every reader returns an :class:`Image`: an ``(H, W)`` still or a ``(T, H, W)`` cine
with (row, col) = (depth, lateral), the pixel spacing ``(row_mm, col_mm)`` and, when
the file knows them, the frame times in seconds from the first frame. A missing,
damaged, truncated or unsupported file raises :class:`ImageReadError` naming the file
and the problem. Writers check their inputs (``ValueError`` naming the argument) and
write through :func:`echoscale.rundir.atomic_path`, so a failure leaves an existing
file as it was; equal inputs give byte-identical files.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import gzip
import json
import logging
import math
import re
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import tifffile

from echoscale.errors import EchoscaleError, ImageReadError
from echoscale.rundir import atomic_path

logger = logging.getLogger(__name__)

SUPPORTED_SUFFIXES: tuple[str, ...] = (
    ".nii", ".nii.gz", ".mhd", ".mha", ".tif", ".tiff", ".dcm"
)  # fmt: skip

# Sizes as MetaIO defines them: MET_LONG and MET_ULONG are 4 bytes; 64-bit data is
# MET_LONG_LONG / MET_ULONG_LONG (ITK writes a 64-bit `long` that way).
_MET_TYPES = {
    "MET_UCHAR": "u1", "MET_CHAR": "i1", "MET_USHORT": "u2", "MET_SHORT": "i2",
    "MET_ULONG": "u4", "MET_LONG": "i4", "MET_UINT": "u4", "MET_INT": "i4",
    "MET_ULONG_LONG": "u8", "MET_LONG_LONG": "i8", "MET_FLOAT": "f4",
    "MET_DOUBLE": "f8",
}  # fmt: skip
_MET_NAMES = {code: name for name, code in _MET_TYPES.items()}  # MET_UINT, MET_INT win
_NUMERIC_DTYPES = frozenset(_MET_NAMES)
_TIFF_DTYPES = frozenset({"u1", "u2", "f4"})  # what an ImageJ stack holds

_TIFF_PROPERTY = "echoscale"  # ImageJ property holding write_tiff's exact geometry
_LENGTH_MM = {
    "nm": 1e-6, "um": 1e-3, "micron": 1e-3, "µm": 1e-3, "\\u00b5m": 1e-3,
    "mm": 1.0, "cm": 10.0, "m": 1000.0, "meter": 1000.0, "inch": 25.4,
}  # fmt: skip
_TIFF_RESUNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 1e-3}  # inch, cm, mm, um
_RESOLUTION_TAGS = ("XResolution", "YResolution", "ResolutionUnit")
_NIFTI_SPACE_MM = {"unknown": 1.0, "mm": 1.0, "meter": 1000.0, "micron": 1e-3}
_NIFTI_TIME_S = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}


@dataclasses.dataclass(frozen=True, eq=False)
class Image:
    """A still or a cine with its pixel geometry.

    Attributes
    ----------
    array : ndarray, shape (H, W) or (T, H, W)
        Pixel values, (row, col) = (depth, lateral), frames first for a cine.
    spacing : tuple of float
        ``(row_mm, col_mm)`` in millimetres; never assumed square.
    frame_times : ndarray, shape (T,), or None
        Seconds from the first frame (starting at 0, non-decreasing); None for a
        still or when the file does not know its timing.
    path : Path
        The file the image came from.

    The fields are checked on construction (``ValueError``). Equality is identity
    (``eq=False``): comparing arrays element-wise is left to the caller.
    """

    array: np.ndarray
    spacing: tuple[float, float]
    frame_times: np.ndarray | None
    path: Path

    def __post_init__(self) -> None:
        array, spacing, times = _check_geometry(
            self.array, self.spacing, self.frame_times
        )
        object.__setattr__(self, "array", array)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "frame_times", times)
        object.__setattr__(self, "path", Path(self.path))

    @property
    def is_cine(self) -> bool:
        """True for a (T, H, W) cine, False for an (H, W) still."""
        return self.array.ndim == 3

    @property
    def n_frames(self) -> int:
        """Number of frames T; 1 for a still."""
        return self.array.shape[0] if self.is_cine else 1


# --- checks and shared helpers ----------------------------------------------------


def _check_geometry(
    array: np.ndarray, spacing: Sequence[float], frame_times
) -> tuple[np.ndarray, tuple[float, float], np.ndarray | None]:
    """Validate array, spacing and frame times; return them normalised."""
    array = np.asarray(array)
    if array.ndim not in (2, 3):
        raise ValueError(f"array must be (H, W) or (T, H, W); got shape {array.shape}")

    try:
        row_mm, col_mm = (float(s) for s in spacing)
    except (TypeError, ValueError):
        row_mm = col_mm = math.nan
    if not all(math.isfinite(v) and v > 0 for v in (row_mm, col_mm)):
        raise ValueError(
            f"spacing must be two positive finite numbers (row_mm, col_mm); "
            f"got {spacing!r}"
        )

    if frame_times is None:
        return array, (row_mm, col_mm), None
    if array.ndim == 2:
        raise ValueError("frame_times must be None for a still (H, W) image")
    times = np.asarray(frame_times, dtype=np.float64)
    if times.shape != array.shape[:1]:
        raise ValueError(
            f"frame_times must have shape ({array.shape[0]},), one time per frame; "
            f"got shape {times.shape}"
        )
    if not (
        np.all(np.isfinite(times)) and times[0] == 0 and np.all(times[1:] >= times[:-1])
    ):
        raise ValueError(
            "frame_times must be finite, non-decreasing seconds from the first frame "
            f"(starting at 0); got {times[:3].tolist()}..."
        )
    return array, (row_mm, col_mm), times


def _check_dtype(array: np.ndarray, allowed: frozenset[str], fmt: str) -> None:
    if f"{array.dtype.kind}{array.dtype.itemsize}" not in allowed:
        names = ", ".join(sorted(str(np.dtype(code)) for code in allowed))
        raise ValueError(
            f"array dtype {array.dtype} cannot be written as {fmt}; "
            f"convert to one of {names}"
        )


def _check_fps(fps: float | None) -> None:
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive frame rate (1/s); got {fps!r}")


def _uniform_interval(frame_times: np.ndarray) -> float | None:
    """Return the frame interval (s) when frames are evenly spaced, else None."""
    steps = np.diff(frame_times)
    if steps.size == 0 or steps[0] <= 0:
        return None
    # rtol 1e-4 absorbs round-off (ms to s, float32 headers), not real jitter.
    return float(steps.mean()) if np.allclose(steps, steps[0], rtol=1e-4) else None


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def _require_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise ImageReadError("file not found", path)
    if not path.is_file():
        raise ImageReadError("not a regular file", path)
    if path.stat().st_size == 0:
        raise ImageReadError("empty file (0 bytes)", path)
    return path


@contextlib.contextmanager
def _library_errors(path: Path, what: str) -> Iterator[None]:
    """Turn an unexpected library exception inside the block into ImageReadError."""
    try:
        yield
    except (EchoscaleError, MemoryError):
        raise
    except Exception as exc:
        raise ImageReadError(f"{what}: {exc}", path) from exc


def _make_image(path: Path, array: np.ndarray, spacing, frame_times) -> Image:
    try:
        return Image(np.ascontiguousarray(array), spacing, frame_times, path)
    except ValueError as exc:
        raise ImageReadError(f"inconsistent image metadata: {exc}", path) from exc


_SPACING_REQUIRED = contextvars.ContextVar("spacing_required", default=False)


@contextlib.contextmanager
def spacing_required() -> Iterator[None]:
    """Within this block, a file without a valid pixel spacing is an error.

    Outside it, readers warn and assume 1 mm pixels. Stages whose measurements depend
    on the spacing (preparing a dataset) read their inputs inside this block.
    """
    token = _SPACING_REQUIRED.set(True)
    try:
        yield
    finally:
        _SPACING_REQUIRED.reset(token)


def _unknown_spacing(path: Path, reason: str) -> tuple[float, float]:
    if _SPACING_REQUIRED.get():
        raise ImageReadError(f"{reason}: no valid pixel spacing", path)
    logger.warning("%s: %s; assuming 1 mm pixels, spacing (1.0, 1.0)", path, reason)
    return (1.0, 1.0)


def _from_float32(value) -> float:
    # Headers store float32: take the shortest decimal that rounds to it, so a
    # spacing written as 0.308 reads back as 0.308, not 0.30799999833.
    return float(np.format_float_positional(np.float32(value), unique=True))


# --- dispatch ---------------------------------------------------------------------


def read_image(path: str | Path, *, fps: float | None = None) -> Image:
    """Read a still or cine, choosing the reader by the file's extension.

    Parameters
    ----------
    path : str or Path
        One of :data:`SUPPORTED_SUFFIXES`; a file with another name is read as
        DICOM when it has the ``DICM`` preamble.
    fps : float, optional
        Frame rate (1/s) for a cine whose file holds no timing; the file's own
        timing always wins.

    Returns
    -------
    Image

    Raises
    ------
    ImageReadError
        Missing, damaged or unsupported file; a DICOM cine with no timing or fps.
    MissingDependencyError
        An optional package needed for this file is not installed.
    """
    path = _require_file(path)
    _check_fps(fps)
    suffix = _suffix(path)
    if suffix in (".nii", ".nii.gz"):
        image = read_nifti(path)
    elif suffix in (".mhd", ".mha"):
        image = read_metaimage(path)
    elif suffix in (".tif", ".tiff"):
        image = read_tiff(path)
    elif suffix == ".dcm" or _dicom().has_dicm_preamble(path):
        return read_dicom(path, fps=fps)
    else:
        msg = f"unsupported file type {suffix or '(no extension)'}; expected "
        raise ImageReadError(msg + f"{', '.join(SUPPORTED_SUFFIXES)} or DICOM", path)
    if fps is not None and image.is_cine and image.frame_times is None:
        image = dataclasses.replace(image, frame_times=np.arange(image.n_frames) / fps)
    return image


def write_image(
    path: str | Path,
    array: np.ndarray,
    spacing: Sequence[float],
    frame_times: Sequence[float] | np.ndarray | None = None,
) -> None:
    """Write a still or cine, choosing the writer by the file's extension.

    Parameters
    ----------
    path : str or Path
        ``.tif``/``.tiff``, ``.nii``/``.nii.gz`` or ``.mhd``.
    array, spacing, frame_times
        As for the format's writer; MetaImage cannot store frame times.

    Raises
    ------
    ValueError
        Unsupported extension or invalid inputs.
    """
    path = Path(path)
    suffix = _suffix(path)
    if suffix in (".tif", ".tiff"):
        write_tiff(path, array, spacing, frame_times)
    elif suffix in (".nii", ".nii.gz"):
        write_nifti(path, array, spacing, frame_times)
    elif suffix == ".mhd" and frame_times is None:
        write_metaimage(path, array, spacing)
    elif suffix == ".mhd":
        raise ValueError(f"{path}: MetaImage cannot store frame_times; use .tif")
    else:
        raise ValueError(f"{path}: unsupported output type {suffix or '(none)'}")


# --- NIfTI ------------------------------------------------------------------------


def read_nifti(path: str | Path) -> Image:
    """Read a NIfTI still or cine stored in the CAMUS layout.

    Parameters
    ----------
    path : str or Path
        ``.nii`` or ``.nii.gz``; dim1 is the lateral axis, dim2 the depth axis,
        dim3 the frames (nibabel order ``(W, H[, T])``; ``(W, H, 1, T)`` too).

    Returns
    -------
    Image
        Array ``(H, W)`` or ``(T, H, W)``; spacing ``(pixdim[2], pixdim[1])`` mm.

    Raises
    ------
    ImageReadError
        Not NIfTI, truncated or corrupt gzip, or not a 2-D image or cine.

    Notes
    -----
    Values keep the stored dtype (CAMUS: float32) unless the header scales them
    (``scl_slope`` not 0, 1 or NaN, or ``scl_inter`` not 0); scaled data is
    returned as float32. Metres and micrometres are converted to mm; an unknown
    spatial unit is taken as mm.

    Frame times are ``arange(T) * pixdim[4]`` when ``pixdim[4] > 0`` in sec, msec
    or usec. With an unknown time unit, ``0 < pixdim[4] < 1`` is taken as seconds;
    1, which tools write into unused pixdim entries, and more give None, as does
    0 (CAMUS).
    """
    path = _require_file(path)
    with _library_errors(path, "cannot read NIfTI"):
        try:
            img = nib.load(path, mmap=False)
            if not isinstance(img, nib.Nifti1Image):  # Nifti2Image is a subclass
                raise ImageReadError(f"not a NIfTI file ({type(img).__name__})", path)
            scaled = img.dataobj.slope != 1 or img.dataobj.inter != 0
            data = np.asanyarray(img.dataobj, dtype=np.float32 if scaled else None)
        except EOFError as exc:
            raise ImageReadError(
                "truncated gzip stream: the file ends before its data", path
            ) from exc
        except (gzip.BadGzipFile, zlib.error) as exc:
            raise ImageReadError(f"corrupt gzip stream ({exc})", path) from exc
        except nib.filebasedimages.ImageFileError as exc:
            raise ImageReadError(f"not a NIfTI file ({exc})", path) from exc
        pixdim = [abs(_from_float32(v)) for v in img.header["pixdim"][:5]]
        time_unit = img.header.get_xyzt_units()[1]

    data = data.reshape(_nifti_shape(data.shape, path))
    array = data.T if data.ndim == 2 else data.transpose(2, 1, 0)
    spacing = _nifti_spacing(img, path)
    dt, frame_times = pixdim[4], None
    if array.ndim == 3 and dt > 0 and time_unit in _NIFTI_TIME_S:
        frame_times = np.arange(array.shape[0]) * (dt * _NIFTI_TIME_S[time_unit])
    elif array.ndim == 3 and 0 < dt < 1 and time_unit == "unknown":
        frame_times = np.arange(array.shape[0]) * dt
    return _make_image(path, array, spacing, frame_times)


def _nifti_shape(shape: tuple[int, ...], path: Path) -> tuple[int, ...]:
    """Drop the singleton axes of (W, H, 1) and (W, H, 1, T); refuse other shapes."""
    if len(shape) == 4 and shape[2] == 1:
        shape = (shape[0], shape[1], shape[3])
    if len(shape) == 3 and shape[2] == 1:
        shape = shape[:2]
    if len(shape) not in (2, 3):
        msg = f"data of shape {shape} (nibabel order) is not a 2-D image or cine"
        raise ImageReadError(msg, path)
    return shape


def _nifti_spacing(img: nib.Nifti1Image, path: Path) -> tuple[float, float]:
    """Return (row_mm, col_mm) = (pixdim[2], pixdim[1]) in mm."""
    pixdim = [abs(_from_float32(v)) for v in img.header["pixdim"][:3]]
    space_unit = img.header.get_xyzt_units()[0]
    to_mm = _NIFTI_SPACE_MM.get(space_unit)
    if to_mm is None or not (pixdim[1] > 0 and pixdim[2] > 0):
        reason = f"pixdim {pixdim[1]} x {pixdim[2]} in '{space_unit}' is no spacing"
        return _unknown_spacing(path, reason)
    return (pixdim[2] * to_mm, pixdim[1] * to_mm)


def _verify_nifti_data(img: nib.Nifti1Image, path: Path) -> None:
    """Check that the file holds all of its data, decompressing without keeping it."""
    need = int(img.header.get_data_offset()) + int(
        np.prod(img.shape) * img.header.get_data_dtype().itemsize
    )
    if _suffix(path) == ".nii":
        have = path.stat().st_size
    else:
        have = 0
        try:
            with gzip.open(path, "rb") as f:
                while block := f.read(1 << 22):
                    have += len(block)
        except EOFError as exc:
            msg = "truncated gzip stream: the file ends before its data"
            raise ImageReadError(msg, path) from exc
        except (gzip.BadGzipFile, zlib.error, OSError) as exc:
            raise ImageReadError(f"corrupt gzip stream ({exc})", path) from exc
    if have < need:
        msg = f"holds {have} bytes but its header describes {need}"
        raise ImageReadError(f"truncated NIfTI data: {msg}", path)


@dataclasses.dataclass(frozen=True)
class ImageHeader:
    """The geometry of an image file, read without keeping its pixels.

    ``shape`` is in echoscale's order: (H, W) for a still, (T, H, W) for a cine.
    """

    path: Path
    shape: tuple[int, ...]
    spacing: tuple[float, float]


def read_header(path: str | Path, *, verify: bool = False) -> ImageHeader:
    """Read an image file's shape and spacing.

    Parameters
    ----------
    path : str or Path
        Any file :func:`read_image` reads.
    verify : bool
        Also check that the data is complete (for ``.nii.gz``, decompress it all
        without keeping it), so a truncated or corrupt file fails here.

    Returns
    -------
    ImageHeader

    Notes
    -----
    Only NIfTI headers are read alone; other formats are read whole.
    """
    path = _require_file(path)
    if _suffix(path) not in (".nii", ".nii.gz"):
        image = read_image(path)
        return ImageHeader(path, image.array.shape, image.spacing)
    with _library_errors(path, "cannot read NIfTI"):
        try:
            img = nib.load(path)
        except nib.filebasedimages.ImageFileError as exc:
            raise ImageReadError(f"not a NIfTI file ({exc})", path) from exc
        if not isinstance(img, nib.Nifti1Image):
            raise ImageReadError(f"not a NIfTI file ({type(img).__name__})", path)
        if verify:
            _verify_nifti_data(img, path)
        shape = _nifti_shape(tuple(int(n) for n in img.shape), path)
    return ImageHeader(path, shape[::-1], _nifti_spacing(img, path))


def write_nifti(
    path: str | Path,
    array: np.ndarray,
    spacing: Sequence[float],
    frame_times: Sequence[float] | np.ndarray | None = None,
) -> None:
    """Write a NIfTI-1 still or cine in the CAMUS layout.

    Parameters
    ----------
    path : str or Path
        ``.nii`` or ``.nii.gz``.
    array : ndarray, shape (H, W) or (T, H, W)
        Pixel values, any integer or float dtype of 1 to 8 bytes.
    spacing : sequence of two float
        ``(row_mm, col_mm)``, stored as pixdim[2] and pixdim[1].
    frame_times : array_like, shape (T,), optional
        Seconds from the first frame, evenly spaced: NIfTI holds one interval,
        pixdim[4]. Without them pixdim[4] is 0 and reads back as no timing.

    Raises
    ------
    ValueError
        Invalid inputs, unsupported dtype, or unevenly spaced frame times.

    Notes
    -----
    Data is stored ``(W, H[, T])`` with affine ``diag(-col_mm, -row_mm, 1, 1)``
    and units mm and sec, as in CAMUS. A ``.nii.gz`` is gzipped with mtime 0.
    """
    path = Path(path)
    if _suffix(path) not in (".nii", ".nii.gz"):
        raise ValueError(f"{path}: a NIfTI path must end in .nii or .nii.gz")
    array, (row_mm, col_mm), frame_times = _check_geometry(array, spacing, frame_times)
    _check_dtype(array, _NUMERIC_DTYPES, "NIfTI")
    interval = 0.0
    if frame_times is not None and frame_times.size > 1:
        interval = _uniform_interval(frame_times)
        if interval is None:
            raise ValueError(
                "frame_times are not evenly spaced and NIfTI stores one frame "
                "interval; write TIFF to keep them"
            )

    data = array.T if array.ndim == 2 else array.transpose(2, 1, 0)
    image = nib.Nifti1Image(data, np.diag([-col_mm, -row_mm, 1.0, 1.0]))
    image.header.set_xyzt_units("mm", "sec")
    image.header["pixdim"][4] = interval  # nibabel would leave 1 here: 1 s frames
    payload = image.to_bytes()
    if _suffix(path) == ".nii.gz":
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)


# --- MetaImage --------------------------------------------------------------------


def _metaimage_header(raw: bytes, path: Path) -> tuple[dict[str, str], int]:
    """Return the header fields (keys lower-cased) and the offset of the data."""
    fields: dict[str, str] = {}
    offset = 0
    while offset < len(raw) and "elementdatafile" not in fields:
        end = raw.find(b"\n", offset)
        end = len(raw) if end < 0 else end
        line = raw[offset:end].decode("latin-1").strip()
        offset = end + 1
        key, sep, value = line.partition("=")
        if line and not (sep and re.fullmatch(r"\s*[A-Za-z_]\w*\s*", key)):
            raise ImageReadError(f"not a MetaImage header: {line[:40]!r}", path)
        if line:
            fields[key.strip().lower()] = value.strip()
    for key in ("NDims", "DimSize", "ElementType", "ElementDataFile"):
        if key.lower() not in fields:
            raise ImageReadError(f"MetaImage header has no {key}", path)
    return fields, offset


def _metaimage_data(fields, raw: bytes, offset: int, path: Path) -> tuple[bytes, str]:
    """Return the data bytes and the name of the file that holds them."""
    name = fields["elementdatafile"]
    if name.upper() == "LOCAL":
        return raw[offset:], path.name
    if name.upper() == "LIST" or "%" in name:
        msg = f"ElementDataFile = {name}: data over several files is not supported"
        raise ImageReadError(msg, path)
    if not (path.parent / name).is_file():
        raise ImageReadError(f"data file {name} (ElementDataFile) is missing", path)
    return (path.parent / name).read_bytes(), name


def read_metaimage(path: str | Path) -> Image:
    """Read a MetaImage: ``.mhd`` with its data file, or ``.mha``.

    Parameters
    ----------
    path : str or Path
        The header; ElementDataFile is relative to its folder, or ``LOCAL`` for
        data that follows the header in the same file.

    Returns
    -------
    Image
        ``(H, W)`` (NDims 2) or ``(T, H, W)`` (NDims 3) in native byte order;
        spacing ``(ElementSpacing[1], ElementSpacing[0])``; frame times None.

    Raises
    ------
    ImageReadError
        Damaged header, unsupported element type or channel count, data file
        missing or of the wrong size, corrupt zlib data.

    Notes
    -----
    DimSize lists x (lateral, fastest) first, so the bytes in C order reshape to
    ``(z, y, x) = (T, H, W)``. A third ElementSpacing is no frame interval (CAMUS
    writes 1). HeaderSize bytes are skipped (-1: the data ends the file).
    """
    path = _require_file(path)
    with _library_errors(path, "cannot read MetaImage"):
        raw = path.read_bytes()
        fields, offset = _metaimage_header(raw, path)
        dims = [int(v) for v in fields["dimsize"].split()]
        if int(fields["ndims"]) not in (2, 3) or len(dims) != int(fields["ndims"]):
            msg = f"NDims {fields['ndims']}, DimSize {dims}: not a 2-D image or cine"
            raise ImageReadError(msg, path)
        channels = fields.get("elementnumberofchannels", "1")
        if channels != "1":
            msg = f"ElementNumberOfChannels = {channels}: only 1 channel is supported"
            raise ImageReadError(msg, path)
        element_type = fields["elementtype"].upper()
        if element_type not in _MET_TYPES:
            raise ImageReadError(f"ElementType {element_type} is not supported", path)
        msb = fields.get("binarydatabyteordermsb", fields.get("elementbyteordermsb"))
        order = ">" if str(msb).lower() == "true" else "<"
        dtype = np.dtype(_MET_TYPES[element_type]).newbyteorder(order)
        needed = math.prod(dims) * dtype.itemsize

        data, data_name = _metaimage_data(fields, raw, offset, path)
        compressed = fields.get("compresseddata", "").lower() == "true"
        skip = int(fields.get("headersize", 0))
        data = data[-needed:] if skip == -1 and not compressed else data[max(skip, 0) :]
        held = "holds"
        if compressed:
            size = int(fields.get("compresseddatasize", len(data)))
            try:  # wbits 32 + MAX_WBITS takes zlib and gzip streams
                data = zlib.decompress(data[:size], wbits=32 + zlib.MAX_WBITS)
            except zlib.error as exc:
                raise ImageReadError(
                    f"corrupt zlib stream in {data_name} ({exc})", path
                ) from exc
            held = "decompresses to"
        if len(data) != needed:
            raise ImageReadError(
                f"{data_name} {held} {len(data)} bytes but DimSize "
                f"{' x '.join(map(str, dims))} of {element_type} needs {needed} bytes",
                path,
            )
        array = np.frombuffer(data, dtype).reshape(dims[::-1])
        array = array.astype(dtype.newbyteorder("="))
        element_spacing = [float(v) for v in fields.get("elementspacing", "").split()]

    if len(element_spacing) >= 2 and min(element_spacing[:2]) > 0:
        spacing = (element_spacing[1], element_spacing[0])
    else:
        spacing = _unknown_spacing(path, "no positive ElementSpacing")
    return _make_image(path, array, spacing, None)


def write_metaimage(
    path: str | Path,
    array: np.ndarray,
    spacing: Sequence[float],
    compressed: bool = False,
) -> None:
    """Write a MetaImage ``.mhd`` header and its ``.raw`` (``.zraw``) data file.

    Parameters
    ----------
    path : str or Path
        Destination ``.mhd``; the data file gets the same stem, beside it.
    array : ndarray, shape (H, W) or (T, H, W)
        Pixel values, any integer or float dtype of 1 to 8 bytes (little-endian).
    spacing : sequence of two float
        ``(row_mm, col_mm)``; ElementSpacing is written x first, ``col_mm row_mm``
        (and 1 for the frame axis).
    compressed : bool, default False
        zlib-compress the data (``CompressedData = True``).

    Raises
    ------
    ValueError
        Invalid inputs or unsupported dtype.

    Notes
    -----
    Both files are renamed into place together, once both are complete.
    """
    path = Path(path)
    if _suffix(path) != ".mhd":
        raise ValueError(f"{path}: a MetaImage path must end in .mhd")
    array, (row_mm, col_mm), _ = _check_geometry(array, spacing, None)
    _check_dtype(array, _NUMERIC_DTYPES, "MetaImage")

    dtype = array.dtype.newbyteorder("<")
    data = np.ascontiguousarray(array, dtype=dtype).tobytes()
    if compressed:
        data = zlib.compress(data, 6)
    data_path = path.with_suffix(".zraw" if compressed else ".raw")
    element_spacing = [col_mm, row_mm] + [1.0] * (array.ndim - 2)
    lines = [
        "ObjectType = Image",
        f"NDims = {array.ndim}",
        "BinaryData = True",
        "BinaryDataByteOrderMSB = False",
        f"CompressedData = {compressed}",
        *([f"CompressedDataSize = {len(data)}"] if compressed else []),
        f"ElementSpacing = {' '.join(map(repr, element_spacing))}",
        f"DimSize = {' '.join(map(str, array.shape[::-1]))}",
        f"ElementType = {_MET_NAMES[f'{dtype.kind}{dtype.itemsize}']}",
        f"ElementDataFile = {data_path.name}",
    ]
    header = ("\n".join(lines) + "\n").encode("ascii")

    with atomic_path(data_path) as tmp_data, atomic_path(path) as tmp_header:
        tmp_data.write_bytes(data)
        tmp_header.write_bytes(header)


# --- TIFF -------------------------------------------------------------------------


def read_tiff(path: str | Path) -> Image:
    """Read a TIFF still, multipage stack, or frames appended one by one.

    Parameters
    ----------
    path : str or Path
        ``.tif``/``.tiff``; its 2-D pages (reduced-resolution and mask pages
        aside) are stacked in file order, and a single page is a still.

    Returns
    -------
    Image

    Raises
    ------
    ImageReadError
        Not a TIFF, damaged, pages not 2-D or of different shapes, or an ImageJ
        file with several channels or fewer pages than it declares.

    Notes
    -----
    Geometry comes from the ``echoscale`` ImageJ property of :func:`write_tiff`
    (exact); else from X/YResolution in the ImageJ ``unit`` or, without one, the
    TIFF ResolutionUnit (inch, cm; tifffile's mm, um), with frame times from the
    ImageJ ``finterval`` (s); else spacing is (1.0, 1.0), with a logged warning.
    """
    path = _require_file(path)
    with _library_errors(path, "cannot read TIFF"):
        try:
            with tifffile.TiffFile(path) as tif:
                pages = [p for p in tif.pages if not (p.is_reduced or p.is_mask)]
                frames = [page.asarray() for page in pages]
                imagej = tif.imagej_metadata or {}
                tags = {key: pages[0].tags.valueof(key) for key in _RESOLUTION_TAGS}
        except tifffile.TiffFileError as exc:
            raise ImageReadError(f"not a TIFF file ({exc})", path) from exc

    declared = (imagej.get("images", len(frames)), imagej.get("channels", 1))
    if declared != (len(frames), 1):
        msg = f"ImageJ declares {declared[0]} images in {declared[1]} channels"
        held = f"the file holds {len(frames)} pages"
        if declared[1] == 1 and len(frames) < declared[0]:
            held += " (truncated or damaged?)"
        raise ImageReadError(f"{msg}, {held}", path)
    for i, frame in enumerate(frames):
        if frame.ndim != 2 or frame.shape != frames[0].shape:
            msg = f"page {i} has shape {frame.shape}, page 0 {frames[0].shape}"
            raise ImageReadError(f"{msg}; a stack needs one 2-D size", path)
    array = frames[0] if len(frames) == 1 else np.stack(frames)

    own = imagej.get("Properties", {}).get(_TIFF_PROPERTY)
    if own is not None:
        try:
            meta = json.loads(own)
            spacing, frame_times = meta["spacing_mm"], meta["frame_times_s"]
            array = array[np.newaxis] if meta["ndim"] > array.ndim else array
        except (ValueError, KeyError, TypeError) as exc:
            raise ImageReadError(
                f"damaged ImageJ property {_TIFF_PROPERTY!r} ({exc})", path
            ) from exc
        return _make_image(path, array, spacing, frame_times)

    spacing = _tiff_resolution(tags, imagej.get("unit"))
    if spacing is None:
        spacing = _unknown_spacing(path, "no resolution tags in a length unit")
    interval, frame_times = imagej.get("finterval"), None
    if array.ndim == 3 and isinstance(interval, int | float) and interval > 0:
        frame_times = np.arange(array.shape[0]) * float(interval)
    return _make_image(path, array, spacing, frame_times)


def _tiff_resolution(tags: dict, imagej_unit) -> tuple[float, float] | None:
    """Return (row_mm, col_mm) from X/YResolution (pixels per unit), or None."""
    if imagej_unit is not None:
        unit_mm = _LENGTH_MM.get(str(imagej_unit).lower())
    else:
        unit_mm = _TIFF_RESUNIT_MM.get(int(tags["ResolutionUnit"] or 1))
    xres, yres = tags["XResolution"], tags["YResolution"]
    if unit_mm is None or not (xres and yres and xres[0] > 0 and yres[0] > 0):
        return None
    return (unit_mm * yres[1] / yres[0], unit_mm * xres[1] / xres[0])


def write_tiff(
    path: str | Path,
    array: np.ndarray,
    spacing: Sequence[float],
    frame_times: Sequence[float] | np.ndarray | None = None,
) -> None:
    """Write an uncompressed ImageJ TIFF that Fiji opens with the right pixel size.

    Parameters
    ----------
    path : str or Path
        Destination ``.tif``/``.tiff``.
    array : ndarray, shape (H, W) or (T, H, W), dtype uint8, uint16 or float32
        Pixel values (the dtypes an ImageJ stack holds).
    spacing : sequence of two float
        ``(row_mm, col_mm)``.
    frame_times : array_like, shape (T,), optional
        Seconds from the first frame, kept even when unevenly spaced.

    Raises
    ------
    ValueError
        Invalid inputs or unsupported dtype.

    Notes
    -----
    Fiji takes the pixel size from X/YResolution (pixels per mm, ImageJ
    ``unit=mm``) and the frame interval from ``finterval`` (written for evenly
    spaced frames). Resolution rationals are inexact, so the exact geometry is
    also stored as JSON in the ImageJ property ``echoscale`` (Image > Show Info):
    ``{"frame_times_s": [...] or null, "ndim": 2 or 3, "spacing_mm": [row, col]}``.
    No dates are written: equal inputs give byte-identical files.
    """
    path = Path(path)
    array, (row_mm, col_mm), frame_times = _check_geometry(array, spacing, frame_times)
    _check_dtype(array, _TIFF_DTYPES, "TIFF")

    times = None if frame_times is None else frame_times.tolist()
    own = {"ndim": array.ndim, "spacing_mm": [row_mm, col_mm], "frame_times_s": times}
    metadata = {
        "axes": "TYX" if array.ndim == 3 else "YX",
        "unit": "mm",
        "Properties": {_TIFF_PROPERTY: json.dumps(own, sort_keys=True)},
    }
    interval = None if frame_times is None else _uniform_interval(frame_times)
    if interval is not None:
        metadata["finterval"] = interval
    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp,
            array,
            imagej=True,
            metadata=metadata,
            resolution=(1.0 / col_mm, 1.0 / row_mm),
        )


# --- DICOM (in echoscale.dicom) ---------------------------------------------------


def _dicom():
    from echoscale import dicom  # imported late: it builds on this module

    return dicom


def read_dicom(path: str | Path, *, fps: float | None = None) -> Image:
    """Read a single- or multi-frame DICOM image as grayscale.

    See :func:`echoscale.dicom.read_dicom`, which this calls.
    """
    return _dicom().read_dicom(path, fps=fps)
