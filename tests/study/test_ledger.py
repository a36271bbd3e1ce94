"""The ledger reads the numbers back exactly as the pages show them and applies its rules."""

import math

import nbformat
import pytest

from exploding_gradients.study import ledger
from exploding_gradients.study.readable import number


@pytest.mark.parametrize("value", [4.44e10, -3.2e-7, 0.5, 1234.0, 0.0012, 1e-3, 1e12, -1.0])
def test_a_number_written_for_readers_reads_back(value):
    assert ledger.parse_number(number(value, 3)) == pytest.approx(value, rel=5e-3)


@pytest.mark.parametrize("text, value", [("12%", 0.12), ("1,234", 1234.0), ("10⁻³", 1e-3),
                                         ("−0.25", -0.25), ("∞", math.inf), (7, 7.0)])
def test_other_forms_of_numbers(text, value):
    assert ledger.parse_number(text) == value


def test_missing_and_non_numbers():
    assert math.isnan(ledger.parse_number("–"))
    with pytest.raises(ValueError, match="'diverges'"):
        ledger.parse_number("diverges")


def _page(tmp_path, name, values):
    """An executed notebook whose cells glued ``values`` the way myst-nb does."""
    from myst_nb.ext.glue import GLUE_PREFIX

    cell = nbformat.v4.new_code_cell("glue(...)")
    cell.outputs = [nbformat.v4.new_output(
        "display_data", data={GLUE_PREFIX + "text/plain": repr(v)},
        metadata={"scrapbook": {"name": k, "mime_prefix": GLUE_PREFIX}})
        for k, v in values.items()]
    nb = nbformat.v4.new_notebook(cells=[cell])
    nbformat.write(nb, tmp_path / f"{name}.ipynb")


def test_rules_decide_from_the_glued_numbers(tmp_path):
    _page(tmp_path, "depth", {"factor": "1.9 × 10²", "label": "explodes", "n": 3})
    numbers = ledger.Numbers(tmp_path)
    assert numbers["depth", "label"] == "explodes" and numbers["depth", "n"] == 3
    assert numbers.number("depth", "factor") == pytest.approx(190.0)

    def rule(nums):
        big = nums.number("depth", "factor") > 1
        return ("supported" if big else "refuted"), f"factor {nums['depth', 'factor']}"

    claim = ledger.Claim("Causes", "Depth explodes.", "all four", "depth", "verdict",
                         "supported if the factor exceeds 1", rule)
    (row,) = ledger.decide([claim], numbers)
    assert row["verdict"] == "supported" and row["link"] == "depth.ipynb#verdict"
    _page(tmp_path, "depth", {"factor": "0.5", "label": "vanishes", "n": 3})
    assert ledger.decide([claim], ledger.Numbers(tmp_path))[0]["verdict"] == "refuted"


def test_a_missing_page_or_number_names_it(tmp_path):
    _page(tmp_path, "depth", {"factor": "2"})
    numbers = ledger.Numbers(tmp_path)
    with pytest.raises(KeyError, match="'other'"):
        numbers["depth", "other"]
    with pytest.raises(KeyError, match="clipping.ipynb"):
        numbers["clipping", "x"]
    bad = ledger.Claim("C", "c", "x", "depth", "a", "r", lambda n: ("true", ""))
    with pytest.raises(ValueError, match="allowed: supported"):
        ledger.decide([bad], numbers)


def test_a_median_with_its_range_reads_as_the_median():
    assert ledger.parse_number("0.212 [0.211, 0.3]") == 0.212
    assert ledger.parse_number("4.4 × 10¹⁰ [1, 10¹¹]") == pytest.approx(4.4e10)
    assert ledger.parse_number("18 (18 to 20 over seeds)") == 18
