"""Tests of the six-segment geometry on synthetic horseshoes and on the phantom."""

from __future__ import annotations

import numpy as np
import pytest

from echoscale import phantom_ceus, regions

SPACING = (0.4, 0.5)  # (row_mm, col_mm): not square


def horseshoe(
    shape=(260, 200), spacing=SPACING, tilt_deg=0.0, centre=(45.0, 50.0)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An apex-up horseshoe: between two half-ellipses, cut at the centre's level
    and continued by straight walls 20 mm further down.

    Returns the mask and, per pixel, the long-axis position ``u`` (mm, from the
    centre towards the apex) and the lateral position ``v`` (mm, positive to the
    right), both in the heart's own (tilted) frame.
    """
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    y, x = rows * spacing[0] - centre[0], cols * spacing[1] - centre[1]
    tilt = np.radians(tilt_deg)
    u = -(y * np.cos(tilt) - x * np.sin(tilt))  # towards the apex, up
    v = x * np.cos(tilt) + y * np.sin(tilt)
    endo = (u / 30) ** 2 + (v / 14) ** 2
    epi = (u / 38) ** 2 + (v / 22) ** 2
    cap = (u >= 0) & (endo > 1) & (epi < 1)
    walls = (u < 0) & (u > -20) & (np.abs(v) > 14) & (np.abs(v) < 22)
    return cap | walls, u, v


def midwall_labels(labels, u, v, n=400):
    """The labels met along the midwall from the left basal end to the right one."""
    # The midwall: a half-ellipse of semi-axes 34 and 18 mm, then straight down.
    path_u = np.concatenate(
        [
            np.linspace(-19, 0, n // 4),
            34 * np.sin(np.linspace(0, np.pi, n)),
            np.linspace(0, -19, n // 4),
        ]
    )
    path_v = np.concatenate(
        [
            np.full(n // 4, -18.0),
            -18 * np.cos(np.linspace(0, np.pi, n)),
            np.full(n // 4, 18.0),
        ]
    )
    inside = labels > 0
    met = []
    for pu, pv in zip(path_u, path_v, strict=True):
        d = (u - pu) ** 2 + (v - pv) ** 2
        d[~inside] = np.inf
        met.append(int(labels.flat[np.argmin(d)]))
    return met


def test_horseshoe_gives_six_ordered_segments_covering_the_myocardium():
    mask, u, v = horseshoe()

    labels = regions.segment_myocardium(mask, SPACING, "left")

    np.testing.assert_array_equal(labels > 0, mask)
    met = midwall_labels(labels, u, v)
    assert met[0] == 1 and met[-1] == 6
    assert np.all(np.diff(met) >= 0), "labels run 1 to 6 from the left base"
    assert sorted(set(met)) == [1, 2, 3, 4, 5, 6]
    areas = np.bincount(labels.ravel(), minlength=7)[1:]
    assert areas.max() / areas.min() < 1.4, areas


def test_apical_segments_meet_on_the_long_axis():
    mask, u, v = horseshoe()

    labels = regions.segment_myocardium(mask, SPACING, "left")

    apical = (labels == 3) | (labels == 4)
    # apical segments 3 (left) and 4 (right) split at v = 0 within a pixel
    assert np.all(v[labels == 3] < 0.5) and np.all(v[labels == 4] > -0.5)
    assert apical[(u > 30) & mask].all()


def test_segments_are_mirror_images_across_the_long_axis():
    mask, _, _ = horseshoe(shape=(260, 201), centre=(45.0, 50.0))

    labels = regions.segment_myocardium(mask, SPACING, "left")
    mirrored = regions.segment_myocardium(mask[:, ::-1], SPACING, "left")

    # mirrored, the left wall is the old right one: segment k becomes 7 - k; the
    # binning runs from one basal end, which moves the cuts by up to a slice
    flipped = np.where(mirrored > 0, 7 - mirrored, 0)[:, ::-1]
    assert np.mean(flipped[mask] == labels[mask]) > 0.97


def test_septum_on_the_right_swaps_the_walls():
    mask, _, v = horseshoe()

    left = regions.segment_myocardium(mask, SPACING, "left")
    right = regions.segment_myocardium(mask, SPACING, "right")

    assert set(np.unique(right[(v > 0) & mask])) <= {1, 2, 3}
    np.testing.assert_array_equal(right[mask], np.where(left > 0, 7 - left, 0)[mask])


def test_tilted_horseshoe_is_cut_the_same_way():
    upright, u0, v0 = horseshoe()
    tilted, u1, v1 = horseshoe(tilt_deg=25.0, centre=(55.0, 50.0))

    a = regions.segment_myocardium(upright, SPACING, "left")
    b = regions.segment_myocardium(tilted, SPACING, "left")

    differ = np.not_equal(midwall_labels(b, u1, v1), midwall_labels(a, u0, v0))
    assert differ.mean() < 0.02  # the cuts agree within a pixel or two


def test_a_gap_in_the_wall_is_bridged():
    mask, u, v = horseshoe()
    gapped = mask & ~((v < 0) & (np.abs(u - 20) < 2))  # a 4 mm gap, left wall

    labels = regions.segment_myocardium(gapped, SPACING, "left")

    met = midwall_labels(labels, u, v)
    assert np.all(np.diff(met) >= 0) and sorted(set(met)) == [1, 2, 3, 4, 5, 6]


def test_too_small_a_mask_gives_no_segments():
    mask = np.zeros((40, 40), bool)
    mask[10:14, 10:14] = True

    assert not regions.segment_myocardium(mask, SPACING).any()
    assert not regions.segment_myocardium(np.zeros((40, 40)), SPACING).any()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_segments_agree_with_the_phantoms_own(seed):
    case = phantom_ceus.make_ceus_case(
        np.random.default_rng(seed), "case", (128, 154), labelling="all"
    )
    truth = case.segments
    side = case.settings["septum_side"]

    labels = regions.segment_loop(truth > 0, case.spacing, side)

    agreement = [
        np.mean(labels[t][truth[t] > 0] == truth[t][truth[t] > 0])
        for t in range(len(truth))
    ]
    assert min(agreement) > 0.95 and np.mean(agreement) > 0.97


def test_segment_loop_labels_only_frames_with_a_mask():
    mask, _, _ = horseshoe()
    loop = np.stack([mask, np.zeros_like(mask), mask])

    labels = regions.segment_loop(loop, SPACING)

    assert labels[0].any() and not labels[1].any()
    np.testing.assert_array_equal(labels[0], labels[2])


def test_segment_names_follow_the_view():
    assert regions.segment_names("A4C") == phantom_ceus.SEGMENT_NAMES["A4C"]
    assert regions.segment_names("2CH")[0] == "basal_inferior"
    assert regions.segment_names(None) == regions.NEUTRAL_NAMES
    assert regions.segment_names("PLAX")[5] == "wall2_basal"


def test_erode_mm_counts_millimetres_on_each_axis():
    mask = np.zeros((30, 30), bool)
    mask[5:25, 5:25] = True

    eroded = regions.erode_mm(mask, (0.5, 1.0), 1.0)

    rows, cols = np.nonzero(eroded)
    # 1 mm is 2 rows and 1 column
    assert (rows.min(), rows.max()) == (7, 22)
    assert (cols.min(), cols.max()) == (6, 23)
    np.testing.assert_array_equal(regions.erode_mm(mask, (0.5, 1.0), 0.0), mask)


def test_enclosed_area_of_a_ring_is_its_hole():
    rows, cols = np.mgrid[0:200, 0:200]
    r = np.hypot(rows - 100, cols - 100) * 0.5  # mm
    ring = (r >= 20) & (r < 30)

    area = regions.enclosed_area(ring, (0.5, 0.5))

    assert area == pytest.approx(np.pi * 20**2, rel=0.03)
