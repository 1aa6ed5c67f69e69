"""stages/core/significance.py against hand-worked small cases (the arithmetic is in the comments) and scipy's own tests."""
import math

import numpy as np
import pytest
from scipy import stats

from stages.core.significance import diebold_mariano, mcnemar, paired_bootstrap_perplexity, verdict

A, B = [1, 2, 3, 4, 5], [2, 2, 2, 2, 2]
# d = a^2 - b^2 = [1, 4, 9, 16, 25] - 4 = [-3, 0, 5, 12, 21]; n = 5; dbar = 35 / 5 = 7
# d - dbar = [-10, -7, -2, 5, 14]; gamma0 = (100 + 49 + 4 + 25 + 196) / 5 = 374 / 5 = 74.8 (divisor n, as DM)
# gamma1 = ((-7)(-10) + (-2)(-7) + (5)(-2) + (14)(5)) / 5 = (70 + 14 - 10 + 70) / 5 = 144 / 5 = 28.8


def test_dm_horizon_1_by_hand():
    dm = 7 / math.sqrt(74.8 / 5)  # dbar / sqrt(gamma0 / n) = 7 / sqrt(14.96)
    hln = math.sqrt((5 + 1 - 2 * 1 + 1 * 0 / 5) / 5)  # sqrt(4 / 5)
    statistic = dm * hln  # = 7 / sqrt(14.96 / 0.8) = 7 / sqrt(18.7) = 1.6187...
    assert statistic == pytest.approx(7 / math.sqrt(18.7), abs=1e-12)
    got = diebold_mariano(A, B)
    assert got[0] == pytest.approx(statistic, abs=1e-12)
    assert got[1] == pytest.approx(2 * stats.t.sf(statistic, 4), abs=1e-12)  # t with n - 1 = 4 degrees of freedom


def test_dm_horizon_2_adds_the_lag_1_autocovariance():
    variance = 74.8 + 2 * 28.8  # gamma0 + 2 gamma1 = 132.4
    hln = math.sqrt((5 + 1 - 2 * 2 + 2 * 1 / 5) / 5)  # sqrt(2.4 / 5) = sqrt(0.48) = sqrt((n - h)(n - h + 1)) / n
    statistic = 7 / math.sqrt(variance / 5) * hln  # 7 / sqrt(26.48) * sqrt(0.48)
    got = diebold_mariano(A, B, horizon=2)
    assert got[0] == pytest.approx(statistic, abs=1e-12)
    assert got[1] == pytest.approx(2 * stats.t.sf(statistic, 4), abs=1e-12)


def test_dm_horizon_1_is_the_one_sample_t_test_of_d():
    # gamma0 = s^2 (n - 1) / n with s^2 the sample variance, so DM = t sqrt(n / (n - 1)); HLN at h = 1 is
    # sqrt((n - 1) / n): the two cancel and DM* is the one-sample t statistic of d, with its t(n - 1) p-value.
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=12), rng.normal(size=12) * 1.3
    t = stats.ttest_1samp(a**2 - b**2, 0.0)
    assert diebold_mariano(a, b) == pytest.approx((t.statistic, t.pvalue), abs=1e-12)


def test_dm_sign_and_symmetry():
    statistic, p = diebold_mariano(A, B)
    assert statistic > 0  # a's squared errors are larger on average: a is worse
    assert diebold_mariano(B, A) == pytest.approx((-statistic, p), abs=1e-12)
    assert diebold_mariano(B, A, horizon=2)[0] == pytest.approx(-diebold_mariano(A, B, horizon=2)[0], abs=1e-12)


def test_dm_constant_loss_differential():
    assert diebold_mariano([1, -2, 3], [1, 2, -3]) == (0.0, 1.0)  # equal squared errors everywhere
    assert diebold_mariano([2, 2, 2], [1, 1, 1]) == (math.inf, 0.0)  # d = 3 on every step: a always worse
    assert diebold_mariano([1, 1, 1], [2, -2, 2]) == (-math.inf, 0.0)


@pytest.mark.parametrize("a, b, horizon", [([1, 2, 3], [1, 2], 1), ([1], [2], 1), ([1, 2, 3], [3, 2, 1], 3)])
def test_dm_refuses_bad_lengths_and_horizons(a, b, horizon):
    with pytest.raises(ValueError, match=f"lengths {len(a)} and {len(b)}"):
        diebold_mariano(a, b, horizon)


def test_dm_refuses_a_negative_long_run_variance():
    # d = [0, 1, 0, 1, 0, 1]: dbar = 0.5, d - dbar = +-0.5 alternating; gamma0 = 0.25, gamma1 = 5 (-0.25) / 6,
    # so gamma0 + 2 gamma1 = 0.25 - 0.4167 < 0
    with pytest.raises(ValueError, match="long-run variance"):
        diebold_mariano([0, 1, 0, 1, 0, 1], [0] * 6, horizon=2)


