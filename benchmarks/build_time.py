"""Time the book from scratch (cold), with nothing changed (warm) and after one edit.

Run from the repository root with the project's venv: ``make benchmark`` (default
profile) or ``python benchmarks/build_time.py --profile quick``.  It builds in a scratch
copy of the sources with an empty results cache, so the working tree and its cache are
left alone.  The incremental build follows an edit of one notebook (its mtime): only that
page should re-execute.  It prints seconds and the ratios to cold, with the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPY = ["Makefile", "pyproject.toml", "_config.yml", "_toc.yml", "book", "notebooks", "src"]
EDITED = "notebooks/depth.ipynb"


def timed(cmd: list[str], cwd: Path, env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def measure_builds(profile: str = "default") -> dict:
    """Seconds of the cold, warm and incremental builds, and the pages re-executed."""
    make = ["make", "book", f"PROFILE={profile}"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in COPY:
            src = ROOT / name
            if src.is_dir():
                shutil.copytree(src, work / name,
                                ignore=shutil.ignore_patterns("generated", "__pycache__"))
            else:
                shutil.copy2(src, work / name)  # keep mtimes: make must not reinstall
        (work / ".venv").symlink_to(ROOT / ".venv")  # installing the venv is not timed
        # The copy's package, not the one the venv's editable install points at: the pages'
        # make rules then name the copy's files, and edits to the working tree don't count.
        env = {**os.environ, "EXPLODING_GRADIENTS_CACHE": str(work / "cache"),
               "PYTHONPATH": str(work / "src")}
        cold = timed(make, work, env)
        warm = timed(make, work, env)
        pages = sorted((work / "book" / "generated").glob("*.ipynb"))
        before = {page: page.stat().st_mtime_ns for page in pages}
        (work / EDITED).touch()
        incremental = timed(make, work, env)
        rerun = [page.stem for page in pages if page.stat().st_mtime_ns != before[page]]
    return {"profile": profile, "cold_s": cold, "warm_s": warm, "incremental_s": incremental,
            "incremental_pages": rerun}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default", choices=("quick", "default", "full"))
    result = measure_builds(parser.parse_args().profile)
    profile, cold, warm = result["profile"], result["cold_s"], result["warm_s"]
    incremental, rerun = result["incremental_s"], result["incremental_pages"]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}")
    rows = [(f"cold build ({profile} profile, empty cache)", f"{cold:7.1f} s"),
            ("warm build (nothing changed)", f"{warm:7.1f} s"),
            (f"incremental build ({EDITED} touched)", f"{incremental:7.1f} s"),
            ("  pages it re-executed", ", ".join(rerun) or "none"),
            ("warm / cold ratio", f"{warm / cold:7.4f}"),
            ("incremental / cold ratio", f"{incremental / cold:7.4f}")]
    for label, value in rows:
        print(f"{label + ':':<52}{value}")


if __name__ == "__main__":
    main()
