"""`make pdf`: the single-page book is found behind jupyter-book's redirecting index and
printed whole."""

import shutil

import pytest

from exploding_gradients.build import pdf

REDIRECT = '<meta http-equiv="Refresh" content="0; url=book/intro.html" />'


def test_the_redirecting_index_leads_to_the_page_that_holds_the_book(tmp_path):
    (tmp_path / "index.html").write_text(REDIRECT)
    assert pdf.followed(tmp_path / "index.html") == tmp_path / "book" / "intro.html"
    (tmp_path / "plain.html").write_text("<html><body>the book</body></html>")
    assert pdf.followed(tmp_path / "plain.html") == tmp_path / "plain.html"


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")),
                    reason="needs Chromium")
def test_a_redirected_single_page_is_printed_with_its_root_relative_images(tmp_path):
    """Sphinx's single page in book/ links its images as _images/...: from the root."""
    import matplotlib.pyplot as plt

    (tmp_path / "book").mkdir()
    (tmp_path / "_images").mkdir()
    fig = plt.figure(figsize=(1, 1))
    fig.savefig(tmp_path / "_images" / "f.png")
    plt.close(fig)
    (tmp_path / "index.html").write_text(REDIRECT)
    (tmp_path / "book" / "intro.html").write_text(
        '<html><body><h1>Exploding gradients</h1><img src="_images/f.png"></body></html>')
    target = tmp_path / "out" / pdf.NAME
    pdf.print_pdf(pdf.printable(tmp_path / "index.html"), target)
    assert target.read_bytes().startswith(b"%PDF")
    assert not list(target.parent.glob(".*partial"))
