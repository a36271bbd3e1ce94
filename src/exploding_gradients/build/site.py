"""Build the book's site with warnings as errors, and keep it strict after a failure.

``python -m exploding_gradients.build.site [ROOT]`` runs ``jupyter-book build ROOT -W
--keep-going``.  Sphinx re-reads only the pages that changed, so after a failed or
interrupted build it would not repeat the earlier warnings and ``-W`` would pass, and an
interrupted build can leave a search index covering part of the pages.  So a marker,
``_build/.unverified``, is written before every build and removed only after a clean
one; a build that finds it starts from scratch (Sphinx's saved environment and the HTML
are dropped).  A failed or interrupted build also removes ``index.html``, so ``make``
never takes it as up to date (and the Makefile rebuilds whenever the marker is there,
for a build killed with SIGKILL).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

MARKER = ".unverified"


def build(root: Path, jupyter_book: str | None = None) -> int:
    """Build ``root``'s book; returns jupyter-book's exit status."""
    out = root / "_build"
    marker = out / MARKER
    if marker.exists():
        print("the last book build did not finish cleanly: rebuilding every page",
              flush=True)
        for stale in (out / ".doctrees", out / "html"):
            shutil.rmtree(stale, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    marker.touch()
    command = jupyter_book or str(Path(sys.executable).parent / "jupyter-book")
    status = 1
    try:
        status = subprocess.call([command, "build", str(root), "-W", "--keep-going"])
    finally:  # also when interrupted: a failed site is never taken as up to date
        if status == 0:
            marker.unlink()
        else:
            (out / "html" / "index.html").unlink(missing_ok=True)
    return status


def _exit_on(signum: int, frame) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _exit_on)
    return build(Path(argv[0] if argv else "."))


if __name__ == "__main__":
    raise SystemExit(main())
