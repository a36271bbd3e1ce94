"""Executing a page: a killed or interrupted run never leaves a page, and the next run
finishes the job."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from exploding_gradients.build import bookbuild


def notebook(path: Path, seconds: float) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell('profile = "quick"', metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(f"import time\ntime.sleep({seconds})\nx = 1")]
    nbformat.write(nb, path)
    return path


def start(source: Path, target: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "exploding_gradients.build.bookbuild",
                             str(source), str(target), "--profile", "quick"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def wait_for_partial(folder: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while not list(folder.glob(".partial/*.partial.json")):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(1.0)  # the kernel is running the slow cell


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_an_interrupted_run_leaves_no_page_and_no_temporary(tmp_path, sig):
    out = tmp_path / "generated"
    proc = start(notebook(tmp_path / "slow.ipynb", 60), out / "slow.ipynb")
    wait_for_partial(out, proc)
    os.killpg(proc.pid, sig)  # the whole group, as a terminal or make's parent would
    assert proc.wait(timeout=60) != 0
    assert not (out / "slow.ipynb").exists()
    assert list((out / ".partial").iterdir()) == []


def test_a_killed_run_leaves_no_page_and_the_next_run_finishes(tmp_path):
    out = tmp_path / "generated"
    proc = start(notebook(tmp_path / "page.ipynb", 60), out / "page.ipynb")
    wait_for_partial(out, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (out / "page.ipynb").exists()
    assert len(list((out / ".partial").iterdir())) == 1  # the temporary of the killed run
    bookbuild.execute(notebook(tmp_path / "page.ipynb", 0), out / "page.ipynb", "quick")
    assert nbformat.read(out / "page.ipynb", as_version=4).cells[-1].outputs == []
    assert list((out / ".partial").iterdir()) == []  # removed by the next run
