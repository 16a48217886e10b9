"""The command line: entry points, the prepare command's report, and clean errors."""

from __future__ import annotations

import subprocess
import sys

from conftest import make_camus_patient

from echoscale import rundir


def test_python_m_echoscale_shows_the_commands():
    out = subprocess.run(
        [sys.executable, "-m", "echoscale", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0
    assert "prepare" in out.stdout


def test_prepare_camus_reports_prepared_and_skipped_patients(
    invoke, camus_root, run_dir
):
    result = invoke(
        "prepare", "camus", camus_root, run_dir, "--skip-incomplete", "--size", "64"
    )
    assert result.exit_code == 0, result.stderr
    assert "prepared 12 patients, 48 samples" in result.stdout
    assert "skipped 1 patient:" in result.stdout
    assert "patient0016: missing Info_2CH.cfg" in result.stdout
    assert rundir.dataset_paths(run_dir)["manifest"].is_file()


def test_an_incomplete_patient_is_one_error_line_and_no_traceback(
    invoke, camus_root, run_dir
):
    result = invoke("prepare", "camus", camus_root, run_dir)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert "patient0016" in lines[0] and "Traceback" not in result.stderr
    assert not rundir.dataset_dir(run_dir).exists()


def test_verbose_adds_the_traceback(invoke, camus_root, run_dir):
    result = invoke("--verbose", "prepare", "camus", camus_root, run_dir)
    assert result.exit_code == 1
    assert "Traceback" in result.stderr and "patient0016" in result.stderr


def test_a_bad_size_is_a_usage_error(invoke, camus_root, run_dir):
    result = invoke("prepare", "camus", camus_root, run_dir, "--size", "8x8")
    assert result.exit_code == 2
    assert "--size" in result.stderr and "from 16 to 4096" in result.stderr


def test_a_missing_source_folder_is_named(invoke, tmp_path, run_dir):
    result = invoke("prepare", "camus", tmp_path / "nowhere", run_dir)
    assert result.exit_code == 1
    assert "nowhere: not a folder" in result.stderr


def test_random_split_options_reach_the_manifest(invoke, tmp_path, run_dir):
    src = tmp_path / "src"
    for k in range(1, 11):
        make_camus_patient(src, f"patient{k:04d}")
    result = invoke(
        "prepare",
        "camus",
        src,
        run_dir,
        "--split",
        "random",
        "--val",
        "0.2",
        "--test",
        "0.3",
        "--seed",
        "5",
        "--size",
        "32",
    )
    assert result.exit_code == 0, result.stderr
    manifest = rundir.read_json(rundir.dataset_paths(run_dir)["manifest"])
    assert manifest["split"] == {
        "method": "random",
        "seed": 5,
        "val": 0.2,
        "test": 0.3,
        "stratified_by": "image quality",
    }
    assert [len(manifest["patients"][s]) for s in ("train", "val", "test")] == [5, 2, 3]


def test_a_usage_error_is_one_line(invoke, camus_root, run_dir):
    result = invoke("prepare", "camus", camus_root, run_dir, "--classes", "foo")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert "--classes" in lines[0] and "echoscale prepare camus --help" in lines[0]


def test_verbose_works_after_the_command_too(invoke, camus_root, run_dir):
    result = invoke("prepare", "camus", camus_root, run_dir, "--verbose")
    assert result.exit_code == 1 and "Traceback" in result.stderr


def test_a_truncated_tiff_is_one_line_that_says_so(tmp_path):
    import numpy as np

    from echoscale import images

    path = tmp_path / "cine.tif"
    images.write_image(path, np.zeros((40, 64, 64), np.uint8), (0.3, 0.3), None)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    # a process of its own: tifffile's logging reaches the real stderr only there
    out = tmp_path / "out"
    args = ["perfuse", str(path), str(path), "--out", str(out), "--fps", "20"]
    result = subprocess.run(
        [sys.executable, "-m", "echoscale", *args], capture_output=True, text=True
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines  # tifffile's own complaint stays out
    assert str(path) in lines[0] and "truncated" in lines[0]
    assert not out.exists()
