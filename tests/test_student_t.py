"""Student's t quantiles against the printed tables, and the interval of a mean by hand."""

import math

import numpy as np
import pytest

from fptflite.evaluation import student_t

# Two-sided 95% (p = 0.975) and one-sided 95% critical values, as printed in every t table.
TABLE_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 10: 2.228, 30: 2.042}


@pytest.mark.parametrize("df,expected", sorted(TABLE_975.items()))
def test_quantile_matches_the_table(df, expected):
    assert student_t.quantile(0.975, df) == pytest.approx(expected, abs=6e-4)


def test_cdf_and_limits():
    assert student_t.quantile(0.95, 5) == pytest.approx(2.015, abs=6e-4)
    assert student_t.cdf(0.0, 3) == 0.5
    assert student_t.cdf(-2.015, 5) == pytest.approx(0.05, abs=1e-4)
    # df = 1 is the Cauchy distribution: CDF 1/2 + atan(x) / pi.
    assert student_t.cdf(3.0, 1) == pytest.approx(0.5 + math.atan(3.0) / math.pi, abs=1e-7)
    assert student_t.quantile(0.975, 100000) == pytest.approx(1.95996, abs=1e-4)  # normal


def test_mean_interval_by_hand():
    low, high = student_t.mean_interval([0.10, 0.07])
    half = 12.706 * np.std([0.10, 0.07], ddof=1) / math.sqrt(2)
    assert (low, high) == pytest.approx((0.085 - half, 0.085 + half), abs=2e-5)
    assert student_t.mean_interval([0.3, 0.3, 0.3]) == (pytest.approx(0.3), pytest.approx(0.3))


def test_bad_input():
    with pytest.raises(ValueError, match="at least 2 values, got 1"):
        student_t.mean_interval([0.1])
    with pytest.raises(ValueError, match="at least 1 degree of freedom"):
        student_t.cdf(1.0, 0)
    with pytest.raises(ValueError, match=r"p must be in \[0.5, 1\)"):
        student_t.quantile(0.2, 3)
