"""Image readers and writers: real CAMUS/echo/DICOM files, round trips, bad input."""

from __future__ import annotations

import gzip
import json
import logging
import os
import struct
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile

from echoscale import images
from echoscale.errors import ImageReadError

try:
    import pydicom
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, UltrasoundMultiFrameImageStorage
except ImportError:  # the optional extra is missing: DICOM tests skip
    pydicom = None
needs_pydicom = pytest.mark.skipif(pydicom is None, reason="pydicom is not installed")

ROOT = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(7)


def ramp(shape, dtype=np.uint16):
    """Distinct values in C order, so any transposition or flip shows."""
    return np.arange(np.prod(shape)).reshape(shape).astype(dtype)


def camus_file(shared_data: Path, name: str) -> Path:
    return shared_data / "camus" / "patient0001" / f"patient0001_{name}.nii.gz"


def read_cfg(path: Path) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in path.read_text().splitlines())


# --- real NIfTI files -------------------------------------------------------------


def test_camus_mask_is_apex_up_with_the_lv_above_the_la(shared_data):
    mask = images.read_nifti(camus_file(shared_data, "2CH_ED_gt")).array
    rows = np.arange(mask.shape[0])[:, None]
    lv_row = (rows * (mask == 1)).sum() / (mask == 1).sum()
    la_row = (rows * (mask == 3)).sum() / (mask == 3).sum()
    assert lv_row < la_row
    assert set(np.unique(mask).tolist()) == {0, 1, 2, 3}


def test_camus_image_is_rows_by_columns_of_the_header_dims(shared_data):
    path = camus_file(shared_data, "2CH_ED")
    image = images.read_nifti(path)
    dim = nib.load(path).header["dim"]
    assert image.array.shape == (dim[2], dim[1])  # rows = depth = dim2
    assert image.spacing == (0.308, 0.308)
    assert image.array.dtype == np.float32 and image.array.max() <= 255
    assert image.frame_times is None and not image.is_cine and image.n_frames == 1


def test_camus_image_equals_a_plain_c_order_read_of_the_data_block(shared_data):
    path = camus_file(shared_data, "2CH_ED")
    raw = gzip.decompress(path.read_bytes())
    dim = struct.unpack("<8h", raw[40:56])
    offset = int(struct.unpack("<f", raw[108:112])[0])
    block = np.frombuffer(raw, "<f4", dim[1] * dim[2], offset).reshape(dim[2], dim[1])
    np.testing.assert_array_equal(images.read_nifti(path).array, block)


def test_camus_half_sequence_comes_back_frames_first_with_ed_and_es_frames(shared_data):
    info = read_cfg(shared_data / "camus" / "patient0001" / "Info_2CH.cfg")
    cine = images.read_image(camus_file(shared_data, "2CH_half_sequence"))
    ed = images.read_image(camus_file(shared_data, "2CH_ED")).array
    es = images.read_image(camus_file(shared_data, "2CH_ES")).array
    assert cine.is_cine and cine.array.shape == (int(info["NbFrame"]), *ed.shape)
    np.testing.assert_array_equal(cine.array[int(info["ED"]) - 1], ed)
    np.testing.assert_array_equal(cine.array[int(info["ES"]) - 1], es)
    assert cine.frame_times is None  # pixdim[4] is 0 in CAMUS


def test_camus_sequence_masks_hold_only_the_four_labels(shared_data):
    masks = images.read_nifti(camus_file(shared_data, "2CH_half_sequence_gt"))
    assert masks.array.ndim == 3 and masks.spacing == (0.308, 0.308)
    assert set(np.unique(masks.array).tolist()) == {0, 1, 2, 3}


def test_echo_toolkit_cine_applies_its_stored_slope_and_ignores_unset_pixdim4(
    shared_data,
):
    path = shared_data / "echo_toolkit" / "a4c_sequence.nii.gz"
    with gzip.open(path) as f:
        raw_header = f.read(348)
    slope = struct.unpack("<f", raw_header[112:116])[0]
    assert slope == pytest.approx(254 / 255)  # nibabel shows NaN once it applies it
    image = images.read_nifti(path)
    assert image.array.shape == (20, 480, 560)
    assert image.spacing == (0.4, 0.4)
    assert image.array.dtype == np.float32
    stored = nib.load(path).dataobj.get_unscaled()
    np.testing.assert_allclose(image.array[3], stored[:, :, 3].T * slope, rtol=1e-6)
    assert image.frame_times is None  # pixdim[4] = 1 with unknown time units


def test_truncated_nifti_gz_names_the_file(shared_data, tmp_path):
    data = camus_file(shared_data, "2CH_ED").read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="truncated gzip stream") as info:
        images.read_image(cut)
    assert str(cut) in str(info.value)


