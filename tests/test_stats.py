"""Agreement statistics against published worked examples and hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from echoscale import stats

# Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges. Their Table 4 gives
# ICC(2,1) = 0.29 and ICC(3,1) = 0.71 (and F = 11.03 on 5 and 15 df).
SHROUT_FLEISS = np.array(
    [
        [9, 2, 5, 8],
        [6, 1, 3, 2],
        [8, 4, 6, 8],
        [7, 1, 2, 6],
        [10, 5, 6, 9],
        [6, 2, 4, 7],
    ],
    dtype=float,
)

# Bland & Altman (1986), Lancet, Table 1: peak expiratory flow rate (l/min), first
# reading with the Wright and with the mini Wright meter. The paper: mean difference
# -2.1, SD 38.8, limits -79.7 to 75.5 (with 2 SD), and a 95% interval of a limit of
# +-34.6 (t = 2.12 times a standard error of 16.3).
WRIGHT = [494, 395, 516, 434, 476, 557, 413, 442, 650, 433, 417, 656, 267, 478,
          178, 423, 427]  # fmt: skip
MINI = [512, 430, 520, 428, 500, 600, 364, 380, 658, 445, 432, 626, 260, 477,
        259, 350, 451]  # fmt: skip


def test_icc_matches_the_shrout_fleiss_table():
    agreement = stats.icc_agreement(SHROUT_FLEISS)
    consistency = stats.icc_consistency(SHROUT_FLEISS)
    assert agreement["icc"] == pytest.approx(0.29, abs=0.005)
    assert consistency["icc"] == pytest.approx(0.71, abs=0.005)
    assert consistency["F"] == pytest.approx(11.03, abs=0.005)
    assert consistency["df"] == [5, 15]


def test_icc_intervals_match_published_software_output():
    # R psych::ICC on these data prints 95% bounds 0.019-0.76 (ICC2) and
    # 0.34-0.95 (ICC3); SimplyAgree's vignette prints the 90% bounds to 4 digits.
    a95, c95 = stats.icc_agreement(SHROUT_FLEISS), stats.icc_consistency(SHROUT_FLEISS)
    assert a95["ci"] == pytest.approx([0.019, 0.76], abs=0.005)
    assert c95["ci"] == pytest.approx([0.34, 0.95], abs=0.005)
    a90 = stats.icc_agreement(SHROUT_FLEISS, alpha=0.10)
    c90 = stats.icc_consistency(SHROUT_FLEISS, alpha=0.10)
    assert a90["ci"] == pytest.approx([0.04290, 0.6911], abs=1e-4)
    assert c90["ci"] == pytest.approx([0.41184, 0.9258], abs=1e-4)


def test_icc_consistency_ignores_a_constant_offset_that_agreement_counts():
    rng = np.random.default_rng(3)
    truth = rng.normal(10, 3, 30)
    a = truth + rng.normal(0, 0.5, 30)
    b = truth + rng.normal(0, 0.5, 30)
    shifted = np.column_stack([a + 5, b])
    same = np.column_stack([a, b])
    assert stats.icc_consistency(shifted)["icc"] == pytest.approx(
        stats.icc_consistency(same)["icc"]
    )
    assert stats.icc_agreement(shifted)["icc"] < stats.icc_agreement(same)["icc"] - 0.3


def test_bland_altman_reproduces_the_lancet_example():
    ba = stats.bland_altman(WRIGHT, MINI)
    assert ba["n"] == 17
    assert ba["bias"] == pytest.approx(-2.1, abs=0.05)
    assert ba["sd"] == pytest.approx(38.8, abs=0.05)
    # the paper's limits use 2 SD; ours use 1.96
    assert ba["bias"] - 2 * ba["sd"] == pytest.approx(-79.7, abs=0.1)
    assert ba["bias"] + 2 * ba["sd"] == pytest.approx(75.5, abs=0.1)
    z = sps.norm.ppf(0.975)
    assert ba["lower"] == pytest.approx(ba["bias"] - z * ba["sd"])
    # Bland & Altman 1999: SE of a limit is s sqrt(1/n + z^2 / (2 (n - 1)))
    half = sps.t.ppf(0.975, 16) * ba["sd"] * math.sqrt(1 / 17 + z**2 / 32)
    assert ba["lower_ci_approx"] == pytest.approx(
        [ba["lower"] - half, ba["lower"] + half]
    )
    assert half == pytest.approx(34.6, abs=0.5)  # the paper's sqrt(3 s^2 / n)
    t = sps.t.ppf(0.975, 16)
    assert ba["bias_ci"] == pytest.approx(
        [ba["bias"] - t * ba["sd"] / math.sqrt(17), ba["bias"] + t * ba["sd"] / 17**0.5]
    )


def test_the_exact_interval_of_a_limit_covers_it_at_the_stated_rate():
    rng = np.random.default_rng(11)
    n, draws, upper = 6, 1000, sps.norm.ppf(0.975)  # true limit of N(0, 1)
    exact = approx = 0
    for _ in range(draws):
        ba = stats.bland_altman(rng.normal(0, 1, n), np.zeros(n))
        exact += ba["upper_ci"][0] <= upper <= ba["upper_ci"][1]
        approx += ba["upper_ci_approx"][0] <= upper <= ba["upper_ci_approx"][1]
    assert 0.93 <= exact / draws <= 0.97
    assert approx < exact  # the approximation is too narrow for small samples


def test_bland_altman_on_the_ratio_scale_reports_percentages():
    b = np.array([10.0, 20.0, 30.0, 40.0])
    logs = np.array([0.1, -0.1, 0.2, 0.0])
    ba = stats.bland_altman(b * np.exp(logs), b, ratio=True)
    assert ba["unit"] == "%"
    assert ba["bias"] == pytest.approx(100 * (math.exp(0.05) - 1))
    sd = logs.std(ddof=1)
    assert ba["sd"] == pytest.approx(sd)
    assert ba["upper"] == pytest.approx(
        100 * (math.exp(0.05 + sps.norm.ppf(0.975) * sd) - 1)
    )
    refused = stats.bland_altman([1.0, -2.0, 3.0], [1.0, 2.0, 3.0], ratio=True)
    assert math.isnan(refused["bias"]) and "positive" in refused["reason"]


def test_lin_concordance_of_a_shifted_line_is_exact():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    # var 2, covariance 2, shift 1: 2 * 2 / (2 + 2 + 1)
    result = stats.concordance(x + 1, x)
    assert result["ccc"] == pytest.approx(0.8)
    assert result["ci"][0] < 0.8 < result["ci"][1]
    assert stats.concordance(x, x)["ccc"] == pytest.approx(1.0)


def test_pearson_interval_is_the_fisher_z_one():
    a = np.array([1.0, 2.0, 3.0, 5.0, 4.0, 7.0])
    b = np.array([1.5, 1.0, 3.5, 4.0, 5.0, 6.0])
    result = stats.pearson(a, b)
    r = np.corrcoef(a, b)[0, 1]
    half = sps.norm.ppf(0.975) / math.sqrt(6 - 3)
    assert result["r"] == pytest.approx(r)
    assert result["ci"] == pytest.approx(
        [math.tanh(math.atanh(r) - half), math.tanh(math.atanh(r) + half)]
    )


def test_tost_takes_the_larger_one_sided_p_value():
    # differences 0, 2, 0, 2, ...: mean 1, SD sqrt(8/7), SE 1/sqrt(7); margin 1.2
    b = np.arange(8.0) + 10
    a = b + np.array([0, 2, 0, 2, 0, 2, 0, 2])
    result = stats.tost(a, b, 1.2)
    se = 1 / math.sqrt(7)
    p_lower = sps.t.sf((1 + 1.2) / se, 7)
    p_upper = sps.t.cdf((1 - 1.2) / se, 7)
    assert result["p_lower"] == pytest.approx(p_lower)
    assert result["p_upper"] == pytest.approx(p_upper)
    # the smaller p-value alone would declare equivalence: it must not
    assert min(p_lower, p_upper) < 0.05 < max(p_lower, p_upper)
    assert result["p"] == pytest.approx(p_upper)
    assert result["equivalent"] is False
    assert result["decision"] == "not shown equivalent"
    half = sps.t.ppf(0.95, 7) * se
    assert result["ci"] == pytest.approx([1 - half, 1 + half])
    assert result["ci"][1] > 1.2  # the 90% interval leaves the margin


def test_tost_declares_equivalence_inside_a_percent_margin():
    rng = np.random.default_rng(5)
    b = rng.uniform(90, 110, 40)
    a = b + rng.normal(0.2, 1.0, 40)
    result = stats.tost(a, b, "5%")
    assert result["margin"] == pytest.approx(0.05 * b.mean())
    assert result["equivalent"] is True
    assert -result["margin"] < result["ci"][0] < result["ci"][1] < result["margin"]
    assert result["p"] == max(result["p_lower"], result["p_upper"]) < 0.05


def test_margins_in_either_form_are_checked():
    assert stats.resolve_margin("10%", [4.0, 6.0]) == pytest.approx(0.5)
    assert stats.resolve_margin("0.3", [1.0]) == pytest.approx(0.3)
    for bad in ("abc", -1.0, "0%", "ten%"):
        with pytest.raises(ValueError, match="margin"):
            stats.resolve_margin(bad, [4.0, 6.0])


def test_too_few_pairs_or_no_variance_give_nan_with_a_reason():
    few = stats.agreement([1.0, 2.0], [1.5, 2.5], margin=1.0)
    for key in ("bland_altman", "icc_agreement", "icc_consistency", "pearson",
                "concordance", "tests", "tost"):  # fmt: skip
        assert few[key]["reason"], key
    assert math.isnan(few["bland_altman"]["bias"])
    assert math.isnan(few["icc_agreement"]["icc"])
    assert few["tost"]["equivalent"] is None

    same = stats.agreement([3.0] * 5, [3.0] * 5, margin=1.0)
    assert math.isnan(same["icc_agreement"]["icc"])
    assert "do not differ" in same["icc_agreement"]["reason"]
    assert math.isnan(same["tests"]["p_t"]) and same["tests"]["reason"]
    assert math.isnan(same["pearson"]["r"]) and same["pearson"]["reason"]
    assert same["tost"]["decision"] == "undefined"


def test_non_finite_pairs_are_left_out_and_counted():
    result = stats.bland_altman([1.0, 2.0, np.nan, 4.0, 5.0], [1.0, 2.5, 3.0, 4.0, 4.5])
    assert result["n"] == 4
    assert result["bias"] == pytest.approx(np.mean([0.0, -0.5, 0.0, 0.5]))


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_an_icc_interval_whose_degrees_of_freedom_vanish_is_not_given():
    # Four segments' A from predicted and manual masks (the README tour): the raters
    # disagree so much that the ICC is negative and Satterthwaite's v is ~1e-31; the
    # bounds as written overflowed, and their limits do not bracket the estimate.
    ratings = np.array(
        [[268.1786, 415.8527], [357.0001, 405.7618], [623.4926, 132.2792],
         [547.6032, 137.39]]
    )  # fmt: skip
    result = stats.icc_agreement(ratings)
    assert result["icc"] == pytest.approx(-0.876, abs=1e-3)
    assert all(math.isnan(b) for b in result["ci"])
    assert "degrees of freedom" in result["reason"]
    # an ordinary interval still brackets its estimate
    x = np.linspace(100, 200, 12)
    fine = stats.icc_agreement(np.column_stack([x, x + np.sin(x)]))
    assert fine["reason"] is None and fine["ci"][0] < fine["icc"] < fine["ci"][1]
