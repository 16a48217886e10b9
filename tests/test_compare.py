"""The compare stage: mask metrics in mm, EF, matching, and perfusion agreement."""

from __future__ import annotations

import math

import numpy as np
import pytest

from echoscale import camus, compare_masks, images, metrics, rundir, volumes
from echoscale.compare import compare, format_report, region_groups
from echoscale.errors import InputError

# --- distances and Dice on tiny masks -----------------------------------------------


def test_tiny_rectangles_give_exact_dice_and_distances():
    pred = np.zeros((7, 8), bool)
    ref = np.zeros((7, 8), bool)
    pred[2:5, 2:5] = True  # 3 x 3
    ref[2:5, 2:6] = True  # 3 x 4: one more column on the right
    # spacing (1, 2): a row is 1 mm, a column 2 mm. Boundaries: pred 8 pixels, ref
    # 10. From pred only (3, 4), inside ref, is off ref's boundary: 1 mm (a row).
    # From ref the three pixels of column 5 are one column (2 mm) from pred's.
    d = metrics.contour_distances(pred, ref, (1.0, 2.0))
    assert metrics.dice(pred, ref) == pytest.approx(2 * 9 / (9 + 12))
    assert d["hd_mm"] == pytest.approx(2.0)
    assert d["hd95_mm"] == pytest.approx(2.0)
    assert d["masd_mm"] == pytest.approx((1 / 8 + 6 / 10) / 2)
    assert metrics.mean_contour_distance(pred, ref, (1.0, 2.0)) == d["masd_mm"]


def _disk(spacing, centre_mm, radius_mm=10.0, size_mm=40.0):
    h, w = int(size_mm / spacing[0]), int(size_mm / spacing[1])
    z = np.arange(h)[:, None] * spacing[0]
    x = np.arange(w)[None] * spacing[1]
    return (z - centre_mm[0]) ** 2 + (x - centre_mm[1]) ** 2 < radius_mm**2


def test_one_shape_at_two_anisotropic_samplings_gives_the_same_mm():
    # Two circles of radius 10 mm, 3 mm apart (1.8 mm down, 2.4 mm across). Their
    # Hausdorff distance is the shift; the mean contour distance is the mean over
    # the circle of | |p - c_b| - R |; Dice is the lens area over pi R^2.
    R, d = 10.0, np.array([1.8, 2.4])
    theta = np.linspace(0, 2 * np.pi, 20000, endpoint=False)
    u = np.column_stack([np.cos(theta), np.sin(theta)])
    masd = np.mean(np.abs(np.sqrt(R**2 - 2 * R * (u @ d) + 9.0) - R))
    lens = 2 * R**2 * math.acos(3 / (2 * R)) - 1.5 * math.sqrt(4 * R**2 - 9)
    results = []
    for spacing in ((0.3, 0.5), (0.5, 0.3)):
        a = _disk(spacing, (20.0, 20.0))
        b = _disk(spacing, (21.8, 22.4))
        result = metrics.contour_distances(a, b, spacing)
        assert result["hd_mm"] == pytest.approx(3.0, abs=0.5)
        assert result["masd_mm"] == pytest.approx(masd, abs=0.5)
        assert metrics.dice(a, b) == pytest.approx(lens / (math.pi * R**2), abs=0.01)
        results.append(result)
    for key in ("hd_mm", "hd95_mm", "masd_mm"):
        assert results[0][key] == pytest.approx(results[1][key], abs=0.5)


