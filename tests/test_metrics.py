"""Segmentation metrics on tiny masks with answers computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from echoscale import metrics


def square(shape, top, left, side):
    mask = np.zeros(shape, bool)
    mask[top : top + side, left : left + side] = True
    return mask


def test_dice_of_two_overlapping_squares_is_exact():
    a, b = square((10, 10), 0, 0, 4), square((10, 10), 0, 2, 4)
    # |a| = |b| = 16, overlap 4 x 2 = 8: Dice = 2 * 8 / 32
    assert metrics.dice(a, b) == 0.5


def test_dice_is_undefined_when_both_are_empty_and_zero_when_one_is():
    empty = np.zeros((5, 5), bool)
    assert math.isnan(metrics.dice(empty, empty))
    assert metrics.dice(square((5, 5), 1, 1, 2), empty) == 0.0


def test_hausdorff_of_a_shifted_square_is_the_shift_in_mm():
    a, b = square((20, 20), 5, 5, 6), square((20, 20), 5, 8, 6)
    # shifted 3 columns: the farthest boundary pixel is 3 columns away
    assert metrics.hausdorff(a, b, (1.0, 1.0)) == pytest.approx(3.0)
    assert metrics.hausdorff(a, b, (0.5, 2.0)) == pytest.approx(6.0)


def test_hausdorff_is_nan_for_two_empties_and_infinite_for_one():
    empty = np.zeros((6, 6), bool)
    assert math.isnan(metrics.hausdorff(empty, empty, (1, 1)))
    assert math.isinf(metrics.hausdorff(square((6, 6), 1, 1, 3), empty, (1, 1), 95))


def test_structures_follow_the_dataset_labels():
    full = metrics.structure_labels({"background": 0, "lv": 1, "myo": 2, "la": 3})
    assert full == {"lv_endo": (1,), "lv_epi": (1, 2), "myo": (2,), "la": (3,)}
    assert metrics.structure_labels({"background": 0, "myo": 1}) == {"myo": (1,)}


def test_epicardium_unites_cavity_and_myocardium():
    ref = np.zeros((8, 8), np.uint8)
    ref[2:6, 2:6] = 2
    ref[3:5, 3:5] = 1
    scores = metrics.score_structures(ref, ref, {"lv_epi": (1, 2)}, (1.0, 1.0))
    assert scores["lv_epi"] == {"dice": 1.0, "hd95_mm": 0.0}
