"""study.readable: numbers, ranges and tables written for readers."""

import math

import pytest

from exploding_gradients.study.readable import median_range, number


@pytest.mark.parametrize("value, digits, text", [
    (4.44e10, 2, "4.4 × 10¹⁰"), (100, 2, "100"), (1234, 2, "1200"), (-150, 2, "−150"),
    (0.5, 3, "0.5"), (12345, 2, "1.2 × 10⁴"), (1e-5, 2, "10⁻⁵"), (-1e6, 3, "−10⁶"),
    (math.nan, 3, "–"), (math.inf, 3, "∞"), (0, 3, "0"),
])
def test_number_writes_for_readers(value, digits, text):
    assert number(value, digits) == text


def test_median_range_writes_each_value_for_readers():
    assert median_range([1.0, 2.0, 3.0]) == "2 [1, 3]"
    assert median_range([2e-5, 4e10, 7.0]) == "7 [2 × 10⁻⁵, 4 × 10¹⁰]"
    assert median_range([0.123456, math.nan]) == "0.123"  # one value, alone
    assert median_range([math.nan]) == "–" and median_range([], missing="none") == "none"