def test_each_empty_case_is_scored_and_counted():
    full = np.zeros((10, 10), np.uint8)
    full[2:6, 2:6] = 1
    empty = np.zeros_like(full)
    structures = {"lv_endo": (1,)}
    cases = {
        "both_empty": (empty, empty),
        "auto_empty": (empty, full),
        "reference_empty": (full, empty),
        "ok": (full, full),
    }
    rows = []
    for status, (auto, ref) in cases.items():
        scored = compare_masks.score_frame(auto, ref, structures, (0.5, 0.5))["lv_endo"]
        assert scored["status"] == status
        rows.append({"structure": "lv_endo", "phase": "ED", **scored})
        if status == "both_empty":
            assert math.isnan(scored["dice"]) and math.isnan(scored["hd_mm"])
        elif status == "ok":
            assert scored["dice"] == 1.0 and scored["masd_mm"] == 0.0
        else:  # one side empty: never perfect
            assert scored["dice"] == 0.0
            assert all(math.isinf(scored[k]) for k in compare_masks.DISTANCES)
    summary = compare_masks.summarise_scores(rows)["lv_endo"]["ED"]
    assert (summary["n"], summary["n_undefined"], summary["n_one_empty"]) == (4, 1, 2)
    # Dice: the two zeros count, the undefined one does not: (0 + 0 + 1) / 3
    assert summary["dice"]["mean"] == pytest.approx(1 / 3)
    assert summary["dice"]["n_nan"] == 1
    # distances: the mean is over the finite values, the infinite ones counted
    assert summary["hd_mm"]["mean"] == 0.0
    assert summary["hd_mm"]["n_infinite"] == 2


def test_structures_follow_the_labels_the_masks_hold():
    camus_like = np.array([[0, 1], [2, 3]], np.uint8)
    assert set(compare_masks.structures_of(camus_like, camus_like)) == {
        "lv_endo",
        "lv_epi",
        "myo",
        "la",
    }
    no_myo = np.array([[0, 1], [3, 0]], np.uint8)
    assert set(compare_masks.structures_of(no_myo, no_myo)) == {"lv_endo", "la"}
    # contrast-echo masks of 0 and 1 on both sides are myocardium
    binary = np.array([[0, 1], [1, 0]], np.uint8)
    assert compare_masks.structures_of(binary, binary) == {"myo": (1,)}


# --- volumes by the method of disks ------------------------------------------------


def _half_ellipsoid_view(width, length, spacing, size=(360, 300), apex_mm=15.0):
    """An apical view: cavity = half an ellipse (apex to its widest), atrium below.

    Half-length ``length`` along the rows, half-width ``width`` (mm); the myocardium
    is a 4 mm band around the cavity.
    """
    h, w = size
    z = np.arange(h)[:, None] * spacing[0]
    x = (np.arange(w)[None] - (w - 1) / 2) * spacing[1]
    base = apex_mm + length
    inside = ((z - base) / length) ** 2 + (x / width) ** 2
    grown = ((z - base) / (length + 4)) ** 2 + (x / (width + 4)) ** 2
    mask = np.zeros((h, w), np.uint8)
    mask[(grown < 1) & (z < base)] = 2
    mask[(inside < 1) & (z < base)] = 1
    mask[(z >= base) & (z < base + 25) & (np.abs(x) < width)] = 3
    return mask


def _volumes_masks(ed, es, spacing):
    """``(view, phase) -> (mask, spacing)`` for (a, b, c) semi-axes at ED and ES."""
    out = {}
    for phase, (a, b, c) in (("ED", ed), ("ES", es)):
        out[("2CH", phase)] = (_half_ellipsoid_view(a, c, spacing), spacing)
        out[("4CH", phase)] = (_half_ellipsoid_view(b, c, spacing), spacing)
    return out


