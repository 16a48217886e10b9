"""The CAMUS reader: patient discovery, cfg files and the checks before any work."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import make_camus_patient

from echoscale import camus, images
from echoscale.errors import InputError


def test_all_thirteen_real_patient_folders_are_found(camus_root):
    dirs = camus.find_patient_dirs(camus_root)
    assert [d.name for d in dirs][:2] == ["patient0001", "patient0002"]
    assert len(dirs) == 13


def test_patient_folders_one_level_down_are_found(tmp_path):
    make_camus_patient(tmp_path / "database_nifti", "patient0007")
    assert [d.name for d in camus.find_patient_dirs(tmp_path)] == ["patient0007"]


def test_a_folder_without_patients_is_an_error(tmp_path):
    with pytest.raises(InputError, match="no patientNNNN folders"):
        camus.find_patient_dirs(tmp_path)


def test_patient0016_reports_exactly_the_files_missing_upstream(camus_root):
    with pytest.raises(camus.IncompletePatientError) as info:
        camus.scan_patient(camus_root / "patient0016")
    err = info.value
    assert err.missing == ["Info_2CH.cfg", "patient0016_2CH_ED.nii.gz", "Info_4CH.cfg"]
    assert "patient0016" in str(err) and "7 of the 10 required files" in str(err)


def test_a_complete_real_patient_scans_with_both_views(camus_root):
    patient = camus.scan_patient(camus_root / "patient0001", sequences=True)
    assert patient.release == "nifti"
    assert set(patient.views) == {"2CH", "4CH"}
    cam = patient.views["2CH"]
    assert (cam.info.ed, cam.info.es, cam.info.n_frames) == (1, 18, 18)
    assert (
        cam.info.quality == "Good" and cam.info.ef == 54 and cam.info.frame_rate == 48.4
    )
    assert cam.sequence is not None and cam.sequence_masks is not None
    # patient0002 has per-frame masks but no half-sequence images
    other = camus.scan_patient(camus_root / "patient0002", sequences=True)
    assert other.views["2CH"].sequence is None
    assert other.views["2CH"].sequence_masks is not None


def test_ed_after_es_is_kept_as_in_the_file(camus_root):
    info = camus.read_info(camus_root / "patient0006" / "Info_4CH.cfg")
    assert (info.ed, info.es, info.n_frames) == (19, 1, 19)


def test_the_2019_release_keys_map_onto_the_2023_names(tmp_path):
    path = tmp_path / "Info_2CH.cfg"
    path.write_text(
        "ED: 1\nES: 12\nNbFrame: 12\nSex: M\nAge: 71\nImageQuality: Poor\n"
        "LVedv: 120.5\nLVesv: 60.25\nLVef: 50\n"
    )
    info = camus.read_info(path)
    assert (info.edv, info.esv, info.ef, info.quality) == (120.5, 60.25, 50, "Poor")
    assert info.frame_rate is None


@pytest.mark.parametrize(
    "text, message",
    [
        ("ED: 1\nES: 3\nImageQuality: Good\n", "NbFrame is missing"),
        (
            "ED: 1\nES: 9\nNbFrame: 4\nImageQuality: Good\n",
            "ES is frame 9 but NbFrame is 4",
        ),
        ("ED: one\nES: 3\nNbFrame: 4\nImageQuality: Good\n", "ED is not a number"),
        (
            "ED: 1\nES: 3\nNbFrame: 4\nImageQuality: Great\n",
            "ImageQuality must be one of",
        ),
        ("ED 1\n", "line 1 is not 'key: value'"),
    ],
)
def test_a_malformed_cfg_is_named_with_its_problem(tmp_path, text, message):
    path = tmp_path / "Info_4CH.cfg"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as info:
        camus.read_info(path)
    assert str(path) in str(info.value)


def test_a_0_255_mask_gets_a_hint(tmp_path):
    with pytest.raises(InputError, match="0/255 mask"):
        camus.check_mask_values(np.array([[0, 255], [255, 0]]), tmp_path / "m.nii.gz")


def test_stray_labels_are_listed(tmp_path):
    with pytest.raises(InputError, match=r"outside \{0,1,2,3\}: 4, 7") as info:
        camus.check_mask_values(np.array([[0, 1, 4], [7, 3, 2]]), tmp_path / "m.nii.gz")
    assert "0/255" not in str(info.value)


@pytest.mark.parametrize("release", ["nifti", "mhd"])
def test_a_synthetic_patient_of_either_release_passes_the_checks(tmp_path, release):
    folder = make_camus_patient(tmp_path, "patient0042", release=release, sequence=True)
    patient = camus.scan_patient(folder, sequences=True)
    assert patient.release == release
    camus.check_patient(patient)
    assert patient.views["4CH"].sequence is not None


def test_a_mask_of_another_shape_is_caught(tmp_path):
    folder = make_camus_patient(tmp_path, "patient0042")
    bad = folder / "patient0042_4CH_ES_gt.nii.gz"
    images.write_nifti(bad, np.zeros((10, 12), np.uint8), (0.3, 0.5))
    with pytest.raises(InputError, match=r"mask shape \(10, 12\) differs") as info:
        camus.check_patient(camus.scan_patient(folder))
    assert "patient0042_4CH_ES_gt.nii.gz" in str(info.value)


def test_a_sequence_with_the_wrong_frame_count_is_caught(tmp_path):
    folder = make_camus_patient(tmp_path, "patient0042", sequence=True, n_frames=4)
    cfg = folder / "Info_2CH.cfg"
    cfg.write_text(cfg.read_text().replace("NbFrame: 4", "NbFrame: 6"))
    with pytest.raises(InputError, match="differs from \\(NbFrame, H, W\\)"):
        camus.check_patient(camus.scan_patient(folder, sequences=True))


def test_a_truncated_real_image_is_named(tmp_path, camus_root):
    folder = tmp_path / "patient0003"
    shutil.copytree(camus_root / "patient0003", folder)
    target = folder / "patient0003_4CH_ES.nii.gz"
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as info:
        camus.check_patient(camus.scan_patient(folder))
    assert "patient0003_4CH_ES.nii.gz" in str(info.value)


def test_corrupt_gzip_data_in_a_mask_is_named(tmp_path, camus_root):
    folder = tmp_path / "patient0004"
    shutil.copytree(camus_root / "patient0004", folder)
    target = folder / "patient0004_2CH_ED_gt.nii.gz"
    raw = bytearray(gzip.decompress(target.read_bytes()))
    packed = bytearray(gzip.compress(bytes(raw)))
    packed[len(packed) // 2] ^= 0xFF
    target.write_bytes(bytes(packed))
    with pytest.raises(InputError) as info:
        camus.check_patient(camus.scan_patient(folder))
    assert "patient0004_2CH_ED_gt.nii.gz" in str(info.value)


def test_split_lists_are_found_beside_the_nifti_folder(tmp_path):
    (tmp_path / "database_nifti").mkdir()
    split = tmp_path / "database_split"
    split.mkdir()
    for name in ("training", "validation", "testing"):
        (split / f"subgroup_{name}.txt").write_text("patient0001\n")
    found = camus.find_split_lists(tmp_path / "database_nifti")
    assert found is not None and found["val"] == split / "subgroup_validation.txt"
    assert camus.find_split_lists(Path(tmp_path / "elsewhere" / "deeper" / "x")) is None


@pytest.mark.parametrize(
    "text, message",
    [
        ("ED: 1\nES: 3\nNbFrame: 4\nED: 2\nImageQuality: Good\n", "ED is given twice"),
        ("ED: 2\nES: 2\nNbFrame: 4\nImageQuality: Good\n", "ED and ES are the same"),
        ("  \n", "is empty"),
    ],
)
def test_duplicate_keys_equal_phases_and_empty_cfgs_are_refused(
    tmp_path, text, message
):
    path = tmp_path / "Info_2CH.cfg"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        camus.read_info(path)


def test_a_cfg_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "Info_2CH.cfg"
    path.write_bytes(b"\xef\xbb\xbfED: 1\nES: 3\nNbFrame: 3\nImageQuality: Medium\n")
    assert camus.read_info(path).ed == 1
