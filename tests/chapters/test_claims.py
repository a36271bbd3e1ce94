"""The ledger's rules: each decides from the numbers the chapters glue, and a change in
those numbers changes the verdict."""

import ast
import json
from pathlib import Path

import pytest

from exploding_gradients.chapters import claims
from exploding_gradients.study.ledger import VERDICTS, Numbers

GOLDEN = Path(__file__).parents[1] / "golden" / "quick.json"


def recorded() -> dict[str, dict]:
    """The quick profile's glued values (tests/golden), as the executed pages hold them."""
    def value(text):
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError):
            return text
    return {page: {k: value(v) for k, v in values.items()}
            for page, values in json.loads(GOLDEN.read_text()).items()}


def test_every_rule_finds_its_numbers_in_a_quick_build_and_gives_a_verdict():
    rows = claims.ledger(Numbers.of(recorded()))
    assert len(rows) == len(claims.CLAIMS) >= 25
    assert set(rows["verdict"]) <= set(VERDICTS)
    assert list(rows["section"].unique()) == list(claims.SECTIONS)
    assert rows["evidence"].str.len().min() > 80 and rows["rule"].str.len().min() > 40
    counts = claims.counts(rows)
    assert counts["claims_n"] == len(rows)
    assert sum(counts[f"claims_n_{v.split()[0]}"] for v in VERDICTS) == len(rows)


def one(name: str):
    (claim,) = [c for c in claims.CLAIMS if c.decide.__name__ == name]
    return claim


@pytest.mark.parametrize("fixed, verdict", [("0 of 5", "refuted"), ("2 of 5", "nuanced")])
def test_the_dropout_verdict_follows_the_matrix(fixed, verdict):
    numbers = Numbers.of({"matrix": {"matrix_fix_dropout": fixed, "matrix_dropout": 0.1,
                                     "matrix_dropout_factor": "1.111"}})
    got, evidence = one("_dropout").decide(numbers)
    assert got == verdict and fixed in evidence


@pytest.mark.parametrize("worse, verdict", [(0, "refuted"), (1, "nuanced"), (2, "supported")])
def test_the_generalization_verdict_counts_the_pairs(worse, verdict):
    numbers = Numbers.of({"matrix": {"matrix_gen_n_worse": worse, "matrix_gen_n": 2,
                                     "matrix_gen_n_train": 64, "matrix_gen_worse": "x"}})
    assert one("_generalization").decide(numbers)[0] == verdict


def test_the_depth_rule_reads_readable_numbers():
    page = {"depth_relu_critical_growth": "1.004", "depth_relu_top_growth": "1.140",
            "depth_relu_top_sigma": "1.6", "depth_relu_top_pred": "1.131"}
    assert one("_depth").decide(Numbers.of({"depth": page}))[0] == "nuanced"
    page["depth_relu_critical_growth"] = "1.2"
    assert one("_depth").decide(Numbers.of({"depth": page}))[0] == "supported"
    page["depth_relu_top_growth"] = "1.01"
    assert one("_depth").decide(Numbers.of({"depth": page}))[0] == "refuted"


def test_a_missing_number_names_the_page_and_the_key():
    with pytest.raises(KeyError, match="depth_relu_critical_growth"):
        one("_depth").decide(Numbers.of({"depth": {}}))


def test_k_n_reads_both_forms_and_refuses_text():
    assert claims.k_n("3/4") == (3, 4) and claims.k_n("0 of 5") == (0, 5)
    with pytest.raises(ValueError, match="k/n"):
        claims.k_n("none")


def test_the_cards_hold_each_claim_its_verdict_and_rule():
    rows = claims.ledger(Numbers.of(recorded()))
    text = claims.cards(rows, "Remedies")
    remedies = rows[rows["section"] == "Remedies"]
    assert text.count("````{admonition}") == len(remedies) == text.count("*Rule:*")
    assert all(f"**{v.capitalize()}**" in text for v in remedies["verdict"])
    assert all(c in text for c in remedies["claim"])