def test_the_method_of_disks_recovers_half_ellipsoids_and_their_ef():
    # Half an ellipsoid of semi-axes a, b (across) and c (long) holds 2/3 pi a b c,
    # half of the 4/3 pi a b c that disks of an ellipsoid converge to.
    spacing = (0.3, 0.35)
    ed, es = (22.0, 25.0, 45.0), (16.0, 19.0, 40.0)
    lv = volumes.lv_volumes(_volumes_masks(ed, es, spacing), "guideline")
    edv = 2 / 3 * math.pi * math.prod(ed) / 1000
    esv = 2 / 3 * math.pi * math.prod(es) / 1000
    assert lv.edv == pytest.approx(edv, rel=0.02)
    assert lv.esv == pytest.approx(esv, rel=0.02)
    assert lv.ef == pytest.approx(100 * (1 - esv / edv), abs=1.0)
    assert lv.lengths["2CH_ED"] == pytest.approx(45.0, abs=0.5)

    # the CAMUS script's rule cuts the ES disks as thick as the ED ones
    camus_rule = volumes.lv_volumes(_volumes_masks(ed, es, spacing), "camus")
    longest = max(lv.lengths.values())
    es_longest = max(lv.lengths["2CH_ES"], lv.lengths["4CH_ES"])
    assert camus_rule.edv == pytest.approx(lv.edv)
    assert camus_rule.esv == pytest.approx(lv.esv * longest / es_longest)
    assert camus_rule.ef < lv.ef - 3


def test_the_camus_length_rule_reproduces_the_cfg_ef_of_real_patients(camus_root):
    gaps = {}
    for k in range(1, 13):
        name = f"patient{k:04d}"
        folder = camus_root / name
        masks = {}
        for view in volumes.VIEWS:
            for phase in volumes.PHASES:
                image = images.read_image(folder / f"{name}_{view}_{phase}_gt.nii.gz")
                masks[(view, phase)] = (image.array.astype(np.uint8), image.spacing)
        cfg = camus.read_info(folder / "Info_2CH.cfg").ef
        gaps[name] = {
            rule: volumes.lv_volumes(masks, rule).ef - cfg
            for rule in volumes.LENGTH_RULES
        }
    # the cfg EF is a whole number: within 2 points under the CAMUS rule
    assert all(abs(g["camus"]) < 2 for g in gaps.values())
    assert np.mean([g["guideline"] for g in gaps.values()]) > 5


# --- matching by name ------------------------------------------------------------


def _mask(shift=0, shape=(40, 36)):
    mask = np.zeros(shape, np.uint8)
    mask[8 + shift : 20 + shift, 10:26] = 2
    mask[10 + shift : 18 + shift, 13:23] = 1
    mask[20 + shift : 26 + shift, 12:24] = 3
    return mask


def test_names_drop_extensions_and_mask_tails(tmp_path):
    assert compare_masks.mask_name(tmp_path / "case1_gt.nii.gz") == "case1"
    assert compare_masks.mask_name(tmp_path / "case1_Mask.tif") == "case1"
    assert compare_masks.mask_name(tmp_path / "case1_seg.mhd") == "case1"
    assert compare_masks.mask_name(tmp_path / "run" / "case7" / "masks.tif") == "case7"
    assert compare_masks.parse_name("patient0003_4CH_ES") == {
        "case": "patient0003",
        "view": "4CH",
        "phase": "ES",
    }
    assert compare_masks.parse_name("patient0003_2CH_half_sequence")["phase"] == ""
    assert compare_masks.parse_name("loop12")["case"] == "loop12"


def test_folders_match_by_name_and_list_the_unmatched(tmp_path):
    ref, auto = tmp_path / "ref", tmp_path / "auto"
    for name in ("case1_gt.nii.gz", "case2_gt.nii.gz", "case3_gt.tif"):
        images.write_image(ref / name, _mask(), (0.4, 0.5))
    images.write_image(auto / "case1" / "masks.tif", _mask(1), (0.4, 0.5))
    images.write_image(auto / "case2_mask.nii.gz", _mask(), (0.4, 0.5))
    images.write_image(auto / "case4.nii.gz", _mask(), (0.4, 0.5))

    summary = compare(auto, ref, tmp_path / "out")
    assert summary["kind"] == "masks"
    assert summary["matched"] == 2
    assert summary["unmatched"] == {"auto": ["case4"], "reference": ["case3"]}
    rows = rundir.read_csv(tmp_path / "out" / "metrics.csv")
    assert {r["name"] for r in rows} == {"case1", "case2"}
    dice = {(r["name"], r["structure"]): float(r["dice"]) for r in rows}
    assert dice[("case2", "lv_endo")] == 1.0
    assert dice[("case1", "lv_endo")] < 1.0  # shifted by a row
    assert set(summary["structures"]) == {"lv_endo", "lv_epi", "myo", "la"}
    assert "unmatched 1 auto and 1 reference" in format_report(summary)


