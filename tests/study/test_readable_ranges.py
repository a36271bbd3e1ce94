"""study.readable.median_range: a median and range written for readers."""

import math

from exploding_gradients.study.readable import median_range


def test_median_range_writes_each_value_for_readers():
    assert median_range([1.0, 2.0, 3.0]) == "2 [1, 3]"
    assert median_range([2e-5, 4e10, 7.0]) == "7 [2 × 10⁻⁵, 4 × 10¹⁰]"
    assert median_range([0.123456, math.nan]) == "0.123"  # one value, alone
    assert median_range([math.nan]) == "–" and median_range([], missing="none") == "none"