# --- NIfTI written here -----------------------------------------------------------


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_cine_round_trips_frames_first_with_anisotropic_spacing(tmp_path, suffix):
    cine = ramp((4, 5, 7))
    path = tmp_path / f"cine{suffix}"
    images.write_nifti(path, cine, (0.3, 0.5), frame_times=np.arange(4) * 0.02)
    back = images.read_image(path)
    np.testing.assert_array_equal(back.array, cine)
    assert back.array.dtype == np.uint16
    assert back.spacing == (0.3, 0.5)
    np.testing.assert_allclose(back.frame_times, [0, 0.02, 0.04, 0.06], rtol=1e-6)


def test_nifti_writer_uses_the_camus_axes_units_and_orientation(tmp_path, shared_data):
    path = tmp_path / "still.nii.gz"
    images.write_nifti(path, ramp((5, 7), np.float32), (0.3, 0.5))
    img = nib.load(path)
    assert img.shape == (7, 5)  # (W, H): dim1 lateral
    assert img.header["pixdim"][1:3] == pytest.approx([0.5, 0.3])
    assert img.header.get_xyzt_units() == ("mm", "sec")
    camus = nib.load(camus_file(shared_data, "2CH_ED"))
    assert nib.aff2axcodes(img.affine) == nib.aff2axcodes(camus.affine)


def test_nifti_cine_written_without_times_reads_back_without_times(tmp_path):
    path = tmp_path / "cine.nii.gz"
    images.write_nifti(path, ramp((3, 4, 5)), (0.3, 0.3))
    assert images.read_nifti(path).frame_times is None
    fallback = images.read_image(path, fps=25.0)
    np.testing.assert_allclose(fallback.frame_times, [0, 0.04, 0.08])


def test_nifti_refuses_unevenly_spaced_frame_times(tmp_path):
    with pytest.raises(ValueError, match="not evenly spaced"):
        images.write_nifti(tmp_path / "x.nii", ramp((3, 4, 5)), (1, 1), [0, 0.02, 0.05])


def test_nifti_spatial_and_time_units_are_converted(tmp_path):
    img = nib.Nifti1Image(ramp((7, 5, 3)), np.eye(4))
    img.header.set_zooms((500.0, 300.0, 1.0))
    img.header["pixdim"][4] = 20.0
    img.header.set_xyzt_units("micron", "msec")
    path = tmp_path / "units.nii"
    nib.save(img, path)
    back = images.read_nifti(path)
    assert back.spacing == pytest.approx((0.3, 0.5))
    np.testing.assert_allclose(back.frame_times, [0, 0.02, 0.04])


@pytest.mark.parametrize(("pixdim4", "expected"), [(0.025, 0.025), (1.0, None)])
def test_nifti_unknown_time_unit_is_seconds_only_below_one(tmp_path, pixdim4, expected):
    img = nib.Nifti1Image(ramp((7, 5, 3)), np.eye(4))
    img.header["pixdim"][4] = pixdim4
    path = tmp_path / "t.nii"
    nib.save(img, path)
    times = images.read_nifti(path).frame_times
    if expected is None:
        assert times is None
    else:
        np.testing.assert_allclose(times, np.arange(3) * expected, rtol=1e-6)


def test_scaled_nifti_is_returned_as_scaled_float32(tmp_path):
    stored = ramp((7, 5), np.int16)
    img = nib.Nifti1Image(stored, np.eye(4))
    img.header.set_slope_inter(0.5, 10.0)
    path = tmp_path / "scaled.nii"
    nib.save(img, path)
    back = images.read_nifti(path).array
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, stored.T * 0.5 + 10.0)


def test_nifti_with_time_in_the_fourth_dimension_is_a_cine(tmp_path):
    img = nib.Nifti1Image(ramp((7, 5, 1, 3)), np.eye(4))
    img.header.set_zooms((0.5, 0.3, 1.0, 0.04))
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, tmp_path / "xyzt.nii")
    back = images.read_nifti(tmp_path / "xyzt.nii")
    np.testing.assert_array_equal(
        back.array, ramp((7, 5, 1, 3))[:, :, 0].transpose(2, 1, 0)
    )
    np.testing.assert_allclose(back.frame_times, [0, 0.04, 0.08], rtol=1e-6)


def test_nifti_volume_cine_is_refused(tmp_path):
    nib.save(nib.Nifti1Image(ramp((7, 5, 2, 3)), np.eye(4)), tmp_path / "vol.nii")
    with pytest.raises(ImageReadError, match=r"shape \(7, 5, 2, 3\) .* not a 2-D"):
        images.read_image(tmp_path / "vol.nii")


def test_truncated_uncompressed_nifti_names_the_file(tmp_path):
    path = tmp_path / "cut.nii"
    images.write_nifti(path, ramp((3, 20, 30)), (1, 1))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ImageReadError, match="cannot read NIfTI") as info:
        images.read_image(path)
    assert str(path) in str(info.value)