def _write_camus_tree(root, name, *, complete=True, ef=50):
    """A patient folder of _gt masks, their images and the cfg files."""
    folder = root / name
    shapes = {"ED": (22.0, 25.0, 45.0), "ES": (16.0, 19.0, 40.0)}
    spacing = (0.3, 0.35)
    keys = [(v, p) for v in ("2CH", "4CH") for p in ("ED", "ES")]
    for view, phase in keys if complete else keys[:1]:
        a, b, c = shapes[phase]
        mask = _half_ellipsoid_view(a if view == "2CH" else b, c, spacing)
        stem = folder / f"{name}_{view}_{phase}"
        images.write_nifti(f"{stem}_gt.nii.gz", mask, spacing)
        grey = np.where(mask == 2, 200.0, np.where(mask == 0, 90.0, 20.0))
        images.write_nifti(f"{stem}.nii.gz", grey.astype(np.float32), spacing)
    for view in ("2CH", "4CH"):
        (folder / f"Info_{view}.cfg").write_text(
            f"ED: 1\nES: 9\nNbFrame: 9\nImageQuality: Good\nEF: {ef}\n"
        )
    return spacing


def test_a_camus_tree_matches_flat_predictions_and_gives_ef(tmp_path):
    ref, pred = tmp_path / "camus", tmp_path / "pred"
    spacing = _write_camus_tree(ref / "testing", "patient0001")
    _write_camus_tree(ref / "testing", "patient0002", complete=False)
    # predictions: patient0001 exact, but its 4CH ES cavity narrower by 2 mm
    for view in ("2CH", "4CH"):
        for phase in ("ED", "ES"):
            gt = images.read_image(
                ref
                / "testing"
                / "patient0001"
                / f"patient0001_{view}_{phase}_gt.nii.gz"
            )
            mask = gt.array.astype(np.uint8)
            if (view, phase) == ("4CH", "ES"):
                mask = _half_ellipsoid_view(17.0, 40.0, spacing)
            images.write_nifti(
                pred / f"patient0001_{view}_{phase}.nii.gz", mask, spacing
            )
    images.write_nifti(pred / "patient0003_2CH_ED.nii.gz", _mask(), spacing)

    out = tmp_path / "out"
    summary = compare(pred, ref, out)
    assert summary["matched"] == 4
    assert summary["unmatched"] == {
        "auto": ["patient0003_2CH_ED"],
        "reference": ["patient0002_2CH_ED"],
    }
    # the grey images beside the _gt files are not masks
    skipped = [s["path"] for s in summary["skipped"]]
    assert len(skipped) == 5 and all(not p.endswith("_gt.nii.gz") for p in skipped)
    rows = rundir.read_csv(out / "metrics.csv")
    assert {(r["case"], r["view"], r["phase"]) for r in rows} == {
        ("patient0001", v, p) for v in ("2CH", "4CH") for p in ("ED", "ES")
    }
    assert set(summary["structures"]["lv_endo"]) == {"ED", "ES", "all"}
    es_4ch = [r for r in rows if r["view"] == "4CH" and r["phase"] == "ES"]
    assert float(next(r for r in es_4ch if r["structure"] == "lv_endo")["dice"]) < 1

    # EF: only patient0001 has all four; the prediction's ES is smaller
    volumes_rows = rundir.read_csv(out / "volumes.csv")
    assert {r["case"] for r in volumes_rows} == {"patient0001"}
    guideline = next(r for r in volumes_rows if r["rule"] == "guideline")
    assert float(guideline["cfg_ef"]) == 50.0
    assert float(guideline["auto_esv"]) == pytest.approx(
        float(guideline["reference_esv"]) * 17 / 19, rel=0.02
    )
    assert float(guideline["auto_ef"]) > float(guideline["reference_ef"])
    ef = summary["volumes"]["guideline"]["ef_auto_vs_reference"]
    assert ef["n"] == 1
    assert ef["bias"] == pytest.approx(
        float(guideline["auto_ef"]) - float(guideline["reference_ef"])
    )
    assert ef["reason"]  # one patient: no SD, no correlation, and it says so


