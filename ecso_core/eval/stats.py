"""Small, dependency-free statistics for the reports: bootstrap intervals and Cohen's kappa.

Every rate in a report is a share of 0/1 outcomes (harmful or not, refused or not). The percentile
bootstrap resamples the cases of a row with replacement; for 0/1 outcomes the count of successes in a
resample is exactly Binomial(n, k/n), so it is drawn from that distribution directly (by inversion of
its CDF) instead of n draws per resample: same intervals, a thousand times faster on big runs.
"""

from __future__ import annotations

import bisect
import math
import numbers
import random
from collections.abc import Sequence

__all__ = ["RESAMPLES", "bootstrap_mean_ci", "bootstrap_rate_ci", "cohen_kappa"]

RESAMPLES = 1000
"""Bootstrap resamples per interval."""


def bootstrap_rate_ci(
    successes: int, n: int, *, resamples: int = RESAMPLES, seed: int = 0, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the rate ``successes / n`` (None when ``n`` is 0).

    Deterministic for a seed: the same counts and seed give the same interval.

    Raises:
        ValueError: negative counts, ``successes`` above ``n`` (when ``n`` is not 0), ``resamples`` below 1
            or ``level`` outside (0, 1).

    """
    return bootstrap_mean_ci([(successes, n)], resamples=resamples, seed=seed, level=level)


def bootstrap_mean_ci(
    rows: Sequence[tuple[int, int]], *, resamples: int = RESAMPLES, seed: int = 0, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the unweighted mean of the rates ``k / n`` of ``rows``.

    Cases are resampled within each row (a stratified bootstrap: every row keeps its size), and each
    resample's statistic is the mean of the rows' resampled rates. Rows with ``n == 0`` are left out;
    None when none remain.

    Raises:
        ValueError: a row with a negative count or ``k > n > 0``, ``resamples`` below 1 or ``level``
            outside (0, 1).

    """
    _check_bootstrap(rows, resamples, level)
    kept = [(k, n) for k, n in rows if n > 0]
    if not kept:
        return None
    rng = random.Random(seed)
    samplers = [_binomial_cdf(n, k / n) for k, n in kept]
    stats = sorted(
        sum(bisect.bisect_left(cdf, rng.random()) / n for cdf, (_, n) in zip(samplers, kept, strict=True)) / len(kept)
        for _ in range(resamples)
    )
    tail = (1.0 - level) / 2.0
    low = stats[max(0, math.floor(tail * resamples))]
    high = stats[min(resamples - 1, math.ceil((1.0 - tail) * resamples) - 1)]
    return round(low, 4), round(high, 4)


def _check_bootstrap(rows: Sequence[tuple[int, int]], resamples: int, level: float) -> None:
    """Refuse arguments that have no interval (a rate of 5/3, no resamples, a 150% level)."""
    if isinstance(resamples, bool) or not isinstance(resamples, numbers.Integral) or resamples < 1:
        raise ValueError(f"bootstrap resamples must be an integer of at least 1, got {resamples!r}")
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0.0 < level < 1.0:
        raise ValueError(f"bootstrap level must be a number strictly between 0 and 1, got {level!r}")
    for k, n in rows:
        for name, value in (("successes", k), ("n", n)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ValueError(f"bootstrap counts must be integers, got {name}={value!r}")
        if n < 0 or k < 0:
            raise ValueError(f"a rate needs counts >= 0, got {k} of {n}")
        if n > 0 and k > n:  # a row with n == 0 is no rate at all: it is left out, as documented
            raise ValueError(f"a rate needs successes <= n, got {k} of {n}")


def _binomial_cdf(n: int, p: float) -> list[float]:
    """Cumulative probabilities P(X <= i) of Binomial(n, p) for i = 0..n (the last one forced to 1)."""
    if p <= 0.0:
        return [1.0] * (n + 1)
    if p >= 1.0:
        return [0.0] * n + [1.0]
    log_p, log_q = math.log(p), math.log1p(-p)
    total, cdf = 0.0, []
    for i in range(n + 1):
        log_pmf = math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
        total += math.exp(log_pmf)
        cdf.append(total)
    cdf[-1] = 1.0
    return cdf


def cohen_kappa(both_yes: int, only_first: int, only_second: int, both_no: int) -> float | None:
    """Cohen's kappa of two raters' yes/no labels from their 2x2 table; None when it is undefined.

    Args:
        both_yes: both said yes.
        only_first: the first said yes, the second no.
        only_second: the first said no, the second yes.
        both_no: both said no.

    Raises:
        ValueError: a cell that is negative or not an integer.

    """
    cells = {"both_yes": both_yes, "only_first": only_first, "only_second": only_second, "both_no": both_no}
    for name, value in cells.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise ValueError(f"Cohen's kappa needs counts >= 0 in every cell, got {name}={value!r}")
    n = both_yes + only_first + only_second + both_no
    if n == 0:
        return None
    observed = (both_yes + both_no) / n
    first_yes, second_yes = (both_yes + only_first) / n, (both_yes + only_second) / n
    expected = first_yes * second_yes + (1 - first_yes) * (1 - second_yes)
    if expected >= 1.0:  # both raters used one label only: chance agreement is total, kappa undefined
        return None
    return round((observed - expected) / (1 - expected), 4)