# --- MetaImage --------------------------------------------------------------------


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("array", [ramp((5, 7)), ramp((3, 5, 7), np.float32)])
def test_metaimage_round_trips_raw_and_compressed(tmp_path, compressed, array):
    path = tmp_path / "img.mhd"
    images.write_metaimage(path, array, (0.3, 0.5), compressed=compressed)
    data_file = tmp_path / ("img.zraw" if compressed else "img.raw")
    header = path.read_text()
    assert "ElementSpacing = 0.5 0.3" in header  # x (lateral) first
    assert f"DimSize = {' '.join(map(str, array.shape[::-1]))}" in header
    assert f"ElementDataFile = {data_file.name}" in header
    back = images.read_image(path)
    np.testing.assert_array_equal(back.array, array)
    assert back.array.dtype == array.dtype and back.spacing == (0.3, 0.5)
    assert back.frame_times is None


def test_mha_with_local_data_after_the_header_is_read(tmp_path):
    header = b"NDims = 3\nDimSize = 7 5 3\nElementType = MET_SHORT\n"
    header += b"ElementSpacing = 0.5 0.3 1\nElementDataFile = LOCAL\n"
    path = tmp_path / "img.mha"
    path.write_bytes(header + ramp((3, 5, 7), np.int16).astype("<i2").tobytes())
    back = images.read_image(path)
    np.testing.assert_array_equal(back.array, ramp((3, 5, 7), np.int16))
    assert back.spacing == (0.3, 0.5)


def write_mhd(folder: Path, header: str, data: bytes, name: str = "img") -> Path:
    (folder / f"{name}.raw").write_bytes(data)
    path = folder / f"{name}.mhd"
    path.write_text(header + f"ElementDataFile = {name}.raw\n")
    return path


CAMUS_2019_HEADER = """ObjectType = Image
NDims = 2
BinaryData = True
{order} = True
CompressedData = False
TransformMatrix = 1 0 0 1
Offset = 0 0
CenterOfRotation = 0 0
AnatomicalOrientation = RA
ElementSpacing = 0.154 0.308
DimSize = 7 5
ElementType = {element_type}
"""


@pytest.mark.parametrize("order", ["BinaryDataByteOrderMSB", "ElementByteOrderMSB"])
@pytest.mark.parametrize(
    ("element_type", "dtype"), [("MET_USHORT", ">u2"), ("MET_FLOAT", ">f4")]
)
def test_big_endian_metaimage_is_read_in_native_order(
    tmp_path, order, element_type, dtype
):
    values = ramp((5, 7), np.float64) * 3.5 if dtype == ">f4" else ramp((5, 7))
    header = CAMUS_2019_HEADER.format(order=order, element_type=element_type)
    path = write_mhd(tmp_path, header, values.astype(dtype).tobytes())
    back = images.read_metaimage(path)
    np.testing.assert_array_equal(back.array, values.astype(dtype))
    assert back.array.dtype.isnative
    assert back.spacing == (0.308, 0.154)  # (row, col) = (y, x)


def test_metaimage_long_is_four_bytes_as_metaio_defines_it(tmp_path):
    header = "NDims = 2\nDimSize = 3 2\nElementType = MET_LONG\nElementSpacing = 1 1\n"
    path = write_mhd(
        tmp_path, header, np.array([[-1, 2, 3], [4, 5, -6]], "<i4").tobytes()
    )
    back = images.read_metaimage(path).array
    assert back.dtype == np.int32 and back.tolist() == [[-1, 2, 3], [4, 5, -6]]


def test_metaimage_header_size_skips_leading_bytes(tmp_path):
    header = "NDims = 2\nDimSize = 3 2\nElementType = MET_UCHAR\nHeaderSize = 4\n"
    path = write_mhd(tmp_path, header, b"junk" + bytes(range(6)))
    assert images.read_metaimage(path).array.tolist() == [[0, 1, 2], [3, 4, 5]]


def test_metaimage_data_of_the_wrong_size_names_both_sizes(tmp_path):
    header = CAMUS_2019_HEADER.replace("DimSize = 7 5", "DimSize = 549 389").format(
        order="BinaryDataByteOrderMSB", element_type="MET_UCHAR"
    )
    path = write_mhd(tmp_path, header, bytes(1000), name="patient0001_2CH_ED")
    with pytest.raises(ImageReadError) as info:
        images.read_image(path)
    assert str(info.value) == (
        f"{path}: patient0001_2CH_ED.raw holds 1000 bytes but DimSize 549 x 389 "
        "of MET_UCHAR needs 213561 bytes"
    )


def test_metaimage_without_its_data_file_names_the_data_file(tmp_path):
    path = tmp_path / "img.mhd"
    images.write_metaimage(path, ramp((5, 7)), (1, 1))
    (tmp_path / "img.raw").unlink()
    with pytest.raises(ImageReadError, match=r"data file img\.raw .* is missing"):
        images.read_image(path)