def test_loops_are_compared_frame_by_frame_skipping_unlabelled_frames(tmp_path):
    ref = np.stack([_mask(s) for s in range(5)])
    ref[2] = 0  # not labelled
    auto = np.stack([_mask(s + 1) for s in range(5)])
    images.write_nifti(tmp_path / "loop_gt.nii.gz", ref, (0.4, 0.4))
    images.write_nifti(tmp_path / "loop.nii.gz", auto, (0.4, 0.4))
    summary = compare(
        tmp_path / "loop.nii.gz", tmp_path / "loop_gt.nii.gz", tmp_path / "o"
    )
    assert summary["unlabelled_frames"] == 1
    rows = rundir.read_csv(tmp_path / "o" / "metrics.csv")
    assert sorted({int(r["frame"]) for r in rows}) == [0, 1, 3, 4]
    # shifted by one row of 0.4 mm everywhere: Hausdorff is that row
    assert all(float(r["hd_mm"]) == pytest.approx(0.4) for r in rows)


def test_masks_of_different_shapes_name_both_files(tmp_path):
    images.write_nifti(tmp_path / "a.nii.gz", _mask(), (0.4, 0.4))
    images.write_nifti(tmp_path / "a_gt.nii.gz", _mask(shape=(42, 36)), (0.4, 0.4))
    with pytest.raises(InputError, match=r"shape \(40, 36\) differs .*a_gt\.nii\.gz"):
        compare(tmp_path / "a.nii.gz", tmp_path / "a_gt.nii.gz", tmp_path / "out")


def test_a_file_that_is_no_label_map_is_skipped_and_listed(tmp_path):
    images.write_nifti(tmp_path / "r" / "x_gt.nii.gz", _mask(), (0.4, 0.4))
    images.write_nifti(tmp_path / "r" / "y_gt.nii.gz", _mask(), (0.4, 0.4))
    grey = np.linspace(0, 255, 40 * 36, dtype=np.float32).reshape(40, 36)
    images.write_nifti(tmp_path / "a" / "x.nii.gz", grey, (0.4, 0.4))
    images.write_nifti(tmp_path / "a" / "y.nii.gz", _mask(), (0.4, 0.4))
    summary = compare(tmp_path / "a", tmp_path / "r", tmp_path / "out")
    assert (summary["matched"], summary["scored"]) == (2, 1)
    (skipped,) = summary["skipped"]
    assert skipped["path"].endswith("x.nii.gz") and "label map" in skipped["reason"]


# --- perfusion tables -------------------------------------------------------------

_COLUMNS = ("case", "region", "flash", "A", "beta", "A_beta", "C", "success", "r2")


def _table_rows(case, scale, fail=()):
    rows = []
    for i, region in enumerate(
        ("myocardium", "basal_septal", "mid_septal", "apical_septal", "basal_lateral")
    ):
        A, beta = (10.0 + 3 * i) * scale, 0.3 + 0.1 * i
        rows.append(
            {
                "case": case,
                "region": region,
                "flash": 1,
                "A": A,
                "beta": beta,
                "A_beta": A * beta,
                "C": 2.0,
                "success": region not in fail,
                "r2": 0.9,
            }
        )
    return rows


