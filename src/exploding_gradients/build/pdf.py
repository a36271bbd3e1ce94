"""The whole book as one PDF, printed by the browser the tests use.

``python -m exploding_gradients.build.pdf [ROOT]`` (``make pdf``) builds the book's
single-page HTML (jupyter-book's ``singlehtml`` builder, from the pages ``make book``
executed), opens it in Chromium through Playwright, waits until MathJax has typeset every
formula and every image has loaded, and prints it: ``_build/html/exploding-gradients.pdf``,
next to the site, which links it from its first page.  The file is written under a
temporary name and renamed, so an interrupted print leaves the previous PDF or none.

Chromium is Debian's ``chromium`` package (``$CHROMIUM`` names another executable);
Playwright's own browser download is not used.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

NAME = "exploding-gradients.pdf"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update"]
# Resolves once MathJax has typeset the page (at once when it has no MathJax) and every
# image, eagerly loaded, has arrived.
READY = """async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  const imgs = Array.from(document.images);
  imgs.forEach(img => { img.loading = "eager"; });
  await Promise.all(imgs.map(img => img.complete ? null :
    new Promise(done => { img.onload = done; img.onerror = done; })));
  return imgs.filter(img => img.naturalWidth === 0).map(img => img.src);
}"""


def chromium() -> str:
    """The Chromium executable; a clear error naming the setting when there is none."""
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") \
        or shutil.which("chromium-browser")
    if not path:
        raise SystemExit("make pdf: Chromium not found; install Debian's package "
                         "(apt-get install chromium) or set CHROMIUM=/path/to/chromium")
    return path


def single_page(root: Path) -> Path:
    """Build the single-page HTML of ``root``'s book (warnings as errors); the page that
    holds it (the root document, where jupyter-book's ``index.html`` redirects)."""
    command = str(Path(sys.executable).parent / "jupyter-book")
    subprocess.run([command, "build", str(root), "--builder", "singlehtml", "-W",
                    "--keep-going"], check=True)
    return printable(root / "_build" / "singlehtml" / "index.html")


def printable(index: Path) -> Path:
    """The single page behind ``index``, copied beside it as ``print.html``: Sphinx writes
    its links (``_images/``, ``_static/``) relative to the build's root, wherever the root
    document lives (``book/intro.html`` here), so only there do its images load."""
    copy = index.with_name("print.html")
    copy.write_bytes(followed(index).read_bytes())
    return copy


def followed(page: Path) -> Path:
    """``page``, or the page its ``<meta http-equiv="refresh">`` sends the reader to: the
    browser would navigate away while the book is being measured for printing."""
    match = re.search(r"""<meta[^>]+http-equiv=["']?refresh["']?[^>]*url=([^"'>\s]+)""",
                      page.read_text(errors="replace"), re.IGNORECASE)
    return page.parent / match.group(1) if match else page


def print_pdf(page: Path, target: Path) -> None:
    """Print ``page`` to ``target`` (A4, backgrounds kept, links live)."""
    from playwright.sync_api import sync_playwright

    tmp = target.with_name(f".{target.name}.partial")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium(), headless=True,
                                                 args=CHROMIUM_ARGS)
            try:
                tab = browser.new_page(viewport={"width": 1280, "height": 900})
                tab.goto(page.resolve().as_uri(), wait_until="load")
                broken = tab.evaluate(READY)
                if broken:
                    raise SystemExit(f"make pdf: images that did not load: {broken[:5]}")
                tab.emulate_media(media="print")
                tab.pdf(path=str(tmp), format="A4", print_background=True,
                        margin={"top": "16mm", "bottom": "16mm", "left": "14mm",
                                "right": "14mm"})
            finally:
                browser.close()
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    root = Path(argv[0] if argv else ".").resolve()
    target = root / "_build" / "html" / NAME
    print_pdf(single_page(root), target)
    print(f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
