"""Paired differences and their 95% Student t interval: the one rule by which the studies,
the benchmarks and the notebooks say whether an effect is resolved (the interval excludes 0).

The unit of noise is the caller's: training seeds (the ablation), or images (a tile size
against the whole image, one network). scipy is not a dependency, so the quantiles are
tabulated (``tests/test_stats.py`` checks each against the t CDF integrated in float64).
"""
from __future__ import annotations

import math
from statistics import mean, stdev

# two-sided 95% Student t quantiles by degrees of freedom; from df 31 on 1.96, at most 4%
# narrower than the t interval
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
       9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131,
       16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074,
       23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042}


def t95(df: int) -> float:
    """The 97.5th percentile of Student's t with ``df`` degrees of freedom (df >= 1)."""
    if df < 1:
        raise ValueError(f"a t interval needs at least 2 differences (df >= 1), got df={df}")
    return T95.get(df, 1.96)


def paired_interval(diffs) -> dict:
    """Mean, standard deviation and 95% t interval of paired differences (``ci95`` None
    and not resolved for fewer than 2)."""
    diffs = [float(d) for d in diffs]
    n, m = len(diffs), mean(diffs)
    if n < 2:
        return {"n": n, "mean": m, "sd": None, "ci95": None, "resolved": False}
    sd = stdev(diffs)
    half = t95(n - 1) * sd / math.sqrt(n)
    lo, hi = m - half, m + half
    return {"n": n, "mean": m, "sd": sd, "ci95": [lo, hi], "resolved": lo > 0 or hi < 0}
