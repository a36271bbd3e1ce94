"""Execute every notebook with papermill (quick profile) and build the book with -W.

These are the slow tests (about a minute): they run the real pipeline of ``make book``
on copies in a temporary folder, so the working tree is never touched.  The executed
copy and the build are session fixtures (``tests/conftest.py``), shared with
``tests/test_browser.py``, which opens the built pages in a headless browser.
"""

from pathlib import Path

import nbformat
import papermill
import pytest

from exploding_gradients.build.bookbuild import execute

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes_in_quick_profile(book_tree, nb):
    executed = nbformat.read(book_tree / "book" / "generated" / nb.name, as_version=4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert errors == []
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and all("remove-cell" in c.metadata["tags"] for c in injected)


@pytest.mark.parametrize("params, named", [
    ({"dept": 60}, "dept"),
    ({"depth": -1}, "depth"),
    ({"seeds": "many"}, "seeds"),
    ({"profile": "huge"}, "profile"),
])
def test_bad_notebook_parameters_fail_by_name(tmp_path, params, named):
    with pytest.raises(papermill.PapermillExecutionError, match=named):
        papermill.execute_notebook(str(ROOT / "notebooks" / "depth.ipynb"),
                                   str(tmp_path / "out.ipynb"), kernel_name="python3",
                                   parameters={"profile": "quick", **params},
                                   progress_bar=False, cwd=str(tmp_path))


def test_book_builds_with_warnings_as_errors(book_build):
    assert book_build.returncode == 0, book_build.output[-6000:]
    html = book_build.html
    pages = ["book/intro.html", "book/references.html"]
    pages += [f"book/generated/{nb.stem}.html" for nb in NOTEBOOKS]
    for page in pages:
        assert (html / page).exists(), page
    depth_page = (html / "book/generated/depth.html").read_text()
    assert "Verdict" in depth_page, "the depth chapter's text is missing"
    assert "<img" in depth_page, "the depth chapter's figures are missing"


def test_figures_are_saved_beside_the_page_for_relative_targets(tmp_path, monkeypatch):
    """`make book` passes relative paths while the kernel runs in notebooks/: the saved
    figure must still land in <target folder>/figures, where the intro page looks."""
    source_dir = tmp_path / "src"
    source_dir.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell('profile = "quick"', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(
            "import matplotlib.pyplot as plt\n"
            "from exploding_gradients.study import plots\n"
            "fig, ax = plt.subplots()\n"
            "plots.glue_figure('tiny_fig', fig, {'profile': profile})"),
    ]
    nbformat.write(nb, source_dir / "tiny.ipynb")
    monkeypatch.chdir(tmp_path)
    execute(Path("src/tiny.ipynb"), Path("out/tiny.ipynb"), profile="quick")
    assert (tmp_path / "out" / "figures" / "tiny_fig.png").exists()
    assert not (source_dir / "out").exists()
