"""The phantom: CAMUS-layout B-mode patients and contrast loops with known truth.

The realism checks compare the phantom with the real CAMUS patients in
``../shared/data/camus``. Every bound below was measured on those files; to print
the real and phantom statistics, run::

    .venv/bin/python tests/test_phantom.py
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import curve_fit

from echoscale import camus, ceus, images, phantom, phantom_ceus, prepare
from echoscale.dataset import load_dataset

REAL_PATIENTS = [f"patient{k:04d}" for k in range(1, 13)]
CEUS_SIZE = (128, 160)
TINY = {"size": (64, 80), "ceus_size": (64, 80)}


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> phantom.PhantomReport:
    """Three patients at the default B-mode size and two contrast loops."""
    out = tmp_path_factory.mktemp("phantom")
    return phantom.make_phantom(out, patients=3, ceus_cases=2, ceus_size=CEUS_SIZE)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _near(region: np.ndarray) -> np.ndarray:
    """Pixels 4-adjacent to ``region``."""
    out = np.zeros_like(region)
    out[1:] |= region[:-1]
    out[:-1] |= region[1:]
    out[:, 1:] |= region[:, :-1]
    out[:, :-1] |= region[:, 1:]
    return out


def _ed_es_pairs(root: Path, names: list[str]):
    """Yield (image float64, mask uint8) of the ED and ES images of both views."""
    for name in names:
        for view in camus.VIEWS:
            for phase in camus.PHASES:
                stem = root / name / f"{name}_{view}_{phase}"
                image = images.read_image(f"{stem}.nii.gz").array.astype(np.float64)
                mask = images.read_image(f"{stem}_gt.nii.gz").array.astype(np.uint8)
                yield image, mask


def realism_statistics(root: Path, names: list[str]) -> dict[str, np.ndarray]:
    """B-mode and mask statistics, one value per ED or ES image.

    ``cavity_ratio``: mean grey level of the cavity over the myocardium's.
    ``contrast_myo``, ``contrast_tissue``: std / mean of the grey levels in the
    myocardium and in the background tissue (label 0, inside the fan).
    ``zero``: fraction of zero pixels (outside the fan). ``apex_row``,
    ``apex_col``: first row with a non-zero pixel over H, and the mean column of the
    non-zero pixels two rows below it over (W - 1).
    ``cavity_background``: cavity pixels 4-adjacent to background pixels, over the
    cavity's pixels; ``background_height``: the highest such pixel's height in the
    cavity, 0 at its base row and 1 at its top row (0 when there is none);
    ``mitral``: cavity pixels 4-adjacent to atrium pixels, over the cavity's widest
    row.
    """
    rows = []
    for image, mask in _ed_es_pairs(root, names):
        cavity, myo = mask == 1, mask == 2
        tissue = (mask == 0) & (image > 0)
        first = int(np.nonzero((image > 0).any(axis=1))[0][0])
        apex_cols = np.nonzero(image[first + 2] > 0)[0]
        cavity_rows = np.nonzero(cavity.any(axis=1))[0]
        touching = cavity & _near(mask == 0)
        heights = (cavity_rows[-1] - np.nonzero(touching)[0]) / np.ptp(cavity_rows)
        rows.append(
            {
                "cavity_ratio": image[cavity].mean() / image[myo].mean(),
                "contrast_myo": image[myo].std() / image[myo].mean(),
                "contrast_tissue": image[tissue].std() / image[tissue].mean(),
                "zero": np.mean(image == 0),
                "apex_row": first / image.shape[0],
                "apex_col": apex_cols.mean() / (image.shape[1] - 1),
                "cavity_background": touching.sum() / cavity.sum(),
                "background_height": heights.max() if heights.size else 0.0,
                "mitral": (cavity & _near(mask == 3)).sum() / cavity.sum(1).max(),
            }
        )
    return {key: np.array([r[key] for r in rows]) for key in rows[0]}


@pytest.fixture(scope="module")
def real_stats(camus_root) -> dict[str, np.ndarray]:
    return realism_statistics(camus_root, REAL_PATIENTS)


@pytest.fixture(scope="module")
def phantom_stats(made) -> dict[str, np.ndarray]:
    return realism_statistics(made.camus, made.patients)


# --- arguments, layout, determinism, atomicity ------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"patients": 0}, "patients"),
        ({"patients": 2.5}, "patients"),
        ({"ceus_cases": -1}, "ceus_cases"),
        ({"seed": -3}, "seed"),
        ({"size": (63, 100)}, "size"),
        ({"ceus_size": (64,)}, "ceus_size"),
        ({"workers": 0}, "workers"),
    ],
)
def test_bad_arguments_are_refused_naming_the_argument(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=f"^{name} "):
        phantom.make_phantom(tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())


def test_the_report_and_the_files_follow_the_camus_and_ceus_layouts(made):
    assert made.camus == made.out / "camus" and made.ceus == made.out / "ceus"
    assert made.patients == ["patient0001", "patient0002", "patient0003"]
    assert made.cases == ["case01", "case02"]
    expected = {"Info_2CH.cfg", "Info_4CH.cfg"} | {
        f"patient0001_{view}_{tail}.nii.gz"
        for view in camus.VIEWS
        for tail in ("ED", "ES", "ED_gt", "ES_gt", "half_sequence", "half_sequence_gt")
    }
    assert {p.name for p in (made.camus / "patient0001").iterdir()} == expected
    extras = {"case.json", "ground_truth.json"}
    assert {p.name for p in (made.ceus / "case01").iterdir()} == extras | {
        "cine.tif", "masks.tif", "segments.tif"
    }  # fmt: skip
    assert {p.name for p in (made.ceus / "case02").iterdir()} == extras | {
        "cine.nii.gz", "masks.nii.gz", "segments.nii.gz"
    }  # fmt: skip


def test_a_seed_gives_byte_identical_files_whatever_the_threads(tmp_path):
    first = phantom.make_phantom(tmp_path / "a", patients=2, ceus_cases=2, **TINY)
    again = phantom.make_phantom(
        tmp_path / "b", patients=2, ceus_cases=2, workers=1, **TINY
    )
    other = phantom.make_phantom(
        tmp_path / "c", patients=2, ceus_cases=2, seed=1, **TINY
    )
    files = _files(first.out)
    assert files == _files(again.out)
    assert len(files) == 2 * 14 + 2 * 5 + 2  # and the two folders' markers
    different = _files(other.out)
    assert files.keys() == different.keys()
    assert all(files[k] != different[k] for k in files if k.endswith(".nii.gz"))


def test_patient_k_is_the_same_whatever_the_number_of_patients(tmp_path):
    one = phantom.make_phantom(tmp_path / "a", patients=1, ceus_cases=1, **TINY)
    two = phantom.make_phantom(tmp_path / "b", patients=2, ceus_cases=2, **TINY)
    assert _files(one.camus / "patient0001") == _files(two.camus / "patient0001")
    assert _files(one.ceus / "case01") == _files(two.ceus / "case01")


def test_an_interrupted_run_leaves_the_previous_folders_and_no_half_one(
    tmp_path, monkeypatch
):
    old = phantom.make_phantom(tmp_path, patients=1, ceus_cases=1, **TINY)
    before = _files(tmp_path)
    real_writer = phantom.write_camus_patient

    def failing(folder, patient):
        if patient.name == "patient0002":
            raise OSError("disk full")
        real_writer(folder, patient)

    monkeypatch.setattr(phantom, "write_camus_patient", failing)
    with pytest.raises(OSError, match="disk full"):
        phantom.make_phantom(tmp_path, patients=3, ceus_cases=1, workers=1, **TINY)
    assert _files(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["camus", "ceus"]
    assert old.patients == ["patient0001"]


def test_every_written_image_reads_back_with_its_geometry(made):
    paths = sorted(made.out.rglob("*.nii.gz")) + sorted(made.out.rglob("*.tif"))
    assert len(paths) == 3 * 12 + 2 * 3
    for path in paths:
        image = images.read_image(path)
        assert image.array.dtype == np.uint8
        assert 0.3 < image.spacing[0] < 1.5 and 0.3 < image.spacing[1] < 1.5
        if path.name.startswith(("cine", "masks", "segments")):
            assert image.is_cine and image.frame_times is not None


# --- CAMUS part --------------------------------------------------------------------


def test_the_camus_reader_accepts_every_phantom_patient(made):
    for name in made.patients:
        patient = camus.scan_patient(made.camus / name, sequences=True)
        camus.check_patient(patient)
        for cam in patient.views.values():
            assert cam.sequence is not None and cam.sequence_masks is not None
            assert 10 <= cam.info.n_frames <= 20
            assert cam.info.sex in ("M", "F") and 20 <= cam.info.age <= 90
            assert 35 <= cam.info.frame_rate <= 55


def test_prepare_camus_takes_every_frame_of_every_half_sequence(made, run_dir):
    report = prepare.prepare_camus(made.camus, run_dir, size=(64, 64), sequences=True)
    frames = sum(
        camus.read_info(made.camus / name / f"Info_{view}.cfg").n_frames
        for name in made.patients
        for view in camus.VIEWS
    )
    dataset = load_dataset(run_dir)
    assert report.n_patients == 3 and report.n_samples == frames
    assert len(dataset.images) == frames
    assert set(np.unique(dataset.masks).tolist()) == {0, 1, 2, 3}


def test_ed_and_es_images_are_the_half_sequence_frames_and_es_may_come_first(made):
    orders = {}
    for name in made.patients:
        for view in camus.VIEWS:
            info = camus.read_info(made.camus / name / f"Info_{view}.cfg")
            stem = made.camus / name / f"{name}_{view}"
            cine = images.read_image(f"{stem}_half_sequence.nii.gz").array
            cine_gt = images.read_image(f"{stem}_half_sequence_gt.nii.gz").array
            for phase, frame in (("ED", info.ed), ("ES", info.es)):
                still = images.read_image(f"{stem}_{phase}.nii.gz").array
                gt = images.read_image(f"{stem}_{phase}_gt.nii.gz").array
                assert np.array_equal(still, cine[frame - 1])
                assert np.array_equal(gt, cine_gt[frame - 1])
            orders[name, view] = (info.ed, info.es, info.n_frames)
    ed, es, n = orders["patient0002", "4CH"]  # every fifth patient from 0002
    assert (ed, es) == (n, 1)
    assert all(v[0] == 1 for k, v in orders.items() if k != ("patient0002", "4CH"))


def test_the_cavity_is_larger_at_ed_than_at_es_in_every_view(made):
    for name in made.patients:
        for view in camus.VIEWS:
            stem = made.camus / name / f"{name}_{view}"
            ed = images.read_image(f"{stem}_ED_gt.nii.gz").array
            es = images.read_image(f"{stem}_ES_gt.nii.gz").array
            assert (ed == 1).sum() > 1.2 * (es == 1).sum()


def test_the_cfg_ef_is_the_biplane_ef_of_the_masks(made):
    for name in made.patients:
        volumes = {}
        for phase in camus.PHASES:
            masks = [
                images.read_image(made.camus / name / f"{name}_{v}_{phase}_gt.nii.gz")
                for v in camus.VIEWS
            ]
            volumes[phase] = phantom.biplane_volume(
                masks[0].array, masks[0].spacing, masks[1].array, masks[1].spacing
            )
        ef = phantom.ejection_fraction(volumes["ED"], volumes["ES"])
        for view in camus.VIEWS:
            info = camus.read_info(made.camus / name / f"Info_{view}.cfg")
            assert info.ef == pytest.approx(ef, abs=0.051)
            assert 30 <= info.ef <= 75
        assert 40 < volumes["ED"] < 300


def _truncated_ellipsoid_masks(spacing, tilt_deg, c, a, b, h):
    """Two apical sections of an ellipsoid cut ``h`` mm below its apex.

    Semi-axes ``c`` (long axis) and ``a``, ``b`` (the 2CH and 4CH widths), mm. The
    atrium below the cut is labelled 3 and a band around the cavity 2.
    """
    out = []
    for width in (a, b):
        z, x = phantom.pixel_grid((600, 500), spacing)
        tilt = math.radians(tilt_deg)
        u = (z - 20) * math.cos(tilt) + x * math.sin(tilt)
        v = x * math.cos(tilt) - (z - 20) * math.sin(tilt)
        inside = ((u - c) / c) ** 2 + (v / width) ** 2
        mask = np.zeros(inside.shape, np.uint8)
        mask[(inside < 1.4) & (u < h)] = 2
        mask[(inside < 1) & (u < h)] = 1
        mask[(u >= h) & (u < h + 30) & (np.abs(v) < width * 1.2)] = 3
        out.append(mask)
    return out


@pytest.mark.parametrize(
    ("spacing", "tilt_deg", "h"), [((0.3, 0.3), 0.0, 45.0), ((0.35, 0.28), 12.0, 56.0)]
)
def test_the_biplane_method_recovers_a_truncated_ellipsoid(spacing, tilt_deg, h):
    c, a, b = 40.0, 22.0, 26.0
    mask_2ch, mask_4ch = _truncated_ellipsoid_masks(spacing, tilt_deg, c, a, b, h)
    # the cap of the ellipsoid from its apex to the cut: pi a b (h^2/c - h^3/(3c^2))
    exact = math.pi * a * b * (h**2 / c - h**3 / (3 * c**2)) / 1000
    volume = phantom.biplane_volume(mask_2ch, spacing, mask_4ch, spacing)
    assert volume == pytest.approx(exact, rel=0.02)
    length, widths = phantom.disk_widths(mask_2ch, spacing)
    assert length == pytest.approx(h, rel=0.01)
    assert widths.max() == pytest.approx(2 * a, rel=0.02)


def test_the_method_of_disks_needs_a_cavity_that_touches_the_atrium():
    mask = np.zeros((40, 40), np.uint8)
    with pytest.raises(ValueError, match="no LV cavity"):
        phantom.disk_widths(mask, (0.3, 0.3))
    mask[5:20, 10:30] = 1
    with pytest.raises(ValueError, match="does not touch the atrium"):
        phantom.disk_widths(mask, (0.3, 0.3))
    with pytest.raises(ValueError, match="EDV must be positive"):
        phantom.ejection_fraction(0.0, 10.0)


# --- realism against the real CAMUS images ----------------------------------------


def test_the_cavity_is_darker_than_the_myocardium_as_in_camus(
    real_stats, phantom_stats
):
    real, fake = real_stats["cavity_ratio"], phantom_stats["cavity_ratio"]
    # real: 0.47-0.98 over the 48 ED/ES images of patients 1-12; allow 0.1 below
    # and 0.02 above, and the same ballpark for the middle
    assert real.min() > 0.45 and real.max() < 1.0
    assert np.all((fake > real.min() - 0.1) & (fake < real.max() + 0.02))
    assert abs(np.median(fake) - np.median(real)) < 0.15


def test_speckle_contrast_is_within_the_range_of_camus(real_stats, phantom_stats):
    # real std/mean: myocardium 0.21-0.93, background tissue 0.19-0.70; allow 0.05
    for key in ("contrast_myo", "contrast_tissue"):
        real, fake = real_stats[key], phantom_stats[key]
        assert 0.15 < real.min() and real.max() < 1.0
        assert np.all((fake > real.min() - 0.05) & (fake < real.max() + 0.05)), key


def test_the_fan_is_black_outside_with_its_apex_at_the_top_centre(
    real_stats, phantom_stats
):
    # real: 44.5-46.4% zero pixels, the fan's first row at 0.2-0.3% of H (row 1) and
    # its centre at 0.499-0.500 of the width; allow 4 points more zeros (dark
    # speckle inside the fan) and 1% of H and W for the apex
    real, fake = real_stats, phantom_stats
    assert np.all(fake["zero"] > real["zero"].min() - 0.02)
    assert np.all(fake["zero"] < real["zero"].max() + 0.04)
    for stats in (real, fake):
        assert np.all(stats["apex_row"] < 0.01)
        assert np.all(np.abs(stats["apex_col"] - 0.5) < 0.01)


def test_the_myocardium_separates_cavity_and_background_except_at_the_base(
    real_stats, phantom_stats
):
    # real: at most 2 cavity pixels per image touch the background (< 0.02% of the
    # cavity), all in the basal 12% of the cavity's height; the cavity meets the
    # atrium over 0.58-0.99 of its widest row
    for stats in (real_stats, phantom_stats):
        assert np.all(stats["cavity_background"] < 0.001)
        assert np.all(stats["background_height"] < 0.15)
        assert np.all(stats["mitral"] > 0.5)


# --- contrast loops ----------------------------------------------------------------


@pytest.fixture(scope="module")
def loops(made) -> dict[str, tuple[dict, dict, dict[str, images.Image]]]:
    """Each case's case.json, ground_truth.json and cine, masks and segments."""
    out = {}
    for name in made.cases:
        folder = made.ceus / name
        settings = json.loads((folder / "case.json").read_text())
        truth = json.loads((folder / "ground_truth.json").read_text())
        suffix = ".tif" if (folder / "cine.tif").exists() else ".nii.gz"
        arrays = {
            stem: images.read_image(folder / f"{stem}{suffix}")
            for stem in ("cine", "masks", "segments")
        }
        out[name] = settings, truth, arrays
    return out