def test_metaimage_with_corrupt_zlib_data_is_an_error(tmp_path):
    path = tmp_path / "img.mhd"
    images.write_metaimage(path, RNG.integers(0, 255, (20, 30), np.uint8), (1, 1), True)
    data = bytearray((tmp_path / "img.zraw").read_bytes())
    data[len(data) // 2 :] = bytes(len(data) - len(data) // 2)
    (tmp_path / "img.zraw").write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match=r"corrupt zlib stream in img\.zraw"):
        images.read_image(path)


def test_multichannel_metaimage_is_refused_by_name(tmp_path):
    header = "NDims = 2\nDimSize = 3 2\nElementType = MET_UCHAR\n"
    path = write_mhd(tmp_path, header + "ElementNumberOfChannels = 3\n", bytes(18))
    with pytest.raises(ImageReadError, match="ElementNumberOfChannels = 3"):
        images.read_image(path)


@pytest.mark.parametrize(
    ("header", "match"),
    [
        ("NDims = 2\nElementType = MET_UCHAR\n", "has no DimSize"),
        ("NDims = 4\nDimSize = 1 1 1 1\nElementType = MET_UCHAR\n", "NDims 4"),
        ("NDims = 2\nDimSize = 1 1\nElementType = MET_STRING\n", "MET_STRING"),
    ],
)
def test_metaimage_headers_we_cannot_read_are_named(tmp_path, header, match):
    with pytest.raises(ImageReadError, match=match):
        images.read_image(write_mhd(tmp_path, header, bytes(1)))


# --- TIFF -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_tiff_cine_round_trips_spacing_and_uneven_frame_times_exactly(tmp_path, dtype):
    cine = ramp((4, 5, 7), dtype)
    times = [0.0, 0.0201, 0.0399, 0.0613]
    path = tmp_path / "cine.tif"
    images.write_tiff(path, cine, (0.3, 0.5), frame_times=times)
    back = images.read_image(path)
    np.testing.assert_array_equal(back.array, cine)
    assert back.array.dtype == dtype
    assert back.spacing == (0.3, 0.5)
    assert back.frame_times.tolist() == times


def test_tiff_still_and_single_frame_cine_keep_their_dimensions(tmp_path):
    images.write_tiff(tmp_path / "still.tif", ramp((5, 7)), (0.3, 0.5))
    images.write_tiff(tmp_path / "one.tif", ramp((1, 5, 7)), (0.3, 0.5), [0.0])
    assert images.read_tiff(tmp_path / "still.tif").array.shape == (5, 7)
    one = images.read_tiff(tmp_path / "one.tif")
    assert one.array.shape == (1, 5, 7) and one.frame_times.tolist() == [0.0]


def test_tiff_carries_imagej_calibration_for_fiji(tmp_path):
    path = tmp_path / "cine.tif"
    images.write_tiff(path, ramp((3, 5, 7), np.uint8), (0.3, 0.5), [0, 0.02, 0.04])
    with tifffile.TiffFile(path) as tif:
        meta = tif.imagej_metadata
        page = tif.pages[0]
        xres, yres = page.tags["XResolution"].value, page.tags["YResolution"].value
    assert meta["unit"] == "mm" and meta["frames"] == 3
    assert meta["finterval"] == pytest.approx(0.02)
    assert xres[1] / xres[0] == pytest.approx(0.5)  # mm per pixel across
    assert yres[1] / yres[0] == pytest.approx(0.3)  # mm per pixel down
    assert json.loads(meta["Properties"]["echoscale"])["spacing_mm"] == [0.3, 0.5]


def test_tiff_written_frame_by_frame_comes_back_in_order(tmp_path, caplog):
    path = tmp_path / "appended.tif"
    frames = ramp((4, 5, 7), np.uint8)
    for frame in frames:
        tifffile.imwrite(path, frame, append=True)
    with caplog.at_level(logging.WARNING, logger="echoscale.images"):
        back = images.read_image(path)
    np.testing.assert_array_equal(back.array, frames)
    assert back.spacing == (1.0, 1.0) and back.frame_times is None
    assert "assuming 1 mm pixels" in caplog.text and "appended.tif" in caplog.text


def test_plain_tiff_resolution_in_centimetres_becomes_millimetres(tmp_path):
    path = tmp_path / "cm.tif"
    tifffile.imwrite(
        path, ramp((5, 7)), resolution=(20.0, 4.0), resolutionunit="CENTIMETER"
    )
    assert images.read_tiff(path).spacing == pytest.approx((2.5, 0.5))


def test_imagej_tiff_from_elsewhere_gives_micron_spacing_and_finterval(tmp_path):
    path = tmp_path / "fiji.tif"
    tifffile.imwrite(
        path,
        ramp((3, 5, 7), np.uint8),
        imagej=True,
        resolution=(1 / 500, 1 / 300),
        metadata={"axes": "TYX", "unit": "micron", "finterval": 0.04},
    )
    back = images.read_tiff(path)
    assert back.spacing == pytest.approx((0.3, 0.5))
    np.testing.assert_allclose(back.frame_times, [0, 0.04, 0.08])


