"""studies/draw_robustness.py: the interval between two simulator draws is Welch's."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "studies"))

from draw_robustness import welch  # noqa: E402


def test_welch_interval_equals_scipys():
    a = np.array([1.0, 2.5, 0.3, 1.9, 2.2])
    b = np.array([3.1, 2.0, 4.4, 3.9, 2.8, 5.0])
    d, lo, hi = welch(a, b)
    ref = stats.ttest_ind(b, a, equal_var=False).confidence_interval(0.95)
    assert d == pytest.approx(b.mean() - a.mean())
    assert (lo, hi) == pytest.approx((ref.low, ref.high))


def test_welch_needs_two_values_a_side():
    d, lo, hi = welch(np.array([1.0]), np.array([2.0, 3.0]))
    assert d == 1.5 and np.isnan(lo) and np.isnan(hi)
