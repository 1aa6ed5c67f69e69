"""Significance tests behind a report's "beats the baseline": each compares two models on the same test examples
(paired), so a difference is called real only when it is unlikely under equal skill."""
import math

import numpy as np


def diebold_mariano(errors_a, errors_b, horizon: int = 1) -> tuple[float, float]:
    """Diebold & Mariano (1995, JBES 13(3)) test of equal squared-error loss of two forecasts of the same targets,
    with the small-sample correction of Harvey, Leybourne & Newbold (1997, IJF 13(2)); (statistic, two-sided p).
    A negative statistic means `a` has the smaller loss."""
    from scipy.special import stdtr  # Student's t CDF, what scipy.stats.t.sf calls, without scipy.stats' 0.4 s import

    a, b = np.asarray(errors_a, dtype=float), np.asarray(errors_b, dtype=float)
    n = len(a)
    if len(b) != n or n < 2 or not 1 <= horizon < n:
        raise ValueError(f"diebold_mariano needs two error series of one length >= 2 and 1 <= horizon < length: "
                         f"got lengths {len(a)} and {len(b)}, horizon {horizon}")
    d = a**2 - b**2  # loss differential
    if np.ptp(d) == 0:  # constant: no variance to scale by; the sign of the mean alone decides
        return (0.0, 1.0) if d[0] == 0 else (float(np.copysign(np.inf, d[0])), 0.0)
    dev = d - d.mean()
    gamma = [dev[k:] @ dev[: n - k] / n for k in range(horizon)]  # autocovariances, lags 0 .. h-1, divisor n (DM)
    variance = gamma[0] + 2 * sum(gamma[1:])  # long-run variance: rectangular window up to lag h-1 (DM 1995)
    if variance <= 0:  # possible for h > 1: a rectangular window does not guarantee a positive estimate
        raise ValueError(f"diebold_mariano: long-run variance estimate {variance:.3g} <= 0 at horizon {horizon}")
    hln = np.sqrt((n + 1 - 2 * horizon + horizon * (horizon - 1) / n) / n)
    statistic = float(d.mean() / np.sqrt(variance / n) * hln)
    return statistic, float(2 * stdtr(n - 1, -abs(statistic)))  # HLN: Student's t, n - 1 degrees of freedom


def mcnemar(correct_a, correct_b) -> tuple[int, int, float]:
    """Exact McNemar test (McNemar 1947, Psychometrika 12(2)) of two classifiers on the same test examples, as
    Dietterich (1998, Neural Computation 10(7)) advises for comparing classifiers: (b, c, p) with b = a right and
    b wrong, c = a wrong and b right; under equal skill b ~ Binomial(b + c, 1/2), so p is the exact conditional
    binomial p-value (Fagerland, Lydersen & Laake 2013, BMC Med Res Methodol 13:91, who find it conservative
    and prefer its mid-p variant)."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"mcnemar needs paired arrays of one length: got {len(a)} and {len(b)}")
    right_wrong, wrong_right = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n = right_wrong + wrong_right
    # two-sided, as scipy.stats.binomtest: the outcomes no likelier than the one seen, here the two tails
    # beyond min(b, c); in exact integers (b + c is at most the test set), correctly rounded once
    tails = 2 * sum(math.comb(n, i) for i in range(min(right_wrong, wrong_right) + 1))
    return right_wrong, wrong_right, min(1.0, tails / 2**n)


def paired_bootstrap_perplexity(nll_a, nll_b, counts, n_resamples: int = 10000, seed: int = 0) -> tuple[float, float]:
    """Paired bootstrap over test blocks (Koehn 2004, EMNLP, "Statistical significance tests for machine
    translation evaluation"; Efron & Tibshirani 1993, An Introduction to the Bootstrap): both models are scored
    on the same resampled blocks. Log-perplexity = sum nll / sum tokens (nll in nats); returns (observed log-
    perplexity a - b, two-sided p = twice the smaller share of resamples on either side of 0, at most 1)."""
    nll_a, nll_b, counts = (np.asarray(x, dtype=float) for x in (nll_a, nll_b, counts))
    if not len(nll_a) == len(nll_b) == len(counts) >= 1:
        raise ValueError(f"paired_bootstrap_perplexity needs three arrays of one length >= 1: got lengths "
                         f"{len(nll_a)}, {len(nll_b)} and {len(counts)}")
    gap = nll_a - nll_b  # per block; the models share token counts: log-perplexity a - b = sum(gap) / sum(counts)
    index = np.random.default_rng(seed).integers(0, len(gap), size=(n_resamples, len(gap)))
    diffs = gap[index].sum(axis=1) / counts[index].sum(axis=1)
    p = 2 * min(np.mean(diffs <= 0), np.mean(diffs >= 0))
    return float(gap.sum() / counts.sum()), float(min(1.0, p))


def verdict(p: float, better: bool, n: int, unit: str, alpha: float = 0.05) -> str:
    """The words a report uses for a test's outcome: a direction only where p < alpha, else how little was seen."""
    shown = "p < 0.001" if p < 0.001 else f"p = {p:.2g}"  # two significant digits
    if p < alpha:
        return f"{'beats' if better else 'worse than'} the baseline ({shown})"
    return f"not distinguishable on these {n} test {unit} ({shown})"