def test_tiff_pages_of_different_shapes_are_an_error(tmp_path):
    path = tmp_path / "mixed.tif"
    tifffile.imwrite(path, ramp((5, 7), np.uint8), append=True)
    tifffile.imwrite(path, ramp((5, 8), np.uint8), append=True)
    with pytest.raises(ImageReadError, match="page 1 has shape"):
        images.read_image(path)


def test_truncated_tiff_is_an_error_not_fewer_frames(tmp_path):
    path = tmp_path / "cine.tif"
    images.write_tiff(path, RNG.integers(0, 255, (6, 20, 30), np.uint8), (1, 1))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="cine.tif"):
        images.read_image(path)


def test_tiff_with_a_damaged_echoscale_property_is_an_error(tmp_path):
    path = tmp_path / "bad.tif"
    tifffile.imwrite(
        path,
        ramp((5, 7), np.uint8),
        imagej=True,
        metadata={"Properties": {"echoscale": "{not json"}},
    )
    with pytest.raises(ImageReadError, match="damaged ImageJ property 'echoscale'"):
        images.read_image(path)


# --- DICOM ------------------------------------------------------------------------


def write_dicom(
    path, frames, photometric="MONOCHROME2", *, pixel_data=None, **elements
):
    """Write an uncompressed explicit-VR little-endian US file of ``frames``.

    ``frames`` is (T, H, W) or (T, H, W, 3) in the stored dtype; ``pixel_data``
    overrides the bytes (for YBR_FULL_422's subsampled layout).
    """
    frames = np.asarray(frames)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage
    meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = UltrasoundMultiFrameImageStorage, "1.2.3.4"
    ds.Modality = "US"
    ds.NumberOfFrames, ds.Rows, ds.Columns = frames.shape[:3]
    ds.SamplesPerPixel = frames.shape[3] if frames.ndim == 4 else 1
    if ds.SamplesPerPixel == 3:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = frames.dtype.itemsize * 8
    ds.BitsStored = elements.pop("BitsStored", ds.BitsAllocated)
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(frames.dtype.kind == "i")
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    ds.PixelData = frames.tobytes() if pixel_data is None else pixel_data
    ds.save_as(path, enforce_file_format=True)
    return Path(path)


CINE = RNG.integers(0, 256, (4, 6, 8), dtype=np.uint8)


@needs_pydicom
@pytest.mark.parametrize(
    ("elements", "expected"),
    [
        ({"FrameTime": 20}, [0, 0.02, 0.04, 0.06]),
        ({"FrameTimeVector": [0, 20, 25, 30]}, [0, 0.02, 0.045, 0.075]),
        ({"CineRate": 50}, [0, 0.02, 0.04, 0.06]),
    ],
    ids=["frame_time", "frame_time_vector", "cine_rate"],
)
def test_dicom_cine_frame_times_come_from_the_file(tmp_path, elements, expected):
    path = write_dicom(tmp_path / "cine.dcm", CINE, **elements)
    image = images.read_image(path, fps=10.0)  # the file's timing wins over fps
    np.testing.assert_array_equal(image.array, CINE)
    np.testing.assert_allclose(image.frame_times, expected)


@needs_pydicom
def test_frame_increment_pointer_chooses_the_frame_time_vector(tmp_path):
    path = write_dicom(
        tmp_path / "cine.dcm",
        CINE,
        FrameTime=20,
        FrameTimeVector=[0, 10, 10, 30],
        FrameIncrementPointer=0x00181065,
    )
    np.testing.assert_allclose(
        images.read_dicom(path).frame_times, [0, 0.01, 0.02, 0.05]
    )


@needs_pydicom
def test_dicom_cine_without_timing_needs_fps(tmp_path):
    path = write_dicom(tmp_path / "cine.dcm", CINE)
    with pytest.raises(ImageReadError, match="no frame timing.*--fps") as info:
        images.read_image(path)
    assert str(path) in str(info.value)
    image = images.read_image(path, fps=25.0)
    np.testing.assert_allclose(image.frame_times, [0, 0.04, 0.08, 0.12])


@needs_pydicom
def test_single_frame_dicom_is_a_still_without_timing(tmp_path):
    path = write_dicom(tmp_path / "still.dcm", CINE[:1], PixelSpacing=[0.3, 0.5])
    image = images.read_dicom(path)
    assert image.array.shape == (6, 8) and image.frame_times is None
    assert image.spacing == (0.3, 0.5)  # Pixel Spacing is (row, col)


def ultrasound_region(units_x, units_y, delta_x, delta_y):
    region = Dataset()
    region.PhysicalUnitsXDirection, region.PhysicalUnitsYDirection = units_x, units_y
    region.PhysicalDeltaX, region.PhysicalDeltaY = delta_x, delta_y
    return region


