"""The claims ledger, decided in the build from the numbers the chapters measured.

Each chapter glues the numbers its verdicts rest on (``glue_numbers``); the executed pages
keep them.  :func:`glued_values` reads them back from an executed notebook, exactly as the
page shows them, :func:`parse_number` turns a number written for readers (4.4 × 10¹⁰, 12 %,
−0.3) back into a float, and each :class:`Claim` carries a *rule*: a sentence the ledger
page prints and a function that applies it to those numbers and returns the verdict.  A
rebuild whose numbers change can therefore change a verdict; nothing on the ledger is typed
by hand except the claims themselves and their rules.
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .plots import PAGES_ENV

VERDICTS = ("supported", "nuanced", "refuted", "untestable here")
_SUPERSCRIPT = str.maketrans("⁻⁰¹²³⁴⁵⁶⁷⁸⁹", "-0123456789")
_NUMBER = re.compile(r"^\s*([−+-]?\d[\d,]*(?:\.\d*)?|[−+-]?\.\d+)?\s*(?:×\s*)?"
                     r"(?:10([⁻⁰¹²³⁴⁵⁶⁷⁸⁹]+))?\s*(%)?\s*$")


def parse_number(text) -> float:
    """A number as :func:`.readable.number` (or Python) writes it, as a float: ``4.4 ×
    10¹⁰``, ``10⁻³``, ``−0.25``, ``1,234``, ``12%`` (0.12), ``∞``, ``–`` (NaN), and a
    median with its range as :func:`.outcomes.med_range` writes it (``0.21 [0.2, 0.3]``:
    the median), or a number with a note in parentheses (``18 (18 to 20 over seeds)``).
    Raises ``ValueError`` naming the text when it is not a number."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    # a median's [min, max], or a note after the number: "18 (18 to 20 over seeds)"
    s = re.sub(r"\s*(\[[^\]]*\]|\([^)]*\))$", "", str(text).strip())
    if s in ("–", "-", "nan", "NaN", "diverged"):
        return math.nan
    if s in ("∞", "inf"):
        return math.inf
    if s in ("−∞", "-inf"):
        return -math.inf
    match = _NUMBER.match(s)
    if not match or not (match.group(1) or match.group(2)):
        try:
            return float(s)
        except ValueError:
            raise ValueError(f"not a number: {text!r}") from None
    mantissa, power, percent = match.groups()
    value = float(mantissa.replace("−", "-").replace(",", "")) if mantissa else 1.0
    if power:
        value *= 10.0 ** int(power.translate(_SUPERSCRIPT))
    return value / 100 if percent else value


def glued_values(notebook: Path) -> dict[str, object]:
    """Every value glued in an executed notebook, by key: the text the page shows, read
    back as a Python value where it is one (a quoted string, a number, a bool)."""
    nb = json.loads(Path(notebook).read_text())
    values = {}
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []):
            scrap = output.get("metadata", {}).get("scrapbook", {})
            name = scrap.get("name")
            text = output.get("data", {}).get(scrap.get("mime_prefix", "") + "text/plain")
            if name is None or text is None:  # not glued, or glued without a text form
                continue
            text = "".join(text) if isinstance(text, list) else text
            try:
                values[name] = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                values[name] = text
    return values


class Numbers:
    """The glued values of the executed pages in a folder, read once per page.

    ``numbers["depth", "key"]`` is the value, ``numbers.number("depth", "key")`` it as a
    float (:func:`parse_number`); a missing page or key raises ``KeyError`` naming both,
    so a renamed number breaks the ledger's build instead of silently changing a verdict.
    """

    def __init__(self, folder: Path | None = None):
        """``folder``: the executed pages; default ``$EXPLODING_GRADIENTS_PAGES`` (the
        book build's), else ``book/generated`` beside the working directory's parent
        (papermill runs a page in ``notebooks/``)."""
        if folder is None:
            folder = os.environ.get(PAGES_ENV) or Path.cwd().resolve().parent / "book" / "generated"
        self.folder = Path(folder)
        self._pages: dict[str, dict] = {}

    @classmethod
    def of(cls, pages: dict[str, dict]) -> Numbers:
        """Numbers held in memory, ``{page: {key: value}}``: a chapter applies a claim's
        rule to its own numbers before they are glued, so it states the ledger's verdict."""
        numbers = cls(Path("."))
        numbers._pages = {page: dict(values) for page, values in pages.items()}
        return numbers

    def page(self, name: str) -> dict[str, object]:
        if name not in self._pages:
            path = self.folder / f"{name}.ipynb"
            if not path.is_file():
                raise KeyError(f"the ledger needs the executed page {path}; build it first")
            self._pages[name] = glued_values(path)
        return self._pages[name]

    def __getitem__(self, key: tuple[str, str]):
        page, name = key
        values = self.page(page)
        if name not in values:
            raise KeyError(f"page {page!r} glues no number {name!r}")
        return values[name]

    def number(self, page: str, name: str) -> float:
        return parse_number(self[page, name])


@dataclass(frozen=True)
class Claim:
    """One seed claim: what it says (paraphrased), who makes it, the section that decides
    it (``page#anchor``), the rule in words, and the rule itself: ``decide(numbers)``
    returns ``(verdict, evidence)``, the verdict one of :data:`VERDICTS` and the evidence
    a sentence quoting the numbers it used."""

    section: str
    claim: str
    made_by: str
    page: str
    anchor: str
    rule: str
    decide: Callable[[Numbers], tuple[str, str]]


def decide(claims: list[Claim], numbers: Numbers) -> list[dict]:
    """Each claim with its verdict and evidence, decided from ``numbers``; a rule that
    returns a verdict outside :data:`VERDICTS` is an error."""
    rows = []
    for claim in claims:
        verdict, evidence = claim.decide(numbers)
        if verdict not in VERDICTS:
            raise ValueError(f"rule of {claim.claim[:40]!r} returned {verdict!r}; "
                             f"allowed: {', '.join(VERDICTS)}")
        rows.append({"section": claim.section, "claim": claim.claim,
                     "made_by": claim.made_by, "verdict": verdict, "evidence": evidence,
                     "rule": claim.rule,
                     "link": f"{claim.page}.ipynb" + (f"#{claim.anchor}" if claim.anchor else "")})
    return rows
