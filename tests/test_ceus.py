"""``prepare ceus``: contrast-loop case folders, timing, masks and broken cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import draw_heart

from echoscale import ceus, images, prepare, rundir
from echoscale.dataset import load_dataset
from echoscale.errors import InputError

SHAPE = (40, 36)
SPACING = (0.4, 0.3)


def make_case(
    root: Path,
    name: str,
    *,
    n_frames: int = 6,
    cine_ext: str = ".tif",
    mask_ext: str = ".tif",
    labelled: list[int] | None = None,
    times: list[float] | None = None,
    settings: dict | None = None,
    labels: str = "binary",
) -> Path:
    """Write a small contrast case: a cine of a beating heart and per-frame masks."""
    folder = root / name
    folder.mkdir(parents=True)
    frames = [draw_heart(SHAPE, shift=t % 3) for t in range(n_frames)]
    cine = np.stack([f[0] for f in frames]).astype(np.uint8)
    masks = np.stack([f[1] for f in frames])
    if labels == "binary":
        masks = (masks == 2).astype(np.uint8)
    keep = range(n_frames) if labelled is None else labelled
    masks[[t for t in range(n_frames) if t not in keep]] = 0
    frame_times = None if times is None else np.asarray(times)
    images.write_image(folder / f"cine{cine_ext}", cine, SPACING, frame_times)
    if mask_ext == "dir":
        (folder / "masks").mkdir()
        for t in keep:
            images.write_tiff(folder / "masks" / f"frame{t:03d}.tif", masks[t], SPACING)
    else:
        images.write_image(folder / f"masks{mask_ext}", masks, SPACING)
    if settings is not None:
        (folder / "case.json").write_text(json.dumps(settings))
    return folder


def even(n: int, fps: float) -> list[float]:
    return list(np.arange(n) / fps)


def test_labelled_frames_become_samples_with_their_times(tmp_path):
    src = tmp_path / "src"
    make_case(src, "case01", labelled=[0, 2, 4], times=even(6, 20))
    make_case(src, "case02", n_frames=5, times=even(5, 25))
    make_case(src, "case03", n_frames=4, times=even(4, 10))
    run = tmp_path / "run"
    report = ceus.prepare_ceus(src, run, size=(32, 32))
    assert report.n_patients == 3 and report.n_samples == 3 + 5 + 4
    data = load_dataset(run)
    rows = [r for r in data.samples if r["patient"] == "case01"]
    assert [r["frame"] for r in rows] == ["0", "2", "4"]
    assert [float(r["time_s"]) for r in rows] == [0.0, 0.1, 0.2]
    assert data.manifest["classes"] == ["background", "myo"]
    assert data.manifest["cases"]["case01"]["labelled_frames"] == [0, 2, 4]
    assert data.manifest["cases"]["case02"]["fps"] == pytest.approx(25)
    assert float(rows[0]["row_mm"]) == pytest.approx(0.4 * 40 / 32)
    _, mask = draw_heart(SHAPE, shift=2)
    expected = prepare.resize_mask((mask == 2).astype(np.uint8), (32, 32))
    np.testing.assert_array_equal(data.masks[int(rows[1]["index"])], expected)


def test_nifti_cines_and_a_folder_of_per_frame_masks(tmp_path):
    src = tmp_path / "src"
    for k in (1, 2, 3):
        make_case(
            src,
            f"case0{k}",
            cine_ext=".nii.gz",
            mask_ext="dir",
            labelled=[1, 3],
            times=even(6, 30),
        )
    report = ceus.prepare_ceus(src, tmp_path / "run", size=(32, 32))
    assert report.n_samples == 6
    data = load_dataset(tmp_path / "run")
    assert data.manifest["cases"]["case02"]["masks"] == "masks"
    assert {r["frame"] for r in data.samples} == {"1", "3"}


@pytest.mark.parametrize(
    "settings, times, fps, expected",
    [
        ({"fps": 10}, None, None, 0.3),  # case.json fps
        ({"frame_times": [0, 0.05, 0.1, 0.2]}, None, None, 0.2),  # case.json times
        (None, [0, 0.04, 0.08, 0.12], None, 0.12),  # the cine's own times
        (None, None, 5.0, 0.6),  # --fps
    ],
    ids=["case-fps", "case-times", "file-times", "option-fps"],
)
def test_each_frame_time_source_is_used(tmp_path, settings, times, fps, expected):
    src = tmp_path / "src"
    for k in (1, 2, 3):
        make_case(src, f"case0{k}", n_frames=4, times=times, settings=settings)
    ceus.prepare_ceus(src, tmp_path / "run", size=(32, 32), fps=fps)
    data = load_dataset(tmp_path / "run")
    last = [r for r in data.samples if r["patient"] == "case02"][-1]
    assert float(last["time_s"]) == pytest.approx(expected if fps is None else 3 / fps)


def test_a_dicom_cine_is_read_with_its_frame_time(tmp_path):
    pytest.importorskip("pydicom")
    from test_images import write_dicom

    src = tmp_path / "src"
    for k in (1, 2, 3):
        folder = make_case(src, f"case0{k}", n_frames=4, times=even(4, 10))
        cine = images.read_image(folder / "cine.tif").array
        (folder / "cine.tif").unlink()
        write_dicom(folder / "cine.dcm", cine, FrameTime=40, PixelSpacing=[0.4, 0.3])
    ceus.prepare_ceus(src, tmp_path / "run", size=(32, 32))
    data = load_dataset(tmp_path / "run")
    assert [r["time_s"] for r in data.samples[:4]] == ["0", "0.04", "0.08", "0.12"]
    assert data.samples[0]["orig_row_mm"] == "0.4"


def test_a_cine_without_frame_times_and_no_fps_names_the_option(tmp_path):
    src = tmp_path / "src"
    for k in (1, 2, 3):
        make_case(src, f"case0{k}", n_frames=4)
    with pytest.raises(InputError, match="no frame times.*pass --fps") as info:
        ceus.prepare_ceus(src, tmp_path / "run")
    assert "case01" in str(info.value) and "cine.tif" in str(info.value)
    assert not (tmp_path / "run").exists()


def test_a_mask_of_the_wrong_shape_is_named(tmp_path):
    src = tmp_path / "src"
    for k in (1, 2, 3):
        make_case(src, f"case0{k}", times=even(6, 20))
    images.write_tiff(
        src / "case02" / "masks.tif", np.ones((6, 20, 20), np.uint8), SPACING
    )
    with pytest.raises(InputError, match=r"masks of shape \(6, 20, 20\) do not match"):
        ceus.prepare_ceus(src, tmp_path / "run")


def test_a_missing_cine_is_skipped_on_request_and_reported(tmp_path):
    src = tmp_path / "src"
    for k in (1, 2, 3, 4):
        make_case(src, f"case0{k}", times=even(6, 20))
    (src / "case03" / "cine.tif").unlink()
    with pytest.raises(InputError, match="case03: missing cine"):
        ceus.prepare_ceus(src, tmp_path / "run")
    report = ceus.prepare_ceus(src, tmp_path / "run", skip_incomplete=True)
    assert report.n_patients == 3
    assert [s["patient"] for s in report.skipped] == ["case03"]


def test_a_failed_prepare_leaves_the_previous_dataset_untouched(tmp_path):
    src = tmp_path / "src"
    for k in (1, 2, 3):
        make_case(src, f"case0{k}", times=even(6, 20))
    run = tmp_path / "run"
    ceus.prepare_ceus(src, run, size=(32, 32))
    before = {p.name: p.read_bytes() for p in rundir.dataset_dir(run).iterdir()}
    (src / "case01" / "case.json").write_text('{"fps": -3}')
    with pytest.raises(InputError, match="fps must be positive"):
        ceus.prepare_ceus(src, run, size=(32, 32))
    after = {p.name: p.read_bytes() for p in rundir.dataset_dir(run).iterdir()}
    assert after == before


@pytest.mark.parametrize(
    "text, message",
    [
        ("[1, 2]", "must hold a JSON object"),
        ("{fps: 3}", "cannot read"),
        ('{"septum_side": "up"}', "septum_side must be 'left' or 'right'"),
        ('{"flash_frames": [1.5]}', "0-based frame numbers"),
        ('{"fps": "fast"}', "fps has the wrong type"),
        ('{"quality": "great"}', "quality must be one of"),
    ],
)
def test_bad_case_json_is_named_with_its_problem(tmp_path, text, message):
    path = tmp_path / "case.json"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        ceus.read_case_settings(path)


def test_flash_frames_past_the_end_and_wrong_frame_times_are_caught(tmp_path):
    src = tmp_path / "src"
    make_case(src, "case01", n_frames=4, settings={"fps": 10, "flash_frames": [7]})
    with pytest.raises(InputError, match=r"flash_frames \[7\] lie past the last frame"):
        ceus.check_case(ceus.scan_case(src / "case01"))
    make_case(src, "case02", n_frames=4, settings={"frame_times": [0, 1, 2]})
    with pytest.raises(InputError, match="frame_times must hold 4 increasing times"):
        ceus.check_case(ceus.scan_case(src / "case02"))


def test_camus_labelled_masks_keep_the_classes_present(tmp_path):
    src = tmp_path / "src"
    for k in (1, 2, 3):
        make_case(src, f"case0{k}", labels="camus", times=even(6, 20))
    ceus.prepare_ceus(src, tmp_path / "run", size=(32, 32))
    data = load_dataset(tmp_path / "run")
    assert data.manifest["classes"] == ["background", "lv", "myo", "la"]
    ceus.prepare_ceus(src, tmp_path / "myo", size=(32, 32), classes=("myo",))
    assert set(np.unique(load_dataset(tmp_path / "myo").masks)) == {0, 1}


def test_binary_and_camus_labelled_cases_cannot_be_mixed(tmp_path):
    src = tmp_path / "src"
    make_case(src, "case01", times=even(6, 20))
    make_case(src, "case02", labels="camus", times=even(6, 20))
    with pytest.raises(InputError, match="case01 holds only 0 and 1"):
        ceus.prepare_ceus(src, tmp_path / "run")


def test_a_per_frame_mask_past_the_last_frame_is_named(tmp_path):
    src = tmp_path / "src"
    folder = make_case(src, "case01", mask_ext="dir", labelled=[1], times=even(6, 20))
    images.write_tiff(
        folder / "masks" / "frame009.tif", np.ones(SHAPE, np.uint8), SPACING
    )
    with pytest.raises(InputError, match="frame009.tif: is a mask for frame 9"):
        ceus.check_case(ceus.scan_case(folder))


def test_all_empty_masks_are_an_error(tmp_path):
    src = tmp_path / "src"
    folder = make_case(src, "case01", labelled=[], times=even(6, 20))
    with pytest.raises(InputError, match="no labelled frame"):
        ceus.check_case(ceus.scan_case(folder))


def test_cli_prepares_cases_and_reports_them(invoke, tmp_path, run_dir):
    src = tmp_path / "src"
    for k in (1, 2, 3):
        make_case(src, f"case0{k}", n_frames=4)
    result = invoke("prepare", "ceus", src, run_dir, "--fps", "20", "--size", "32")
    assert result.exit_code == 0, result.stderr
    assert "prepared 3 cases, 12 samples" in result.stdout
    bad = invoke("prepare", "ceus", src, tmp_path / "other")
    assert bad.exit_code == 1 and "pass --fps" in bad.stderr


def test_the_documented_example_case_json_is_valid():
    example = (
        Path(__file__).resolve().parents[1] / "data/examples/ceus/case01/case.json"
    )
    settings = ceus.read_case_settings(example)
    assert settings["septum_side"] in ("left", "right") and settings["fps"] > 0
