"""evals.stats.t_interval against scipy's own t interval and a hand-computed case."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from llmgen.errors import LlmgenError
from llmgen.evals.stats import t_interval


def test_matches_scipy_t_interval():
    values = [0.52, 0.47, 0.58]
    mean, low, high = t_interval(values)
    ref_low, ref_high = sps.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=sps.sem(values))
    assert mean == pytest.approx(np.mean(values))
    assert (low, high) == pytest.approx((ref_low, ref_high), rel=1e-12)


def test_hand_computed_three_seeds():
    # mean 2, s = 1, n = 3: half-width = t_{0.975, 2} / sqrt(3) = 4.302653 / 1.732051 = 2.484138
    mean, low, high = t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert high - mean == pytest.approx(4.302652729911275 / math.sqrt(3), rel=1e-9)
    assert mean - low == pytest.approx(high - mean)


def test_other_confidence_is_narrower():
    _, lo90, hi90 = t_interval([1.0, 2.0, 4.0], confidence=0.90)
    _, lo95, hi95 = t_interval([1.0, 2.0, 4.0])
    assert lo95 < lo90 < hi90 < hi95


@pytest.mark.parametrize("values", [[1.0], [], [1.0, float("nan")]])
def test_bad_input(values):
    with pytest.raises(LlmgenError):
        t_interval(values)
