"""Tests of the perfusion pieces: fit, linearisation, flashes, saturation, phase."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import optimize

from echoscale import perfusion
from echoscale.perfusion import fit_replenishment, replenishment

T = np.linspace(0.0, 12.0, 120)


# --- the replenishment fit ---------------------------------------------------------


def test_fit_recovers_an_exact_curve():
    fit = fit_replenishment(T, replenishment(T, 5.0, 0.6, 1.0))

    assert fit.success and fit.message == "ok"
    assert fit.A == pytest.approx(5.0, rel=1e-6)
    assert fit.beta == pytest.approx(0.6, rel=1e-6)
    assert fit.C == pytest.approx(1.0, rel=1e-6)
    assert fit.A_beta == pytest.approx(3.0, rel=1e-6)
    assert fit.r2 == pytest.approx(1.0) and fit.rmse < 1e-6
    assert fit.n_frames == T.size


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_recovers_a_noisy_curve_within_its_standard_errors(seed):
    rng = np.random.default_rng(seed)
    A, beta, C = 80.0, 0.45, 6.0
    y = replenishment(T, A, beta, C) + rng.normal(0, 0.03 * A, T.size)

    fit = fit_replenishment(T, y)

    assert fit.success
    for value, true, se in ((fit.A, A, fit.se_A), (fit.beta, beta, fit.se_beta)):
        assert abs(value - true) < 3 * se
        assert abs(value / true - 1) < 0.05
    assert 0 < fit.se_beta < 0.05 * beta
    assert fit.r2 > 0.9


def test_fit_error_of_the_flow_matches_a_fit_in_the_flow_itself():
    # Refit with F = A * beta as a parameter: its curve_fit error is the
    # reference for the delta-method error of A * beta.
    rng = np.random.default_rng(3)
    y = replenishment(T, 50.0, 0.8, 3.0) + rng.normal(0, 1.5, T.size)
    fit = fit_replenishment(T, y)

    def by_flow(t, F, beta, C):
        return F / beta * -np.expm1(-beta * t) + C

    popt, pcov = optimize.curve_fit(by_flow, T, y, p0=[40.0, 0.8, 3.0])

    assert fit.A_beta == pytest.approx(popt[0], rel=1e-4)
    assert fit.se_A_beta == pytest.approx(math.sqrt(pcov[0, 0]), rel=1e-3)


def test_fit_starts_from_the_data_where_the_default_start_fails():
    rng = np.random.default_rng(0)
    A, beta, C = 600.0, 0.5, 200.0  # data in the hundreds
    y = replenishment(T, A, beta, C) + rng.normal(0, 0.03 * A, T.size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        default, _ = optimize.curve_fit(replenishment, T, y)  # p0 = (1, 1, 1)

    fit = fit_replenishment(T, y)

    assert abs(default[1] / beta - 1) > 0.5  # the trap is real
    assert fit.success
    assert fit.beta == pytest.approx(beta, rel=0.05)
    assert fit.A == pytest.approx(A, rel=0.05)


def test_fit_with_proportional_noise_weights_the_early_points():
    rng = np.random.default_rng(4)
    A, beta, C = 100.0, 0.7, 4.0
    clean = replenishment(T, A, beta, C)
    y = clean * (1 + rng.normal(0, 0.08, T.size))  # speckle-like relative noise

    plain = fit_replenishment(T, y)
    weighted = fit_replenishment(T, y, proportional=True)

    assert weighted.success
    assert weighted.beta == pytest.approx(beta, rel=0.05)
    assert weighted.se_beta < plain.se_beta


@pytest.mark.parametrize(
    ("y", "reason"),
    [
        (np.full(T.size, 7.0), "flat"),
        (7.0 + np.random.default_rng(0).normal(0, 0.5, T.size), "flat"),
        (replenishment(T, -40.0, 0.5, 60.0), "falling"),
        (30 * np.exp(-0.3 * T) + np.random.default_rng(1).normal(0, 1, T.size), "fall"),
    ],
    ids=["constant", "noise", "decay", "noisy-decay"],
)
def test_fit_fails_with_a_reason_on_flat_and_falling_curves(y, reason):
    fit = fit_replenishment(T, y)

    assert not fit.success and not fit
    assert reason in fit.message
    assert math.isnan(fit.A) and np.all(np.isnan(fit.predict(T)))


def test_fit_fails_on_too_few_and_non_finite_points():
    short = fit_replenishment(T[:4], replenishment(T[:4], 5, 1, 1))
    y = replenishment(T, 5, 1, 1)
    y[10] = np.nan
    broken = fit_replenishment(T, y)

    assert not short.success and "too few points: 4" in short.message
    assert not broken.success and "non-finite" in broken.message


def test_fit_says_when_the_curve_ends_before_its_plateau():
    t = np.linspace(0, 1.0, 30)
    fit = fit_replenishment(t, replenishment(t, 100.0, 0.3, 5.0))

    assert fit.success
    assert "before its plateau" in fit.message


def test_a_curve_far_from_its_plateau_is_a_failed_fit():
    # beta * t_end = 0.02: a straight line, whose A and beta trade off freely
    t = np.linspace(0, 1.0, 30)
    y = replenishment(t, 5000.0, 0.02, 5.0)
    y = y + np.random.default_rng(0).normal(0, 0.05, t.size)
    fit = fit_replenishment(t, y)

    assert not fit.success and "cannot be separated" in fit.message


# --- linearisation -----------------------------------------------------------------


def test_linearise_follows_the_display_mapping():
    values = np.array([0, 51, 255], np.uint8)

    power = perfusion.linearise(values, 40.0, 255)

    # v * DR / (10 v_max): 0, 0.8 and 4 decades
    np.testing.assert_allclose(power, [1.0, 10**0.8, 1e4], rtol=1e-6)
    floats = perfusion.linearise(values.astype(np.float32), 40.0, 255)
    np.testing.assert_allclose(floats, power, rtol=1e-6)
    assert perfusion.linearise(np.array([100.0]), 30.0, 100)[0] == pytest.approx(1e3)


def test_linearise_refuses_a_bad_range():
    with pytest.raises(ValueError, match="dynamic_range_db"):
        perfusion.linearise(np.zeros(3), 0.0)


# --- flashes -----------------------------------------------------------------------


def _loop_means(flashes, n=300, fps=25.0, seed=0):
    """Mean display value per frame: a beating plateau, bursts and refilling."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fps
    means = 60 + 2 * np.sin(2 * np.pi * t / 0.85) + rng.normal(0, 0.5, n)
    for frames in flashes:
        after = frames[-1] + 1
        means[after:] = 15 + 45 * (1 - np.exp(-0.8 * (t[after:] - t[after])))
        means[after:] += rng.normal(0, 0.5, n - after)
        means[frames] = 120
    return means, t


