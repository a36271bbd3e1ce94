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
def test_a_redirected_single_page_is_printed(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "index.html").write_text(REDIRECT)
    (tmp_path / "book" / "intro.html").write_text(
        "<html><body><h1>Exploding gradients</h1><p>every page, one file</p></body></html>")
    target = tmp_path / "out" / pdf.NAME
    pdf.print_pdf(pdf.followed(tmp_path / "index.html"), target)
    assert target.read_bytes().startswith(b"%PDF")
    assert not list(target.parent.glob(".*partial"))
