"""The quick profile's glued numbers and figures, recorded: a change of structure must not
change a result.

``tests/golden/quick.json`` holds, for every page of the book executed in the quick
profile, each glued value as its text and each glued figure as a hash of its PNG (the
figures drawn without their provenance stamp, which names the code version).  Values
that measure this machine's speed are not recorded.  A change that alters a result on
purpose re-records the file (``python tests/test_golden.py record FOLDER``, FOLDER
holding the executed notebooks) in the same commit, saying why.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden" / "quick.json"
#: Glued values that time this machine (costs, speed-ups, the benchmark record).
MACHINE = re.compile(r"cost|_time_|anomaly_(ratio|range)|^scale_(?!ens_seeds$|ens_steps$|"
                     r"sweep_jobs$)")


def extract(notebook: Path) -> dict[str, str]:
    """Every glued value of an executed notebook: text, or ``png:<hash>`` for a figure."""
    out = {}
    for cell in json.loads(notebook.read_text())["cells"]:
        for output in cell.get("outputs", []):
            record = output.get("metadata", {}).get("scrapbook")
            if not record or MACHINE.search(record["name"]):
                continue
            prefix = record.get("mime_prefix", "")
            data = {k[len(prefix):] if k.startswith(prefix) else k: v
                    for k, v in output.get("data", {}).items()}
            if "image/png" in data:
                png = base64.b64decode(data["image/png"])
                out[record["name"]] = "png:" + hashlib.sha256(png).hexdigest()[:16]
            else:
                out[record["name"]] = data.get("text/plain")
    return out


def extract_all(folder: Path) -> dict[str, dict[str, str]]:
    return {nb.stem: extract(nb) for nb in sorted(folder.glob("*.ipynb"))}


@pytest.mark.slow
def test_quick_profile_results_are_the_recorded_ones(book_tree):
    recorded = json.loads(GOLDEN.read_text())
    now = extract_all(book_tree / "book" / "generated")
    assert sorted(now) == sorted(recorded)
    changed = {(page, key): (value, now[page].get(key))
               for page, values in recorded.items() for key, value in values.items()
               if now[page].get(key) != value}
    added = {(page, key) for page, values in now.items() for key in values
             if key not in recorded[page]}
    assert not changed and not added, (changed, added)


if __name__ == "__main__":
    if sys.argv[1:2] != ["record"] or len(sys.argv) != 3:
        sys.exit("usage: python tests/test_golden.py record FOLDER_OF_EXECUTED_NOTEBOOKS")
    GOLDEN.write_text(json.dumps(extract_all(Path(sys.argv[2])), indent=1, sort_keys=True)
                      + "\n")