@needs_pydicom
def test_dicom_spacing_comes_from_the_first_region_calibrated_in_cm(tmp_path):
    doppler = ultrasound_region(4, 7, 0.01, 2.0)  # seconds by cm/s: not a length
    tissue = ultrasound_region(3, 3, 0.05, -0.03)
    path = write_dicom(
        tmp_path / "us.dcm",
        CINE,
        FrameTime=20,
        SequenceOfUltrasoundRegions=[doppler, tissue],
    )
    assert images.read_dicom(path).spacing == pytest.approx((0.3, 0.5))


@needs_pydicom
def test_dicom_without_calibration_warns_and_assumes_one_millimetre(tmp_path, caplog):
    path = write_dicom(tmp_path / "bare.dcm", CINE[:1])
    with caplog.at_level(logging.WARNING, logger="echoscale.images"):
        assert images.read_dicom(path).spacing == (1.0, 1.0)
    assert "no Pixel Spacing" in caplog.text


@needs_pydicom
def test_rgb_dicom_becomes_luminance(tmp_path):
    rgb = np.zeros((2, 2, 3, 3), np.uint8)
    rgb[..., 0], rgb[:, 1, :, 1], rgb[:, :, 2, 2] = 200, 100, 50
    path = write_dicom(tmp_path / "rgb.dcm", rgb, "RGB", FrameTime=20)
    gray = images.read_dicom(path).array
    expected = np.rint(0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2])
    np.testing.assert_array_equal(gray, expected)
    assert gray.dtype == np.uint8


@needs_pydicom
def test_ybr_full_dicom_gives_its_y_channel_unconverted(tmp_path):
    # Cb, Cr far from 128: R would be 5 and a luminance of YCbCr 154, not Y = 100.
    ybr = np.empty((2, 3, 4, 3), np.uint8)
    ybr[..., 0], ybr[..., 1], ybr[..., 2] = 100, 200, 60
    ybr[0, 0, 0, 0] = 30
    path = write_dicom(tmp_path / "ybr.dcm", ybr, "YBR_FULL", FrameTime=20)
    np.testing.assert_array_equal(images.read_dicom(path).array, ybr[..., 0])


@needs_pydicom
def test_ybr_full_422_dicom_gives_each_pixels_own_y(tmp_path):
    y = ramp((2, 3, 4), np.uint8) * 5
    packed = np.empty((2, 3, 2, 4), np.uint8)  # per pixel pair: Y1 Y2 Cb Cr
    packed[..., 0], packed[..., 1] = y[..., 0::2], y[..., 1::2]
    packed[..., 2], packed[..., 3] = 200, 60
    path = write_dicom(
        tmp_path / "422.dcm",
        np.zeros((2, 3, 4, 3), np.uint8),
        "YBR_FULL_422",
        pixel_data=packed.tobytes(),
        CineRate=30,
    )
    np.testing.assert_array_equal(images.read_dicom(path).array, y)


@needs_pydicom
def test_monochrome1_is_inverted_within_bits_stored(tmp_path):
    stored = np.array([[[0, 1000], [4095, 2048]]], np.uint16)
    path = write_dicom(tmp_path / "m1.dcm", stored, "MONOCHROME1", BitsStored=12)
    assert images.read_dicom(path).array.tolist() == [[4095, 3095], [0, 2047]]


@needs_pydicom
def test_extensionless_dicom_is_recognised_by_its_preamble(tmp_path):
    path = write_dicom(tmp_path / "IM_0001", CINE, CineRate=25)
    assert images.read_image(path).array.shape == CINE.shape


@needs_pydicom
def test_real_uncompressed_rgb_ultrasound_becomes_luminance(shared_data):
    path = shared_data / "dicom_us" / "pydicom" / "US1_UNCR.dcm"
    image = images.read_image(path)
    rgb = pydicom.dcmread(path).pixel_array.astype(np.float64)
    expected = np.rint(rgb @ [0.299, 0.587, 0.114])
    assert image.array.shape == (480, 640) and image.array.dtype == np.uint8
    assert np.abs(image.array - expected).max() <= 1
    assert image.frame_times is None and image.spacing == (1.0, 1.0)


@needs_pydicom
def test_real_jpeg2000_ultrasound_is_converted_exactly_once(shared_data):
    folder = shared_data / "dicom_us" / "pydicom"
    from pydicom.pixels import get_decoder

    if not get_decoder(pydicom.uid.JPEG2000).is_available:
        pytest.skip("no JPEG 2000 decoder installed")
    lossy = images.read_image(folder / "US1_J2KI.dcm").array.astype(float)
    exact = images.read_image(folder / "US1_UNCR.dcm").array.astype(float)
    assert np.abs(lossy - exact).mean() < 2.0
    # Taking the decoded (already RGB) array as YCbCr would keep only R.
    red = pydicom.dcmread(folder / "US1_UNCR.dcm").pixel_array[..., 0]
    assert np.abs(red - exact).mean() > 2 * np.abs(lossy - exact).mean()