def test_prepare_ceus_reads_every_case_and_its_labelled_frames(made, run_dir):
    labelled = 0
    for name in made.cases:
        case = ceus.scan_case(made.ceus / name)
        ceus.check_case(case)
        truth = json.loads((made.ceus / name / "ground_truth.json").read_text())
        assert case.labelled == truth["labelled_frames"] and case.binary
        labelled += len(case.labelled)
    report = ceus.prepare_ceus(
        made.ceus, run_dir, size=(64, 64), split="random", val=0.0, test=0.5
    )
    assert report.n_samples == labelled == len(load_dataset(run_dir).images)


def test_cine_frame_times_equal_case_json_and_tiff_keeps_uneven_ones(loops):
    for settings, _, arrays in loops.values():
        times = np.asarray(settings["frame_times"])
        for image in arrays.values():
            np.testing.assert_allclose(image.frame_times, times, atol=1e-5)
        steps = np.diff(times) * settings["fps"]
        assert np.all(steps > 0.85) and np.all(steps < 1.15)
        uneven = np.ptp(steps) > 0.01
        assert uneven == arrays["cine"].path.name.endswith(".tif")
        assert 8 <= times[-1] <= 20 and 15 <= settings["fps"] <= 30


def test_masks_are_the_segments_on_labelled_frames_and_empty_elsewhere(loops):
    for _, truth, arrays in loops.values():
        masks, segments = arrays["masks"].array, arrays["segments"].array
        labelled = truth["labelled_frames"]
        assert set(np.unique(masks).tolist()) == {0, 1}
        assert np.array_equal(
            masks[labelled], (segments[labelled] > 0).astype(np.uint8)
        )
        others = np.setdiff1d(np.arange(len(masks)), labelled)
        assert not masks[others].any()
        for frame in segments[:: max(1, len(segments) // 10)]:
            assert set(np.unique(frame).tolist()) == set(range(7))


def test_segments_run_base_to_apex_on_the_septal_side_then_back(loops):
    for settings, truth, arrays in loops.values():
        seg = arrays["segments"].array[0]
        rows, cols = np.indices(seg.shape)
        centre = {
            k: (rows[seg == k].mean(), cols[seg == k].mean()) for k in range(1, 7)
        }
        # basal segments lie deeper than mid, mid deeper than apical
        for first, second, third in ((1, 2, 3), (6, 5, 4)):
            assert centre[first][0] > centre[second][0] > centre[third][0]
        septal = np.mean([centre[k][1] for k in (1, 2)])
        lateral = np.mean([centre[k][1] for k in (5, 6)])
        assert (septal < lateral) == (settings["septum_side"] == "left")
        names = [s["name"] for s in truth["segments"]]
        assert names == list(phantom_ceus.SEGMENT_NAMES[settings["view"]])


def test_flash_frames_are_the_brightest(loops):
    for settings, _, arrays in loops.values():
        brightness = arrays["cine"].array.mean(axis=(1, 2))
        flashes = settings["flash_frames"]
        assert sorted(np.argsort(brightness)[-len(flashes) :].tolist()) == flashes


def _segment_curves(settings, truth, arrays):
    """Yield (segment, t (s), mean linear power per frame) after the first flash."""
    cine, segments = arrays["cine"].array, arrays["segments"].array
    dynamic_range, v_max = settings["dynamic_range_db"], settings["v_max"]
    power = 10 ** (cine * dynamic_range / (10 * v_max))  # DESIGN.md's linearisation
    times = np.asarray(settings["frame_times"])
    flashes = truth["flashes"]
    start = flashes[0]["t0_frame"]
    end = flashes[1]["frames"][0] if len(flashes) > 1 else len(cine)
    for seg in truth["segments"]:
        means = [
            power[f][segments[f] == seg["label"]].mean() for f in range(start, end)
        ]
        yield seg, times[start:end] - times[start], np.array(means)


def test_segment_means_follow_the_ground_truth_replenishment(loops):
    unsaturated = 0
    for settings, truth, arrays in loops.values():
        if truth["saturation_level"] is not None:
            continue  # clipped pixels bias the mean by design
        unsaturated += 1
        betas = []
        for seg, t, y in _segment_curves(settings, truth, arrays):
            model = phantom_ceus.replenishment(t, seg["A"], seg["beta"], seg["C"])
            residual = (y - model) / seg["A"]
            # Speckle of unit mean over ~150-300 pixels per segment, correlated over
            # ~2.5 pixels: 9-13% per frame at this size (measured RMS 6-11%); the
            # mean over >100 frames within ~1.5% (measured |bias| < 1.5%).
            assert np.sqrt(np.mean(residual**2)) < 0.15, seg["name"]
            assert abs(residual.mean()) < 0.03, seg["name"]
            fit, _ = curve_fit(
                phantom_ceus.replenishment,
                t,
                y,
                p0=(y.max(), 1.0, y.min()),
                bounds=([0, 0.01, 0], [np.inf, 10, np.inf]),
            )
            assert fit[0] == pytest.approx(seg["A"], rel=0.05)
            assert fit[1] == pytest.approx(seg["beta"], rel=0.2)
            assert seg["A_beta"] == pytest.approx(seg["A"] * seg["beta"], rel=1e-5)
            betas.append(seg["beta"])
        assert max(betas) / min(betas) > 1.2 and all(0.2 <= b <= 2 for b in betas)
    assert unsaturated >= 1


def test_before_the_first_flash_the_myocardium_is_at_its_plateau(loops):
    for settings, truth, arrays in loops.values():
        if truth["saturation_level"] is not None:
            continue
        cine, segments = arrays["cine"].array, arrays["segments"].array
        before = range(truth["flash_frames"][0])
        power = 10 ** (cine * settings["dynamic_range_db"] / (10 * settings["v_max"]))
        for seg in truth["segments"]:
            means = [power[f][segments[f] == seg["label"]].mean() for f in before]
            assert np.mean(means) == pytest.approx(seg["A"] + seg["C"], rel=0.05)


def test_a_saturated_case_is_clipped_at_its_ceiling():
    case = phantom_ceus.make_ceus_case(
        np.random.default_rng(5), "case09", (64, 80), saturate=True, labelling="all"
    )
    ceiling = case.settings["saturation_level"]
    assert 205 <= ceiling <= 235 and case.truth["saturation_level"] == ceiling
    assert case.cine.max() == ceiling
    flashes = case.settings["flash_frames"]
    assert np.mean(case.cine[flashes] == ceiling) > 0.2
    dynamic_range = case.settings["dynamic_range_db"]
    expected = 10 ** (ceiling * dynamic_range / 2550)
    assert case.truth["saturation_power"] == pytest.approx(expected)


def test_labellings_and_the_model_functions():
    rng = np.random.default_rng(3)
    third = phantom_ceus.make_ceus_case(rng, "c", (64, 64), labelling="every_third")
    assert third.truth["labelled_frames"] == list(range(0, len(third.cine), 3))
    part = phantom_ceus.make_ceus_case(rng, "c", (64, 64), labelling="first_part")
    n = len(part.truth["labelled_frames"])
    assert part.truth["labelled_frames"] == list(range(n))
    assert 0.4 * len(part.cine) - 1 <= n <= 0.6 * len(part.cine)
    with pytest.raises(ValueError, match="labelling"):
        phantom_ceus.make_ceus_case(rng, "c", (64, 64), labelling="some")
    times = np.arange(8) * 0.5
    since = phantom_ceus.time_since_flash(times, [[2, 3]])
    assert np.isinf(since[:2]).all() and np.isnan(since[2:4]).all()
    np.testing.assert_allclose(since[4:], [0.0, 0.5, 1.0, 1.5])
    y = phantom_ceus.replenishment(np.array([0.0, np.inf]), 10.0, 0.5, 2.0)
    np.testing.assert_allclose(y, [2.0, 12.0])


if __name__ == "__main__":
    import tempfile

    root = Path(__file__).resolve().parents[2] / "shared" / "data" / "camus"
    with tempfile.TemporaryDirectory() as tmp:
        report = phantom.make_phantom(tmp, patients=12, ceus_cases=0)
        for label, stats in (
            ("real CAMUS patients 1-12", realism_statistics(root, REAL_PATIENTS)),
            ("phantom, 12 patients", realism_statistics(report.camus, report.patients)),
        ):
            print(label)
            for key, values in stats.items():
                print(
                    f"  {key:18s} min {values.min():.4f}  median "
                    f"{np.median(values):.4f}  max {values.max():.4f}"
                )


def test_the_phantom_never_replaces_a_folder_it_did_not_write(tmp_path):
    from echoscale.errors import InputError

    (tmp_path / "camus" / "patient0001").mkdir(parents=True)
    with pytest.raises(InputError, match="was not written by echoscale phantom"):
        phantom.make_phantom(tmp_path, patients=1, ceus_cases=0)
    assert (tmp_path / "camus" / "patient0001").is_dir()
