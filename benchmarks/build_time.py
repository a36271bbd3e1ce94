"""Time the default book from scratch (cold) and with nothing changed (warm).

Run from the repository root with the project's venv: ``make benchmark``.  It builds in a
scratch copy of the sources with an empty results cache, so the working tree and its
cache are left alone.  It prints seconds and the warm/cold ratio, with the machine.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPY = ["Makefile", "pyproject.toml", "_config.yml", "_toc.yml", "book", "notebooks", "src"]


def timed(cmd: list[str], cwd: Path, env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
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
        env = {**os.environ, "EXPLODING_GRADIENTS_CACHE": str(work / "cache")}
        cold = timed(["make", "book"], work, env)
        warm = timed(["make", "book"], work, env)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}")
    print(f"cold build (default profile, empty cache): {cold:7.1f} s")
    print(f"warm build (nothing changed):               {warm:7.1f} s")
    print(f"warm / cold ratio:                          {warm / cold:7.3f}")


if __name__ == "__main__":
    main()