@needs_pydicom
def test_frame_time_vector_of_the_wrong_length_is_an_error(tmp_path):
    path = write_dicom(tmp_path / "cine.dcm", CINE, FrameTimeVector=[0, 20, 20])
    with pytest.raises(ImageReadError, match="holds 3 entries for 4 frames"):
        images.read_image(path)


@needs_pydicom
def test_signed_monochrome1_is_mirrored_and_palette_colour_refused(tmp_path):
    signed = np.array([[[-5, 0], [7, -128]]], np.int8)
    path = write_dicom(tmp_path / "s.dcm", signed, "MONOCHROME1")
    assert images.read_dicom(path).array.tolist() == [[4, -1], [-8, 127]]
    path = write_dicom(tmp_path / "p.dcm", CINE[:1], "PALETTE COLOR")
    with pytest.raises(ImageReadError, match="PALETTE COLOR is not supported"):
        images.read_dicom(path)


def run_without(modules: list[str], path: Path) -> subprocess.CompletedProcess:
    """Read ``path`` with read_dicom in a Python where ``modules`` cannot import."""
    code = (
        "import sys\n"
        f"for name in {modules!r}:\n"
        "    sys.modules[name] = None\n"
        "from echoscale.errors import MissingDependencyError\n"
        "from echoscale.images import read_dicom\n"
        "try:\n"
        "    read_dicom(sys.argv[1])\n"
        "except MissingDependencyError as exc:\n"
        "    print(exc)\n"
        "    sys.exit(3)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@needs_pydicom
def test_missing_jpeg2000_decoder_names_what_to_install(shared_data):
    path = shared_data / "dicom_us" / "pydicom" / "US1_J2KI.dcm"
    result = run_without(["PIL", "pylibjpeg", "openjpeg", "gdcm"], path)
    assert result.returncode == 3, result.stderr
    assert "US1_J2KI.dcm" in result.stdout and "1.2.840.10008.1.2.4.91" in result.stdout
    assert "no decoder is installed" in result.stdout
    assert "pylibjpeg-openjpeg" in result.stdout and "pillow" in result.stdout


def test_missing_pydicom_names_the_extra_to_install(shared_data):
    path = shared_data / "dicom_us" / "pydicom" / "US1_UNCR.dcm"
    result = run_without(["pydicom"], path)
    assert result.returncode == 3, result.stderr
    assert "pip install 'echoscale[dicom]'" in result.stdout


# --- bad input, validation, determinism, atomic writes ----------------------------


@pytest.mark.parametrize("name", ["x.nii.gz", "x.nii", "x.mhd", "x.tif", "x.dcm"])
def test_garbage_bytes_give_an_image_read_error_naming_the_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x89garbage\x00" * 64)
    with pytest.raises(ImageReadError) as info:
        images.read_image(path)
    assert str(info.value).startswith(f"{path}: ")


@pytest.mark.parametrize("name", ["x.nii.gz", "x.mhd", "x.tiff", "x.dcm"])
def test_empty_file_is_an_error_naming_the_file(tmp_path, name):
    (tmp_path / name).touch()
    with pytest.raises(ImageReadError, match="empty file") as info:
        images.read_image(tmp_path / name)
    assert name in str(info.value)


def test_missing_file_and_unknown_type_are_errors(tmp_path):
    with pytest.raises(ImageReadError, match="file not found"):
        images.read_image(tmp_path / "absent.nii.gz")
    (tmp_path / "picture.png").write_bytes(b"\x89PNG" + bytes(200))
    with pytest.raises(ImageReadError, match="unsupported file type .png"):
        images.read_image(tmp_path / "picture.png")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"array": np.zeros(5)}, "array must be"),
        ({"array": np.zeros((2, 3, 4, 5))}, "array must be"),
        ({"spacing": (0.0, 1.0)}, "spacing must be"),
        ({"spacing": (float("nan"), 1.0)}, "spacing must be"),
        ({"spacing": (1.0,)}, "spacing must be"),
        ({"frame_times": [0.0, 0.1]}, r"frame_times must have shape \(3,\)"),
        ({"frame_times": [0.1, 0.2, 0.3]}, "starting at 0"),
        ({"frame_times": [0.0, 0.2, 0.1]}, "non-decreasing"),
        ({"array": np.zeros((4, 5)), "frame_times": [0.0]}, "must be None for a still"),
        ({"array": np.zeros((3, 4, 5), bool)}, "dtype bool"),
    ],
)
@pytest.mark.parametrize("suffix", [".tif", ".nii.gz"])
def test_writers_reject_bad_arguments_by_name(tmp_path, kwargs, match, suffix):
    args = {"array": np.zeros((3, 4, 5), np.uint8), "spacing": (0.3, 0.5)} | kwargs
    with pytest.raises(ValueError, match=match):
        images.write_image(tmp_path / f"x{suffix}", **args)
    assert list(tmp_path.iterdir()) == []