@pytest.mark.parametrize(
    "flashes",
    [[], [[40]], [[40, 41, 42]], [[30, 31], [180]]],
    ids=["none", "one", "one-of-three-frames", "two"],
)
def test_detect_flashes_finds_zero_one_and_two_flashes(flashes):
    means, t = _loop_means(flashes)

    assert perfusion.detect_flashes(means, t) == flashes


def test_a_bright_run_without_a_drop_is_no_flash():
    means, t = _loop_means([])
    means[100:102] = 120  # brightening, with the plateau unchanged after it

    assert perfusion.detect_flashes(means, t) == []


def test_a_long_bright_run_is_no_flash():
    means, t = _loop_means([[40]])
    refill, _ = _loop_means([[189]])
    means[150:190] = 120  # 1.6 s of bright frames, then a drop
    means[190:] = refill[190:]

    assert perfusion.detect_flashes(means, t) == [[40]]


def test_group_flashes_joins_consecutive_frames():
    assert perfusion.group_flashes([244, 40, 41, 42, 243]) == [[40, 41, 42], [243, 244]]


# --- saturation --------------------------------------------------------------------


def _speckle_display(power, shape, dr=50.0, seed=0):
    """Display values of exponential speckle around ``power``, before any clip."""
    rng = np.random.default_rng(seed)
    linear = power * rng.exponential(1.0, shape)
    return np.rint(255 * 10 * np.log10(linear) / dr)


