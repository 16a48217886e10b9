"""Reading DICOM stills and cines (the ``dicom`` extra): grayscale, timing, spacing.

Part of the image readers of :mod:`echoscale.images`, which dispatches here; pydicom is
imported only when a DICOM file is read.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from echoscale.errors import ImageReadError, MissingDependencyError
from echoscale.images import (
    Image,
    _check_fps,
    _library_errors,
    _make_image,
    _require_file,
    _unknown_spacing,
)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """Return Y = 0.299 R + 0.587 G + 0.114 B of ``rgb[..., :3]``, rounded."""
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    y = np.float32(0.299) * r + np.float32(0.587) * g + np.float32(0.114) * b
    return np.rint(y).astype(rgb.dtype)


def has_dicm_preamble(path: Path) -> bool:
    """True when the file has the DICOM Part 10 preamble (``DICM`` at byte 128)."""
    with open(path, "rb") as f:
        return f.read(132)[128:] == b"DICM"


def read_dicom(path: str | Path, *, fps: float | None = None) -> Image:
    """Read a single- or multi-frame DICOM image as grayscale.

    Parameters
    ----------
    path : str or Path
        A DICOM Part 10 file.
    fps : float, optional
        Frame rate (1/s) for a multi-frame file without timing; the file's own
        timing always wins.

    Returns
    -------
    Image
        Array ``(H, W)`` for one frame or ``(T, H, W)``, in the stored integer
        dtype; spacing ``(row_mm, col_mm)``; frame times (s) for a cine.

    Raises
    ------
    ImageReadError
        Not DICOM, no pixel data, unsupported transfer syntax or Photometric
        Interpretation, or a multi-frame file with no timing and no ``fps``.
    MissingDependencyError
        pydicom, or a decoder for the file's compression, is not installed.

    Notes
    -----
    Colour becomes grayscale exactly once. With pydicom >= 3 the pixels are
    decoded with ``raw=True``, so pydicom does not turn YCbCr into RGB, and the
    decoder reports the colour space the array really holds (JPEG 2000 codecs
    return YBR_ICT/YBR_RCT data as RGB and report RGB). With pydicom 2.x,
    ``ds.pixel_array`` converts nothing and YBR_ICT/YBR_RCT output is RGB. Then
    MONOCHROME2 is kept, MONOCHROME1 inverted, RGB becomes the rounded luminance
    0.299 R + 0.587 G + 0.114 B, and for YBR_FULL, YBR_FULL_422 and YBR_PARTIAL_*
    the Y channel is the image (a partial range kept as stored). No modality or
    VOI LUT is applied; PALETTE COLOR is not supported.

    Frame times: Frame Time (0018,1063; ms per frame), else Frame Time Vector
    (0018,1065; ms since the previous frame, first entry 0), else Cine Rate
    (0018,0040; 1/s), else ``fps``; the vector comes first when Frame Increment
    Pointer names it. Spacing: Pixel Spacing, else the first Sequence of
    Ultrasound Regions item calibrated in cm on both axes (Physical Delta Y, X
    times 10), else Imager Pixel Spacing, else (1.0, 1.0) with a logged warning.
    """
    path = _require_file(path)
    _check_fps(fps)
    try:
        import pydicom
    except ImportError as exc:
        raise MissingDependencyError(
            "reading DICOM needs pydicom: pip install 'echoscale[dicom]'", path
        ) from exc

    with _library_errors(path, "cannot read DICOM"):
        try:
            ds = pydicom.dcmread(path)
        except pydicom.errors.InvalidDicomError as exc:
            raise ImageReadError(f"not a DICOM file ({exc})", path) from exc
        if "PixelData" not in ds:
            raise ImageReadError("no Pixel Data element: not an image", path)
        pixels, photometric = _decode_dicom(ds, path)
        pixels = pixels.reshape(-1, ds.Rows, ds.Columns, ds.SamplesPerPixel)
        gray = _dicom_grayscale(pixels, photometric, int(ds.BitsStored), path)
        spacing = _dicom_spacing(ds, path)
        if gray.shape[0] == 1:
            return _make_image(path, gray[0], spacing, None)
        frame_times = _dicom_frame_times(ds, gray.shape[0], fps, path)
    return _make_image(path, gray, spacing, frame_times)


def _decode_dicom(ds, path: Path) -> tuple[np.ndarray, str]:
    """Return the decoded pixels and the colour space they really are in."""
    try:
        from pydicom.pixels import get_decoder
    except ImportError:  # pydicom 2.x
        try:
            pixels = ds.pixel_array
        except RuntimeError as exc:  # no handler whose dependencies are installed
            raise MissingDependencyError(f"cannot decode: {exc}", path) from exc
        photometric = str(ds.PhotometricInterpretation)
        return pixels, "RGB" if photometric in ("YBR_ICT", "YBR_RCT") else photometric

    syntax = ds.file_meta.TransferSyntaxUID
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as exc:
        msg = f"transfer syntax {syntax.name} ({syntax}) is not supported"
        raise ImageReadError(msg, path) from exc
    if not decoder.is_available:
        raise MissingDependencyError(
            f"pixel data is {syntax.name} ({syntax}) and no decoder is installed; "
            f"install one of: {'; '.join(decoder.missing_dependencies)}",
            path,
        )
    pixels, meta = decoder.as_array(ds, raw=True)
    return pixels, str(meta["photometric_interpretation"])


def _dicom_grayscale(pixels, photometric: str, bits_stored: int, path: Path):
    """Reduce ``pixels``, shape (T, H, W, samples), to grayscale (T, H, W)."""
    if photometric == "MONOCHROME1" and pixels.dtype.kind == "i":
        return np.invert(pixels[..., 0])  # -1 - v mirrors the signed range
    if photometric == "MONOCHROME1":
        top = 2**bits_stored - 1
        return top - np.minimum(pixels[..., 0], top)
    if photometric == "RGB":
        return _luminance(pixels)
    if photometric == "MONOCHROME2" or photometric.startswith("YBR_"):
        return pixels[..., 0]
    msg = f"Photometric Interpretation {photometric} is not supported"
    raise ImageReadError(msg + "; convert to MONOCHROME2 or RGB", path)


def _positive(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _dicom_frame_times(ds, n_frames: int, fps: float | None, path: Path) -> np.ndarray:
    """Return the frame times (s) of a multi-frame dataset, shape (T,)."""
    frames = np.arange(n_frames, dtype=np.float64)

    def frame_time():
        ms = _positive(ds.get("FrameTime"))
        return None if ms is None else frames * (ms / 1000.0)

    def frame_time_vector():
        if "FrameTimeVector" not in ds:
            return None
        steps = np.atleast_1d(np.asarray(ds.FrameTimeVector, dtype=np.float64))
        if steps.shape != (n_frames,) or not np.all(steps >= 0):
            msg = f"Frame Time Vector holds {steps.size} entries for {n_frames} frames"
            raise ImageReadError(msg + " (or a negative one)", path)
        times = np.cumsum(steps) / 1000.0
        return times - times[0]  # some writers fill the first entry too

    def cine_rate():
        rate = _positive(ds.get("CineRate"))
        return None if rate is None else frames / rate

    sources = [frame_time, frame_time_vector, cine_rate]
    if 0x00181065 in np.atleast_1d(ds.get("FrameIncrementPointer", [])).tolist():
        sources.insert(0, frame_time_vector)
    for source in sources:
        times = source()
        if times is not None:
            return times
    if fps is not None:
        return frames / fps
    sources = "Frame Time, Frame Time Vector or Cine Rate"
    raise ImageReadError(f"no frame timing ({sources}); pass --fps", path)


def _spacing_pair(values) -> tuple[float, float] | None:
    pair = [] if values is None else [_positive(v) for v in values]
    return (pair[0], pair[1]) if len(pair) == 2 and None not in pair else None


def _dicom_spacing(ds, path: Path) -> tuple[float, float]:
    """Return (row_mm, col_mm) from the dataset's calibration."""
    spacing = _spacing_pair(ds.get("PixelSpacing"))
    for region in [] if spacing else ds.get("SequenceOfUltrasoundRegions", []):
        units = [region.get(f"PhysicalUnits{axis}Direction") for axis in "YX"]
        if units == [3, 3]:  # cm on both axes
            deltas = [region.get(f"PhysicalDelta{axis}") for axis in "YX"]
            spacing = _spacing_pair([abs(float(d or 0)) * 10.0 for d in deltas])
            if spacing is not None:
                break
    spacing = spacing or _spacing_pair(ds.get("ImagerPixelSpacing"))
    if spacing is None:
        spacing = _unknown_spacing(path, "no Pixel Spacing, region or Imager Spacing")
    return spacing
