"""Paired differences and their 95% Student t interval: the one rule by which the studies,
the benchmarks and the notebooks say whether an effect is resolved (the interval excludes 0).

The unit of noise is the caller's: training seeds (the ablation), or images (a tile size
against the whole image, one network). Quantiles come from scipy (``tests/test_stats.py``
checks them against the t CDF integrated in float64). ``factorial_anova`` analyses a 2^k
design in seed blocks as one model, as a factorial ablation must be.
"""
from __future__ import annotations

import math
from statistics import mean, stdev

import numpy as np


def t95(df: int) -> float:
    """The 97.5th percentile of Student's t with ``df`` degrees of freedom (df >= 1)."""
    from scipy import stats as sp  # imported here: scipy takes a second to import

    if df < 1:
        raise ValueError(f"a t interval needs at least 2 differences (df >= 1), got df={df}")
    return float(sp.t.ppf(0.975, df))


def paired_interval(diffs) -> dict:
    """Mean, standard deviation, 95% t interval and two-sided p of paired differences
    (``ci95`` None and not resolved for fewer than 2)."""
    diffs = [float(d) for d in diffs]
    n, m = len(diffs), mean(diffs)
    if n < 2:
        return {"n": n, "mean": m, "sd": None, "ci95": None, "resolved": False}
    from scipy import stats as sp

    sd = stdev(diffs)
    half = t95(n - 1) * sd / math.sqrt(n)
    lo, hi = m - half, m + half
    if sd > 0:  # two-sided p of the same t test: resolved exactly when p < 0.05
        p = float(2 * sp.t.sf(abs(m) / (sd / math.sqrt(n)), n - 1))
    else:
        p = 1.0 if m == 0 else 0.0
    return {"n": n, "mean": m, "sd": sd, "ci95": [lo, hi], "resolved": lo > 0 or hi < 0,
            "p": p}


def holm(pvalues: dict) -> dict:
    """Holm's step-down correction at 5% over several comparisons (name -> p): which stay
    resolved when all of them are read together. The smallest p must be under 0.05 / k, the
    next under 0.05 / (k - 1), and so on; the first that fails stops every larger one."""
    kept, k = {}, len(pvalues)
    for i, name in enumerate(sorted(pvalues, key=pvalues.get)):
        kept[name] = pvalues[name] < 0.05 / (k - i) and all(kept.values())
    return kept


def holm_of(intervals: dict) -> dict:
    """``holm`` over the comparisons (name -> ``paired_interval``, or None) that have an
    interval; those without one are left out."""
    return holm({n: e["p"] for n, e in intervals.items() if e and e.get("ci95") is not None})


def factorial_anova(values: dict, factors: dict[str, tuple[str, ...]]) -> dict:
    """A 2^k factorial in randomised blocks: ``values[(variant, block)]`` (a variant names
    the factors it switches on, ``factors[variant]``), blocks being seeds. The model: block +
    every main effect and interaction, each factor coded -1/+1; only blocks holding every
    variant are used. An effect is mean(on) - mean(off) of its contrast (2 x its
    coefficient), with a 95% t interval on the residual degrees of freedom and an F test;
    the block term's F says whether seeds differ as a whole."""
    from itertools import combinations

    from scipy import stats as sp

    names = sorted({f for fs in factors.values() for f in fs})
    blocks = sorted({b for v, b in values if all((u, b) in values for u in factors)})
    rows = [(v, b) for b in blocks for v in factors]
    n, k = len(rows), len(blocks)
    terms = [c for r in range(1, len(names) + 1) for c in combinations(names, r)]
    code = {v: {f: 1.0 if f in on else -1.0 for f in names} for v, on in factors.items()}
    x_terms = np.array([[np.prod([code[v][f] for f in t]) for t in terms] for v, _ in rows])
    x_blocks = np.array([[1.0 if b == bb else 0.0 for bb in blocks] for _, b in rows])
    y = np.array([values[r] for r in rows], dtype=float)
    x = np.hstack([x_blocks, x_terms])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ coef
    df = n - np.linalg.matrix_rank(x)
    if df < 1:
        raise ValueError(f"no residual degrees of freedom ({k} complete blocks)")
    mse = float(resid @ resid) / df
    se = 2 * math.sqrt(mse / n)  # of mean(on) - mean(off), a balanced +-1 design
    q = float(sp.t.ppf(0.975, df))
    effects = {}
    for t, c in zip(terms, coef[k:]):
        e = 2 * float(c)
        f_stat = (e / se) ** 2 if se else math.inf
        effects[" x ".join(t)] = {"effect": e, "ci95": [e - q * se, e + q * se],
                                  "F": f_stat, "p": float(sp.f.sf(f_stat, 1, df)),
                                  "resolved": abs(e) > q * se}
    block_means = np.array([y[[i for i, (_, b) in enumerate(rows) if b == bb]].mean()
                            for bb in blocks])
    ss_block = len(factors) * float(((block_means - y.mean()) ** 2).sum())
    f_block = (ss_block / (k - 1)) / mse if k > 1 and mse else None
    return {"blocks": blocks, "n": n, "residual_df": int(df), "residual_sd": math.sqrt(mse),
            "effects": effects,
            "block": {"F": f_block, "df": k - 1,
                      "p": float(sp.f.sf(f_block, k - 1, df)) if f_block is not None else None}}
