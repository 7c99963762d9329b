"""Percentile, summary, linearity and budget-verdict arithmetic of the bench (no timing)."""

import math

import pytest

from bench import stats


def test_percentile_matches_linear_interpolation():
    values = [10.0, 1.0, 4.0, 3.0, 2.0]  # unsorted on purpose
    assert stats.percentile(values, 0) == 1.0
    assert stats.percentile(values, 50) == 3.0
    assert stats.percentile(values, 100) == 10.0
    assert stats.percentile(values, 90) == pytest.approx(4 + 0.6 * 6)  # rank 3.6 between 4 and 10
    assert stats.percentile(list(range(1, 101)), 99) == pytest.approx(99.01)


def test_percentile_edge_cases():
    assert math.isnan(stats.percentile([], 50))
    assert stats.percentile([7.5], 99) == 7.5
    with pytest.raises(ValueError):
        stats.percentile([1.0], 101)


def test_summarize_counts_only_successes_in_throughput():
    s = stats.summarize([1.0, 2.0, 3.0, 4.0], errors=2, elapsed_s=2.0, statuses={"200": 4, "500": 2})
    assert (s.n, s.errors, s.throughput) == (4, 2, 2.0)
    assert s.p50_ms == 2.5
    assert s.statuses == {"200": 4, "500": 2}


def test_ratio_is_nan_when_either_side_is_missing():
    assert stats.ratio(3.0, 1.5) == 2.0
    assert math.isnan(stats.ratio(None, 1.0))
    assert math.isnan(stats.ratio(1.0, 0.0))
    assert math.isnan(stats.ratio(math.nan, 1.0))


def test_linearity_accepts_linear_and_rejects_quadratic_growth():
    sizes = [100, 1000, 5000]
    linear = stats.linearity(sizes, [1 + 0.02 * n for n in sizes])  # 20 µs per resource throughout
    assert linear.linear
    assert linear.marginal_us == pytest.approx((20.0, 20.0))
    quadratic = stats.linearity(sizes, [1e-5 * n * n for n in sizes])
    assert not quadratic.linear
    assert quadratic.growth > 5


def test_linearity_ignores_noise_on_a_near_free_path():
    # 0.1 µs then 1 µs per resource: both under the 2 µs floor, so not called superlinear
    assert stats.linearity([100, 1000, 5000], [1.0, 1.09, 1.094 + 3.6]).linear


def test_linearity_needs_three_points():
    with pytest.raises(ValueError):
        stats.linearity([100, 1000], [1.0, 2.0])


def test_budget_verdicts():
    assert stats.at_most("p50", 9.9, 10, "ms").label == "PASS"
    assert stats.at_most("p50", 10.1, 10, "ms").label == "FAIL"
    assert stats.at_most("p50", None, 10, "ms").label == "n/a"
    assert stats.at_least("ratio", 0.5, 1 / 3, "×").label == "PASS"
    assert stats.at_least("ratio", 0.2, 1 / 3, "×").budget == "≥ 0.333 ×"
    assert stats.at_least("ratio", math.nan, 1 / 3, "×").passed is None
