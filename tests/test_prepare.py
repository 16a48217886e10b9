"""``prepare camus``: resizing, classes, splits, streaming output and damaged inputs."""

from __future__ import annotations

import os
import stat
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import draw_heart, make_camus_patient

from echoscale import camus, images, prepare, rundir
from echoscale.dataset import load_dataset
from echoscale.errors import InputError


@pytest.fixture(scope="module")
def prepared(camus_root, tmp_path_factory):
    """The 12 complete real patients prepared at the default settings."""
    run = tmp_path_factory.mktemp("prepared") / "run"
    report = prepare.prepare_camus(camus_root, run, skip_incomplete=True)
    return run, report, load_dataset(run)


def _digest(run: Path) -> dict[str, bytes]:
    root = rundir.dataset_dir(run)
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())}


def test_real_camus_gives_12_patients_48_samples_and_skips_patient0016(prepared):
    run, report, data = prepared
    assert report.n_patients == 12 and report.n_samples == 48
    assert [s["patient"] for s in report.skipped] == ["patient0016"]
    assert "Info_2CH.cfg" in report.skipped[0]["reason"]
    assert data.images.shape == (48, 256, 256) and data.images.dtype == np.uint8
    assert isinstance(data.images, np.memmap) and isinstance(data.masks, np.memmap)
    assert Counter((r["view"], r["phase"]) for r in data.samples) == {
        ("2CH", "ED"): 12,
        ("2CH", "ES"): 12,
        ("4CH", "ED"): 12,
        ("4CH", "ES"): 12,
    }


def test_splits_are_disjoint_by_patient_and_cover_everyone(prepared):
    _, report, data = prepared
    groups = {s: set(data.patients(s)) for s in ("train", "val", "test")}
    assert not groups["train"] & groups["val"]
    assert not groups["train"] & groups["test"]
    assert not groups["val"] & groups["test"]
    assert sum(map(len, groups.values())) == 12
    assert len(groups["val"]) >= 1 and len(groups["test"]) >= 1
    order = data.manifest["train_order"]
    assert sorted(order) == sorted(groups["train"]) and order != sorted(order)
    for row in data.samples:
        assert row["patient"] in data.manifest["patients"][row["split"]]
    assert data.manifest["split"]["method"] == "random"


def test_samples_record_spacing_after_resizing_and_the_source_geometry(prepared):
    _, _, data = prepared
    for row in data.samples:
        h, w = int(row["orig_height"]), int(row["orig_width"])
        assert float(row["orig_row_mm"]) == pytest.approx(0.308)
        assert float(row["row_mm"]) == pytest.approx(0.308 * h / 256, rel=1e-5)
        assert float(row["col_mm"]) == pytest.approx(0.308 * w / 256, rel=1e-5)
    shapes = {(r["orig_height"], r["orig_width"]) for r in data.samples}
    assert len(shapes) > 1  # the real patients differ in size


def test_ed_and_es_frames_are_recorded_as_in_the_cfg(prepared):
    _, _, data = prepared
    rows = {r["id"]: r for r in data.samples}
    assert rows["patient0006_4CH_ED"]["frame"] == "18"
    assert rows["patient0006_4CH_ES"]["frame"] == "0"
    assert rows["patient0001_2CH_ES"]["frame"] == "17"


def test_stored_masks_match_the_source_masks_resized_by_nearest(prepared, camus_root):
    _, _, data = prepared
    index = next(
        i for i, r in enumerate(data.samples) if r["id"] == "patient0003_2CH_ES"
    )
    source = images.read_image(
        camus_root / "patient0003" / "patient0003_2CH_ES_gt.nii.gz"
    )
    expected = prepare.resize_mask(source.array.astype(np.uint8), (256, 256))
    np.testing.assert_array_equal(data.masks[index], expected)
    assert set(np.unique(data.masks).tolist()) == {0, 1, 2, 3}
    # the apex is at the top: the LV cavity lies above the left atrium
    rows = (
        np.nonzero(data.masks[index] == 1)[0].mean(),
        np.nonzero(data.masks[index] == 3)[0].mean(),
    )
    assert rows[0] < rows[1]


