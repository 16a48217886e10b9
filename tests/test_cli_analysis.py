"""The analysis commands through the CLI: segment, perfuse, compare, cases, report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from echoscale import images, rundir
from echoscale.ceus import prepare_ceus
from echoscale.phantom import make_phantom
from echoscale.train import TrainConfig, train


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one thread (see conftest.one_thread)."""


@pytest.fixture(scope="module")
def contrast(tmp_path_factory):
    """Three phantom contrast cases, prepared, and a small network trained on them."""
    root = tmp_path_factory.mktemp("contrast")
    make_phantom(root / "ph", patients=1, ceus_cases=3, seed=5, ceus_size=(96, 112))
    run = root / "run"
    prepare_ceus(root / "ph" / "ceus", run, size=(64, 64), val=0.34, test=0.34)
    config = TrainConfig(
        width=4, depth=2, max_steps=150, batch_size=8, eval_every=50, lr=1e-2
    )
    train(run, config)
    return {
        "data": root / "ph" / "ceus",
        "run": run,
        "model": run / "models" / config.key,
    }


def cine_of(case: Path) -> Path:
    (cine,) = case.glob("cine.*")
    return cine


def masks_of(case: Path) -> Path:
    (masks,) = case.glob("masks.*")
    return masks


def test_cases_lists_the_source_folders_of_a_split(contrast, invoke):
    result = invoke("cases", contrast["run"], "--split", "test")
    assert result.exit_code == 0, result.stderr
    folders = [Path(line) for line in result.stdout.split()]
    manifest = rundir.read_json(contrast["run"] / "dataset" / "manifest.json")
    assert [f.name for f in folders] == manifest["patients"]["test"]
    assert all(cine_of(f).is_file() for f in folders)


def test_segment_then_perfuse_a_phantom_loop(contrast, invoke, tmp_path):
    case = contrast["data"] / "case01"
    seg = invoke("segment", contrast["model"], cine_of(case), "--out", tmp_path / "s")
    assert seg.exit_code == 0, seg.stderr
    masks = images.read_image(tmp_path / "s" / "case01" / "masks.tif")
    cine = images.read_image(cine_of(case))
    assert masks.array.shape == cine.array.shape
    assert np.allclose(masks.spacing, cine.spacing)
    assert set(np.unique(masks.array)) <= {0, 1} and masks.array.any()

    out = tmp_path / "p"
    result = invoke("perfuse", cine_of(case), tmp_path / "s" / "case01", "--out", out)
    assert result.exit_code == 0, result.stderr
    rows = rundir.read_csv(out / "perfusion.csv")
    truth = json.loads((case / "ground_truth.json").read_text())
    flashes = len(truth["flashes"])
    assert len(rows) == 7 * flashes  # the myocardium and six segments per flash
    assert {r["region"] for r in rows} >= {s["name"] for s in truth["segments"]}
    assert (out / "tic.csv").is_file() and (out / "perfusion.json").is_file()
    assert "A*beta" in result.stdout


def test_compare_predicted_with_manual_perfusion_prints_the_decision(
    contrast, invoke, tmp_path
):
    case = contrast["data"] / "case02"
    for name, masks in (("auto", None), ("manual", masks_of(case))):
        if masks is None:
            seg = invoke("segment", contrast["model"], cine_of(case), "--out",
                         tmp_path / "s")  # fmt: skip
            assert seg.exit_code == 0, seg.stderr
            masks = tmp_path / "s" / "case02"
        done = invoke("perfuse", cine_of(case), masks, "--out", tmp_path / name)
        assert done.exit_code == 0, done.stderr
    result = invoke("compare", tmp_path / "auto", tmp_path / "manual", "--margin",
                    "20%", "--out", tmp_path / "c")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    summary = rundir.read_json(tmp_path / "c" / "summary.json")
    assert summary["kind"] == "perfusion" and summary["matched"] >= 7
    assert "equivalen" in result.stdout.lower()


def test_compare_a_model_against_its_run_scores_the_test_split(
    contrast, invoke, tmp_path
):
    result = invoke("compare", contrast["model"], contrast["run"], "--out", tmp_path)
    assert result.exit_code == 0, result.stderr
    summary = rundir.read_json(tmp_path / "summary.json")
    test_frames = [
        r for r in rundir.read_csv(contrast["run"] / "dataset" / "samples.csv")
        if r["split"] == "test"
    ]  # fmt: skip
    assert summary["matched"] == len(test_frames)
    assert not summary["unmatched"]["auto"] and not summary["unmatched"]["reference"]
    assert "myo" in summary["structures"]


def test_a_model_against_something_else_is_a_usage_error(contrast, invoke, tmp_path):
    result = invoke("compare", contrast["model"], contrast["data"], "--out", tmp_path)
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_bad_margin_and_bad_flash_frames_are_option_errors(invoke, tmp_path):
    bad = invoke("compare", tmp_path, tmp_path, "--margin", "wide", "--out", tmp_path)
    assert bad.exit_code == 2 and "--margin" in bad.stderr
    loop = tmp_path / "loop.tif"
    loop.write_bytes(b"")
    flash = invoke("perfuse", loop, loop, "--flash", "x,3", "--out", tmp_path / "o")
    assert flash.exit_code == 2 and "frame numbers" in flash.stderr


def test_segment_names_a_file_that_is_no_image(contrast, invoke, tmp_path):
    junk = tmp_path / "junk.tif"
    junk.write_text("not a tiff")
    result = invoke("segment", contrast["model"], junk, "--out", tmp_path / "o")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and "junk.tif" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_perfuse_without_frame_times_asks_for_fps(invoke, tmp_path):
    frames = np.zeros((12, 32, 32), np.uint8)
    images.write_tiff(tmp_path / "loop.tif", frames, (0.5, 0.5))
    masks = np.zeros_like(frames)
    masks[:, 10:20, 10:20] = 1
    images.write_tiff(tmp_path / "masks.tif", masks, (0.5, 0.5))
    result = invoke("perfuse", tmp_path / "loop.tif", tmp_path / "masks.tif",
                    "--dynamic-range", "50", "--out", tmp_path / "o")  # fmt: skip
    assert result.exit_code == 1 and "--fps" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_report_names_the_parts_a_study_has_not_run(invoke, tmp_path):
    refused = invoke("report", tmp_path)
    assert refused.exit_code != 0 and "not a study directory" in refused.stderr
    assert not (tmp_path / "report.md").exists()
    (tmp_path / "compare").mkdir()
    result = invoke("report", tmp_path)
    assert result.exit_code == 0, result.stderr
    assert "Network size: not chosen" in result.stdout
    assert "Perfusion agreement: not run." in result.stdout
    assert (tmp_path / "report.md").read_text().strip() == result.stdout.strip()


def test_compare_the_real_candidates_through_the_cli(shared_data, invoke, tmp_path):
    folder = shared_data / "echo_toolkit"
    reference = folder / "segmentation_reference.nii.gz"
    printed = {}
    for name in ("candidate1", "candidate2"):
        auto = folder / f"segmentation_{name}.nii.gz"
        result = invoke("compare", auto, reference, "--out", tmp_path / name)
        assert result.exit_code == 0, result.stderr
        assert "lv_endo" in result.stdout and "la " not in result.stdout
        summary = rundir.read_json(tmp_path / name / "summary.json")
        assert summary["kind"] == "masks" and summary["matched"] == 1
        printed[name] = result.stdout
    assert printed["candidate1"] != printed["candidate2"]