def test_metaimage_and_tiff_refuse_what_they_cannot_store(tmp_path):
    with pytest.raises(ValueError, match="cannot store frame_times"):
        images.write_image(tmp_path / "x.mhd", np.zeros((2, 3, 4)), (1, 1), [0, 1])
    with pytest.raises(ValueError, match="float64 cannot be written as TIFF"):
        images.write_tiff(tmp_path / "x.tif", np.zeros((3, 4)), (1, 1))
    with pytest.raises(ValueError, match="unsupported output type .png"):
        images.write_image(tmp_path / "x.png", np.zeros((3, 4), np.uint8), (1, 1))


@pytest.mark.parametrize("name", ["x.tif", "x.nii.gz", "x.nii", "x.mhd"])
def test_writing_the_same_image_twice_gives_identical_bytes(tmp_path, name):
    cine = RNG.integers(0, 4, (3, 20, 30)).astype(np.uint8)
    times = None if name.endswith(".mhd") else [0, 0.02, 0.04]
    for folder in ("a", "b"):
        images.write_image(tmp_path / folder / name, cine, (0.3, 0.5), times)
    written = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert written == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert written == ([name, "x.raw"] if name.endswith(".mhd") else [name])
    for file in written:
        assert (tmp_path / "a" / file).read_bytes() == (
            tmp_path / "b" / file
        ).read_bytes()


def test_compressed_metaimage_is_deterministic_too(tmp_path):
    mask = RNG.integers(0, 4, (20, 30)).astype(np.uint8)
    for folder in ("a", "b"):
        images.write_metaimage(tmp_path / folder / "m.mhd", mask, (1, 1), True)
    assert (tmp_path / "a/m.zraw").read_bytes() == (tmp_path / "b/m.zraw").read_bytes()


def test_tiff_writer_failing_midway_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "old.tif"
    images.write_tiff(path, ramp((5, 7), np.uint8), (1, 1))
    before = path.read_bytes()

    def half_write(target, data, **kwargs):
        Path(target).write_bytes(b"II*\x00partial")
        raise OSError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", half_write)
    with pytest.raises(OSError, match="disk full"):
        images.write_tiff(path, ramp((3, 5, 7), np.uint8), (0.3, 0.5))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["old.tif"]


def test_metaimage_header_failing_leaves_old_header_and_data(tmp_path, monkeypatch):
    path = tmp_path / "old.mhd"
    images.write_metaimage(path, ramp((5, 7), np.uint8), (1, 1))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_write_bytes = Path.write_bytes

    def failing_header(self, data):
        if self.name.endswith(".mhd"):  # the temporary header
            real_write_bytes(self, data[:10])
            raise OSError("disk full")
        return real_write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", failing_header)
    with pytest.raises(OSError, match="disk full"):
        images.write_metaimage(path, ramp((5, 7), np.uint8) + 1, (0.3, 0.5))
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize("name", ["x.tif", "x.nii.gz", "x.mhd"])
def test_invalid_input_leaves_an_existing_file_untouched(tmp_path, name):
    path = tmp_path / name
    images.write_image(path, ramp((5, 7), np.uint8), (1, 1))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ValueError):
        images.write_image(path, np.zeros((5, 7), bool), (1, 1))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_fps_must_be_a_positive_rate(tmp_path):
    images.write_nifti(tmp_path / "c.nii", ramp((2, 3, 4)), (1, 1))
    with pytest.raises(ValueError, match="fps must be a positive"):
        images.read_image(tmp_path / "c.nii", fps=0.0)


def test_image_checks_its_own_fields():
    with pytest.raises(ValueError, match="spacing"):
        images.Image(np.zeros((3, 4)), (0.3, -1.0), None, Path("x.tif"))
    image = images.Image(np.zeros((2, 3, 4)), [0.3, 0.5], [0, 0.1], "x.tif")
    assert image.spacing == (0.3, 0.5) and image.path == Path("x.tif")
    assert image.is_cine and image.n_frames == 2 and image.frame_times.dtype == float


def test_read_header_gives_the_reader_geometry_without_the_pixels(shared_data):
    path = shared_data / "camus/patient0001/patient0001_2CH_half_sequence.nii.gz"
    header = images.read_header(path, verify=True)
    image = images.read_image(path)
    assert header.shape == image.array.shape == (18, 389, 549)
    assert header.spacing == image.spacing == (0.308, 0.308)


def test_read_header_verify_catches_what_a_header_read_misses(shared_data, tmp_path):
    source = shared_data / "camus/patient0001/patient0001_4CH_ED.nii.gz"
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(source.read_bytes()[:-2000])
    assert images.read_header(cut).shape == images.read_header(source).shape
    with pytest.raises(ImageReadError, match="truncated") as info:
        images.read_header(cut, verify=True)
    assert "cut.nii.gz" in str(info.value)