def test_mcnemar_counts_and_exact_p():
    a = np.array([1, 1, 0, 0, 1, 0], dtype=bool)
    b = np.array([0, 1, 1, 0, 1, 1], dtype=bool)
    assert mcnemar(a, b)[:2] == (1, 2)  # a right b wrong: example 0; a wrong b right: examples 2 and 5
    assert mcnemar([False] * 6, [True] * 6) == (0, 6, 0.03125)  # 2 * 0.5^6 = 2 / 64
    assert mcnemar([True, False] * 3, [False, True] * 3) == (3, 3, 1.0)  # b = c
    assert mcnemar([True, False, True], [True, False, True]) == (0, 0, 1.0)  # no discordant pair
    with pytest.raises(ValueError, match="3 and 2"):
        mcnemar([True] * 3, [True] * 2)


def test_bootstrap_identical_models():
    nll = [10.0, 20.0, 5.0, 7.5]
    assert paired_bootstrap_perplexity(nll, nll, [5, 10, 3, 4], n_resamples=200) == (0.0, 1.0)


def test_bootstrap_a_worse_on_every_block():
    nll_a, nll_b, counts = [10.0, 20.0, 6.0], [8.0, 18.0, 5.0], [5, 10, 3]
    difference, p = paired_bootstrap_perplexity(nll_a, nll_b, counts, n_resamples=500)
    assert difference == pytest.approx((2 + 2 + 1) / 18, abs=1e-12)  # sum(nll_a - nll_b) / sum(counts)
    assert difference > 0 and p < 0.01
    assert paired_bootstrap_perplexity(nll_b, nll_a, counts, n_resamples=500)[0] == pytest.approx(-difference)


def test_bootstrap_same_seed_same_answer():
    rng = np.random.default_rng(3)
    nll_a, nll_b, counts = rng.uniform(50, 60, 30), rng.uniform(50, 60, 30), rng.integers(20, 30, 30)
    first = paired_bootstrap_perplexity(nll_a, nll_b, counts, n_resamples=300, seed=7)
    assert paired_bootstrap_perplexity(nll_a, nll_b, counts, n_resamples=300, seed=7) == first
    assert 0 < first[1] <= 1
    with pytest.raises(ValueError, match="3, 3 and 2"):
        paired_bootstrap_perplexity([1.0] * 3, [1.0] * 3, [1, 1])


def test_verdict_wordings():
    assert verdict(0.012, True, 24, "months") == "beats the baseline (p = 0.012)"
    assert verdict(0.003, False, 24, "months") == "worse than the baseline (p = 0.003)"
    assert verdict(0.4123, True, 24, "months") == "not distinguishable on these 24 test months (p = 0.41)"
    assert verdict(0.0004, True, 500, "digits") == "beats the baseline (p < 0.001)"
    assert verdict(0.05, True, 500, "digits") == "not distinguishable on these 500 test digits (p = 0.05)"


def results(baseline_predictions: dict, predictions: dict, **more):
    from stages.core.figures import Results

    return Results(task="t", metrics={}, baselines={}, histories={}, predictions=predictions,
                   baseline_predictions=baseline_predictions, **more)


def test_each_kind_reports_every_model_against_the_best_baseline_on_the_same_test_examples():
    from stages.infra.errors import PipelineError
    from stages.kinds.images import figures as images_figures
    from stages.kinds.series import figures as series_figures
    from stages.kinds.text import figures as text_figures

    rng = np.random.default_rng(0)
    actual = rng.normal(100, 10, 40)
    sarima = actual + rng.normal(0, 1, 40)
    steps = [str(t) for t in range(40)]
    base = {"time": steps, "actual": actual.tolist(), "sarima": sarima.tolist()}
    models = {"same": {"time": steps, "predicted": sarima.tolist()},
              "far": {"time": steps, "predicted": (actual + rng.normal(0, 5, 40)).tolist()}}
    words = series_figures.versus(results(base, models), "sarima")
    assert words["same"] == "not distinguishable on these 40 test steps (p = 1)"
    assert words["far"].startswith("worse than the baseline (p")
    with pytest.raises(PipelineError, match="far's test steps are not the baselines'"):
        series_figures.versus(results(base, {"far": {"time": steps[::-1], "predicted": sarima.tolist()}}), "sarima")

    labels = [str(i % 10) for i in range(200)]
    half = [c if i % 2 else "0" for i, c in enumerate(labels)]
    words = images_figures.versus(results({"actual": labels, "logistic": half},
                                          {"cnn": {"actual": labels, "predicted": labels}}), "logistic")
    assert words["cnn"] == "beats the baseline (p < 0.001)"

    kn = rng.uniform(-4, -1, 500)
    words = text_figures.versus(results({"logp_kn": kn.tolist()}, {"rnn": {"logp": (kn - 1).tolist()}},
                                        mixture_predictions={"rnn+kn": (kn + 0.001 * rng.normal(size=500)).tolist()}),
                                "kn")
    assert words["rnn"] == "worse than the baseline (p < 0.001)"
    assert words["rnn+kn"].startswith("not distinguishable on these 20 test blocks of 25 words")
