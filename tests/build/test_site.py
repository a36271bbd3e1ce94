"""Builds that stay strict: a failed or interrupted site build is redone from scratch."""

import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from exploding_gradients.build import site

JUPYTER_BOOK = str(Path(sys.executable).parent / "jupyter-book")
pytestmark = pytest.mark.slow  # three real (tiny) book builds


def tiny_book(root: Path, page: str) -> Path:
    (root / "_config.yml").write_text(textwrap.dedent("""\
        title: tiny
        only_build_toc_files: true
        execute:
          execute_notebooks: "off"
        """))
    (root / "_toc.yml").write_text("format: jb-book\nroot: index\nchapters:\n- file: other\n")
    (root / "index.md").write_text(page)
    (root / "other.md").write_text("(target)=\n# Other\n\nText.\n")
    return root


def test_a_broken_reference_fails_every_build_until_fixed(tmp_path, capsys):
    root = tiny_book(tmp_path, "# Index\n\nSee {ref}`no-such-label`.\n")
    assert site.build(root, JUPYTER_BOOK) != 0
    assert (root / "_build" / site.MARKER).exists()
    assert not (root / "_build" / "html" / "index.html").exists()
    # Sphinx would re-read nothing and pass: the marker makes it rebuild everything
    assert site.build(root, JUPYTER_BOOK) != 0
    assert "rebuilding every page" in capsys.readouterr().out
    (root / "index.md").write_text("# Index\n\nSee {ref}`target`.\n")
    assert site.build(root, JUPYTER_BOOK) == 0
    assert not (root / "_build" / site.MARKER).exists()
    assert (root / "_build" / "html" / "index.html").exists()


def test_an_interrupted_build_is_redone_from_scratch(tmp_path):
    root = tiny_book(tmp_path, "# Index\n\nSee {ref}`target`.\n")
    assert site.build(root, JUPYTER_BOOK) == 0
    sentinel = root / "_build" / ".doctrees" / "left-by-the-interrupted-build"
    sentinel.write_text("")
    (root / "_build" / site.MARKER).touch()  # what a killed build leaves
    assert site.build(root, JUPYTER_BOOK) == 0
    assert not sentinel.exists() and not (root / "_build" / site.MARKER).exists()


def test_jupyter_book_is_there():
    assert shutil.which(JUPYTER_BOOK)