def test_the_manifest_checksums_match_the_files(prepared):
    run, _, data = prepared
    from echoscale.dataset import sha256_file

    for name, digest in data.manifest["checksums"].items():
        assert sha256_file(rundir.dataset_dir(run) / name) == digest
    assert data.manifest["classes"] == ["background", "lv", "myo", "la"]
    assert data.manifest["n_patients"] == 12


def test_a_rerun_gives_identical_files(prepared, camus_root, tmp_path):
    run, _, _ = prepared
    again = tmp_path / "again"
    prepare.prepare_camus(camus_root, again, skip_incomplete=True)
    assert _digest(again) == _digest(run)


def test_without_skip_incomplete_patient0016_stops_before_anything_is_written(
    camus_root, tmp_path
):
    run = tmp_path / "run"
    with pytest.raises(InputError, match="patient0016: missing Info_2CH.cfg") as info:
        prepare.prepare_camus(camus_root, run)
    assert "--skip-incomplete" in str(info.value)
    assert not run.exists() or not any(run.iterdir())


def _four_patients_prepared(tmp_path: Path) -> tuple[Path, Path]:
    """Four phantom patients in ``src`` and a run prepared from them at 32 x 32."""
    src = tmp_path / "src"
    for k in range(1, 5):
        make_camus_patient(src, f"patient{k:04d}")
    run = tmp_path / "run"
    prepare.prepare_camus(src, run, size=(32, 32))
    return src, run


def test_a_failed_prepare_leaves_the_previous_dataset_untouched(tmp_path):
    src, run = _four_patients_prepared(tmp_path)
    before = _digest(run)
    bad = src / "patient0003" / "patient0003_2CH_ED_gt.nii.gz"
    images.write_nifti(bad, np.full((48, 40), 255, np.uint8), (0.3, 0.5))
    with pytest.raises(InputError, match="0/255"):
        prepare.prepare_camus(src, run, size=(32, 32))
    assert _digest(run) == before
    assert [p.name for p in run.iterdir()] == ["dataset"]


def test_preparing_again_may_not_change_the_data_under_trained_models(tmp_path):
    src, run = _four_patients_prepared(tmp_path)
    (run / "models" / "w8-d3-f1-s0").mkdir(parents=True)
    before = _digest(run)
    prepare.prepare_camus(src, run, size=(32, 32))  # the same data: allowed
    assert _digest(run) == before
    with pytest.raises(InputError, match="models trained on a dataset prepared"):
        prepare.prepare_camus(src, run, size=(48, 48))
    assert _digest(run) == before
    assert sorted(p.name for p in run.iterdir()) == ["dataset", "models"]


def test_myo_only_keeps_background_and_myocardium(tmp_path):
    src = tmp_path / "src"
    for k in range(1, 5):
        make_camus_patient(src, f"patient{k:04d}")
    run = tmp_path / "run"
    prepare.prepare_camus(src, run, classes=("myo",), size=(48, 40))
    data = load_dataset(run)
    _, mask = draw_heart((48, 40))
    np.testing.assert_array_equal(data.masks[0], (mask == 2).astype(np.uint8))
    assert data.manifest["labels"] == {"background": 0, "myo": 1}


def test_images_are_resized_bilinearly_to_uint8(tmp_path):
    flat = prepare.resize_image(np.full((50, 70), 100.4, np.float32), (32, 32))
    assert flat.dtype == np.uint8 and (flat == 100).all()
    ramp = prepare.resize_image(
        np.tile(np.linspace(0, 255, 64, dtype=np.float32), (8, 1)), (8, 32)
    )
    assert (
        (np.diff(ramp[0].astype(int)) >= 0).all()
        and ramp[0, 0] < 10
        and ramp[0, -1] > 245
    )


def test_nearest_resizing_never_invents_labels():
    mask = np.random.default_rng(0).integers(0, 4, (37, 53)).astype(np.uint8)
    for size in [(16, 16), (64, 100), (37, 53)]:
        out = prepare.resize_mask(mask, size)
        assert out.shape == size and set(np.unique(out)) <= {0, 1, 2, 3}
    np.testing.assert_array_equal(prepare.resize_mask(mask, (37, 53)), mask)


