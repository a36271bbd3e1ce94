"""Execute a chapter notebook with papermill into the book's generated folder.

``python -m exploding_gradients.build.bookbuild notebooks/depth.ipynb
book/generated/depth.ipynb --profile default``.  The executed copy is written to a
temporary file in ``book/generated/.partial/`` (a folder the book never reads, with a
suffix no tool takes for a notebook) and renamed into place when it is whole, so an
interrupted run never leaves a half-executed page: SIGTERM and SIGHUP are turned into a
clean exit that removes the temporary file, and the leftovers of a SIGKILL are removed
when the page is next built.  The parameter cells are tagged ``remove-cell``: each
chapter shows the parameters it actually used, once, as a table.
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
from pathlib import Path

import nbformat
import papermill

from ..study.plots import FIGURES_ENV, PAGES_ENV

HIDDEN = {"parameters", "injected-parameters"}
PARTIAL = ".partial"


def execute(source: Path, target: Path, profile: str = "default",
            parameters: dict | None = None) -> None:
    partial = target.parent / PARTIAL
    partial.mkdir(parents=True, exist_ok=True)
    for leftover in partial.glob(f"{target.stem}-*.partial.json"):  # of a killed earlier run
        leftover.unlink(missing_ok=True)
    # .json: papermill writes it without complaint, and no tool takes it for a page
    fd, tmp = tempfile.mkstemp(dir=partial, prefix=f"{target.stem}-", suffix=".partial.json")
    os.close(fd)
    # The kernel inherits the environment: figures are also saved beside the pages, and
    # the ledger reads the other pages' numbers there.
    previous = {k: os.environ.get(k) for k in (FIGURES_ENV, PAGES_ENV)}
    os.environ[FIGURES_ENV] = str(target.parent.resolve() / "figures")  # kernel cwd differs
    os.environ[PAGES_ENV] = str(target.parent.resolve())
    try:
        papermill.execute_notebook(str(source), tmp, kernel_name="python3",
                                   parameters={"profile": profile, **(parameters or {})},
                                   progress_bar=False, cwd=str(source.parent))
        nb = nbformat.read(tmp, as_version=4)
        for cell in nb.cells:
            tags = cell.metadata.get("tags", [])
            if HIDDEN & set(tags) and "remove-cell" not in tags:
                cell.metadata["tags"] = [*tags, "remove-cell"]
        nbformat.write(nb, tmp)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key)
            else:
                os.environ[key] = value


def _exit_on(signum: int, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds through execute's cleanup


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--profile", default="default", choices=("quick", "default", "full"))
    parser.add_argument("--backend", help="where the experiments run: serial, local or dask")
    parser.add_argument("--scheduler", help="dask scheduler address, e.g. tcp://host:8786")
    args = parser.parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _exit_on)
    where = {k: v for k, v in [("backend", args.backend), ("scheduler", args.scheduler)] if v}
    execute(args.source, args.target, args.profile, where)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