def test_perfusion_tables_match_by_case_region_flash_and_exclude_failures(tmp_path):
    auto, ref = tmp_path / "auto", tmp_path / "ref"
    scales = {"case01": 1.1, "case02": 1.03, "case03": 0.95}
    for case, scale in scales.items():
        fail = ("mid_septal",) if case == "case02" else ()
        rows = _table_rows(case, scale, fail)
        rundir.write_csv(auto / case / "perfusion.csv", rows, _COLUMNS)
    reference = [
        r for c in ("case01", "case02", "case03", "case04") for r in _table_rows(c, 1.0)
    ]
    rundir.write_csv(ref / "perfusion.csv", reference, _COLUMNS)

    summary = compare(auto, ref, tmp_path / "out", margin="10%", ratio=True)
    assert summary["kind"] == "perfusion"
    assert summary["matched"] == 15
    assert summary["n_excluded"] == 1
    assert summary["excluded"] == [
        {"case": "case02", "region": "mid_septal", "flash": "1", "failed": ["auto"]}
    ]
    assert len(summary["unmatched"]["reference"]) == 5
    assert summary["unmatched"]["auto"] == []

    overall = summary["groups"]["overall"]["A"]
    assert overall["n"] == 14
    diffs = [
        (10.0 + 3 * i) * (s - 1)
        for c, s in scales.items()
        for i in range(5)
        if not (c == "case02" and i == 2)
    ]
    assert overall["bland_altman"]["bias"] == pytest.approx(np.mean(diffs))
    assert summary["groups"]["basal"]["beta"]["n"] == 6
    assert summary["groups"]["segments"]["A"]["n"] == 11
    assert overall["tost"]["margin"] == pytest.approx(0.1 * overall["mean_b"])
    assert overall["bland_altman_ratio"]["unit"] == "%"
    report = format_report(summary)
    assert "overall" in report and overall["tost"]["decision"] in report


def test_region_groups_follow_the_level_in_the_name():
    assert region_groups("basal_septal") == [
        "basal_septal",
        "basal",
        "segments",
        "overall",
    ]
    assert region_groups("wall2_apical")[1] == "apical"
    assert region_groups("myocardium") == ["myocardium", "overall"]


def test_masks_against_tables_is_refused(tmp_path):
    images.write_nifti(tmp_path / "m" / "x.nii.gz", _mask(), (0.4, 0.4))
    rundir.write_csv(tmp_path / "t" / "perfusion.csv", _table_rows("c", 1.0), _COLUMNS)
    with pytest.raises(InputError, match="perfusion tables"):
        compare(tmp_path / "m", tmp_path / "t", tmp_path / "out")


# --- the real echo_toolkit segmentations -------------------------------------------


def test_two_real_candidates_against_their_reference(shared_data, tmp_path):
    folder = shared_data / "echo_toolkit"
    dice = {}
    for candidate in ("candidate1", "candidate2"):
        summary = compare(
            folder / f"segmentation_{candidate}.nii.gz",
            folder / "segmentation_reference.nii.gz",
            tmp_path / candidate,
        )
        assert summary["matched"] == 1 and summary["unlabelled_frames"] == 0
        # labels 0-2: no atrium to score
        assert set(summary["structures"]) == {"lv_endo", "lv_epi", "myo"}
        rows = rundir.read_csv(tmp_path / candidate / "metrics.csv")
        assert len(rows) == 25 * 3
        values = np.array([float(r["dice"]) for r in rows])
        assert np.all((values > 0) & (values <= 1))
        assert all(float(r["row_mm"]) == pytest.approx(0.4556, abs=1e-4) for r in rows)
        dice[candidate] = {
            s: v["all"]["dice"]["mean"] for s, v in summary["structures"].items()
        }
        assert dice[candidate]["lv_endo"] > 0.7
    assert dice["candidate1"] != dice["candidate2"]
