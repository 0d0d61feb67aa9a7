"""The one rule for "resolved" (amms_lib.stats): a paired 95% Student t interval."""
import math

import numpy as np
import pytest

from amms_lib import stats


def test_paired_interval_is_a_t_interval():
    e = stats.paired_interval([0.2, 0.3, 0.25])
    half = 4.302653 * 0.05 / 3 ** 0.5  # t(2) x sd / sqrt(n)
    assert e["mean"] == pytest.approx(0.25) and e["ci95"] == pytest.approx([0.25 - half,
                                                                            0.25 + half])
    assert e["resolved"] and not stats.paired_interval([0.1, 0.3, 0.2])["resolved"]
    one = stats.paired_interval([0.4])
    assert one["ci95"] is None and not one["resolved"]


def test_the_p_value_is_the_one_sample_t_test_and_agrees_with_the_interval():
    from scipy.stats import ttest_1samp

    for d in ([0.2, 0.3, 0.25], [0.1, 0.3, 0.2, -0.05], [-0.024, -0.058, -0.041, -0.038]):
        e = stats.paired_interval(d)
        assert e["p"] == pytest.approx(ttest_1samp(d, 0).pvalue, rel=1e-9)
        assert e["resolved"] == (e["p"] < 0.05)
    assert stats.paired_interval([0.1, 0.1, 0.1])["p"] < 1e-6
    assert stats.paired_interval([0.0, 0.0])["p"] == 1.0


def test_holm_steps_down_and_stops_at_the_first_failure():
    # 0.001 < 0.05/3, 0.011 < 0.05/2, 0.03 < 0.05: all kept
    assert stats.holm({"a": 0.001, "b": 0.03, "c": 0.011}) == {"a": True, "b": True, "c": True}
    # 0.03 > 0.05/2 fails, so 0.04 (< 0.05 alone) fails with it
    assert stats.holm({"a": 0.01, "b": 0.04, "c": 0.03}) == {"a": True, "b": False, "c": False}
    assert stats.holm({"a": 0.03, "b": 0.049}) == {"a": False, "b": False}
    assert stats.holm({}) == {}


def test_t_quantiles_are_the_975th_percentile_of_student_t():
    """Each tabulated quantile against the t distribution's own CDF, integrated here in
    float64 from its density (an independent reference: no table)."""
    for df in range(1, 41):
        q = stats.t95(df)
        x = np.linspace(0.0, q, 200_001)
        pdf = (math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
               * (1 + x ** 2 / df) ** (-(df + 1) / 2))
        cdf = 0.5 + float(np.sum((pdf[1:] + pdf[:-1]) / 2 * np.diff(x)))  # trapezoids
        assert cdf == pytest.approx(0.975, abs=1e-6), df
    with pytest.raises(ValueError, match="at least 2"):
        stats.t95(0)