def test_saturation_ceiling_is_found_at_235():
    # the mean at display 207, a ceiling 3.6 times as bright: 3% of pixels clip
    values = _speckle_display(10**4.05, (20, 64, 64))
    cine = np.clip(values, 0, 235).astype(np.uint8)

    assert perfusion.saturation_ceiling(cine) == 235.0
    unclipped = np.clip(values, 0, 255).astype(np.uint8)
    assert perfusion.saturation_ceiling(unclipped) is None


def test_saturation_ceiling_of_a_flash_is_the_8_bit_top():
    values = _speckle_display(1e3, (20, 64, 64))
    values[5] += 120  # a flash frame, clipped at 255
    cine = np.clip(values, 0, 255).astype(np.uint8)

    assert perfusion.saturation_ceiling(cine) == 255.0


def test_censored_mean_undoes_the_clipping_of_speckle():
    dr, power = 50.0, 6e3
    values = _speckle_display(power, (1, 300, 300), dr)  # sd of the mean 0.3%
    cine = np.clip(values, 0, 220).astype(np.uint8)  # a ceiling 3.4 times the mean
    linear = perfusion.linearise(cine, dr)
    labels = np.ones(cine.shape, np.uint8)
    top = float(perfusion.linearise(np.array([220.0]), dr)[0])
    clipped = cine >= 220

    censored = perfusion.time_intensity(linear, labels, 1, clipped, top)
    plain = perfusion.time_intensity(linear, labels, 1)
    unclipped = perfusion.time_intensity(linear, labels, 1, clipped, top, True)

    fraction = clipped.mean()
    assert 0.02 < fraction < 0.08
    np.testing.assert_allclose(censored.mean, power, rtol=0.01)
    # a clipped exponential has mean P (1 - exp(-c / P)) = P (1 - clipped fraction)
    np.testing.assert_allclose(plain.mean, power * (1 - fraction), rtol=0.01)
    assert np.all(unclipped.mean < plain.mean)
    assert censored.clipped.sum() == clipped.sum()


def test_time_intensity_averages_each_label():
    power = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    labels = np.zeros((2, 3, 4), np.uint8)
    labels[0, 0, :2] = 1  # values 0, 1
    labels[0, 2, 3] = 2  # value 11
    labels[1, 1, 1] = 1  # value 17

    curves = perfusion.time_intensity(power, labels, 2)

    np.testing.assert_array_equal(curves.mean[0], [0.5, 11.0])
    assert curves.mean[1, 0] == 17.0 and np.isnan(curves.mean[1, 1])
    np.testing.assert_array_equal(curves.pixels, [[2, 1], [1, 0]])


# --- cardiac phase -----------------------------------------------------------------


def _area_curve(n=200, fps=25.0, cycle=0.8):
    t = np.arange(n) / fps
    return 1000 + 200 * np.cos(2 * np.pi * t / cycle), t


def test_cardiac_phases_find_one_ed_and_es_per_cycle():
    area, t = _area_curve()

    phases = perfusion.cardiac_phases(area, t)

    assert phases.cycle_s == pytest.approx(0.8, abs=0.04)
    # maxima at t = 0.8 k (frames 20 k); the first lies on the loop's edge
    assert phases.ed == [20, 40, 60, 80, 100, 120, 140, 160, 180]
    assert phases.es == [10, 30, 50, 70, 90, 110, 130, 150, 170, 190]


def test_select_phase_keeps_frames_near_the_phase_with_masks():
    area, t = _area_curve()
    area[41] = np.nan  # a frame without a mask

    es = perfusion.select_phase(area, t, "es")
    ed = perfusion.select_phase(area, t, "ed")
    every = perfusion.select_phase(area, t, "all")

    # 10% of a 0.8 s cycle is 0.08 s, two frames either side
    assert np.flatnonzero(es)[:10].tolist() == [8, 9, 10, 11, 12, 28, 29, 30, 31, 32]
    assert ed[40] and not ed[41] and not ed[30]
    assert every.sum() == 199 and not every[41]


def test_select_phase_needs_a_cycle():
    area = np.full(100, 500.0)

    with pytest.raises(ValueError, match="no cardiac cycle"):
        perfusion.select_phase(area, np.arange(100) / 25.0, "es")
    assert perfusion.select_phase(area, np.arange(100) / 25.0, "all").all()