def test_sequences_add_the_labelled_frames_between_ed_and_es(camus_root, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    names = ["patient0001", "patient0002", "patient0011", "patient0012"]
    for name in names:
        (src / name).symlink_to(camus_root / name, target_is_directory=True)
    run = tmp_path / "run"
    report = prepare.prepare_camus(src, run, sequences=True, size=(64, 64))
    data = load_dataset(run)
    expected = 16
    for name in ["patient0001", "patient0011", "patient0012"]:
        for view in camus.VIEWS:
            info = camus.read_info(camus_root / name / f"Info_{view}.cfg")
            expected += info.n_frames - 2
    assert report.n_samples == expected
    row = next(r for r in data.samples if r["id"] == "patient0001_2CH_t05")
    cine = images.read_image(
        camus_root / "patient0001" / "patient0001_2CH_half_sequence.nii.gz"
    )
    np.testing.assert_array_equal(
        data.images[int(row["index"])], prepare.resize_image(cine.array[5], (64, 64))
    )
    assert row["phase"] == "" and row["frame"] == "5"
    assert not any(
        r["patient"] == "patient0002" and r["phase"] == "" for r in data.samples
    )


def test_official_lists_decide_the_split(camus_root, tmp_path):
    src = tmp_path / "CAMUS_public" / "database_nifti"
    src.mkdir(parents=True)
    for k in range(1, 7):
        name = f"patient{k:04d}"
        (src / name).symlink_to(camus_root / name, target_is_directory=True)
    lists = tmp_path / "CAMUS_public" / "database_split"
    lists.mkdir()
    (lists / "subgroup_training.txt").write_text(
        "patient0001\npatient0002\npatient0003\npatient0004\n"
    )
    (lists / "subgroup_validation.txt").write_text("patient0005\npatient0300\n")
    (lists / "subgroup_testing.txt").write_text("patient0006\n")
    run = tmp_path / "run"
    prepare.prepare_camus(src, run, split="official", size=(32, 32))
    data = load_dataset(run)
    assert data.patients("val") == ["patient0005"] and data.patients("test") == [
        "patient0006"
    ]
    assert data.manifest["split"]["method"] == "official"


def test_official_split_without_lists_is_an_error(tmp_path):
    src = tmp_path / "src"
    for k in range(1, 4):
        make_camus_patient(src, f"patient{k:04d}")
    with pytest.raises(InputError, match="no database_split"):
        prepare.prepare_camus(src, tmp_path / "run", split="official")


def test_folds_take_the_test_fold_and_the_next_for_validation(tmp_path):
    src = tmp_path / "src"
    for k in range(1, 7):
        make_camus_patient(src, f"patient{k:04d}")
    folds = tmp_path / "folds"
    folds.mkdir()
    for f in range(1, 4):
        (folds / f"fold{f}.txt").write_text(
            f"patient{2 * f - 1:04d}\npatient{2 * f:04d}\n"
        )
    run = tmp_path / "run"
    prepare.prepare_camus(
        src, run, split="folds", fold=3, fold_lists=folds, size=(32, 32)
    )
    data = load_dataset(run)
    assert data.patients("test") == ["patient0005", "patient0006"]
    assert data.patients("val") == ["patient0001", "patient0002"]
    assert data.patients("train") == ["patient0003", "patient0004"]


def test_too_few_patients_for_the_split_is_an_error_before_writing(tmp_path):
    src = tmp_path / "src"
    for k in range(1, 3):
        make_camus_patient(src, f"patient{k:04d}")
    run = tmp_path / "run"
    with pytest.raises(InputError, match="too few patients"):
        prepare.prepare_camus(src, run, val=0.2, test=0.2)
    assert not rundir.dataset_dir(run).exists()


def test_random_split_is_stratified_by_quality_and_seeded():
    qualities = {
        f"patient{k:04d}": q
        for k, q in enumerate(["Good"] * 50 + ["Medium"] * 30 + ["Poor"] * 20, start=1)
    }
    first = prepare.assign_random(qualities, 0.1, 0.2, seed=1)
    assert prepare.assign_random(qualities, 0.1, 0.2, seed=1) == first
    assert prepare.assign_random(qualities, 0.1, 0.2, seed=2) != first
    counts = Counter((qualities[p], s) for p, s in first.items())
    assert (
        counts["Good", "test"],
        counts["Medium", "test"],
        counts["Poor", "test"],
    ) == (10, 6, 4)
    assert (counts["Good", "val"], counts["Medium", "val"], counts["Poor", "val"]) == (
        5,
        3,
        2,
    )


def test_mhd_release_prepares_like_the_nifti_one(tmp_path):
    runs = {}
    for release in ("nifti", "mhd"):
        src = tmp_path / release
        for k in range(1, 5):
            make_camus_patient(src, f"patient{k:04d}", release=release)
        runs[release] = tmp_path / f"run-{release}"
        prepare.prepare_camus(src, runs[release], size=(32, 32))
    a, b = load_dataset(runs["nifti"]), load_dataset(runs["mhd"])
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert b.manifest["release"] == ["camus-2019-mhd"]


@pytest.mark.parametrize(
    "text, expected", [("256", (256, 256)), ("128x96", (128, 96)), (64, (64, 64))]
)
def test_sizes_parse(text, expected):
    assert prepare.parse_size(text) == expected


@pytest.mark.parametrize("text", ["0", "12x12", "256x", "big", "100000"])
def test_bad_sizes_are_rejected(text):
    with pytest.raises(ValueError, match="size"):
        prepare.parse_size(text)


def test_unknown_classes_are_rejected():
    with pytest.raises(ValueError, match="subset of lv,myo,la"):
        prepare.parse_classes("lv,rv")
    assert prepare.parse_classes("la, lv") == ("lv", "la")


def test_the_documented_example_lists_give_disjoint_splits():
    examples = Path(__file__).resolve().parents[1] / "data" / "examples"
    patients = [f"patient{k:04d}" for k in range(1, 13)]
    folds = prepare.read_fold_lists(examples / "folds", 2)
    assignment = prepare.assign_from_lists(patients, folds, "folds")
    assert sorted(p for p, s in assignment.items() if s == "test") == [
        "patient0002",
        "patient0005",
        "patient0008",
        "patient0011",
    ]
    lists = camus.find_split_lists(examples / "camus-2023")
    assert lists is not None
    names = {k: prepare.read_name_list(v) for k, v in lists.items()}
    official = prepare.assign_from_lists(patients, names, "database_split")
    assert Counter(official.values()) == {"train": 8, "val": 2, "test": 2}


def _four_patients(root: Path, **kwargs) -> Path:
    for k in range(1, 5):
        make_camus_patient(root, f"patient{k:04d}", **kwargs)
    return root


@pytest.mark.parametrize(
    "values, message",
    [
        (lambda im: im / 255.0, "looks scaled to 0-1"),
        (lambda im: im * 200.0, "lie outside 0-255"),
        (lambda im: np.where(im > 100, np.nan, im), "NaN or infinite"),
    ],
    ids=["unit-range", "too-bright", "nan"],
)
def test_images_outside_0_255_are_refused(tmp_path, values, message):
    src = _four_patients(tmp_path / "src")
    bad = src / "patient0002" / "patient0002_4CH_ED.nii.gz"
    image = images.read_image(bad)
    images.write_nifti(bad, values(image.array.astype(np.float32)), image.spacing)
    with pytest.raises(InputError, match=message) as info:
        prepare.prepare_camus(src, tmp_path / "run")
    assert "patient0002_4CH_ED.nii.gz" in str(info.value)


def test_a_mask_with_another_spacing_is_refused(tmp_path):
    src = _four_patients(tmp_path / "src")
    bad = src / "patient0001" / "patient0001_2CH_ES_gt.nii.gz"
    images.write_nifti(bad, images.read_image(bad).array, (0.3, 0.3))
    with pytest.raises(InputError, match="mask spacing"):
        prepare.prepare_camus(src, tmp_path / "run")


def test_an_image_without_a_spacing_is_refused(tmp_path):
    src = _four_patients(tmp_path / "src", release="mhd")
    header = src / "patient0003" / "patient0003_2CH_ED.mhd"
    header.write_text(
        header.read_text().replace("ElementSpacing = 0.5 0.3", "ElementSpacing = 0 0")
    )
    with pytest.raises(InputError, match="no valid pixel spacing"):
        prepare.prepare_camus(src, tmp_path / "run")


def test_a_run_inside_the_source_is_refused(tmp_path):
    src = _four_patients(tmp_path / "src")
    for run in (src, src / "run", src / "patient0001"):
        with pytest.raises(InputError, match="lies inside the source folder"):
            prepare.prepare_camus(src, run)
    assert not (src / "run").exists() and not (src / "patient0001" / "dataset").exists()


def test_incomplete_official_lists_are_an_error_not_a_random_split(tmp_path):
    src = _four_patients(tmp_path / "database_nifti")
    lists = tmp_path / "database_split"
    lists.mkdir()
    (lists / "subgroup_training.txt").write_text("patient0001\npatient0002\n")
    (lists / "subgroup_testing.txt").write_text("patient0003\n")
    with pytest.raises(InputError, match="subgroup_validation.txt missing"):
        prepare.prepare_camus(src, tmp_path / "run")


def test_patients_at_different_depths_are_all_found(tmp_path):
    src = tmp_path / "src"
    make_camus_patient(src, "patient0001")
    make_camus_patient(src / "training", "patient0002")
    make_camus_patient(src / "testing", "patient0003")
    names = [p.name for p in camus.find_patient_dirs(src)]
    assert names == ["patient0001", "patient0002", "patient0003"]


def test_uncompressed_nifti_patients_are_read(tmp_path):
    src = _four_patients(tmp_path / "src")
    folder = src / "patient0004"
    for path in folder.glob("*.nii.gz"):
        image = images.read_image(path)
        images.write_nifti(path.with_name(path.name[:-3]), image.array, image.spacing)
        path.unlink()
    report = prepare.prepare_camus(src, tmp_path / "run", size=(32, 32))
    assert report.n_patients == 4


def test_fold_options_without_folds_and_an_empty_test_set_are_refused(tmp_path):
    src = _four_patients(tmp_path / "src")
    with pytest.raises(ValueError, match="need --split folds"):
        prepare.prepare_camus(src, tmp_path / "run", split="random", fold=2)
    with pytest.raises(ValueError, match="test set would be empty"):
        prepare.prepare_camus(src, tmp_path / "run", split="random", test=0)


def test_skip_reasons_do_not_depend_on_how_the_source_was_typed(
    camus_root, tmp_path, monkeypatch
):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("patient0001", "patient0002", "patient0003", "patient0016"):
        (src / name).symlink_to(camus_root / name, target_is_directory=True)
    first = prepare.prepare_camus(src, tmp_path / "a", skip_incomplete=True, size=32)
    monkeypatch.chdir(tmp_path)
    second = prepare.prepare_camus("src", "b", skip_incomplete=True, size=32)
    assert first.skipped == second.skipped
    assert first.skipped[0]["reason"].startswith("patient0016: missing Info_2CH.cfg")


def test_an_edited_table_or_stack_is_caught_on_loading(tmp_path):
    src = _four_patients(tmp_path / "src")
    run = tmp_path / "run"
    prepare.prepare_camus(src, run, size=(32, 32))
    paths = rundir.dataset_paths(run)
    stack = bytearray(paths["images"].read_bytes())
    stack[-10] ^= 0xFF
    paths["images"].write_bytes(bytes(stack))
    load_dataset(run)  # a plain load reads no pixels
    with pytest.raises(InputError, match="images.tif: does not match the checksum"):
        load_dataset(run, verify=True)
    table = paths["samples"].read_text()
    paths["samples"].write_text(table.replace(",train,", ",test,"))
    with pytest.raises(InputError, match="samples.csv: does not match the checksum"):
        load_dataset(run)
    paths["manifest"].write_text("{not json")
    with pytest.raises(InputError, match="manifest.json: not a dataset manifest"):
        load_dataset(run)


def test_outputs_follow_the_umask_and_stale_temporaries_are_cleared(tmp_path):
    src = _four_patients(tmp_path / "src")
    run = tmp_path / "run"
    run.mkdir()
    stale = run / ".dataset.999999.abcd.tmp"  # a temporary of a process long gone
    stale.mkdir()
    old = os.umask(0o022)
    try:
        prepare.prepare_camus(src, run, size=(32, 32))
    finally:
        os.umask(old)
    assert not stale.exists()
    root = rundir.dataset_dir(run)
    assert stat.S_IMODE(root.stat().st_mode) == 0o755
    for path in root.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path.name
